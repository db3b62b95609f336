"""Where the line gets its time: virtual for tests and the fast demo, real on hardware.

Every backend takes a clock, so that tests drive ring cadences and timeouts
without ever sleeping through them.
"""

from __future__ import annotations

import threading
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

    def wait(self, signal: threading.Event, until: float) -> bool:
        """Wait for ``signal`` until ``until`` at the latest; True if it came."""
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

    def wait(self, signal: threading.Event, until: float) -> bool:
        """Virtual time does not pass while waiting, so there is nothing to wait for: False.

        Whatever was signalled is taken up with the next block instead.
        """
        return False


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

    def wait(self, signal: threading.Event, until: float) -> bool:
        """Wait in real time for ``signal``, until ``until`` at the latest."""
        return signal.wait(max(0.0, until - self.now()))
