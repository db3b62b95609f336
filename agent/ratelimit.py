"""A per-device budget for what the agent takes in, so one device cannot drown the others.

Each device has a token bucket of bytes: it refills at ``rate`` bytes a second up
to ``burst``, and every message costs its size, but at least ``MIN_COST`` so that
a flood of tiny messages is limited too. A message over budget is dropped before
it is looked at; nothing is lost by that, because the device keeps every
recording until the agent says it is stored, and the ranges in the next ack ask
for exactly the chunks that were dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MIN_COST = 1024  # bytes a message costs however small it is


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    dropped: int = 0


class DeviceRateLimit:
    """Decides, message by message, whether a device is within its budget."""

    def __init__(self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < MIN_COST:
            msg = f"rate limit needs a positive rate and a burst of at least {MIN_COST} bytes, not {rate}, {burst}"
            raise ValueError(msg)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, device: str, size: int) -> bool:
        """Whether a message of ``size`` bytes from ``device`` may be processed now."""
        now = self._clock()
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = self._buckets[device] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        cost = max(size, MIN_COST)
        if bucket.tokens < cost:
            bucket.dropped += 1
            return False
        bucket.tokens -= cost
        return True

    def dropped(self, device: str) -> int:
        """Messages from ``device`` dropped since the last :meth:`take_dropped`."""
        bucket = self._buckets.get(device)
        return bucket.dropped if bucket is not None else 0

    def take_dropped(self, device: str) -> int:
        """Messages from ``device`` dropped since the last call."""
        bucket = self._buckets.get(device)
        if bucket is None:
            return 0
        dropped, bucket.dropped = bucket.dropped, 0
        return dropped
