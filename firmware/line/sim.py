"""The simulated line: scripted calls played as line events and audio, on an injectable clock.

:class:`SimLine` turns a sequence of :class:`ScriptedCall` values into the blocks a
real backend would deliver: quiet line noise while idle, ring bursts on the
cadence, a Bell 202 MDMF caller ID message between the first and second ring,
the pick-up, a spoken conversation, and the hang-up (a CPC loop drop when the far
end hangs up). With :class:`SimClock` the blocks come as fast as they are asked
for, on virtual time; with :class:`RealtimeClock` they come at the pace of a
real line.

Audio is made a block at a time; only the utterance being played is held, so
memory stays flat however long the script is.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.callerid import ABSENCE_REASONS, encode_mdmf, parse_message
from firmware.line.base import (
    BackendHealth,
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
from firmware.line.clock import Clock, RealtimeClock, SimClock
from firmware.line.speech import VoiceSource, default_voice

__all__ = [
    "Clock",
    "RealtimeClock",
    "ScriptedCall",
    "SimClock",
    "SimLine",
    "TimelineEntry",
    "demo_calls",
]

_FULL_SCALE = 32767.0
IDLE_NOISE_DBFS = -60.0
RING_NOISE_DBFS = -80.0
# Caller ID is decoded this long after the first ring ends (sent from 0.5 s on, ~0.3 s long).
CALLER_ID_DELAY_S = 0.8
# The phone is picked up this far into the silence after a ring.
ANSWER_DELAY_S = 0.5
CPC_DURATION_S = 0.6
# After the far end hangs up, the local phone goes down this much later.
LOCAL_HANGUP_AFTER_CPC_S = 1.0
LONG_SILENCE_S = 2.0
# A missed call leaves the line idle this long after its last ring: longer than the
# usual ring timeout, so the call is over before the next one starts ringing.
MISSED_CALL_SETTLE_S = 10.0
TRAILING_IDLE_S = 1.0


_DEFAULT_TALK: tuple[tuple[str, str], ...] = (
    ("callee", "Hello?"),
    ("caller", "Hi, this is a test call on the simulated line."),
    ("callee", "Thanks, I can hear you fine."),
)


@dataclass(frozen=True)
class ScriptedCall:
    """One incoming call as the simulated line should play it."""

    caller_number: str | None = "+12125550142"
    caller_name: str | None = None
    # 'P' withheld, 'O' unavailable; used when caller_number is None.
    number_absent: str | None = None
    name_absent: str | None = None
    # Rings before the answer; for an unanswered call, rings before the caller gives up.
    rings: int = 2
    answered: bool = True
    # (speaker, text) turns, usually "caller" and "callee".
    talk: tuple[tuple[str, str], ...] = _DEFAULT_TALK
    # "remote": CPC loop drop, then the local phone hangs up; "local": the local phone hangs up.
    hangup: str = "remote"
    gap_before_s: float = 3.0
    # Ring on/off seconds, repeated per ring (US 2.0/4.0; GB 0.4/0.2/0.4/2.0).
    cadence: tuple[float, ...] = (2.0, 4.0)

    def __post_init__(self) -> None:
        for what, reason in (("number_absent", self.number_absent), ("name_absent", self.name_absent)):
            if reason is not None and reason not in ABSENCE_REASONS:
                msg = f"{what} {reason!r} must be 'O' (unavailable), 'P' (private) or None"
                raise ScriptError(msg)
        if self.rings < (0 if self.answered else 1):
            kind = "an answered call" if self.answered else "an unanswered call"
            msg = f"rings {self.rings} is too few for {kind}"
            raise ScriptError(msg)
        if self.hangup not in ("remote", "local"):
            msg = f"hangup {self.hangup!r} must be 'remote' or 'local'"
            raise ScriptError(msg)
        if not self.gap_before_s >= 0:
            msg = f"gap_before_s {self.gap_before_s!r} must be zero or more seconds"
            raise ScriptError(msg)
        if not self.cadence or len(self.cadence) % 2 or not all(s > 0 for s in self.cadence):
            msg = f"cadence {self.cadence!r} must be pairs of positive on/off seconds"
            raise ScriptError(msg)
        if self.caller_number is not None and not any(c.isdigit() for c in self.caller_number):
            msg = f"caller_number {self.caller_number!r} has no digits"
            raise ScriptError(msg)

    @property
    def wire_number(self) -> str | None:
        """The number as MDMF carries it: its digits only."""
        if self.caller_number is None:
            return None
        return "".join(c for c in self.caller_number if c.isdigit())


def demo_calls() -> tuple[ScriptedCall, ...]:
    """Three calls for the demo: a named caller, a withheld number, and one nobody answers."""
    plumber = ScriptedCall(
        caller_number="+1 212 555 0142",
        caller_name="ACME PLUMBING",
        rings=2,
        hangup="remote",
        talk=(
            ("callee", "Hello?"),
            ("caller", "Hi, this is Acme Plumbing about your kitchen sink."),
            ("callee", "Oh great, when can you come by?"),
            ("caller", "Tomorrow morning at nine, if that works."),
            ("callee", "Nine is fine. See you then."),
            ("caller", "Thanks, bye."),
        ),
    )
    withheld = ScriptedCall(
        caller_number=None,
        number_absent="P",
        name_absent="P",
        rings=3,
        hangup="local",
        talk=(
            ("callee", "Hello, who is this?"),
            ("caller", "Hello, I am calling about your recent order."),
            ("callee", "Which order do you mean?"),
            ("caller", "The one from last week, it ships on Friday."),
            ("callee", "All right, thank you."),
        ),
    )
    missed = ScriptedCall(
        caller_number="+1 646 555 0199",
        caller_name="J SMITH",
        rings=4,
        answered=False,
        talk=(),
    )
    return plumber, withheld, missed


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One stretch of the script: seconds since the epoch, and what the line carries then."""

    t_start: float
    t_end: float
    # "idle", "ring", "ring-off", "pause", "talk", "silence", "loop-open" or "hangup".
    kind: str


