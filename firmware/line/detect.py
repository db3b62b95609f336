"""Turning the line board's raw input edges into line events: rings, hook changes, loop drops, reversals.

The detectors are pure and time-injected: they hold no threads, read no clock
and touch no hardware. The owner feeds each input change with
``edge(t, level)`` in time order, and calls ``poll(now)`` at least once per
audio block (20 ms) so that decisions that wait on time (a ring ending, a
debounce settling) are made even while the input is still. Both return the
events decided up to that moment, each stamped with the time it happened on
the line, not the time it was decided.

* :class:`RingDetector` counts rings from the ring optocoupler's pulse train.
* :class:`HookSense` debounces the loop sense and tells a far-end loop drop
  (CPC) from the local phone hanging up.
* :class:`PolarityWatch` debounces the line-polarity input and keeps the
  window in which on-hook caller ID may follow a reversal.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from firmware.config import LineSettings
from firmware.line.base import LineEvent, LoopDrop, OffHook, OnHook, PolarityReversal, RingEnd, RingStart
from firmware.line.cadence import Cadence, classify, load_cadences

__all__ = [
    "CADENCE_WINDOW",
    "POLARITY_DEBOUNCE_S",
    "PULSE_GAP_S",
    "HookSense",
    "PolarityWatch",
    "RingDetector",
]

log = logging.getLogger(__name__)

# Pulses arrive every 20-25 ms while ring current flows (40 or 50 Hz); a pause
# longer than about three pulse periods ends a pulse train.
PULSE_GAP_S = 0.1
# Measured on/off periods handed to the cadence classifier: enough for one
# cycle of any cadence in the table (at most four periods), odd so that the
# window always starts with an "on".
CADENCE_WINDOW = 7
# A silence this many times the longest "off" of any cadence starts a new
# ringing sequence: the periods measured before it belong to another call.
_SEQUENCE_RESET_FACTOR = 1.5
# Polarity inputs see bounces and the exchange's switching transients.
POLARITY_DEBOUNCE_S = 0.02


@dataclass(slots=True)
class _Train:
    """A pulse train: pulses with no pause longer than PULSE_GAP_S between them."""

    start: float
    last: float
    # At least glitch_ms long: not noise.
    counted: bool = False
    # Part of a ring: its length is an "on" period of the cadence.
    in_ring: bool = False


class RingDetector:
    """Counts rings from the ring optocoupler's pulses and measures their cadence.

    An H11AA1 conducts on both half-cycles of the ring voltage, so while the
    bell rings the input pulses at twice the ring frequency (40 Hz for 20 Hz
    ringing, 50 Hz for 25 Hz) at roughly half duty. A steady active level (a
    board that filters the optocoupler) counts as pulsing too.

    * Pulses with no pause longer than :data:`PULSE_GAP_S` make a train.
    * A train becomes a ring once it has lasted ``ring_qualify_ms``;
      :class:`RingStart` carries the time of the train's first pulse. Trains
      shorter than that, and isolated glitches, never ring.
    * A ring ends when no train of at least ``glitch_ms`` has come for
      ``ring_end_ms``; :class:`RingEnd` carries the end of the last pulse and
      the time from the first pulse to it. The UK double ring (0.4 on, 0.2 off,
      0.4 on, 2.0 off) is therefore one ring, as a person hears it.
    * The lengths of the trains and of the pauses between them are the
      cadence's on/off periods. Once one whole cycle has been measured and fits
      exactly one cadence of the table, its key rides on every later
      :class:`RingEnd` of the sequence.
    """

    def __init__(self, settings: LineSettings, cadences: dict[str, Cadence] | None = None) -> None:
        self._glitch_s = settings.glitch_ms / 1000
        self._qualify_s = max(settings.ring_qualify_ms, settings.glitch_ms) / 1000
        self._end_s = settings.ring_end_ms / 1000
        self._cadences = load_cadences() if cadences is None else cadences
        longest_off = max(p for c in self._cadences.values() for p in c.pattern[1::2])
        self._reset_s = _SEQUENCE_RESET_FACTOR * longest_off
        self._now = -math.inf
        self._active = False
        self._train: _Train | None = None
        # The ring in progress: its first pulse and its latest activity.
        self._ring_first: float | None = None
        self._ring_last = -math.inf
        # Alternating on/off seconds of the ringing sequence, starting with an on.
        self._periods: list[float] = []
        self._sub_end: float | None = None
        self._cadence: str | None = None

    @property
    def ringing(self) -> bool:
        """Whether a ring is in progress (between its RingStart and its RingEnd)."""
        return self._ring_first is not None

    @property
    def cadence(self) -> str | None:
        """The cadence key of the current ringing sequence, once it is known."""
        return self._cadence

    def edge(self, t: float, active: bool) -> list[LineEvent]:
        """The input changed at ``t``: ``active`` while ring current flows."""
        events = self._advance(t)
        if active == self._active:
            return events
        self._active = active
        if active:
            if self._train is None:
                self._train = _Train(self._now, self._now)
            self._touch(self._now, events)
        return events

    def poll(self, now: float) -> list[LineEvent]:
        """Decisions due by ``now``: a ring that has ended, one that a steady level qualified."""
        return self._advance(now)

    def _advance(self, now: float) -> list[LineEvent]:
        self._now = max(self._now, now)
        events: list[LineEvent] = []
        train = self._train
        if train is not None:
            if self._active:
                # Still conducting: the activity lasts until now.
                self._touch(self._now, events)
            elif self._now - train.last > PULSE_GAP_S:
                self._close(train)
        if self._ring_first is not None and self._now - self._ring_last >= self._end_s:
            train = self._train
            # A train that began within ring_end_ms may still prove to be a ring
            # pulse rather than a glitch: wait for it to be one or the other.
            undecided = train is not None and not train.in_ring and train.start < self._ring_last + self._end_s
            if not undecided:
                events.append(self._ring_end())
        return events

    def _touch(self, t: float, events: list[LineEvent]) -> None:
        """The current train is active at ``t``."""
        train = self._train
        assert train is not None
        train.last = max(train.last, t)
        length = train.last - train.start
        if not train.counted and length >= self._glitch_s:
            train.counted = True
        if self._ring_first is not None:
            if train.counted:
                if not train.in_ring:
                    self._join_ring(train)
                self._ring_last = train.last
        elif length >= self._qualify_s:
            self._join_ring(train)
            self._ring_first = train.start
            self._ring_last = train.last
            events.append(RingStart(train.start))

    def _join_ring(self, train: _Train) -> None:
        train.in_ring = True
        if self._sub_end is not None and self._periods and train.start - self._sub_end <= self._reset_s:
            self._periods.append(train.start - self._sub_end)
        else:
            self._periods.clear()
            self._cadence = None

    def _close(self, train: _Train) -> None:
        self._train = None
        if not train.in_ring:
            return
        self._periods.append(train.last - train.start)
        self._sub_end = train.last
        # Keep a few cycles, dropping whole on/off pairs so the list still starts with an on.
        while len(self._periods) > 2 * CADENCE_WINDOW:
            del self._periods[:2]

    def _ring_end(self) -> RingEnd:
        assert self._ring_first is not None
        window = self._periods[-CADENCE_WINDOW:] if len(self._periods) % 2 else self._periods[-CADENCE_WINDOW - 1 : -1]
        key = classify(window, self._cadences)
        if key is not None and len(window) >= len(self._cadences[key].pattern):
            self._cadence = key
        end = RingEnd(self._ring_last, self._ring_last - self._ring_first, self._cadence)
        self._ring_first = None
        return end


class _Debounce:
    """A level that changes only once the input has held still for ``hold_s``.

    A change is stamped with the first edge of its bounces; an excursion that
    comes back before settling is forgotten.
    """

    def __init__(self, hold_s: float, level: bool = False) -> None:
        self.hold_s = hold_s
        self.stable = level
        self.raw = level
        self._last_edge = -math.inf
        # The first edge away from the stable level, while that is undecided.
        self.pending_since: float | None = None

    def edge(self, t: float, level: bool) -> None:
        if level == self.raw:
            return
        self.raw = level
        self._last_edge = t
        if self.pending_since is None and level != self.stable:
            self.pending_since = t

    def settle(self, now: float) -> float | None:
        """The time of a change that has now settled, or None."""
        if self.pending_since is None or now - self._last_edge < self.hold_s:
            return None
        since, self.pending_since = self.pending_since, None
        if self.raw == self.stable:
            return None
        self.stable = self.raw
        return since


class HookSense:
    """Debounced off-hook sense, with far-end hang-up (CPC) told apart from the local phone's.

    The input is modelled as *loop current flowing*: active while a phone on the
    line is off-hook and the exchange feeds battery. That is what a current
    sense sees. On a sense that only compares loop *voltage* with a threshold
    ("below 15 V: off-hook"), a CPC open cannot be seen at all: the exchange
    removes battery, the voltage falls to 0 V, and 0 V is below the threshold
    too; such a board must rely on polarity, tones or silence for the far-end
    hang-up.

    * On-hook, current that flows steadily for ``offhook_debounce_ms`` is
      :class:`OffHook`, stamped with its first edge.
    * Off-hook, current that stops and comes back is a loop open measured from
      the first edge of each debounced change:

      - shorter than ``cpc_ignore_ms``: ignored;
      - shorter than ``cpc_min_ms``: ignored (logged at debug level);
      - ``cpc_min_ms`` to ``cpc_max_ms``: the exchange's CPC, so
        :class:`LoopDrop` (``t`` when the loop closed again); the local phone
        is still off-hook;
    * an open that lasts past ``cpc_max_ms`` is the local phone hanging up:
      :class:`OnHook`, stamped with the start of the open. Hanging up is
      therefore reported ``cpc_max_ms`` after it happens.
    """

    def __init__(self, settings: LineSettings) -> None:
        self._ignore_s = settings.cpc_ignore_ms / 1000
        self._min_s = settings.cpc_min_ms / 1000
        self._max_s = settings.cpc_max_ms / 1000
        self._level = _Debounce(settings.offhook_debounce_ms / 1000)
        self._now = -math.inf
        self._off_hook = False
        # Start of the loop open in progress while off-hook.
        self._open_since: float | None = None

    @property
    def off_hook(self) -> bool:
        """Whether a phone on the line is off-hook, as far as has been decided."""
        return self._off_hook

    def edge(self, t: float, offhook: bool) -> list[LineEvent]:
        """The sense changed at ``t``: ``offhook`` while loop current flows."""
        events = self.poll(t)
        self._level.edge(self._now, offhook)
        return events

    def poll(self, now: float) -> list[LineEvent]:
        """Decisions due by ``now``: a settled change, a loop drop, a hang-up."""
        self._now = max(self._now, now)
        events: list[LineEvent] = []
        since = self._level.settle(self._now)
        if since is not None:
            self._changed(since, flowing=self._level.stable, events=events)
        if self._open_since is not None and self._now - self._open_since > self._max_s:
            closing = self._level.pending_since
            # A close that began in time still makes this a loop drop: wait for it to settle.
            if closing is None or closing - self._open_since > self._max_s:
                events.append(OnHook(self._open_since))
                self._off_hook = False
                self._open_since = None
        return events

    def _changed(self, t: float, *, flowing: bool, events: list[LineEvent]) -> None:
        if not flowing:
            if self._off_hook:
                self._open_since = t
            return
        if self._open_since is None:
            if not self._off_hook:
                self._off_hook = True
                events.append(OffHook(t))
            return
        duration, self._open_since = t - self._open_since, None
        if duration < self._ignore_s:
            return
        if duration < self._min_s:
            log.debug("loop open of %.0f ms is too short for a CPC disconnect; ignored", duration * 1000)
            return
        # Longer opens were decided as a hang-up in poll() before their close could settle.
        events.append(LoopDrop(t, duration))


class PolarityWatch:
    """Debounced line-polarity input, and the on-hook caller ID window that a reversal opens.

    Every settled change of the input is a :class:`PolarityReversal` (both
    directions flip the line), stamped with its first edge. Exchanges that send
    caller ID before the first ring reverse the polarity first; for
    ``pre_ring_window_s`` after a reversal that happened on-hook,
    :meth:`listening` says the caller ID demodulator should listen.
    """

    def __init__(self, settings: LineSettings, *, reversed: bool = False) -> None:
        self._window_s = settings.pre_ring_window_s
        self._level = _Debounce(POLARITY_DEBOUNCE_S, reversed)
        self._now = -math.inf
        self._on_hook = True
        self._window_from: float | None = None

    @property
    def reversed(self) -> bool:
        """The settled polarity: True when reversed."""
        return self._level.stable

    def set_on_hook(self, on_hook: bool) -> None:
        """Tell the watch whether the line is on-hook (a reversal off-hook opens no caller ID window)."""
        self._on_hook = on_hook

    def edge(self, t: float, reversed: bool) -> list[LineEvent]:
        """The input changed at ``t``: ``reversed`` when the polarity is reversed."""
        events = self.poll(t)
        self._level.edge(self._now, reversed)
        return events

    def poll(self, now: float) -> list[LineEvent]:
        """A reversal that has settled by ``now``."""
        self._now = max(self._now, now)
        since = self._level.settle(self._now)
        if since is None:
            return []
        self._window_from = since if self._on_hook else None
        return [PolarityReversal(since)]

    def listening(self, now: float) -> bool:
        """Whether ``now`` lies in the caller ID window after an on-hook reversal, still on-hook."""
        if not self._on_hook or self._window_from is None:
            return False
        return 0.0 <= now - self._window_from <= self._window_s
