"""The call state machine: what a line event means for the call in progress.

Pure transitions: :func:`step` takes the current :class:`Call` and one line event,
:func:`tick` takes the current call and the time; both return the next call and
the actions the caller should carry out (start or stop recording, file the ended
call). No clocks, threads or I/O live here, and no event ever raises: a line can
say surprising things and the recorder must keep going.

When a call ends, the returned state is :data:`IDLE` again; the finished call
travels inside the :class:`CallEnded` action.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

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
    ToneDetected,
)

__all__ = [
    "IDLE",
    "PRE_RING_CALLER_ID_MAX_AGE_S",
    "Action",
    "Call",
    "CallEnded",
    "CallPolicy",
    "CallState",
    "HangupCause",
    "PlayGreeting",
    "ReleaseLine",
    "StartRecording",
    "StopRecording",
    "TakeLine",
    "heard",
    "line_lost",
    "step",
    "tick",
]

# Caller ID sent before ringing (UK, much of Europe) arrives well under a second
# before the first ring; anything older belongs to no call.
PRE_RING_CALLER_ID_MAX_AGE_S = 10.0


class CallState(enum.Enum):
    """Where a call is."""

    IDLE = "idle"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class HangupCause(enum.StrEnum):
    """Why a call ended."""

    LOCAL_ONHOOK = "local-onhook"
    REMOTE_LOOP_DROP = "remote-loop-drop"
    REMOTE_POLARITY = "remote-polarity-reversal"
    REMOTE_TONE = "remote-tone"
    SILENCE = "silence-timeout"
    MAX_LENGTH = "max-length"
    UNANSWERED = "unanswered"
    LINE_LOST = "line-lost"
    # The recorder stopped mid-call (power cut, crash); the audio up to then was recovered.
    RECORDER_STOPPED = "recorder-stopped"


# Tones that mean the far end has gone: the exchange plays them after a hang-up.
HANGUP_TONES = frozenset({"busy", "reorder", "dial", "howler", "sit"})


@dataclass(frozen=True, slots=True)
class Call:
    """What is known about the call on the line so far."""

    state: CallState
    ring_count: int = 0
    first_ring_at: float | None = None
    # The latest ring edge: a burst's end once it has ended, its start while it rings.
    last_ring_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    caller_id: CallerId | None = None
    hangup_cause: HangupCause | None = None
    # When the caller ID arrived, to drop one that came long before any ring.
    caller_id_at: float | None = None
    # Who took the call: "phone" (a phone on the line) or "machine" (linerec answered).
    answered_by: str | None = None
    # linerec holds the line off-hook (it answered), and must let it go when the call ends.
    line_taken: bool = False
    # The last time the line carried sound, for the silence timeout.
    last_sound_at: float | None = None
    # Polarity reversals since the call was answered (the first one of an outgoing call is the answer).
    reversals: int = 0
    # Call-waiting alerts heard during the call (a second caller; the call goes on).
    call_waiting: int = 0

    @property
    def answered(self) -> bool:
        """Whether the call was picked up."""
        return self.answered_at is not None


IDLE = Call(CallState.IDLE)


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start recording: the call was answered at ``t``."""

    t: float


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop recording: the conversation ended at ``t``."""

    t: float


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call is over; ``call`` holds everything known about it."""

    t: float
    call: Call


@dataclass(frozen=True, slots=True)
class TakeLine:
    """Answering-machine mode: take the line off-hook at ``t``."""

    t: float


@dataclass(frozen=True, slots=True)
class PlayGreeting:
    """Answering-machine mode: play the greeting (and the recording notice) now."""

    t: float


@dataclass(frozen=True, slots=True)
class ReleaseLine:
    """Answering-machine mode: put the line back on-hook at ``t``."""

    t: float


Action = StartRecording | StopRecording | CallEnded | TakeLine | PlayGreeting | ReleaseLine


