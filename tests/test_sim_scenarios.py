"""The simulated line plays every situation a real line brings: cadences, caller ID timings, hang-ups, alerts."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.line.base import (
    CallerIdReceived,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    PolarityReversal,
    RingEnd,
    RingStart,
    ScriptError,
    ToneDetected,
)
from firmware.line.cadence import cadence_for_country
from firmware.line.sim import SCENARIOS, ScriptedCall, SimClock, SimLine, scenario
from firmware.line.speech import SynthVoice

EPOCH = 1_700_000_000.0
RATE = 8000
BLOCK_S = 0.02


@dataclass
class Played:
    """What a line delivered, read to the end: events with their times, and all the audio."""

    line: SimLine
    events: list[LineEvent] = field(default_factory=list)
    audio: NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, dtype=np.int16))

    def of(self, kind: type) -> list[LineEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def names(self) -> list[str]:
        return [type(e).__name__ + (f":{e.tone}" if isinstance(e, ToneDetected) else "") for e in self.events]

    def span(self, t_start: float, t_end: float) -> NDArray[np.float64]:
        """The audio from ``t_start`` to ``t_end`` (line time), as floats."""
        lo, hi = round((t_start - EPOCH) * RATE), round((t_end - EPOCH) * RATE)
        return self.audio[lo:hi].astype(np.float64)


def line_for(calls: tuple[ScriptedCall, ...] | list[ScriptedCall], seed: int = 0) -> SimLine:
    return SimLine(calls, clock=SimClock(EPOCH), start_time=EPOCH, voice=SynthVoice(), seed=seed)


def play(line: SimLine, on_block: Callable[[SimLine, list[LineEvent]], None] | None = None) -> Played:
    played, chunks = Played(line), []
    while (block := line.read_block()) is not None:
        played.events.extend(block.events)
        chunks.append(block.audio)
        if on_block is not None:
            on_block(line, played.events)
    played.audio = np.concatenate(chunks)
    return played


def dbfs(x: NDArray[np.float64]) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(x**2))), 1e-9) / 32767))


def peaks(x: NDArray[np.float64], count: int) -> list[float]:
    """The ``count`` strongest frequencies in ``x``, at least 40 Hz apart, lowest first."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    found: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[index] - f) > 40 for f in found):
            found.append(float(freqs[index]))
        if len(found) == count:
            break
    return sorted(found)


