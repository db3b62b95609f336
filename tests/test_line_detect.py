"""The GPIO board's detectors: optocoupler pulses become rings, the loop sense becomes hook changes and loop drops."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.config import LineSettings
from firmware.line.base import LineEvent, LoopDrop, OffHook, OnHook, PolarityReversal, RingEnd, RingStart
from firmware.line.cadence import load_cadences
from firmware.line.detect import POLARITY_DEBOUNCE_S, PULSE_GAP_S, HookSense, PolarityWatch, RingDetector
from tests.support.optoline import cadence_pulses, ring_pulses

T0 = 1_700_000_000.0
BLOCK_S = 0.02
SETTINGS = LineSettings()
CADENCES = load_cadences()
E = TypeVar("E")


def feed_rings(
    detector: RingDetector, edges: Sequence[tuple[float, bool]], until: float, poll_s: Sequence[float] = (BLOCK_S,)
) -> list[LineEvent]:
    """Edges in time order, with a poll after each block (block lengths cycle through ``poll_s``)."""
    events: list[LineEvent] = []
    t, i, step = edges[0][0] if edges else T0, 0, 0
    while t < until:
        t += poll_s[step % len(poll_s)]
        step += 1
        while i < len(edges) and edges[i][0] < t:
            events += detector.edge(*edges[i])
            i += 1
        events += detector.poll(t)
    return events


def feed(
    detector: HookSense | PolarityWatch, edges: Sequence[tuple[float, bool]], until: float
) -> list[tuple[float, LineEvent]]:
    """Edges in time order with a poll every block; each event with the poll time that produced it."""
    out: list[tuple[float, LineEvent]] = []
    t, i = T0, 0
    while t < until:
        t += BLOCK_S
        while i < len(edges) and edges[i][0] < t:
            out += [(edges[i][0], e) for e in detector.edge(*edges[i])]
            i += 1
        out += [(t, e) for e in detector.poll(t)]
    return out


def kinds(events: Sequence[LineEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# -- rings -------------------------------------------------------------------


@pytest.mark.parametrize("ring_hz", [20.0, 25.0])
@pytest.mark.parametrize("key", sorted(CADENCES))
def test_six_rings_of_every_cadence_count_six_and_name_the_cadence(key: str, ring_hz: float) -> None:
    cadence = CADENCES[key]
    edges, end = cadence_pulses(T0, cadence, 6, ring_hz=ring_hz, seed=7)
    events = feed_rings(RingDetector(SETTINGS), edges, end + 2.0)
    starts, ends = kinds(events, RingStart), kinds(events, RingEnd)
    assert len(starts) == len(ends) == 6
    # Each ring starts at the first pulse of its cycle.
    cycle_starts = [T0 + n * cadence.period_s for n in range(6)]
    assert [s.t for s in starts] == pytest.approx(cycle_starts, abs=0.001)
    # One ring lasts from the first pulse of the cycle to the last pulse of its last burst.
    heard = cadence.period_s - cadence.pattern[-1]
    assert all(e.duration_s == pytest.approx(heard, abs=0.03) for e in ends)
    # The cadence is known once one whole cycle has been measured.
    assert [e.cadence for e in ends] == [None, key, key, key, key, key]


def test_the_uk_double_ring_is_one_ring_of_a_second() -> None:
    edges, end = cadence_pulses(T0, CADENCES["GB"], 1, seed=1)
    events = feed_rings(RingDetector(SETTINGS), edges, end)
    assert [type(e) for e in events] == [RingStart, RingEnd]
    assert kinds(events, RingEnd)[0].duration_s == pytest.approx(1.0, abs=0.02)


def test_a_ring_ends_ring_end_ms_after_its_last_pulse() -> None:
    detector = RingDetector(SETTINGS)
    edges = ring_pulses(T0, 1.0, rng=random.Random(3))
    for t, active in edges:
        detector.edge(t, active)
    first, last = edges[0][0], edges[-1][0]
    assert detector.poll(last + 0.63) == []
    (end,) = detector.poll(last + 0.65)
    assert end == RingEnd(last, pytest.approx(last - first), None)


@given(
    trains=st.lists(
        st.tuples(
            st.floats(min_value=0.1, max_value=49.9),  # train length, ms
            st.integers(min_value=1, max_value=4),  # pulses in it
            st.floats(min_value=PULSE_GAP_S * 1000 + 1, max_value=3000),  # quiet after it, ms
        ),
        min_size=1,
        max_size=40,
    ),
    poll_s=st.lists(st.floats(min_value=0.001, max_value=BLOCK_S), min_size=1, max_size=5),
)
def test_trains_shorter_than_glitch_ms_never_ring(trains: list[tuple[float, int, float]], poll_s: list[float]) -> None:
    edges: list[tuple[float, bool]] = []
    t = T0
    for length_ms, pulses, quiet_ms in trains:
        width = length_ms / 1000 / (2 * pulses - 1)
        for k in range(pulses):
            edges += [(t + 2 * k * width, True), (t + (2 * k + 1) * width, False)]
        t += length_ms / 1000 + quiet_ms / 1000
    events = feed_rings(RingDetector(SETTINGS), edges, t + 1.0, poll_s)
    assert events == []


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(sorted(CADENCES)),
    rings=st.integers(min_value=1, max_value=6),
    ring_hz=st.sampled_from([20.0, 25.0]),
    seed=st.integers(min_value=0, max_value=2**16),
    poll_s=st.lists(st.floats(min_value=0.001, max_value=BLOCK_S), min_size=1, max_size=5),
)
def test_the_ring_count_is_exact_for_any_jitter_and_poll_timing(
    key: str, rings: int, ring_hz: float, seed: int, poll_s: list[float]
) -> None:
    edges, end = cadence_pulses(T0, CADENCES[key], rings, ring_hz=ring_hz, seed=seed)
    events = feed_rings(RingDetector(SETTINGS), edges, end + 1.0, poll_s)
    assert len(kinds(events, RingStart)) == len(kinds(events, RingEnd)) == rings
    if rings >= 2:
        assert kinds(events, RingEnd)[-1].cadence == key


def test_glitches_between_rings_neither_ring_nor_split_the_count() -> None:
    cadence = CADENCES["US"]
    edges, end = cadence_pulses(T0, cadence, 4, seed=2)
    # A 30 ms burst of noise in the middle of every 4 s silence.
    for n in range(4):
        noise = T0 + n * cadence.period_s + 4.0
        edges += [(noise, True), (noise + 0.01, False), (noise + 0.02, True), (noise + 0.03, False)]
    edges.sort()
    events = feed_rings(RingDetector(SETTINGS), edges, end + 1.0)
    assert len(kinds(events, RingStart)) == len(kinds(events, RingEnd)) == 4
    assert kinds(events, RingEnd)[-1].cadence == "US"


def test_a_pause_just_shorter_than_ring_end_ms_does_not_split_a_ring() -> None:
    rng = random.Random(6)
    first = ring_pulses(T0, 0.5, rng=rng)
    second = ring_pulses(first[-1][0] + 0.62, 0.5, rng=rng)
    events = feed_rings(RingDetector(SETTINGS), first + second, T0 + 3.0)
    assert [type(e) for e in events] == [RingStart, RingEnd]
    assert events[1].t == second[-1][0]


def test_pulses_for_less_than_ring_qualify_ms_do_not_ring() -> None:
    edges = ring_pulses(T0, 0.2, rng=random.Random(4))
    assert feed_rings(RingDetector(SETTINGS), edges, T0 + 2.0) == []


def test_a_steady_active_level_from_a_filtered_board_rings_too() -> None:
    events = feed_rings(RingDetector(SETTINGS), [(T0, True), (T0 + 2.0, False)], T0 + 3.0)
    assert events == [RingStart(T0), RingEnd(T0 + 2.0, pytest.approx(2.0), None)]


def test_the_ring_starts_once_ring_qualify_ms_of_pulses_have_come() -> None:
    detector = RingDetector(SETTINGS)
    events: list[LineEvent] = []
    for t, active in ring_pulses(T0, 2.0, rng=random.Random(5)):
        found = detector.edge(t, active)
        if found:
            assert t - T0 >= 0.25
            assert t - T0 < 0.25 + 0.025
        events += found
    assert events == [RingStart(pytest.approx(T0, abs=0.001))]


# -- hook and loop drops -------------------------------------------------------


def test_off_hook_through_contact_bounce_is_one_event_at_the_first_edge() -> None:
    bounce = [(T0 + 0.5, True), (T0 + 0.501, False), (T0 + 0.503, True), (T0 + 0.504, False), (T0 + 0.506, True)]
    out = feed(HookSense(SETTINGS), bounce, T0 + 2.0)
    assert [e for _, e in out] == [OffHook(T0 + 0.5)]
    # Decided once the contact has been still for offhook_debounce_ms.
    assert out[0][0] == pytest.approx(T0 + 0.506 + 0.05, abs=BLOCK_S)


def test_a_current_blip_shorter_than_the_debounce_is_not_off_hook() -> None:
    assert feed(HookSense(SETTINGS), [(T0 + 0.5, True), (T0 + 0.53, False)], T0 + 2.0) == []


def answered_then_open(open_ms: float, *, close: bool = True) -> list[LineEvent]:
    """A phone off-hook at T0+0.1, then the loop current stops at T0+1 for ``open_ms``."""
    edges = [(T0 + 0.1, True), (T0 + 1.0, False)]
    if close:
        edges.append((T0 + 1.0 + open_ms / 1000, True))
    return [e for _, e in feed(HookSense(SETTINGS), edges, T0 + 5.0)]


def test_a_500_ms_loop_open_is_a_loop_drop_stamped_when_the_loop_closed() -> None:
    assert answered_then_open(500) == [OffHook(T0 + 0.1), LoopDrop(T0 + 1.5, pytest.approx(0.5))]


def test_a_40_ms_loop_open_is_ignored() -> None:
    assert answered_then_open(40) == [OffHook(T0 + 0.1)]


def test_a_150_ms_loop_open_is_too_short_for_cpc_and_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="firmware.line.detect"):
        assert answered_then_open(150) == [OffHook(T0 + 0.1)]
    assert "loop open of 150 ms is too short for a CPC disconnect" in caplog.text


def test_a_loop_open_past_cpc_max_is_the_local_phone_hanging_up() -> None:
    assert answered_then_open(1500, close=False) == [OffHook(T0 + 0.1), OnHook(T0 + 1.0)]


def test_a_phone_hung_up_and_picked_up_again_is_on_hook_then_off_hook() -> None:
    assert answered_then_open(1500) == [OffHook(T0 + 0.1), OnHook(T0 + 1.0), OffHook(T0 + 2.5)]


def test_a_close_that_begins_before_cpc_max_is_still_a_loop_drop() -> None:
    # The loop closes 880 ms into the open; the close settles after cpc_max_ms has passed.
    assert answered_then_open(880) == [OffHook(T0 + 0.1), LoopDrop(T0 + 1.88, pytest.approx(0.88))]


def test_a_loop_drop_leaves_the_phone_off_hook() -> None:
    hook = HookSense(SETTINGS)
    feed(hook, [(T0 + 0.1, True), (T0 + 1.0, False), (T0 + 1.5, True)], T0 + 3.0)
    assert hook.off_hook


# -- polarity --------------------------------------------------------------------


def test_a_reversal_is_reported_at_its_first_edge_once_settled() -> None:
    out = feed(PolarityWatch(SETTINGS), [(T0 + 1.0, True), (T0 + 1.002, False), (T0 + 1.004, True)], T0 + 2.0)
    assert [e for _, e in out] == [PolarityReversal(T0 + 1.0)]
    assert out[0][0] - (T0 + 1.004 + POLARITY_DEBOUNCE_S) <= BLOCK_S


def test_a_polarity_glitch_is_not_a_reversal() -> None:
    assert feed(PolarityWatch(SETTINGS), [(T0 + 1.0, True), (T0 + 1.005, False)], T0 + 2.0) == []


def test_reversing_back_to_normal_is_a_reversal_too() -> None:
    watch = PolarityWatch(SETTINGS, reversed=True)
    assert [e for _, e in feed(watch, [(T0 + 1.0, False)], T0 + 2.0)] == [PolarityReversal(T0 + 1.0)]
    assert not watch.reversed


def test_an_on_hook_reversal_opens_the_caller_id_window_for_pre_ring_window_s() -> None:
    watch = PolarityWatch(SETTINGS)
    assert not watch.listening(T0 + 0.5)
    feed(watch, [(T0 + 1.0, True)], T0 + 1.2)
    assert watch.listening(T0 + 1.2)
    assert watch.listening(T0 + 1.0 + SETTINGS.pre_ring_window_s)
    assert not watch.listening(T0 + 1.1 + SETTINGS.pre_ring_window_s)


def test_no_caller_id_window_off_hook() -> None:
    watch = PolarityWatch(SETTINGS)
    watch.set_on_hook(False)
    feed(watch, [(T0 + 1.0, True)], T0 + 1.2)
    assert not watch.listening(T0 + 1.2)
    # Going on-hook later does not open a window for a reversal that happened off-hook.
    watch.set_on_hook(True)
    assert not watch.listening(T0 + 1.3)