@dataclass(frozen=True)
class CallPolicy:
    """Timeouts and modes of the state machine."""

    # No ring for this long after the last ring ended means the caller gave up.
    ring_timeout_s: float = 8.0
    # No sound on the line for this long during a call: the far end has gone (None: never).
    silence_timeout_s: float | None = 30.0
    max_call_s: float = 4 * 3600.0
    # A polarity reversal during a call means the far end hung up (most exchanges that reverse).
    polarity_hangup: bool = True
    answering_machine: bool = False
    answer_after_rings: int = 4
    # Messages left on the answering machine: shorter limits than a conversation.
    message_max_s: float = 120.0
    message_silence_s: float = 6.0

    def __post_init__(self) -> None:
        for name in ("ring_timeout_s", "max_call_s", "message_max_s", "message_silence_s"):
            value = getattr(self, name)
            if not value > 0:
                msg = f"{name} must be a positive number of seconds, not {value!r}"
                raise ValueError(msg)
        if self.silence_timeout_s is not None and not self.silence_timeout_s > 0:
            msg = f"silence_timeout_s must be a positive number of seconds or None, not {self.silence_timeout_s!r}"
            raise ValueError(msg)
        if self.answer_after_rings < 1:
            msg = f"answer_after_rings must be 1 or more, not {self.answer_after_rings!r}"
            raise ValueError(msg)


DEFAULT_POLICY = CallPolicy()


_NO_ACTIONS: tuple[Action, ...] = ()


def _fresh_caller_id(call: Call, t: float) -> tuple[CallerId | None, float | None]:
    """The idle line's caller ID if it is recent enough to belong to a call starting at ``t``."""
    if call.caller_id is None or call.caller_id_at is None:
        return None, None
    if t - call.caller_id_at > PRE_RING_CALLER_ID_MAX_AGE_S:
        return None, None
    return call.caller_id, call.caller_id_at


def _end(call: Call, t: float, cause: HangupCause) -> tuple[Call, tuple[Action, ...]]:
    ended = dataclasses.replace(call, state=CallState.ENDED, ended_at=t, hangup_cause=cause)
    if call.state is not CallState.ANSWERED:
        return IDLE, (CallEnded(t, ended),)
    if call.line_taken:
        return IDLE, (StopRecording(t), ReleaseLine(t), CallEnded(t, ended))
    return IDLE, (StopRecording(t), CallEnded(t, ended))


def _answer(call: Call, t: float, by: str = "phone") -> tuple[Call, tuple[Action, ...]]:
    machine = by == "machine"
    answered = dataclasses.replace(
        call, state=CallState.ANSWERED, answered_at=t, answered_by=by, last_sound_at=t, line_taken=machine
    )
    if machine:
        return answered, (TakeLine(t), StartRecording(t), PlayGreeting(t))
    return answered, (StartRecording(t),)


def _step_idle(call: Call, event: LineEvent) -> tuple[Call, tuple[Action, ...]]:
    match event:
        case RingStart(t=t):
            caller_id, caller_id_at = _fresh_caller_id(call, t)
            ringing = Call(
                CallState.RINGING,
                ring_count=1,
                first_ring_at=t,
                last_ring_at=t,
                caller_id=caller_id,
                caller_id_at=caller_id_at,
            )
            return ringing, _NO_ACTIONS
        case CallerIdReceived(t=t, caller_id=caller_id):
            # Data before ringing: keep it so the coming ring carries it.
            return Call(CallState.IDLE, caller_id=caller_id, caller_id_at=t), _NO_ACTIONS
        case OffHook(t=t):
            # Picked up without ringing: an outgoing call, recorded all the same.
            caller_id, caller_id_at = _fresh_caller_id(call, t)
            answered = Call(CallState.IDLE, caller_id=caller_id, caller_id_at=caller_id_at)
            return _answer(answered, t)
        case _:
            return call, _NO_ACTIONS


def _step_ringing(call: Call, event: LineEvent, policy: CallPolicy) -> tuple[Call, tuple[Action, ...]]:
    match event:
        case RingStart(t=t):
            return dataclasses.replace(call, ring_count=call.ring_count + 1, last_ring_at=t), _NO_ACTIONS
        case RingEnd(t=t) if policy.answering_machine and call.ring_count >= policy.answer_after_rings:
            # Answer in the silence after the ring, as a person would.
            return _answer(dataclasses.replace(call, last_ring_at=t), t, by="machine")
        case RingEnd(t=t):
            return dataclasses.replace(call, last_ring_at=t), _NO_ACTIONS
        case CallerIdReceived(t=t, caller_id=caller_id):
            return dataclasses.replace(call, caller_id=caller_id, caller_id_at=t), _NO_ACTIONS
        case OffHook(t=t):
            return _answer(call, t)
        case BackendHealth(t=t, healthy=False):
            return _end(call, t, HangupCause.UNANSWERED)
        case _:
            return call, _NO_ACTIONS


