"""How a call ends when the far end goes: loop drop, polarity reversal, tone, silence, length; and the machine."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from firmware.calls import (
    IDLE,
    Action,
    Call,
    CallEnded,
    CallPolicy,
    CallState,
    HangupCause,
    PlayGreeting,
    ReleaseLine,
    StartRecording,
    StopRecording,
    TakeLine,
    heard,
    step,
    tick,
)
from firmware.line.base import LineEvent, LoopDrop, OffHook, OnHook, PolarityReversal, RingEnd, RingStart, ToneDetected

POLICY = CallPolicy(silence_timeout_s=30.0, max_call_s=600.0)


def play(events: Iterable[LineEvent], policy: CallPolicy = POLICY, call: Call = IDLE) -> tuple[Call, list[Action]]:
    actions: list[Action] = []
    for event in events:
        call, more = step(call, event, policy)
        actions += more
        call, more = tick(call, event.t, policy)
        actions += more
    return call, actions


def ended(actions: list[Action]) -> list[Call]:
    return [a.call for a in actions if isinstance(a, CallEnded)]


def answered(policy: CallPolicy = POLICY) -> Call:
    call, _ = play([RingStart(100.0), RingEnd(102.0, 2.0), OffHook(104.0)], policy)
    assert call.state is CallState.ANSWERED
    return call


def test_a_polarity_reversal_during_a_call_is_a_remote_hangup() -> None:
    call, actions = play([PolarityReversal(130.0)], call=answered())
    assert call == IDLE
    [done] = ended(actions)
    assert (done.hangup_cause, done.ended_at, done.reversals) == (HangupCause.REMOTE_POLARITY, 130.0, 1)
    assert isinstance(actions[0], StopRecording)


def test_polarity_hangup_can_be_switched_off_for_exchanges_that_reverse_for_other_reasons() -> None:
    policy = CallPolicy(polarity_hangup=False)
    call, actions = play([PolarityReversal(130.0)], policy, call=answered(policy))
    assert call.state is CallState.ANSWERED
    assert actions == []


def test_on_an_outgoing_call_the_first_reversal_is_the_answer_and_the_second_the_hangup() -> None:
    call, actions = play([OffHook(10.0), PolarityReversal(25.0)])
    assert call.state is CallState.ANSWERED
    assert actions == [StartRecording(10.0)]
    call, actions = play([PolarityReversal(90.0)], call=call)
    assert ended(actions)[0].hangup_cause is HangupCause.REMOTE_POLARITY


@pytest.mark.parametrize("tone", ["busy", "reorder", "dial", "howler", "sit"])
def test_a_call_progress_tone_during_a_call_is_a_remote_hangup(tone: str) -> None:
    _, actions = play([ToneDetected(150.0, tone)], call=answered())
    assert ended(actions)[0].hangup_cause is HangupCause.REMOTE_TONE


def test_call_waiting_keeps_one_call_going() -> None:
    call = answered()
    events = [ToneDetected(120.0, "call-waiting"), ToneDetected(120.1, "cas"), RingStart(121.0), RingEnd(121.5, 0.5)]
    call, actions = play([*events, ToneDetected(140.0, "call-waiting")], call=heard(call, 119.0))
    assert (call.state, call.call_waiting, call.ring_count) == (CallState.ANSWERED, 2, 1)
    assert actions == []
    _, actions = play([LoopDrop(150.0, 0.6)], call=call)
    [done] = ended(actions)
    assert (done.call_waiting, done.hangup_cause) == (2, HangupCause.REMOTE_LOOP_DROP)


def test_silence_for_the_timeout_ends_the_call_and_sound_resets_it() -> None:
    call = answered()
    call = heard(call, 120.0)
    assert tick(call, 149.9, POLICY)[0].state is CallState.ANSWERED
    call, actions = tick(call, 150.0, POLICY)
    assert call == IDLE
    [done] = ended(list(actions))
    assert (done.hangup_cause, done.ended_at) == (HangupCause.SILENCE, 150.0)


def test_silence_is_counted_from_the_answer_until_sound_is_heard() -> None:
    _, actions = tick(answered(), 134.0, POLICY)
    assert ended(list(actions))[0].hangup_cause is HangupCause.SILENCE


def test_the_maximum_call_length_ends_even_a_lively_call() -> None:
    call = heard(answered(), 703.0)
    _, actions = tick(call, 704.0, POLICY)
    assert ended(list(actions))[0].hangup_cause is HangupCause.MAX_LENGTH


def test_heard_changes_nothing_outside_an_answered_call() -> None:
    assert heard(IDLE, 5.0) is IDLE


MACHINE = CallPolicy(answering_machine=True, answer_after_rings=3, message_max_s=60.0, message_silence_s=5.0)


def rings(n: int, start: float = 100.0) -> list[LineEvent]:
    events: list[LineEvent] = []
    for i in range(n):
        t = start + 6.0 * i
        events += [RingStart(t), RingEnd(t + 2.0, 2.0)]
    return events


def test_the_answering_machine_answers_after_n_rings_and_plays_the_greeting() -> None:
    call, actions = play(rings(3), MACHINE)
    assert call.state is CallState.ANSWERED
    assert call.answered_by == "machine"
    assert actions == [TakeLine(114.0), StartRecording(114.0), PlayGreeting(114.0)]


def test_the_answering_machine_does_not_answer_before_n_rings() -> None:
    call, actions = play(rings(2), MACHINE)
    assert (call.state, actions) == (CallState.RINGING, [])


def test_a_message_ends_on_silence_and_the_machine_hangs_up() -> None:
    call, _ = play(rings(3), MACHINE)
    call = heard(call, 125.0)
    call, actions = tick(call, 130.0, MACHINE)
    assert call == IDLE
    assert [type(a) for a in actions] == [StopRecording, ReleaseLine, CallEnded]
    assert ended(list(actions))[0].hangup_cause is HangupCause.SILENCE


def test_a_message_ends_at_its_maximum_length() -> None:
    call, _ = play(rings(3), MACHINE)
    call = heard(call, 173.0)
    _, actions = tick(call, 174.0, MACHINE)
    assert ended(list(actions))[0].hangup_cause is HangupCause.MAX_LENGTH


def test_a_message_ends_when_the_caller_hangs_up() -> None:
    call, _ = play(rings(3), MACHINE)
    _, actions = play([LoopDrop(120.0, 0.5)], MACHINE, call=call)
    assert [type(a) for a in actions] == [StopRecording, ReleaseLine, CallEnded]


def test_picking_up_a_phone_during_the_message_turns_it_into_a_conversation() -> None:
    call, _ = play(rings(3), MACHINE)
    call, actions = play([OffHook(118.0)], MACHINE, call=call)
    assert (call.answered_by, actions) == ("phone", [])
    call = heard(call, 200.0)
    assert tick(call, 210.0, MACHINE)[0].state is CallState.ANSWERED  # no message limits any more
    _, actions = play([OnHook(400.0)], MACHINE, call=call)
    # linerec still holds the line it took: it lets go when the call ends.
    assert [type(a) for a in actions] == [StopRecording, ReleaseLine, CallEnded]


@pytest.mark.parametrize(
    "bad",
    [
        {"silence_timeout_s": 0},
        {"max_call_s": -1},
        {"answer_after_rings": 0},
        {"message_silence_s": 0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        CallPolicy(**bad)  # type: ignore[arg-type]
