"""The simulated line: scripted calls played as line events and audio, on an injectable clock.

:class:`SimLine` turns a sequence of :class:`ScriptedCall` values into the blocks a
real backend would deliver: quiet line noise while idle, ring bursts on the
cadence, caller ID between the first and second ring (or before the first, after
a polarity reversal), the pick-up, a spoken conversation, and the hang-up the
script asks for (a CPC loop drop, a polarity reversal, busy tone, or nothing but
a dead line). :func:`scenario` names ready-made scripts for each of these. With
:class:`SimClock` the blocks come as fast as they are asked for, on virtual time;
with :class:`RealtimeClock` they come at the pace of a real line.

Audio is made a block at a time; only the utterance being played is held, so
memory stays flat however long the script is.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from firmware.line.base import (
    BackendHealth,
    LineBackend,
    LineBlock,
    LineError,
    LineEvent,
    RingEnd,
    RingStart,
    ScriptError,
    frames_per_block,
)
from firmware.line.clock import Clock, RealtimeClock, SimClock
from firmware.line.planner import Layer, Planner, Segment, TimelineEntry
from firmware.line.script import SCENARIOS, ScriptedCall, demo_calls, scenario
from firmware.line.simaudio import hum
from firmware.line.speech import VoiceSource, default_voice

__all__ = [
    "SCENARIOS",
    "Clock",
    "RealtimeClock",
    "ScriptedCall",
    "SimClock",
    "SimLine",
    "TimelineEntry",
    "demo_calls",
    "scenario",
]


# The board's hybrid sends what the recorder plays back into its own capture at about half
# the level (-6 dB); the simulated line does the same, so notices end up in recordings.
PLAYBACK_ECHO = 0.5


class SimLine(LineBackend):
    """A phone line that plays scripted calls; see the module docstring.

    A call with ``answered_by="machine"`` rings until the system under test calls
    ``set_hook(True)``; the caller then leaves the scripted message. Everything
    else the script decides, whatever is asked of the line. Read blocks and set
    the hook from one thread.
    """

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
        try:
            self.block_frames = frames_per_block(sample_rate, block_ms)
        except ValueError as exc:
            raise ScriptError(str(exc)) from None
        for call in calls:
            if not isinstance(call, ScriptedCall):
                msg = f"calls must be ScriptedCall values, not {type(call).__name__}"
                raise ScriptError(msg)
        self.calls = tuple(calls)
        self.sample_rate = sample_rate
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
        self._planner: Planner | None = None
        self._plan: Iterator[Segment] | None = None
        self._active: deque[Segment] = deque()
        self._layers: list[Layer] = []
        self._pending: list[tuple[int, int, LineEvent]] = []
        self._order = itertools.count()
        self._next_frame = 0
        # Audio the recorder played to the line: (first frame, samples), heard back in the capture.
        self._played: deque[tuple[int, NDArray[np.float64]]] = deque()
        self._closed = False
        self._exhausted = False

    @classmethod
    def from_scenario(
        cls,
        name: str,
        *,
        sample_rate: int = 8000,
        block_ms: int = 20,
        clock: Clock | None = None,
        start_time: float | None = None,
        seed: int = 0,
        voice: VoiceSource | None = None,
    ) -> SimLine:
        """A line playing the named scenario (one of SCENARIOS); the options are the constructor's."""
        return cls(
            scenario(name),
            sample_rate=sample_rate,
            block_ms=block_ms,
            clock=clock,
            start_time=start_time,
            seed=seed,
            voice=voice,
        )

    def _planner_for(self, *, measure_only: bool) -> Planner:
        return Planner(
            self.calls,
            sample_rate=self.sample_rate,
            start_time=self.start_time,
            block_frames=self.block_frames,
            seed=self.seed,
            voice=self.voice,
            utterance_frames=self.utterance_frames,
            measure_only=measure_only,
        )

    def script_timeline(self) -> list[TimelineEntry]:
        """Every stretch of the script with its times, without keeping any audio.

        A call the recorder would answer itself is laid out as if it never did.
        """
        rate = self.sample_rate
        return [
            TimelineEntry(self.start_time + s.start / rate, self.start_time + s.end / rate, s.kind)
            for s in self._planner_for(measure_only=True).segments()
            if s.frames > 0
        ]

    def health(self) -> BackendHealth:
        """The simulated line is healthy until it is closed."""
        detail = "closed" if self._closed else "simulated line"
        return BackendHealth(self.clock.now(), healthy=not self._closed, detail=detail)

    def _pull(self, until: int) -> None:
        """Plan segments until everything starting before frame ``until`` is known."""
        if self._plan is None:
            self._planner = self._planner_for(measure_only=False)
            self._plan = self._planner.segments()
        while not self._exhausted and (not self._active or self._active[-1].end < until):
            segment = next(self._plan, None)
            if segment is None:
                self._exhausted = True
                break
            for frame, event in segment.events:
                heapq.heappush(self._pending, (frame, next(self._order), event))
            self._layers.extend(segment.layers)
            segment.layers = []
            if segment.frames > 0:
                self._active.append(segment)

    def read_block(self) -> LineBlock | None:
        """The next block; with a SimClock at once, with a RealtimeClock when it is due."""
        if self._closed:
            return None
        first, n = self._next_frame, self.block_frames
        # Drop finished stretches and sounds first, so at most one utterance is held at a time.
        while self._active and self._active[0].end <= first:
            self._active.popleft()
        self._layers = [layer for layer in self._layers if layer.end > first]
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
            if segment.hum_hz is not None:
                out[lo - first : hi - first] += hum(lo, hi - lo, self.sample_rate, segment.hum_hz)
        for layer in self._layers:
            lo, hi = max(layer.start, first), min(layer.end, first + n)
            if lo < hi:
                out[lo - first : hi - first] += layer.render(lo - layer.start, hi - lo)
        while self._played and self._played[0][0] + len(self._played[0][1]) <= first:
            self._played.popleft()
        for start, played in self._played:
            lo, hi = max(start, first), min(start + len(played), first + n)
            if lo < hi:
                out[lo - first : hi - first] += played[lo - start : hi - start]
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def set_hook(self, off_hook: bool) -> None:
        """Record the request; going off-hook answers a call that waits for the recorder."""
        self.requests.append((self.clock.now(), "off-hook" if off_hook else "on-hook"))
        if off_hook and self._planner is not None and self._planner.answer(self._next_frame):
            self._cut(self._next_frame)

    def _cut(self, frame: int) -> None:
        """Forget what was planned from ``frame`` on: the ringing stopped when the recorder answered."""
        kept: deque[Segment] = deque()
        for segment in self._active:
            if segment.start < frame:
                segment.frames = min(segment.frames, frame - segment.start)
                kept.append(segment)
        self._active = kept
        self._layers = [layer for layer in self._layers if layer.start < frame]
        for layer in self._layers:
            layer.frames = min(layer.frames, frame - layer.start)
        later = sorted(entry for entry in self._pending if entry[0] >= frame)
        self._pending = [entry for entry in self._pending if entry[0] < frame]
        heapq.heapify(self._pending)
        edges = [event for _, _, event in later if isinstance(event, RingStart | RingEnd)]
        if edges and isinstance(edges[0], RingEnd):
            # Answered in the middle of a ring: it ends now, as the ring detector sees it.
            ring = edges[0]
            t = self.start_time + frame / self.sample_rate
            cut = RingEnd(t, ring.duration_s - (ring.t - t), ring.cadence)
            heapq.heappush(self._pending, (frame, next(self._order), cut))

    def play(self, audio: NDArray[np.int16]) -> None:
        """Play to the line from the next block on; the capture hears it back, as a hybrid would."""
        if audio.dtype != np.int16 or audio.ndim != 1:
            msg = f"play() takes int16 mono audio, not {audio.dtype} with shape {audio.shape}"
            raise LineError(msg)
        self.requests.append((self.clock.now(), f"play {len(audio)} frames"))
        start = max(self._next_frame, self._played[-1][0] + len(self._played[-1][1]) if self._played else 0)
        self._played.append((start, audio.astype(np.float64) * PLAYBACK_ECHO))

    def close(self) -> None:
        """Stop the script; later reads return None."""
        self._closed = True
        self._played.clear()
        self._active.clear()
        self._layers.clear()
        self._pending.clear()
        self._plan = None
        self._planner = None
