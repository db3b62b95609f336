"""On-hook listening for caller ID: feed the line's audio to the decoder while data can arrive.

Caller ID comes as audio while the line is on-hook: between the first and
second ring (Bell 202, ETSI during ringing), or before the first ring after a
polarity reversal and the dual-tone alert (UK and much of Europe), or as DTMF
digits. Backends that carry line audio (the board, the simulated line) hand
their blocks here; the listener opens a window at each of those moments, feeds
the decoder only inside it, and turns what decodes with a good checksum into
:class:`CallerIdReceived` events. Outside the windows it costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from firmware.line.base import (
    CallerId,
    CallerIdReceived,
    LineEvent,
    OffHook,
    PolarityReversal,
    RingEnd,
    RingStart,
    ToneDetected,
)

# After a ring ends, Bell 202 data starts >= 0.5 s later and lasts well under 3 s.
AFTER_RING_S = 4.5
# After a polarity reversal (or the alert tone), data comes within a couple of seconds.
PRE_RING_S = 4.0


class Decoded(Protocol):
    """What the caller ID decoder reports about one burst."""

    @property
    def caller_id(self) -> CallerId | None:
        """The caller ID, or None when the burst failed its checks."""
        ...

    @property
    def end_s(self) -> float:
        """Seconds from the first sample fed to the end of the burst."""
        ...


class CallerIdDecoderLike(Protocol):
    """A streaming caller ID decoder (``firmware.dsp.callerid.CallerIdDecoder``)."""

    def feed(self, audio: NDArray[np.int16]) -> Sequence[Decoded]: ...

    def flush(self) -> Sequence[Decoded]: ...

    def reset(self) -> None: ...


class CallerIdListener:
    """Decides when on-hook audio goes to the caller ID decoder, and reports what it finds."""

    def __init__(
        self, decoder: CallerIdDecoderLike, *, after_ring_s: float = AFTER_RING_S, pre_ring_s: float = PRE_RING_S
    ) -> None:
        self._decoder = decoder
        self._after_ring_s = after_ring_s
        self._pre_ring_s = pre_ring_s
        self._until = -np.inf  # end of the listening window, on the line's clock
        self._open_at: float | None = None  # clock time of the first sample fed in this window
        self._ringing = False

    @property
    def listening(self) -> bool:
        """True while a window is open."""
        return self._open_at is not None

    def observe(self, event: LineEvent) -> None:
        """Open or close the window as the line's events say."""
        match event:
            case RingStart(t=t):
                self._ringing = True
                self._open(t)  # held open while it rings; RingEnd sets how long after
            case RingEnd(t=t):
                self._ringing = False
                self._open(t + self._after_ring_s)
            case PolarityReversal(t=t) | ToneDetected(t=t, tone="cas"):
                self._open(t + self._pre_ring_s)
            case OffHook():
                # Picked up: whatever was half received is lost, as on any phone.
                self._close()

    def _open(self, until: float) -> None:
        if self._open_at is None and self._until == -np.inf:
            self._decoder.reset()  # a fresh window: nothing of an earlier one carries over
        self._until = max(self._until, until)

    def _close(self) -> None:
        self._open_at = None
        self._until = -np.inf
        self._decoder.reset()

    def feed(self, t: float, audio: NDArray[np.int16]) -> list[CallerIdReceived]:
        """Take one block of line audio starting at ``t``; return caller IDs completed in it."""
        if t >= self._until and not self._ringing:
            if self._open_at is None:
                return []
            found = self._decoder.flush()
            opened = self._open_at
            self._close()
            return self._events(found, opened)
        if self._open_at is None:
            self._open_at = t
        return self._events(self._decoder.feed(audio), self._open_at)

    @staticmethod
    def _events(found: Sequence[Decoded], opened: float) -> list[CallerIdReceived]:
        return [CallerIdReceived(opened + d.end_s, d.caller_id) for d in found if d.caller_id is not None]