@dataclass(slots=True)
class _Segment:
    """A stretch of the script in frames from the start, with its events and audio."""

    start: int
    frames: int
    kind: str
    noise_rms: float
    events: list[tuple[int, LineEvent]] = field(default_factory=list)
    speech: NDArray[np.int16] | None = None
    gain: float = 1.0

    @property
    def end(self) -> int:
        return self.start + self.frames


def _level(dbfs: float) -> float:
    return _FULL_SCALE * math.pow(10.0, dbfs / 20.0)


class _Planner:
    """Lays the script out in frames, one segment at a time."""

    def __init__(self, line: SimLine, *, measure_only: bool) -> None:
        self._line = line
        self._rate = line.sample_rate
        self._t0 = line.start_time
        self._rng = np.random.default_rng([line.seed, 1])
        self._measure_only = measure_only
        self.cursor = 0

    def _t(self, frame: int) -> float:
        return self._t0 + frame / self._rate

    def _frames(self, seconds: float) -> int:
        return round(seconds * self._rate)

    def _segment(self, seconds: float, kind: str, noise_dbfs: float | None) -> _Segment:
        noise = 0.0 if noise_dbfs is None else _level(noise_dbfs)
        segment = _Segment(self.cursor, self._frames(seconds), kind, noise)
        self.cursor = segment.end
        return segment

    def segments(self) -> Iterator[_Segment]:
        for index, call in enumerate(self._line.calls):
            yield self._segment(call.gap_before_s, "idle", IDLE_NOISE_DBFS)
            yield from self._rings(call)
            if call.answered:
                yield from self._conversation(index, call)
        # Round the end up to a whole block, so the last block is full.
        block = self._line.block_frames
        tail = self._frames(TRAILING_IDLE_S)
        tail += -(self.cursor + tail) % block
        yield self._segment(tail / self._rate, "idle", IDLE_NOISE_DBFS)

    def _caller_id_event(self, call: ScriptedCall, frame: int) -> tuple[int, LineEvent] | None:
        fields = (call.wire_number, call.caller_name, call.number_absent, call.name_absent)
        if all(value is None for value in fields):
            return None  # no caller ID service on this line
        when = datetime.fromtimestamp(self._t(frame), UTC)
        raw = encode_mdmf(
            number=call.wire_number,
            name=call.caller_name,
            number_absent=call.number_absent,
            name_absent=call.name_absent,
            when=when,
        )
        return frame, CallerIdReceived(self._t(frame), parse_message(raw, standard="bell202-mdmf"))

    def _rings(self, call: ScriptedCall) -> Iterator[_Segment]:
        pairs = list(zip(call.cadence[::2], call.cadence[1::2], strict=True))
        for ring in range(1, call.rings + 1):
            for pair_index, (on_s, off_s) in enumerate(pairs):
                burst = self._segment(on_s, "ring", RING_NOISE_DBFS)
                burst.events.append((burst.start, RingStart(self._t(burst.start))))
                burst.events.append((burst.end, RingEnd(self._t(burst.end), burst.frames / self._rate)))
                yield burst
                cycle_end = pair_index == len(pairs) - 1
                yield self._after_burst(
                    call, off_s, first=cycle_end and ring == 1, last=cycle_end and ring == call.rings
                )
        if call.answered and call.rings == 0:
            yield self._off_hook_marker()

    def _after_burst(self, call: ScriptedCall, off_s: float, *, first: bool, last: bool) -> _Segment:
        """The quiet after a burst: caller ID after the first ring, the answer or the give-up after the last."""
        if last and not call.answered:
            gap = self._segment(max(off_s, MISSED_CALL_SETTLE_S), "idle", IDLE_NOISE_DBFS)
        else:
            gap = self._segment(min(off_s, ANSWER_DELAY_S) if last else off_s, "ring-off", RING_NOISE_DBFS)
        if first:
            cid_frame = gap.start + self._frames(CALLER_ID_DELAY_S)
            # Picking up before the data has arrived cuts it off, as on a real line.
            event = self._caller_id_event(call, cid_frame) if cid_frame < gap.end else None
            if event is not None:
                gap.events.append(event)
        if last and call.answered:
            gap.events.append((gap.end, OffHook(self._t(gap.end))))
        return gap

    def _off_hook_marker(self) -> _Segment:
        segment = self._segment(0.0, "pause", IDLE_NOISE_DBFS)
        segment.events.append((segment.start, OffHook(self._t(segment.start))))
        return segment

    def _conversation(self, index: int, call: ScriptedCall) -> Iterator[_Segment]:
        turns = len(call.talk)
        # A couple of long silences a third and two thirds of the way through.
        long_after = {turns // 3, (2 * turns) // 3} if turns >= 3 else set()
        yield self._segment(0.4, "pause", IDLE_NOISE_DBFS)
        for turn, (speaker, text) in enumerate(call.talk):
            yield self._talk(index, turn, speaker, text)
            if turn == turns - 1:
                break
            if turn + 1 in long_after:
                yield self._segment(LONG_SILENCE_S, "silence", IDLE_NOISE_DBFS)
            else:
                yield self._segment(float(self._rng.uniform(0.3, 0.8)), "pause", IDLE_NOISE_DBFS)
        end = self._segment(0.5, "pause", IDLE_NOISE_DBFS)
        if call.hangup == "local":
            end.events.append((end.end, OnHook(self._t(end.end))))
            yield end
            return
        yield end
        drop = self._segment(CPC_DURATION_S, "loop-open", None)
        drop.events.append((drop.end, LoopDrop(self._t(drop.end), drop.frames / self._rate)))
        yield drop
        after = self._segment(LOCAL_HANGUP_AFTER_CPC_S, "hangup", IDLE_NOISE_DBFS)
        after.events.append((after.end, OnHook(self._t(after.end))))
        yield after

    def _talk(self, index: int, turn: int, speaker: str, text: str) -> _Segment:
        speech = self._line.voice.say(text, speaker, self._rate)
        known = self._line.utterance_frames.setdefault((index, turn), len(speech))
        if len(speech) != known:
            # A voice that is not quite deterministic must still match the timeline.
            speech = speech[:known] if len(speech) > known else np.pad(speech, (0, known - len(speech)))
        segment = _Segment(self.cursor, known, "talk", _level(IDLE_NOISE_DBFS))
        # The far end comes through the exchange a little quieter than the local phone.
        segment.gain = 0.7 if speaker == "caller" else 1.0
        if not self._measure_only:
            segment.speech = speech
        self.cursor = segment.end
        return segment


class SimLine(LineBackend):
    """A phone line that plays scripted calls; see the module docstring."""

    name = "sim"

    def __init__(
        self,
        calls: Sequence[ScriptedCall],
        *,
        sample_rate: int = 8000,
        block_ms: int = 20,
        clock: Clock | None = None,
        start_time: float | None = None,
        seed: int = 0,
        voice: VoiceSource | None = None,
    ) -> None:
        if sample_rate not in (8000, 16000, 32000, 48000):
            msg = f"sample_rate {sample_rate} must be 8000, 16000, 32000 or 48000"
            raise ScriptError(msg)
        if not 1 <= block_ms <= 1000 or (sample_rate * block_ms) % 1000:
            msg = f"block_ms {block_ms} must be 1..1000 and a whole number of frames at {sample_rate} Hz"
            raise ScriptError(msg)
        for call in calls:
            if not isinstance(call, ScriptedCall):
                msg = f"calls must be ScriptedCall values, not {type(call).__name__}"
                raise ScriptError(msg)
        self.calls = tuple(calls)
        self.sample_rate = sample_rate
        self.block_frames = sample_rate * block_ms // 1000
        if clock is None:
            clock = SimClock(time.time() if start_time is None else start_time)
        self.clock = clock
        self.start_time = clock.now() if start_time is None else float(start_time)
        self.seed = seed
        self.voice = default_voice() if voice is None else voice
        # What was asked of the line: (time, "off-hook" | "on-hook" | "play N frames").
        self.requests: list[tuple[float, str]] = []
        self.utterance_frames: dict[tuple[int, int], int] = {}
        self._noise = np.random.default_rng([seed, 2])
        self._plan: Iterator[_Segment] | None = None
        self._active: deque[_Segment] = deque()
        self._pending: list[tuple[int, int, LineEvent]] = []
        self._order = itertools.count()
        self._next_frame = 0
        self._closed = False
        self._exhausted = False

    def script_timeline(self) -> list[TimelineEntry]:
        """Every stretch of the script with its times, without keeping any audio."""
        planner = _Planner(self, measure_only=True)
        rate = self.sample_rate
        return [
            TimelineEntry(self.start_time + s.start / rate, self.start_time + s.end / rate, s.kind)
            for s in planner.segments()
            if s.frames > 0
        ]

    def health(self) -> BackendHealth:
        """The simulated line is healthy until it is closed."""
        detail = "closed" if self._closed else "simulated line"
        return BackendHealth(self.clock.now(), healthy=not self._closed, detail=detail)

    def _pull(self, until: int) -> None:
        """Plan segments until everything starting before frame ``until`` is known."""
        if self._plan is None:
            self._plan = _Planner(self, measure_only=False).segments()
        while not self._exhausted and (not self._active or self._active[-1].end < until):
            segment = next(self._plan, None)
            if segment is None:
                self._exhausted = True
                break
            for frame, event in segment.events:
                heapq.heappush(self._pending, (frame, next(self._order), event))
            if segment.frames > 0:
                self._active.append(segment)

    def read_block(self) -> LineBlock | None:
        """The next block; with a SimClock at once, with a RealtimeClock when it is due."""
        if self._closed:
            return None
        first, n = self._next_frame, self.block_frames
        # Drop finished segments first, so at most one utterance is held at a time.
        while self._active and self._active[0].end <= first:
            self._active.popleft()
        self._pull(first + n)
        if not self._active:
            return None
        t = self.start_time + first / self.sample_rate
        self.clock.sleep_until(t + n / self.sample_rate)
        audio = self._mix(first, n)
        events: list[LineEvent] = []
        while self._pending and self._pending[0][0] < first + n:
            events.append(heapq.heappop(self._pending)[2])
        self._next_frame = first + n
        return LineBlock(t, tuple(events), audio)

    def _mix(self, first: int, n: int) -> NDArray[np.int16]:
        noise = self._noise.standard_normal(n)
        out = np.zeros(n, dtype=np.float64)
        for segment in self._active:
            lo, hi = max(segment.start, first), min(segment.end, first + n)
            if lo >= hi:
                continue
            out[lo - first : hi - first] = noise[lo - first : hi - first] * segment.noise_rms
            if segment.speech is not None:
                part = segment.speech[lo - segment.start : hi - segment.start]
                out[lo - first : hi - first] += part * segment.gain
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def set_hook(self, off_hook: bool) -> None:
        """Record the request; the script, not the hook, decides what the line does."""
        self.requests.append((self.clock.now(), "off-hook" if off_hook else "on-hook"))

    def play(self, audio: NDArray[np.int16]) -> None:
        """Record the request; the simulated line does not mix played audio back in."""
        if audio.dtype != np.int16 or audio.ndim != 1:
            msg = f"play() takes int16 mono audio, not {audio.dtype} with shape {audio.shape}"
            raise LineError(msg)
        self.requests.append((self.clock.now(), f"play {len(audio)} frames"))

    def close(self) -> None:
        """Stop the script; later reads return None."""
        self._closed = True
        self._active.clear()
        self._pending.clear()
        self._plan = None
