"""Reading 8N1 bytes off an FSK soft decision by their start-bit edges.

The first byte of a message needs a right start bit, a stop bit that is not
clearly space, and a value the caller expects; each next edge is expected ten
bits after the last one and followed half way if found near there. A byte is
read where one is due unless the line clearly holds mark there (idle mark
between bytes is allowed), so one bad stop bit costs a checksum, not the clock.
Bytes the edges lost, where the message says there are more, are read on the
clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ByteReader", "ReadBytes"]

_START_LEVEL = -0.2
_MIN_BYTE_QUALITY = 0.25
_MAX_IDLE_BITS = 20
_IDLE_LEVEL = 0.5
# The first byte's stop bit need only not be clearly space: the re-read and the checksum judge it.
_FIRST_STOP_LEVEL = -0.2


@dataclass(slots=True)
class ReadBytes:
    """Bytes read so far, and where each one's start bit begins."""

    edges: list[float]
    data: bytearray


class ByteReader:
    """Reads 8N1 bytes off a soft decision by their start-bit edges.

    ``decision`` is about +1 on mark and -1 on space, each sample the end of a
    correlator ``length`` samples long; ``bit`` is the bit length in samples.
    """

    def __init__(self, decision: NDArray[np.float64], bit: float, length: int) -> None:
        self.d = decision
        self.bit = bit
        self.length = length
        falls = np.flatnonzero((decision[:-1] >= 0.0) & (decision[1:] < 0.0))
        a, b = decision[falls], decision[falls + 1]
        # The correlator is half in the start bit at the zero crossing.
        self.edges = falls + a / (a - b) - length / 2.0 + 1.0

    def soft_bits(self, edge: float) -> tuple[float, ...]:
        """The eight data bits' decisions (LSB first) of the byte whose start bit begins at ``edge``."""
        points = np.rint(edge + np.arange(1, 9) * self.bit + self.length - 1).astype(np.int64)
        return tuple(float(v) for v in self.d[np.clip(points, 0, len(self.d) - 1)])

    def byte_at(self, edge: float, stop_level: float = 0.0) -> tuple[int, bool, float] | None:
        """(value, framing ok, quality) of the byte whose start bit begins at ``edge``."""
        points = np.rint(edge + np.arange(10) * self.bit + self.length - 1).astype(np.int64)
        if points[0] < 0 or points[-1] >= len(self.d):
            return None
        v = self.d[points]
        value = int(np.sum((v[1:9] > 0.0).astype(np.int64) << np.arange(8)))
        framed = bool(v[0] < _START_LEVEL and v[9] > stop_level)
        return value, framed, float(np.mean(np.abs(v)))

    def edges_between(self, low: float, high: float) -> NDArray[np.float64]:
        lo, hi = np.searchsorted(self.edges, [low, high])
        return self.edges[lo:hi]

    def first_bytes(
        self, after: float, near: frozenset[int], *, span: float, lead_level: float = -math.inf
    ) -> Iterator[tuple[float, int]]:
        """(edge, value) of each framed byte up to ``span`` bits after ``after`` whose value is in ``near``, in order.

        The bit before the start bit must read above ``lead_level``.
        """
        for edge in self.edges_between(after, after + span * self.bit):
            got = self.byte_at(float(edge), _FIRST_STOP_LEVEL)
            led = self.d[max(self._point(float(edge) - self.bit), 0)] > lead_level
            if got and got[1] and got[2] >= _MIN_BYTE_QUALITY and got[0] in near and led:
                yield float(edge), got[0]

    def next_byte(self, last: float) -> tuple[float, int] | None:
        """(edge, value) of the byte after the one starting at ``last``; None where the bytes end."""
        expected = last + 10.0 * self.bit
        near = self.edges_between(expected - self.bit / 2.0, expected + self.bit / 2.0)
        # Follow the edge half way: noise moves single edges, the sender's clock does not.
        edge = expected + 0.5 * (float(near[np.argmin(np.abs(near - expected))]) - expected) if len(near) else expected
        got = self.byte_at(edge)
        # A byte where one is due keeps the clock even with a bad stop bit (the checksum
        # catches the error); only a clear mark there means the line idles between bytes.
        if got and got[2] >= _MIN_BYTE_QUALITY and self.d[self._point(edge)] < _IDLE_LEVEL:
            return edge, got[0]
        for later in self.edges_between(expected + self.bit / 2.0, expected + _MAX_IDLE_BITS * self.bit):
            got = self.byte_at(float(later))
            if got and got[1] and got[2] >= _MIN_BYTE_QUALITY:
                return float(later), got[0]
        return None

    def _point(self, edge: float) -> int:
        return min(round(edge + self.length - 1), len(self.d) - 1)

    def follow(self, edge: float, value: int, wanted: Callable[[bytes], int | None], most: int) -> ReadBytes:
        """The bytes of a message whose first byte, ``value``, starts at ``edge``, each found by its own edge."""
        read = ReadBytes([edge], bytearray((value,)))
        while len(read.data) < most:
            need = wanted(bytes(read.data))
            if need is not None and len(read.data) >= need:
                break
            got = self.next_byte(read.edges[-1])
            if got is None:
                break
            read.edges.append(got[0])
            read.data.append(got[1])
        self.read_on(read, wanted(bytes(read.data)), most)
        return read

    def read_on(self, read: ReadBytes, need: int | None, most: int) -> bool:
        """Add the bytes the edges lost, where the message says there are more, on the clock; whether any were."""
        added = False
        room = len(self.d) - self.length - 20.0 * self.bit
        while need is not None and len(read.data) < min(need, most) and read.edges[-1] < room:
            edge = read.edges[-1] + 10.0 * self.bit
            got = self.byte_at(edge)
            read.edges.append(edge)
            read.data.append(got[0] if got else 0)
            added = True
        return added

    def own_edges(self, edges: Sequence[float]) -> list[float]:
        """Each byte's own start-bit edge where there is one near, not the followed one, for the clock line."""
        found = []
        for e in edges:
            near = self.edges_between(e - self.bit / 2.0, e + self.bit / 2.0)
            found.append(float(near[np.argmin(np.abs(near - e))]) if len(near) else e)
        return found
