"""The call state machine: every transition, timeouts, and resilience to odd event orders."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.calls import (
    IDLE,
    Action,
    Call,
    CallEnded,
    CallPolicy,
    CallState,
    HangupCause,
    StartRecording,
    StopRecording,
    line_lost,
    step,
    tick,
)
from firmware.line.base import (
    BackendHealth,
    CallerId,
    CallerIdReceived,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    PolarityReversal,
    RingEnd,
    RingStart,
)

ACME = CallerId("2125550142", "ACME PLUMBING", None, None, "bell202-mdmf", b"\x80")
UK = CallerId("02079460000", None, None, "O", "etsi-v23", b"\x80")
POLICY = CallPolicy()


def run(events: Iterable[LineEvent], call: Call = IDLE) -> tuple[Call, list[Action]]:
    actions: list[Action] = []
    for event in events:
        call, new = step(call, event)
        actions.extend(new)
    return call, actions


def ringing_call() -> Call:
    call, _ = run([RingStart(100.0), RingEnd(102.0, 2.0), CallerIdReceived(102.8, ACME)])
    return call


def answered_call() -> Call:
    call, _ = step(ringing_call(), OffHook(110.0))
    return call


def test_first_ring_starts_ringing() -> None:
    call, actions = step(IDLE, RingStart(100.0))
    assert call == Call(CallState.RINGING, ring_count=1, first_ring_at=100.0, last_ring_at=100.0)
    assert actions == ()


def test_further_rings_are_counted_and_ring_end_is_tracked() -> None:
    call, actions = run([RingStart(100.0), RingEnd(102.0, 2.0), RingStart(106.0), RingEnd(108.0, 2.0)])
    assert (call.state, call.ring_count) == (CallState.RINGING, 2)
    assert (call.first_ring_at, call.last_ring_at) == (100.0, 108.0)
    assert actions == []


def test_caller_id_between_rings_is_kept() -> None:
    call = ringing_call()
    assert call.caller_id == ACME
    assert call.state is CallState.RINGING


def test_caller_id_before_ringing_waits_on_the_idle_line_for_the_ring() -> None:
    call, _ = run([PolarityReversal(99.0), CallerIdReceived(99.5, UK)])
    assert call.state is CallState.IDLE
    assert call.caller_id == UK
    call, _ = step(call, RingStart(100.0))
    assert (call.state, call.caller_id) == (CallState.RINGING, UK)


def test_stale_caller_id_is_dropped_at_the_next_ring() -> None:
    call, _ = run([CallerIdReceived(50.0, UK), RingStart(100.0)])
    assert call.state is CallState.RINGING
    assert call.caller_id is None


def test_stale_caller_id_is_forgotten_by_tick() -> None:
    call, _ = step(IDLE, CallerIdReceived(50.0, UK))
    assert tick(call, 55.0, POLICY)[0] == call
    assert tick(call, 61.0, POLICY)[0] == IDLE


def test_off_hook_while_ringing_answers_and_starts_recording() -> None:
    call, actions = step(ringing_call(), OffHook(110.0))
    assert call.state is CallState.ANSWERED
    assert call.answered
    assert call.answered_at == 110.0
    assert call.caller_id == ACME
    assert actions == (StartRecording(110.0),)


def test_off_hook_without_ringing_is_an_answered_call_with_no_rings() -> None:
    call, actions = step(IDLE, OffHook(5.0))
    assert (call.state, call.ring_count, call.answered_at) == (CallState.ANSWERED, 0, 5.0)
    assert actions == (StartRecording(5.0),)


def test_local_hang_up_ends_the_call() -> None:
    call, actions = step(answered_call(), OnHook(130.0))
    assert call == IDLE
    stop, ended = actions
    assert stop == StopRecording(130.0)
    assert isinstance(ended, CallEnded)
    assert ended.t == 130.0
    assert ended.call.state is CallState.ENDED
    assert ended.call.hangup_cause is HangupCause.LOCAL_ONHOOK
    assert (ended.call.ended_at, ended.call.ring_count, ended.call.caller_id) == (130.0, 1, ACME)


def test_loop_drop_ends_the_call_as_remote_hang_up() -> None:
    call, actions = step(answered_call(), LoopDrop(130.6, 0.6))
    assert call == IDLE
    assert actions[0] == StopRecording(130.6)
    ended = actions[1]
    assert isinstance(ended, CallEnded)
    assert ended.call.hangup_cause is HangupCause.REMOTE_LOOP_DROP


def test_on_hook_after_a_loop_drop_is_ignored() -> None:
    call, _ = step(answered_call(), LoopDrop(130.6, 0.6))
    assert step(call, OnHook(131.6)) == (IDLE, ())


def test_call_waiting_rings_do_not_restart_the_call() -> None:
    call = answered_call()
    after, actions = run([RingStart(120.0), RingEnd(120.3, 0.3), CallerIdReceived(120.5, UK)], call)
    assert after == call
    assert actions == []


def test_ringing_stops_after_the_timeout_as_unanswered() -> None:
    call, _ = run([RingStart(100.0), RingEnd(102.0, 2.0), RingStart(106.0), RingEnd(108.0, 2.0)])
    assert tick(call, 116.0, POLICY) == (call, ())
    new, actions = tick(call, 116.5, POLICY)
    assert new == IDLE
    (ended,) = actions
    assert isinstance(ended, CallEnded)
    assert ended.call.hangup_cause is HangupCause.UNANSWERED
    assert not ended.call.answered
    assert (ended.call.ring_count, ended.call.ended_at) == (2, 116.5)


def test_ring_timeout_is_set_by_the_policy() -> None:
    call, _ = run([RingStart(100.0), RingEnd(102.0, 2.0)])
    assert tick(call, 105.0, CallPolicy(ring_timeout_s=2.5))[0] == IDLE


def test_policy_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="ring_timeout_s must be a positive number of seconds, not 0"):
        CallPolicy(ring_timeout_s=0)


def test_answered_call_has_no_ring_timeout() -> None:
    call = answered_call()
    no_silence_limit = CallPolicy(ring_timeout_s=POLICY.ring_timeout_s, silence_timeout_s=None)
    assert tick(call, 10_000.0, no_silence_limit) == (call, ())


def test_unhealthy_backend_ends_an_answered_call_as_line_lost() -> None:
    call, actions = step(answered_call(), BackendHealth(125.0, healthy=False, detail="usb gone"))
    assert call == IDLE
    assert isinstance(actions[1], CallEnded)
    assert actions[1].call.hangup_cause is HangupCause.LINE_LOST


def test_healthy_report_changes_nothing() -> None:
    call = answered_call()
    assert step(call, BackendHealth(125.0, healthy=True, detail="ok")) == (call, ())


def test_line_lost_ends_an_answered_call_as_line_lost() -> None:
    call, actions = line_lost(answered_call(), 140.0)
    assert call == IDLE
    assert [type(a) for a in actions] == [StopRecording, CallEnded]
    assert isinstance(actions[1], CallEnded)
    assert actions[1].call.hangup_cause is HangupCause.LINE_LOST
    assert line_lost(IDLE, 140.0) == (IDLE, ())


def test_line_lost_while_ringing_is_an_unanswered_call() -> None:
    call, actions = line_lost(ringing_call(), 104.0)
    assert call == IDLE
    (ended,) = actions
    assert isinstance(ended, CallEnded)
    assert ended.call.hangup_cause is HangupCause.UNANSWERED
    assert ended.call.caller_id == ACME


def test_unhealthy_backend_while_ringing_ends_it_unanswered() -> None:
    call, actions = step(ringing_call(), BackendHealth(104.0, healthy=False, detail="usb gone"))
    assert call == IDLE
    (ended,) = actions
    assert isinstance(ended, CallEnded)
    assert ended.call.hangup_cause is HangupCause.UNANSWERED


@pytest.mark.parametrize(
    "event",
    [OnHook(1.0), LoopDrop(1.0, 0.6), RingEnd(1.0, 2.0), PolarityReversal(1.0)],
)
def test_unexpected_events_on_the_idle_line_are_ignored(event: LineEvent) -> None:
    assert step(IDLE, event) == (IDLE, ())


@pytest.mark.parametrize("event", [OnHook(103.0), LoopDrop(103.0, 0.6), PolarityReversal(103.0)])
def test_hang_up_signals_while_ringing_are_ignored(event: LineEvent) -> None:
    call = ringing_call()
    assert step(call, event) == (call, ())


def test_second_off_hook_while_answered_is_ignored() -> None:
    call = answered_call()
    assert step(call, OffHook(111.0)) == (call, ())


def test_an_ended_call_handed_back_behaves_as_idle() -> None:
    ended = Call(CallState.ENDED, hangup_cause=HangupCause.LOCAL_ONHOOK)
    assert step(ended, RingStart(5.0))[0].state is CallState.RINGING
    assert tick(ended, 5.0, POLICY) == (IDLE, ())


# --- random event sequences -------------------------------------------------------------

_event_kinds = st.sampled_from(["ring", "ring-end", "cid", "off", "on", "drop", "reverse", "sick", "well", "tick"])


def _make(kind: str, t: float) -> LineEvent | None:
    events: dict[str, LineEvent] = {
        "ring": RingStart(t),
        "ring-end": RingEnd(t, 2.0),
        "cid": CallerIdReceived(t, ACME),
        "off": OffHook(t),
        "on": OnHook(t),
        "drop": LoopDrop(t, 0.6),
        "reverse": PolarityReversal(t),
        "sick": BackendHealth(t, healthy=False, detail="x"),
        "well": BackendHealth(t, healthy=True, detail="ok"),
    }
    return events.get(kind)


@settings(max_examples=300)
@given(st.lists(st.tuples(_event_kinds, st.floats(0.0, 20.0)), max_size=60))
def test_random_events_never_raise_and_end_back_at_idle(
    script: list[tuple[str, float]],
) -> None:
    call, t = IDLE, 1_700_000_000.0
    started = stopped = answered_ended = 0
    for kind, gap in script:
        t += gap
        event = _make(kind, t)
        call, actions = tick(call, t, POLICY) if event is None else step(call, event)
        assert call.state is not CallState.ENDED
        for action in actions:
            if isinstance(action, StartRecording):
                assert started == stopped
                started += 1
            elif isinstance(action, StopRecording):
                stopped += 1
                assert started == stopped
            else:
                assert call == IDLE
                assert action.call.state is CallState.ENDED
                assert action.call.hangup_cause is not None
                answered_ended += action.call.answered
    call, actions = line_lost(call, t + 1.0)
    stopped += sum(isinstance(a, StopRecording) for a in actions)
    answered_ended += sum(isinstance(a, CallEnded) and a.call.answered for a in actions)
    # Every recording started is stopped, and belongs to exactly one answered call.
    assert call == IDLE
    assert started == stopped == answered_ended