def _step_answered(call: Call, event: LineEvent, policy: CallPolicy) -> tuple[Call, tuple[Action, ...]]:
    match event:
        case OnHook(t=t):
            return _end(call, t, HangupCause.LOCAL_ONHOOK)
        case LoopDrop(t=t):
            return _end(call, t, HangupCause.REMOTE_LOOP_DROP)
        case PolarityReversal(t=t):
            reversed_call = dataclasses.replace(call, reversals=call.reversals + 1)
            # On a call placed from here the exchange reverses once when the far end answers.
            answer_supervision = call.ring_count == 0 and call.reversals == 0
            if policy.polarity_hangup and not answer_supervision:
                return _end(reversed_call, t, HangupCause.REMOTE_POLARITY)
            return reversed_call, _NO_ACTIONS
        case ToneDetected(t=t, tone=tone) if tone in HANGUP_TONES:
            return _end(call, t, HangupCause.REMOTE_TONE)
        case ToneDetected(tone="call-waiting"):
            return dataclasses.replace(call, call_waiting=call.call_waiting + 1), _NO_ACTIONS
        case OffHook() if call.answered_by == "machine":
            # Someone picked up a phone while the machine took a message: now it is a conversation.
            return dataclasses.replace(call, answered_by="phone"), _NO_ACTIONS
        case BackendHealth(t=t, healthy=False):
            return _end(call, t, HangupCause.LINE_LOST)
        case _:
            # Rings and caller ID now are call waiting: the call in progress goes on.
            return call, _NO_ACTIONS


def step(call: Call, event: LineEvent, policy: CallPolicy = DEFAULT_POLICY) -> tuple[Call, tuple[Action, ...]]:
    """The call after ``event``, and what to do about it.

    An unhealthy :class:`BackendHealth` ends an answered call as ``LINE_LOST``
    and a ringing one as ``UNANSWERED`` (nobody picked it up). Events that make no
    sense in the current state are ignored.
    """
    if call.state is CallState.RINGING:
        return _step_ringing(call, event, policy)
    if call.state is CallState.ANSWERED:
        return _step_answered(call, event, policy)
    # An ENDED call handed back in is treated like the idle line it leads to.
    return _step_idle(call, event)


def tick(call: Call, now: float, policy: CallPolicy) -> tuple[Call, tuple[Action, ...]]:
    """The call at time ``now``: timeouts end it.

    A ringing call whose rings stopped ends as unanswered; an answered one ends
    after a silence too long or at the maximum length (shorter limits apply to a
    message the answering machine takes).
    """
    if call.state is CallState.ANSWERED and call.answered_at is not None:
        return _tick_answered(call, now, policy)
    if call.state is CallState.RINGING:
        last = call.last_ring_at if call.last_ring_at is not None else call.first_ring_at
        if last is not None and now - last > policy.ring_timeout_s:
            return _end(call, now, HangupCause.UNANSWERED)
        return call, _NO_ACTIONS
    if call.state is CallState.IDLE and call.caller_id is not None:
        if _fresh_caller_id(call, now)[0] is None:
            return IDLE, _NO_ACTIONS
        return call, _NO_ACTIONS
    if call.state is CallState.ENDED:
        return IDLE, _NO_ACTIONS
    return call, _NO_ACTIONS


def _tick_answered(call: Call, now: float, policy: CallPolicy) -> tuple[Call, tuple[Action, ...]]:
    assert call.answered_at is not None
    machine = call.answered_by == "machine"
    limit = policy.message_max_s if machine else policy.max_call_s
    if now - call.answered_at >= limit:
        return _end(call, now, HangupCause.MAX_LENGTH)
    quiet = policy.message_silence_s if machine else policy.silence_timeout_s
    last = call.last_sound_at if call.last_sound_at is not None else call.answered_at
    if quiet is not None and now - last >= quiet:
        return _end(call, now, HangupCause.SILENCE)
    return call, _NO_ACTIONS


def heard(call: Call, t: float) -> Call:
    """The call after sound was heard on the line at ``t`` (it resets the silence timeout)."""
    if call.state is not CallState.ANSWERED:
        return call
    return dataclasses.replace(call, last_sound_at=t)


def line_lost(call: Call, t: float) -> tuple[Call, tuple[Action, ...]]:
    """The call when the backend is gone for good (``read_block`` returned None).

    An answered call ends as ``LINE_LOST``; a ringing one was never picked up, so
    it ends as ``UNANSWERED``.
    """
    if call.state is CallState.ANSWERED:
        return _end(call, t, HangupCause.LINE_LOST)
    if call.state is CallState.RINGING:
        return _end(call, t, HangupCause.UNANSWERED)
    return IDLE, _NO_ACTIONS
