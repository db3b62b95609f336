"""The simulated line: scripted calls come out as the events and audio a real line would give."""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import pytest

from firmware import calls
from firmware.dsp.callerid import parse_message
from firmware.line.base import (
    CallerIdReceived,
    LineBackend,
    LineBlock,
    LineError,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    RingEnd,
    RingStart,
    ScriptError,
)
from firmware.line.sim import RealtimeClock, ScriptedCall, SimClock, SimLine, demo_calls
from firmware.line.speech import SynthVoice

EPOCH = 1_700_000_000.0
BLOCK_S = 0.02


@dataclass
class Run:
    """Everything a SimLine delivered, read to the end."""

    blocks: int = 0
    events: list[tuple[float, LineEvent]] = field(default_factory=list)  # (block t, event)
    block_times: list[float] = field(default_factory=list)


def read_all(line: SimLine, keep_audio: list[LineBlock] | None = None) -> Run:
    run = Run()
    while (block := line.read_block()) is not None:
        run.blocks += 1
        run.block_times.append(block.t)
        run.events.extend((block.t, event) for event in block.events)
        assert block.audio.shape == (line.block_frames,)
        assert block.audio.dtype == np.int16
        if keep_audio is not None:
            keep_audio.append(block)
    return run


def demo_line(**kwargs: object) -> SimLine:
    options: dict[str, object] = {"clock": SimClock(EPOCH), "voice": SynthVoice()}
    options.update(kwargs)
    return SimLine(demo_calls(), **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def demo_blocks() -> list[LineBlock]:
    blocks: list[LineBlock] = []
    read_all(demo_line(), blocks)
    return blocks


@pytest.fixture(scope="module")
def demo_run() -> Run:
    return read_all(demo_line())


def kinds(events: list[tuple[float, LineEvent]]) -> list[str]:
    return [type(event).__name__ for _, event in events]


def test_sim_line_is_a_line_backend() -> None:
    line = demo_line()
    assert isinstance(line, LineBackend)
    assert (line.name, line.sample_rate, line.block_frames) == ("sim", 8000, 160)


def test_demo_events_come_in_call_order(demo_run: Run) -> None:
    ring = ["RingStart", "RingEnd"]
    expected = (
        ring + ["CallerIdReceived"] + ring + ["OffHook", "LoopDrop", "OnHook"]
        + ring + ["CallerIdReceived"] + ring * 2 + ["OffHook", "OnHook"]
        + ring + ["CallerIdReceived"] + ring * 3
    )  # fmt: skip
    assert kinds(demo_run.events) == expected


def test_each_event_arrives_in_the_block_it_happened_in(demo_run: Run) -> None:
    times = [event.t for _, event in demo_run.events]
    assert times == sorted(times)
    for block_t, event in demo_run.events:
        assert block_t <= event.t < block_t + BLOCK_S + 1e-9


def test_blocks_are_contiguous_and_the_clock_follows_them() -> None:
    line = demo_line()
    run = read_all(line)
    steps = np.diff(run.block_times)
    assert np.allclose(steps, BLOCK_S, rtol=0, atol=1e-6)
    assert run.block_times[0] == EPOCH
    assert line.clock.now() == pytest.approx(EPOCH + run.blocks * BLOCK_S)


def test_ring_cadence_is_two_on_four_off(demo_run: Run) -> None:
    edges = [(type(e).__name__, e.t) for _, e in demo_run.events if isinstance(e, RingStart | RingEnd)]
    starts = [t for name, t in edges if name == "RingStart"]
    ends = [t for name, t in edges if name == "RingEnd"]
    assert len(starts) == len(ends) == 2 + 3 + 4
    for start, end in zip(starts, ends, strict=True):
        assert end - start == pytest.approx(2.0, abs=BLOCK_S)
    ring_ends = [e for _, e in demo_run.events if isinstance(e, RingEnd)]
    assert all(e.duration_s == pytest.approx(2.0, abs=BLOCK_S) for e in ring_ends)
    # Within a call, the next burst starts four seconds after the last one ended.
    gaps = [s - e for e, s in zip(ends, starts[1:], strict=False) if s - e < 5.0]
    assert len(gaps) == 1 + 2 + 3
    assert all(gap == pytest.approx(4.0, abs=BLOCK_S) for gap in gaps)


def test_caller_id_arrives_between_the_first_and_second_ring(demo_run: Run) -> None:
    events = [e for _, e in demo_run.events]
    for index, event in enumerate(events):
        if isinstance(event, CallerIdReceived):
            first_end, second_start = events[index - 1], events[index + 1]
            assert isinstance(first_end, RingEnd)
            assert isinstance(second_start, RingStart)
            assert 0.5 <= event.t - first_end.t <= 1.2
            assert event.caller_id.standard == "bell202-mdmf"


def test_caller_id_parses_back_to_the_scripted_caller(demo_run: Run) -> None:
    received = [e.caller_id for _, e in demo_run.events if isinstance(e, CallerIdReceived)]
    plumber, withheld, missed = demo_calls()
    assert len(received) == 3
    for caller_id, call in zip(received, (plumber, withheld, missed), strict=True):
        parsed = parse_message(caller_id.raw)
        assert parsed == caller_id
        wire = None if call.caller_number is None else call.caller_number.replace(" ", "").lstrip("+")
        assert parsed.number == wire
        assert parsed.name == call.caller_name
        assert parsed.number_absent == call.number_absent
    assert received[0].number == "12125550142"
    assert received[0].name == "ACME PLUMBING"
    assert (received[1].number, received[1].number_absent) == (None, "P")


def test_unanswered_call_has_no_off_hook(demo_run: Run) -> None:
    events = [e for _, e in demo_run.events]
    last_call = events[max(i for i, e in enumerate(events) if isinstance(e, OnHook)) + 1 :]
    assert sum(isinstance(e, RingStart) for e in last_call) == 4
    assert not any(isinstance(e, OffHook | OnHook | LoopDrop) for e in last_call)


def test_remote_hang_up_is_a_cpc_drop_then_the_local_phone_goes_down(demo_run: Run) -> None:
    events = [e for _, e in demo_run.events]
    drop = next(e for e in events if isinstance(e, LoopDrop))
    on_hook = events[events.index(drop) + 1]
    assert isinstance(on_hook, OnHook)
    assert drop.duration_s == pytest.approx(0.6)
    assert 0.2 < on_hook.t - drop.t < 3.0


def test_the_whole_demo_through_the_state_machine() -> None:
    # The real default voice (espeak-ng when installed) on the way through.
    line = SimLine(demo_calls(), clock=SimClock(EPOCH))
    policy = calls.CallPolicy()
    call, ended, t = calls.IDLE, [], EPOCH
    while (block := line.read_block()) is not None:
        t = block.t
        for event in block.events:
            call, actions = calls.step(call, event)
            ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
        call, actions = calls.tick(call, t, policy)
        ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
    # Even the missed call at the end is settled before the line is gone.
    assert call == calls.IDLE

    assert [c.answered for c in ended] == [True, True, False]
    assert [c.hangup_cause for c in ended] == [
        calls.HangupCause.REMOTE_LOOP_DROP,
        calls.HangupCause.LOCAL_ONHOOK,
        calls.HangupCause.UNANSWERED,
    ]
    assert [c.ring_count for c in ended] == [2, 3, 4]
    assert [c.caller_id and c.caller_id.number for c in ended] == [
        "12125550142",
        None,
        "16465550199",
    ]
    assert [c.caller_id and c.caller_id.name for c in ended] == ["ACME PLUMBING", None, "J SMITH"]
    assert ended[1].caller_id is not None
    assert ended[1].caller_id.number_absent == "P"


def test_repeated_demo_calls_stay_separate_calls() -> None:
    script = [demo_calls()[i % 3] for i in range(6)]
    line = SimLine(script, clock=SimClock(EPOCH), voice=SynthVoice())
    policy = calls.CallPolicy()
    call, causes = calls.IDLE, []
    while (block := line.read_block()) is not None:
        for event in block.events:
            call, actions = calls.step(call, event)
            causes += [a.call.hangup_cause for a in actions if isinstance(a, calls.CallEnded)]
        call, actions = calls.tick(call, block.t, policy)
        causes += [a.call.hangup_cause for a in actions if isinstance(a, calls.CallEnded)]
    once = [calls.HangupCause.REMOTE_LOOP_DROP, calls.HangupCause.LOCAL_ONHOOK, calls.HangupCause.UNANSWERED]
    assert causes == once * 2


def test_script_timeline_matches_the_events(demo_run: Run) -> None:
    timeline = demo_line().script_timeline()
    rings = [entry for entry in timeline if entry.kind == "ring"]
    starts = [e.t for _, e in demo_run.events if isinstance(e, RingStart)]
    assert [r.t_start for r in rings] == pytest.approx(starts)
    assert all(a.t_end == pytest.approx(b.t_start) for a, b in itertools.pairwise(timeline))
    assert timeline[0].t_start == EPOCH
    assert timeline[-1].t_end == pytest.approx(EPOCH + demo_run.blocks * BLOCK_S)
    assert {e.kind for e in timeline} == {
        "idle", "ring", "ring-off", "pause", "talk", "silence", "loop-open", "hangup"
    }  # fmt: skip


def test_answered_calls_have_eight_to_fifteen_seconds_of_talk_and_long_silences() -> None:
    timeline = demo_line().script_timeline()
    off_hooks = [i for i, e in enumerate(timeline) if e.kind == "pause" and timeline[i - 1].kind == "ring-off"]
    assert len(off_hooks) == 2
    for first in off_hooks:
        rest = timeline[first:]
        end = next(i for i, e in enumerate(rest) if e.kind in ("idle", "loop-open"))
        conversation = rest[:end]
        talk = sum(e.t_end - e.t_start for e in conversation if e.kind == "talk")
        assert 8.0 <= talk <= 15.0
        silences = [e for e in conversation if e.kind == "silence"]
        assert len(silences) >= 2
        assert all(e.t_end - e.t_start >= 2.0 for e in silences)


def _dbfs(blocks: list[LineBlock]) -> float:
    audio = np.concatenate([b.audio for b in blocks]).astype(np.float64)
    return float(20 * np.log10(max(np.sqrt(np.mean(audio**2)), 1e-9) / 32767))


def test_audio_levels_follow_the_script(demo_blocks: list[LineBlock]) -> None:
    timeline = demo_line().script_timeline()

    def blocks_in(kind: str) -> list[LineBlock]:
        spans = [(e.t_start, e.t_end) for e in timeline if e.kind == kind]
        return [b for b in demo_blocks if any(s <= b.t and b.t + BLOCK_S <= e for s, e in spans)]

    assert -26.0 < _dbfs(blocks_in("talk")) < -18.0
    assert -63.0 < _dbfs(blocks_in("idle")) < -57.0
    assert -63.0 < _dbfs(blocks_in("silence")) < -57.0
    assert _dbfs(blocks_in("ring")) < -75.0


def test_same_seed_gives_the_same_line_and_another_seed_does_not() -> None:
    def first_blocks(seed: int) -> bytes:
        line = demo_line(seed=seed)
        return b"".join(block.audio.tobytes() for block in (line.read_block() for _ in range(50)) if block)

    assert first_blocks(1) == first_blocks(1)
    assert first_blocks(1) != first_blocks(2)


def test_answering_on_the_first_ring_cuts_off_the_caller_id() -> None:
    line = SimLine([ScriptedCall(rings=1, talk=(("caller", "Hi"),))], clock=SimClock(EPOCH), voice=SynthVoice())
    names = kinds(read_all(line).events)
    assert names == ["RingStart", "RingEnd", "OffHook", "LoopDrop", "OnHook"]


def test_other_cadences_give_one_event_pair_per_burst() -> None:
    uk = ScriptedCall(rings=3, answered=False, cadence=(0.4, 0.2, 0.4, 2.0), talk=())
    run = read_all(SimLine([uk], clock=SimClock(EPOCH), voice=SynthVoice()))
    starts = [e.t for _, e in run.events if isinstance(e, RingStart)]
    assert len(starts) == 6
    assert np.diff(starts) == pytest.approx([0.6, 2.4, 0.6, 2.4, 0.6], abs=BLOCK_S)


def test_off_hook_without_rings_is_an_outgoing_call() -> None:
    call = ScriptedCall(rings=0, talk=(("callee", "Hello"),), hangup="local")
    names = kinds(read_all(SimLine([call], clock=SimClock(EPOCH), voice=SynthVoice())).events)
    assert names == ["OffHook", "OnHook"]


def test_hook_and_play_requests_are_recorded_with_the_line_time() -> None:
    line = demo_line()
    for _ in range(10):
        line.read_block()
    line.set_hook(True)
    line.play(np.zeros(800, dtype=np.int16))
    line.set_hook(False)
    t = EPOCH + 10 * BLOCK_S
    assert line.requests == [(t, "off-hook"), (t, "play 800 frames"), (t, "on-hook")]


def test_play_refuses_audio_that_is_not_int16_mono() -> None:
    with pytest.raises(LineError, match=r"play\(\) takes int16 mono audio, not float64"):
        demo_line().play(np.zeros(10))  # type: ignore[arg-type]


def test_closed_line_reads_none_and_reports_unhealthy() -> None:
    with demo_line() as line:
        assert line.read_block() is not None
        assert line.health().healthy
    assert line.read_block() is None
    assert not line.health().healthy


def _peak_bytes_reading(line: SimLine) -> tuple[int, int]:
    """Peak traced memory while reading the whole line, and the bytes of audio it gave."""
    tracemalloc.start()
    try:
        frames = 0
        while (block := line.read_block()) is not None:
            frames += len(block.audio)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, frames * 2


def test_memory_stays_flat_however_long_the_call() -> None:
    voice = SynthVoice()
    sentence = "we keep talking about the weather and the garden and the neighbours for a while"

    def line(turns: int) -> SimLine:
        talk = tuple((("caller", "callee")[i % 2], sentence) for i in range(turns))
        return SimLine([ScriptedCall(talk=talk)], clock=SimClock(EPOCH), voice=voice)

    short_peak, _ = _peak_bytes_reading(line(6))
    long_peak, long_audio = _peak_bytes_reading(line(120))
    # Twenty times the talk, the same working memory: one utterance at a time.
    assert long_peak < 1.2 * short_peak
    assert long_audio > 3 * long_peak


def test_realtime_clock_waits_until_the_time_asked() -> None:
    clock = RealtimeClock(start=EPOCH)
    assert EPOCH <= clock.now() < EPOCH + 60.0
    target = clock.now() + 0.03
    clock.sleep_until(target)
    assert clock.now() >= target


def test_realtime_line_starts_at_the_clock_time() -> None:
    clock = RealtimeClock(start=EPOCH)
    line = SimLine(demo_calls(), clock=clock, voice=SynthVoice())
    block = line.read_block()
    assert block is not None
    assert block.t == line.start_time
    assert clock.now() >= block.t + BLOCK_S


def test_sim_clock_never_goes_back() -> None:
    clock = SimClock(10.0)
    clock.sleep_until(12.0)
    clock.sleep_until(11.0)
    assert clock.now() == 12.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"number_absent": "X"}, "number_absent 'X' must be 'O' (unavailable), 'P' (private) or None"),
        ({"rings": 0, "answered": False}, "rings 0 is too few for an unanswered call"),
        ({"hangup": "both"}, "hangup 'both' must be 'remote', 'local', 'polarity', 'tone' or 'silence'"),
        ({"cadence": (2.0,)}, "cadence (2.0,) must be pairs of positive on/off seconds"),
        ({"gap_before_s": -1.0}, "gap_before_s -1.0 must be zero or more seconds"),
        ({"caller_number": "ACME"}, "caller_number 'ACME' has no digits"),
    ],
)
def test_impossible_scripts_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ScriptError) as info:
        ScriptedCall(**options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_block_size_must_be_whole_frames() -> None:
    with pytest.raises(ScriptError, match=r"block_ms 0 must be 1\.\.1000"):
        SimLine(demo_calls(), block_ms=0, voice=SynthVoice())
