"""The voice modem backend against a modem simulator on a real pseudo-terminal, opened with pyserial.

Line time is a SimClock: rings, caller ID gaps and the watchdog period pass
without sleeping. Only the pty I/O takes real milliseconds (and one hung
``AT`` probe waits out its 0.3 s command timeout).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import calls
from firmware.config import ModemSettings
from firmware.dsp.callerid import encode_mdmf
from firmware.line.base import (
    BackendHealth,
    CallerIdReceived,
    LineBlock,
    LineError,
    LineEvent,
    OffHook,
    OnHook,
    RingEnd,
    RingStart,
    ToneDetected,
)
from firmware.line.clock import SimClock
from firmware.line.modem import ModemLine
from firmware.line.modem_protocol import Audio, Dle, Line, ModemEvents, ModemStream, VoiceEnd, shield
from tests.support.modem_sim import CONEXANT_VSM, USR_VSM, ModemDriver, ModemSim

T0 = 1_790_000_000.0
E = TypeVar("E")
INIT = ["ATZ", "ATE0", "AT+VCID=1"]


@pytest.fixture
def sim() -> Iterator[ModemSim]:
    with ModemSim() as modem:
        yield modem


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


class Rig:
    """A started ModemLine on the simulator, with its driver."""

    def __init__(self, sim: ModemSim, clock: SimClock, **overrides: object) -> None:
        fields: dict[str, Any] = {"port": sim.path, "command_timeout_s": 0.3, **overrides}
        self.settings = ModemSettings(**fields)
        self.line = ModemLine(settings=self.settings, clock=clock)
        self.line.start()
        self.sim, self.clock = sim, clock
        self.driver = ModemDriver(self.line, sim, clock)

    def events(self, seconds: float = 0.1) -> list[LineEvent]:
        return [e for b in self.driver.run_for(seconds) for e in b.events]


@pytest.fixture
def rig(sim: ModemSim, clock: SimClock) -> Iterator[Rig]:
    made = Rig(sim, clock)
    yield made
    made.line.close()


def of(kind: type[E], events: list[LineEvent]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# -- init ------------------------------------------------------------------------


def test_init_resets_turns_echo_off_caller_id_on_and_sets_the_country(sim: ModemSim, clock: SimClock) -> None:
    rig = Rig(sim, clock, country_code="B4")
    assert sim.commands == [*INIT, "AT+GCI=B4"]
    assert (sim.vcid, sim.echo, sim.country) == (True, False, "B4")
    assert rig.line.health().healthy
    rig.line.close()


def test_init_without_a_country_code_leaves_the_country_alone(rig: Rig) -> None:
    assert rig.sim.commands == INIT


def test_a_modem_refusing_caller_id_fails_start_after_its_retries(clock: SimClock) -> None:
    with ModemSim(refuse=("AT+VCID=1",)) as sim:
        line = ModemLine(settings=ModemSettings(port=sim.path, init_retries=3, command_timeout_s=0.3), clock=clock)
        with pytest.raises(LineError) as caught:
            line.start()
        assert str(caught.value) == (
            f"the modem on {sim.path} did not initialise after 3 attempts: AT+VCID=1 answered ERROR"
        )
        assert sim.commands.count("ATZ") == 3
        # Pauses of 0.5 s then 1 s between the attempts, on the injected clock.
        assert clock.now() == T0 + 1.5
        health = line.health()
        assert (health.healthy, health.detail) == (False, str(caught.value))
        line.close()


def test_a_missing_port_is_a_clear_error_naming_the_setting(clock: SimClock) -> None:
    with pytest.raises(LineError) as caught:
        ModemLine(settings=ModemSettings(port="/dev/ttyNOMODEM9"), clock=clock)
    text = str(caught.value)
    assert text.startswith("serial port /dev/ttyNOMODEM9 cannot be opened: ")
    assert "No such file or directory" in text
    assert text.endswith('; check [modem] port (use device.line = "sim" to try linerec without hardware)')


# -- rings and caller ID ------------------------------------------------------------


def test_rings_with_a_formatted_report_give_ring_events_and_one_caller_id(rig: Rig) -> None:
    rig.sim.ring(2, cid={"NMBR": "2125550142", "NAME": "ACME PLUMBING"}, between=lambda: rig.driver.run_for(6.0))
    events = [e for b in rig.driver.blocks for e in b.events] + rig.events(2.0)
    starts, ends, ids = of(RingStart, events), of(RingEnd, events), of(CallerIdReceived, events)
    assert [round(e.t - T0, 2) for e in starts] == [0.0, 6.0]
    assert [(round(e.t - T0, 2), e.duration_s) for e in ends] == [(1.0, 1.0), (7.0, 1.0)]
    [cid] = ids
    assert cid.caller_id.number == "2125550142"
    assert cid.caller_id.name == "ACME PLUMBING"
    assert cid.caller_id.standard == "modem"


def test_a_private_number_and_unavailable_name_say_why_they_are_absent(rig: Rig) -> None:
    rig.sim.ring(1, cid={"NMBR": "P", "NAME": "O"})
    [cid] = of(CallerIdReceived, rig.events(1.0))
    caller = cid.caller_id
    assert (caller.number, caller.number_absent, caller.name, caller.name_absent) == (None, "P", None, "O")


def test_an_unformatted_mesg_report_is_parsed_as_the_raw_message(rig: Rig) -> None:
    raw = encode_mdmf(
        number="4155550123",
        name="DOE JANE",
        number_absent=None,
        name_absent=None,
        when=datetime(2026, 3, 1, tzinfo=UTC),
    )
    rig.sim.ring(1, cid=raw)
    [cid] = of(CallerIdReceived, rig.events(1.0))
    caller = cid.caller_id
    assert (caller.number, caller.name, caller.standard, caller.raw) == ("4155550123", "DOE JANE", "bell202-mdmf", raw)


def test_a_modem_that_forgot_vcid_reports_rings_without_caller_id(rig: Rig) -> None:
    rig.sim.vcid = False  # as after a reset that nobody followed with AT+VCID=1
    rig.sim.ring(1, cid={"NMBR": "2125550142"})
    events = rig.events(1.0)
    assert (len(of(RingStart, events)), of(CallerIdReceived, events)) == (1, [])


def test_noise_partial_overlong_non_utf8_and_malformed_lines_never_stop_a_later_ring(rig: Rig) -> None:
    sim = rig.sim
    sim.send_junk(b"\x00\xff\xfe\x80garbage")
    sim.send_junk(b"\r\ncaf\xe9 \xc3\x28 \xed\xa0\x80\r\n")
    sim.send_line("X" * 5000)
    sim.send_line("NMBR =")
    sim.send_line("NMBR = 12ab!")
    sim.send_line("DATE = tomorrow")
    sim.send_partial("RING", pieces=4)
    events = rig.events(1.5)
    assert len(of(RingStart, events)) == 1
    assert of(CallerIdReceived, events) == []
    sim.send_partial("NMBR = 2125550142", pieces=5)
    sim.ring(1)
    events = rig.events(1.0)
    assert [e.caller_id.number for e in of(CallerIdReceived, events)] == ["2125550142"]
    assert len(of(RingStart, events)) == 1
    assert rig.line.health().healthy


# -- watchdog ------------------------------------------------------------------------


def test_a_hung_modem_is_reported_reinitialised_with_caller_id_and_healthy_again(rig: Rig) -> None:
    sim, line = rig.sim, rig.line
    sim.hang()
    before = len(sim.commands)
    rig.clock.sleep_until(T0 + 29.0)
    assert of(BackendHealth, rig.events(0.1)) == []
    assert len(sim.commands) == before  # not yet: 30 s without a word
    rig.clock.sleep_until(T0 + 31.0)
    health = of(BackendHealth, rig.events(0.02))
    assert [(h.healthy, h.detail) for h in health] == [
        (False, f"the modem on {sim.path} did not answer AT within 0.3 s"),
        (True, "ok"),
    ]
    assert sim.commands[before:] == ["AT", *INIT]
    assert sim.vcid
    assert sim.power_cycles == 2  # the first open and the reopen
    assert line.health().healthy
    sim.ring(1, cid={"NMBR": "2125550142"})
    assert len(of(CallerIdReceived, rig.events(1.0))) == 1


def test_a_quiet_modem_that_answers_the_probe_stays_healthy(rig: Rig) -> None:
    rig.clock.sleep_until(T0 + 31.0)
    assert of(BackendHealth, rig.events(0.02)) == []
    assert rig.sim.commands[-1] == "AT"
    assert rig.sim.power_cycles == 1


def test_a_modem_that_stays_away_stays_unhealthy_and_the_loop_goes_on(rig: Rig) -> None:
    sim = rig.sim
    sim.hang()
    sim.refuse = {"ATZ"}  # answers again after the reopen, but cannot be initialised
    rig.clock.sleep_until(T0 + 31.0)
    health = of(BackendHealth, rig.events(0.02))
    assert [h.healthy for h in health] == [False]
    assert not rig.line.health().healthy
    assert "did not initialise after 3 attempts: ATZ answered ERROR" in rig.line.health().detail
    sim.refuse = set()
    rig.clock.sleep_until(rig.clock.now() + 31.0)
    assert [h.healthy for h in of(BackendHealth, rig.events(0.02))] == [True]


# -- voice mode ------------------------------------------------------------------------


def voice_samples() -> bytes:
    # Every byte value, so 0x10 (DLE), 0x03 (ETX) and CR/LF all pass through the shielding.
    return bytes(range(256)) * 5 + bytes([0x10, 0x10, 0x03, 0x10]) * 40  # nine whole blocks


def test_off_hook_streams_the_modems_samples_exactly_after_dle_unshielding(rig: Rig) -> None:
    sim, line = rig.sim, rig.line
    line.set_hook(True)
    assert sim.commands[-4:] == ["AT+FCLASS=8", USR_VSM, "AT+VLS=1", "AT+VRX"]
    assert (sim.off_hook, sim.mode, line.off_hook) == (True, "vrx", True)
    samples = voice_samples()
    sim.send_audio(samples)
    blocks = rig.driver.run_for(len(samples) / 8000)
    audio = np.concatenate([b.audio for b in blocks])
    expected = (np.frombuffer(samples, dtype=np.uint8).astype(np.int16) - 128) * 256
    assert audio.dtype == np.int16
    assert np.array_equal(audio, expected)


def test_a_conexant_modem_gets_its_own_compression_number(clock: SimClock) -> None:
    with ModemSim(vsm=(CONEXANT_VSM,)) as sim:
        rig = Rig(sim, clock)
        rig.line.set_hook(True)
        assert sim.commands[-5:] == ["AT+FCLASS=8", USR_VSM, CONEXANT_VSM, "AT+VLS=1", "AT+VRX"]
        sim.send_audio(bytes([0x80, 0x10, 0xFF, 0x00]) * 40)
        [block] = rig.driver.run_for(0.02)
        assert block.audio[:4].tolist() == [0, (0x10 - 128) * 256, 127 * 256, -128 * 256]
        rig.line.close()


def test_a_busy_tone_in_voice_mode_is_a_tone_event_that_ends_the_call(rig: Rig) -> None:
    rig.line.set_hook(True)
    rig.sim.send_dle("b")
    events = rig.events(0.02)
    assert [(type(e), getattr(e, "tone", None)) for e in events] == [(ToneDetected, "busy")]
    answered = calls.Call(calls.CallState.ANSWERED, answered_at=T0, answered_by="machine", line_taken=True)
    call, actions = calls.step(answered, events[0])
    assert call is calls.IDLE
    assert [type(a) for a in actions] == [calls.StopRecording, calls.ReleaseLine, calls.CallEnded]


def test_on_hook_stops_receiving_hangs_up_and_initialises_again(rig: Rig) -> None:
    sim, line = rig.sim, rig.line
    line.set_hook(True)
    mark = len(sim.commands)
    line.set_hook(False)
    assert sim.commands[mark:] == ["ATH", "AT+FCLASS=0", *INIT]
    assert (sim.off_hook, sim.mode, sim.vcid, line.off_hook) == (False, "command", True, False)
    [block] = rig.driver.run_for(0.02)
    assert np.array_equal(block.audio, np.zeros(160, dtype=np.int16))


def test_play_sends_the_audio_dle_shielded_and_receiving_resumes(rig: Rig) -> None:
    sim, line = rig.sim, rig.line
    line.set_hook(True)
    audio = (np.array([0, 0x10 - 128, 127, -128, 5], dtype=np.int16) * 256).repeat(8)
    line.play(audio)
    assert bytes(sim.played) == bytes(v for v in (0x80, 0x10, 0xFF, 0x00, 0x85) for _ in range(8))
    assert sim.commands[-2:] == ["AT+VTX", "AT+VRX"]
    assert sim.mode == "vrx"


def test_play_on_hook_drops_the_audio_without_touching_the_modem(rig: Rig) -> None:
    before = list(rig.sim.commands)
    rig.line.play(np.zeros(800, dtype=np.int16))
    assert rig.sim.commands == before


# -- extension pickup ----------------------------------------------------------------


def test_an_extension_pickup_is_an_answer_recorded_through_voice_mode(sim: ModemSim, clock: SimClock) -> None:
    rig = Rig(sim, clock, extension_pickup=True)
    assert sim.commands == [*INIT, "AT+FCLASS=8"]
    sim.send_dle("P")
    events = rig.events(0.02)
    assert [type(e) for e in events] == [OffHook]
    assert (sim.mode, rig.line.off_hook) == ("vrx", True)
    sim.send_audio(bytes([0x90]) * 160)
    [block] = rig.driver.run_for(0.02)
    assert set(block.audio.tolist()) == {16 * 256}
    sim.send_dle("p")
    assert [type(e) for e in rig.events(0.02)] == [OnHook]
    assert (sim.off_hook, sim.mode, rig.line.off_hook) == (False, "command", False)
    rig.line.close()


def test_without_extension_pickup_a_hook_report_is_ignored(rig: Rig) -> None:
    rig.sim.send_dle("P")
    assert rig.events(0.02) == []
    assert rig.sim.commands == INIT


# -- the call state machine on top --------------------------------------------------


def test_rings_with_caller_id_make_a_ringing_call_carrying_it_then_a_missed_call(rig: Rig) -> None:
    policy = calls.CallPolicy(ring_timeout_s=8.0)
    rig.sim.ring(3, cid={"NMBR": "2125550142", "NAME": "ACME PLUMBING"}, between=lambda: rig.driver.run_for(6.0))
    rig.driver.run_for(10.0)
    call, ringing, ended = calls.IDLE, [], []
    for block in rig.driver.blocks:
        for event in block.events:
            call, actions = calls.step(call, event, policy)
            ringing.append(call)
            ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
        call, actions = calls.tick(call, block.t + len(block.audio) / 8000, policy)
        ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
    assert any(c.state is calls.CallState.RINGING and c.caller_id is not None for c in ringing)
    [missed] = ended
    assert missed.caller_id is not None
    assert (missed.caller_id.number, missed.caller_id.name) == ("2125550142", "ACME PLUMBING")
    assert (missed.ring_count, missed.answered, missed.hangup_cause) == (3, False, calls.HangupCause.UNANSWERED)


def test_blocks_are_int16_of_the_block_size_back_to_back(rig: Rig) -> None:
    blocks: list[LineBlock] = rig.driver.run_for(1.0)
    assert all(b.audio.dtype == np.int16 and len(b.audio) == rig.line.block_frames for b in blocks)
    assert np.allclose(np.diff([b.t for b in blocks]), 0.02, atol=1e-6)


def test_closing_twice_is_harmless_and_ends_the_blocks(rig: Rig) -> None:
    rig.line.set_hook(True)
    rig.line.close()
    rig.line.close()
    assert rig.line.read_block() is None
    assert not rig.line.health().healthy
    with pytest.raises(LineError, match="is closed"):
        rig.line.set_hook(True)


# -- the pure protocol, fuzzed ----------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8), st.booleans())
def test_any_bytes_in_any_chunks_are_split_without_error(data: bytes, cuts: list[int], voice: bool) -> None:
    stream = ModemStream(voice=voice)
    events = ModemEvents(extension_pickup=True)
    for piece in chunked(data, cuts):
        for item in stream.feed(piece):
            if isinstance(item, Line):
                assert len(item.text) <= 256
                events.line(T0, item.text)
            elif isinstance(item, Dle):
                events.dle(T0, item.code)
    events.poll(T0 + 10)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 1200), max_size=8))
def test_shielded_voice_data_comes_back_exactly_however_it_is_chunked(audio: bytes, cuts: list[int]) -> None:
    stream = ModemStream()
    stream.expect_voice()
    wire = b"\r\nCONNECT\r\n" + shield(audio) + b"\x10\x03\r\nOK\r\n"
    items = [item for piece in chunked(wire, cuts) for item in stream.feed(piece)]
    assert b"".join(i.data for i in items if isinstance(i, Audio)) == audio
    assert [i for i in items if not isinstance(i, Audio)] == [Line("CONNECT"), VoiceEnd(), Line("OK")]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_report_line_is_taken_or_skipped_never_raised(text: str) -> None:
    events = ModemEvents()
    events.line(T0, "NMBR = " + text)
    events.line(T0, "NAME = " + text)
    events.line(T0, "MESG = " + text)
    for event in events.poll(T0 + 1):
        assert isinstance(event, CallerIdReceived)
        assert dataclasses.asdict(event.caller_id)