def band_dbfs(x: NDArray[np.float64], hz: float, width: float = 15.0) -> float:
    """The level of ``x`` within ``width`` Hz of ``hz``, in dBFS RMS."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    power = np.sum(np.abs(spectrum[np.abs(freqs - hz) <= width]) ** 2) * 2 / len(x) ** 2
    return float(10 * np.log10(max(power, 1e-18)) - 20 * np.log10(32767))


def answer_after_rings(rings: int) -> Callable[[SimLine, list[LineEvent]], None]:
    """A recorder in answering-machine mode: off-hook once ``rings`` rings have ended."""

    def on_block(line: SimLine, events: list[LineEvent]) -> None:
        ended = sum(isinstance(e, RingEnd) for e in events)
        if ended == rings and not any(r == "off-hook" for _, r in line.requests):
            line.set_hook(True)

    return on_block


# --- every scenario ----------------------------------------------------------------------

RING2 = ["RingStart", "RingEnd", "CallerIdReceived", "RingStart", "RingEnd"]
EXPECTED = {
    "us-basic": [*RING2, "OffHook", "LoopDrop", "OnHook"],
    "gb-pre-ring-cid": [
        "PolarityReversal", "ToneDetected:cas", "CallerIdReceived",
        "RingStart", "RingEnd", "RingStart", "RingEnd", "OffHook", "OnHook",
    ],
    "cpc-hangup": [*RING2, "OffHook", "LoopDrop", "OnHook"],
    "polarity-hangup": [*RING2, "OffHook", "PolarityReversal", "OnHook"],
    "tone-hangup": [*RING2, "OffHook", "ToneDetected:busy", "OnHook"],
    "silence-hangup": [*RING2, "OffHook", "OnHook"],
    "call-waiting": [*RING2, "OffHook", "ToneDetected:call-waiting", "ToneDetected:cas", "OnHook"],
    "missed": [*RING2, "RingStart", "RingEnd", "RingStart", "RingEnd"],
    "extension-pickup": [*RING2, "OffHook", "LoopDrop", "OnHook"],
    "answering-machine": [*RING2, "RingStart", "RingEnd", "RingStart", "RingEnd", "RingStart", "RingEnd",
                          "RingStart", "RingEnd"],
}  # fmt: skip


def test_every_scenario_is_listed() -> None:
    assert set(SCENARIOS) == set(EXPECTED)


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_gives_its_events_in_order(name: str) -> None:
    played = play(line_for(scenario(name)))
    assert played.names() == EXPECTED[name]
    times = [e.t for e in played.events]
    assert times == sorted(times)


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_is_the_same_with_the_same_seed(name: str) -> None:
    def first_audio(seed: int) -> bytes:
        line = SimLine.from_scenario(name, clock=SimClock(EPOCH), voice=SynthVoice(), seed=seed)
        return b"".join(block.audio.tobytes() for block in (line.read_block() for _ in range(400)) if block)

    assert first_audio(3) == first_audio(3)
    assert first_audio(3) != first_audio(4)


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ScriptError) as info:
        scenario("fax")
    assert str(info.value) == (
        "scenario 'fax' is unknown; known: us-basic, gb-pre-ring-cid, cpc-hangup, polarity-hangup, "
        "tone-hangup, silence-hangup, call-waiting, missed, extension-pickup, answering-machine"
    )


# --- ringing by country -----------------------------------------------------------------

COUNTRIES = [
    ("US", "US"), ("GB", "GB"), ("DE", "DE"), ("FR", "FR"), ("ES", "ES"),
    ("IT", "DE"), ("NL", "DE"), ("AU", "GB"), ("JP", "JP"),
]  # fmt: skip


@pytest.mark.parametrize(("country", "key"), COUNTRIES)
def test_country_rings_with_its_cadence_and_names_it_from_the_second_ring(country: str, key: str) -> None:
    played = play(line_for([ScriptedCall(country=country, rings=4, answered=False, talk=())]))
    pattern = cadence_for_country(country).pattern
    starts, ends = played.of(RingStart), played.of(RingEnd)
    assert len(starts) == len(ends) == 4
    assert [e.cadence for e in ends] == [None, key, key, key]  # type: ignore[union-attr]
    # One ring a cycle, as long as the cycle's bursts and the gaps inside it.
    assert np.diff([e.t for e in starts]) == pytest.approx([sum(pattern)] * 3, abs=1e-6)
    ring_s = sum(pattern) - pattern[-1]
    assert [e.duration_s for e in ends] == pytest.approx([ring_s] * 4, abs=1e-6)  # type: ignore[union-attr]


def test_uk_double_ring_is_one_ring_from_the_first_burst_to_the_end_of_the_second() -> None:
    played = play(line_for([ScriptedCall(country="GB", rings=1, answered=False, talk=())]))
    start, end = played.of(RingStart)[0], played.of(RingEnd)[0]
    assert end.t - start.t == pytest.approx(1.0)
    timeline = played.line.script_timeline()
    bursts = [e for e in timeline if e.kind == "ring"]
    assert [round(e.t_end - e.t_start, 3) for e in bursts] == [0.4, 0.4]


def test_an_unknown_country_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ScriptError, match=r"no ring cadence is known for country 'XX'; known: .*GB"):
        ScriptedCall(country="XX")


# --- caller ID ---------------------------------------------------------------------------


def test_uk_caller_id_comes_before_the_ring_with_the_etsi_gaps() -> None:
    played = play(line_for(scenario("gb-pre-ring-cid")))
    reversal, alert, data, ring = played.events[:4]
    assert isinstance(reversal, PolarityReversal)
    assert isinstance(alert, ToneDetected)
    assert isinstance(data, CallerIdReceived)
    assert isinstance(ring, RingStart)
    assert alert.t - reversal.t >= 0.1
    # The alert lasts 88-110 ms and the data starts >= 45 ms after it.
    assert data.t - alert.t >= 0.088 + 0.045
    assert ring.t - data.t >= 0.2
    assert data.caller_id.standard == "etsi-v23"
    assert data.caller_id.number == "02079460018"
    assert data.caller_id.raw[0] == 0x80


def test_uk_alert_is_the_dual_tone_in_the_audio() -> None:
    played = play(line_for(scenario("gb-pre-ring-cid")))
    alert = played.of(ToneDetected)[0]
    tone = played.span(alert.t, alert.t + 0.1)
    assert peaks(tone, 2) == pytest.approx([2130, 2750], abs=12)
    assert dbfs(tone) > -25
    # Quiet before the alert and between it and the data.
    assert dbfs(played.span(alert.t - 0.1, alert.t)) < -55
    assert dbfs(played.span(alert.t + 0.11, alert.t + 0.15)) < -55


@pytest.mark.parametrize(
    ("standard", "first_byte"),
    [("bell202-mdmf", 0x80), ("bell202-sdmf", 0x04), ("etsi-v23", 0x80)],
)
def test_fsk_standards_carry_their_message_type(standard: str, first_byte: int) -> None:
    call = ScriptedCall(caller_id_standard=standard, rings=3, answered=False, talk=())
    (received,) = play(line_for([call])).of(CallerIdReceived)
    caller_id = received.caller_id  # type: ignore[union-attr]
    assert (caller_id.standard, caller_id.raw[0], caller_id.number) == (standard, first_byte, "12125550142")


@pytest.mark.parametrize(
    ("options", "raw", "number", "absent"),
    [
        ({"caller_number": "+1 212 555 0142"}, b"A12125550142C", "12125550142", None),
        ({"caller_number": None, "number_absent": "P"}, b"B10C", None, "P"),
        ({"caller_number": None, "number_absent": "O"}, b"B00C", None, "O"),
    ],
)
def test_dtmf_caller_id_is_the_digit_string(
    options: dict[str, object], raw: bytes, number: str | None, absent: str | None
) -> None:
    call = ScriptedCall(caller_id_standard="dtmf", rings=3, answered=False, talk=(), **options)  # type: ignore[arg-type]
    (received,) = play(line_for([call])).of(CallerIdReceived)
    caller_id = received.caller_id  # type: ignore[union-attr]
    assert (caller_id.standard, caller_id.raw, caller_id.number, caller_id.number_absent) == (
        "dtmf", raw, number, absent
    )  # fmt: skip


def test_dtmf_caller_id_before_the_ring_has_no_fsk_alert() -> None:
    call = ScriptedCall(
        country="NL", caller_id_standard="dtmf", caller_id_timing="before-ring", rings=2, answered=False, talk=()
    )
    names = play(line_for([call])).names()
    assert names[:3] == ["PolarityReversal", "CallerIdReceived", "RingStart"]


def test_caller_id_none_sends_nothing() -> None:
    call = ScriptedCall(caller_id_timing="none", rings=3, answered=False, talk=())
    played = play(line_for([call]))
    assert not played.of(CallerIdReceived)
    assert not played.of(PolarityReversal)


# --- hang-ups ------------------------------------------------------------------------------


@pytest.mark.parametrize("cpc_ms", [600, 300])
def test_remote_hang_up_opens_the_loop_for_cpc_ms(cpc_ms: int) -> None:
    call = ScriptedCall(country="US", cpc_ms=cpc_ms, talk=(("caller", "Bye now."),))
    played = play(line_for([call]))
    (drop,) = played.of(LoopDrop)
    assert drop.duration_s == pytest.approx(cpc_ms / 1000)  # type: ignore[union-attr]
    # An open loop carries nothing at all.
    assert not np.any(played.span(drop.t - cpc_ms / 1000 + 0.001, drop.t - 0.001))


def test_polarity_hang_up_reverses_the_line_and_drops_no_loop() -> None:
    played = play(line_for(scenario("polarity-hangup")))
    assert not played.of(LoopDrop)
    (off_hook,) = played.of(OffHook)
    (reversal,) = played.of(PolarityReversal)
    (on_hook,) = played.of(OnHook)
    assert off_hook.t < reversal.t
    assert 2.0 <= on_hook.t - reversal.t <= 5.0


def test_tone_hang_up_plays_us_busy_tone_until_the_local_phone_hangs_up() -> None:
    played = play(line_for(scenario("tone-hangup")))
    assert not played.of(LoopDrop)
    (busy,) = played.of(ToneDetected)
    (on_hook,) = played.of(OnHook)
    assert busy.tone == "busy"  # type: ignore[union-attr]
    assert on_hook.t - busy.t == pytest.approx(5.0)
    on = played.span(busy.t, busy.t + 0.5)
    assert peaks(on, 2) == pytest.approx([480, 620], abs=5)
    assert -30 < dbfs(on) < -18
    # 0.5 s on, 0.5 s off, for the whole of tone_s.
    for second in range(5):
        assert dbfs(played.span(busy.t + second + 0.05, busy.t + second + 0.45)) > -30
        assert dbfs(played.span(busy.t + second + 0.55, busy.t + second + 0.95)) < -55


def test_tone_hang_up_in_the_uk_plays_its_busy_tone() -> None:
    call = ScriptedCall(country="GB", hangup="tone", tone_s=3.0, talk=(("caller", "Bye."),))
    played = play(line_for([call]))
    (busy,) = played.of(ToneDetected)
    assert peaks(played.span(busy.t, busy.t + 0.375), 1) == pytest.approx([400], abs=5)


def test_silence_hang_up_leaves_only_line_noise_for_silence_s() -> None:
    played = play(line_for(scenario("silence-hangup")))
    (on_hook,) = played.of(OnHook)
    quiet = played.span(on_hook.t - 40.0, on_hook.t)
    assert -62 < dbfs(quiet) < -58
    # Not a single loud block in it: no speech, no tone.
    blocks = quiet[: len(quiet) // 160 * 160].reshape(-1, 160)
    assert max(dbfs(block) for block in blocks) < -55
    # Right before it, the far end was still talking.
    timeline = played.line.script_timeline()
    dead = next(e for e in timeline if e.kind == "hangup")
    assert dead.t_end - dead.t_start == pytest.approx(40.0)
    assert dead.t_end == pytest.approx(on_hook.t)


# --- call waiting --------------------------------------------------------------------------


def test_call_waiting_alert_sounds_at_its_offset_and_the_call_goes_on() -> None:
    played = play(line_for(scenario("call-waiting")))
    (off_hook,) = played.of(OffHook)
    alert, cas = played.of(ToneDetected)
    assert (alert.tone, cas.tone) == ("call-waiting", "cas")  # type: ignore[union-attr]
    assert alert.t - off_hook.t == pytest.approx(3.0)
    beep = played.span(alert.t, alert.t + 0.3)
    assert peaks(beep, 1) == pytest.approx([440], abs=5)
    assert band_dbfs(beep, 440) > -30
    assert peaks(played.span(cas.t, cas.t + 0.08), 2) == pytest.approx([2130, 2750], abs=15)
    # No rings or hook changes for the second call; the first one ends as scripted, later.
    after = played.events[played.events.index(off_hook) + 1 :]
    assert [type(e).__name__ for e in after] == ["ToneDetected", "ToneDetected", "OnHook"]
    timeline = played.line.script_timeline()
    assert any(e.kind == "talk" and e.t_start > cas.t + 0.08 for e in timeline)


def test_call_waiting_after_the_conversation_is_refused() -> None:
    call = ScriptedCall(call_waiting_at_s=500.0, talk=(("caller", "Hi."),))
    with pytest.raises(ScriptError, match=r"call_waiting_at_s 500\.0 is after the conversation ends \(\d+\.\d s\)"):
        line_for([call]).script_timeline()


# --- who answers ---------------------------------------------------------------------------


def test_extension_pick_up_is_an_off_hook_like_the_local_phone() -> None:
    local = play(line_for(scenario("us-basic")))
    extension = play(line_for(scenario("extension-pickup")))
    assert extension.of(OffHook)[0].t == local.of(OffHook)[0].t


def test_machine_call_rings_out_if_the_recorder_never_answers() -> None:
    played = play(line_for(scenario("answering-machine")))
    assert len(played.of(RingStart)) == 6
    assert not played.of(OffHook) and not played.of(LoopDrop) and not played.of(OnHook)
    assert max(dbfs(b) for b in played.audio.astype(np.float64).reshape(-1, 160)) < -55


def test_machine_call_waits_for_the_recorder_then_leaves_a_message() -> None:
    played = play(line_for(scenario("answering-machine")), answer_after_rings(2))
    ((when, request),) = played.line.requests
    assert request == "off-hook"
    assert when - played.of(RingEnd)[1].t < BLOCK_S + 1e-9
    # The ringing stops; the recorder knows it answered, so no OffHook and no OnHook.
    assert played.names() == [*RING2, "LoopDrop"]
    # The caller starts talking a second after the answer and hangs up with CPC after the message.
    blocks = played.audio.astype(np.float64).reshape(-1, 160)
    first_loud = next(i for i, block in enumerate(blocks) if dbfs(block) > -40)
    talk_starts = EPOCH + first_loud * BLOCK_S
    assert 1.0 <= talk_starts - when <= 1.2
    (drop,) = played.of(LoopDrop)
    assert drop.t - talk_starts > 3.0


def test_recorder_answering_mid_ring_ends_that_ring_there() -> None:
    def answer_mid_second_ring(line: SimLine, events: list[LineEvent]) -> None:
        if len([e for e in events if isinstance(e, RingStart)]) == 2 and not line.requests:
            line.set_hook(True)

    played = play(line_for(scenario("answering-machine")), answer_mid_second_ring)
    ends = played.of(RingEnd)
    assert len(played.of(RingStart)) == len(ends) == 2
    assert ends[1].duration_s == pytest.approx(BLOCK_S)  # type: ignore[union-attr]
    assert ends[1].cadence == "US"  # type: ignore[union-attr]


def test_going_off_hook_on_an_ordinary_call_changes_nothing() -> None:
    plain = play(line_for(scenario("us-basic")))
    hooked = play(line_for(scenario("us-basic")), answer_after_rings(1))
    assert hooked.events == plain.events
    assert np.array_equal(hooked.audio, plain.audio)


def test_outgoing_call_is_off_hook_then_dial_tone_then_talk() -> None:
    call = ScriptedCall(outgoing=True, hangup="local", talk=(("callee", "Hello, is that the garage?"),))
    played = play(line_for([call]))
    assert played.names() == ["OffHook", "OnHook"]
    off_hook = played.of(OffHook)[0]
    dial = played.span(off_hook.t, off_hook.t + 1.0)
    assert peaks(dial, 2) == pytest.approx([350, 440], abs=5)
    assert dbfs(played.span(off_hook.t + 1.05, off_hook.t + 1.35)) < -55


# --- line noise and hum ----------------------------------------------------------------------


@pytest.mark.parametrize("noise", [-70.0, -60.0, -45.0])
def test_line_noise_is_at_the_scripted_level(noise: float) -> None:
    call = ScriptedCall(noise_dbfs=noise, gap_before_s=10.0, rings=1, answered=False, talk=())
    played = play(line_for([call]))
    assert dbfs(played.span(EPOCH, EPOCH + 10.0)) == pytest.approx(noise, abs=0.5)


@pytest.mark.parametrize("hz", [50.0, 60.0])
def test_mains_hum_is_at_forty_below_full_scale(hz: float) -> None:
    call = ScriptedCall(hum_hz=hz, gap_before_s=10.0, rings=1, answered=False, talk=())
    idle = play(line_for([call])).span(EPOCH, EPOCH + 10.0)
    assert peaks(idle, 1) == pytest.approx([hz], abs=1)
    assert band_dbfs(idle, hz, width=2.0) == pytest.approx(-40.0, abs=0.5)
    assert dbfs(idle) == pytest.approx(-40.0, abs=0.5)


def test_long_busy_tone_keeps_memory_flat() -> None:
    def peak(tone_s: float) -> int:
        line = line_for([ScriptedCall(hangup="tone", tone_s=tone_s, talk=(("caller", "Bye."),))])
        tracemalloc.start()
        try:
            while line.read_block() is not None:
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(200.0) < 1.2 * peak(10.0)


# --- refused scripts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"caller_id_timing": "later"}, "caller_id_timing 'later' must be 'after-first-ring', 'before-ring' or 'none'"),
        (
            {"caller_id_standard": "v21"},
            "caller_id_standard 'v21' must be 'bell202-mdmf', 'bell202-sdmf', 'etsi-v23' or 'dtmf'",
        ),
        ({"answered_by": "dog"}, "answered_by 'dog' must be 'local', 'extension' or 'machine'"),
        ({"cpc_ms": 10}, "cpc_ms 10 must be 50..2000 milliseconds (exchanges use 250..900)"),
        ({"tone_s": -1.0}, "tone_s -1.0 must be zero or more seconds"),
        ({"silence_s": float("nan")}, "silence_s nan must be zero or more seconds"),
        ({"call_waiting_at_s": 0.0}, "call_waiting_at_s 0.0 must be a positive number of seconds or None"),
        ({"noise_dbfs": 0.0}, "noise_dbfs 0.0 must be -120..-20 dBFS"),
        ({"hum_hz": 5.0}, "hum_hz 5.0 must be 16..400 Hz (mains is 50 or 60) or None"),
        (
            {"caller_id_standard": "dtmf", "caller_name": "ACME"},
            "caller_name 'ACME' / name_absent None cannot be sent: caller_id_standard 'dtmf' carries the number only",
        ),
        (
            {"answered_by": "machine", "answered": False},
            "answered_by 'machine' needs answered=True: the recorder answers when it goes off-hook",
        ),
        (
            {"answered_by": "machine", "hangup": "local"},
            "hangup 'local' cannot end a call the machine answered: nobody is there to hang up",
        ),
        ({"answered_by": "machine", "rings": 0}, "rings 0 is too few for a call the machine answers"),
        (
            {"outgoing": True, "answered_by": "machine"},
            "an outgoing call must be answered=True and answered_by 'local' or 'extension'",
        ),
    ],
)
def test_impossible_scripts_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ScriptError) as info:
        ScriptedCall(**options)  # type: ignore[arg-type]
    assert str(info.value) == message
