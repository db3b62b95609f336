"""Where the line gets its time: virtual for tests and the fast demo, real on hardware.

Every backend takes a clock, so that tests drive ring cadences and timeouts
without ever sleeping through them.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the simulated line gets its time, and how it waits."""

    def now(self) -> float:
        """Seconds since the UTC epoch."""
        ...

    def sleep_until(self, t: float) -> None:
        """Return once ``now()`` has reached ``t``."""
        ...


class SimClock:
    """Virtual time: starts at ``start`` and moves only when something waits on it."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    def sleep_until(self, t: float) -> None:
        """Jump to ``t`` at once (time never goes back)."""
        self._now = max(self._now, t)


class RealtimeClock:
    """Wall-clock pacing: ``now()`` runs from ``start`` (default: the present) in real seconds."""

    def __init__(self, start: float | None = None) -> None:
        self._start = time.time() if start is None else float(start)
        # The monotonic clock keeps the pace steady if the system clock is adjusted.
        self._origin = time.monotonic()

    def now(self) -> float:
        """``start`` plus the real seconds since this clock was made."""
        return self._start + (time.monotonic() - self._origin)

    def sleep_until(self, t: float) -> None:
        """Sleep until ``now()`` reaches ``t``."""
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)
