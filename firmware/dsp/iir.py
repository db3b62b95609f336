"""Biquad design and a cascade of biquads run a block at a time, with numpy alone.

The device does not use scipy.signal for this: importing it raises the
recorder's peak RSS from about 29 MB to about 99 MB, and the Pi Zero 2 W has
80 MB to give. The designs here are the bilinear-transform ones scipy makes
(``butter``, ``iirnotch``) or the RBJ "Audio EQ Cookbook" ones; tests compare
them with scipy's.

Sections are rows ``b0 b1 b2 a0 a1 a2`` with ``a0 == 1``, as scipy's "sos", and
the state of a cascade is one row ``z1 z2`` per section, the transposed direct
form II state that ``scipy.signal.sosfilt`` carries as ``zi``.

A Python loop over samples runs far too slowly on the Pi, so :class:`Cascade`
runs the sections as one linear system (state x, input u, output y):
x' = A x + B u, y = C x + D u. A block is cut into sub-blocks of 64 samples. The
state at the start of every sub-block comes from a prefix scan, log2 of their
number of steps, with powers of A made by squaring. Each sub-block's output is
its samples convolved with the first 64 of the impulse response (one matrix
product for all of them) plus the ring-out of its start state. Both are sums of
products that numpy does in bulk, and the result is exact to rounding however a
stream is cut into blocks.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Cascade", "butterworth_highpass", "high_shelf", "highpass", "notch"]

# 64 balances the sub-block convolution (64 products a sample) against the scan
# (log2 of the number of sub-blocks passes over a d-wide state per sub-block).
_SUB_BLOCK = 64
# Longer blocks run in pieces of this many samples, which keeps the temporaries to a few hundred kB.
_PIECE = 1 << 13


def butterworth_highpass(order: int, cutoff_hz: float, sample_rate: float) -> NDArray[np.float64]:
    """An even-order Butterworth high-pass as sections, the response ``scipy.signal.butter`` designs.

    A Butterworth of order 2m is m second-order high-passes whose Qs are
    1 / (2 cos((2k - 1) pi / 4m)); each is bilinear-transformed with its cutoff
    prewarped, as scipy does. The sections run from the lowest Q to the highest.
    """
    if not isinstance(order, int) or order < 2 or order % 2:
        msg = f"a Butterworth high-pass here has an even order of 2 or more, not {order!r}"
        raise ValueError(msg)
    qs = [1.0 / (2.0 * math.cos((2 * k - 1) * math.pi / (2 * order))) for k in range(1, order // 2 + 1)]
    return np.vstack([highpass(cutoff_hz, q, sample_rate) for q in qs])


def highpass(freq_hz: float, q: float, sample_rate: float) -> NDArray[np.float64]:
    """The RBJ cookbook's second-order high-pass: the bilinear transform, prewarped at ``freq_hz``."""
    w0 = _angle(freq_hz, sample_rate)
    alpha, cos = math.sin(w0) / (2.0 * q), math.cos(w0)
    return _normalised([(1 + cos) / 2, -(1 + cos), (1 + cos) / 2, 1 + alpha, -2 * cos, 1 - alpha])


def high_shelf(freq_hz: float, gain_db: float, q: float, sample_rate: float) -> NDArray[np.float64]:
    """The RBJ cookbook's high shelf: ``gain_db`` above ``freq_hz``, unity at DC."""
    w0 = _angle(freq_hz, sample_rate)
    a = 10.0 ** (gain_db / 40.0)
    cos, root = math.cos(w0), 2.0 * math.sqrt(a) * math.sin(w0) / (2.0 * q)
    return _normalised(
        [
            a * ((a + 1) + (a - 1) * cos + root),
            -2 * a * ((a - 1) + (a + 1) * cos),
            a * ((a + 1) + (a - 1) * cos - root),
            (a + 1) - (a - 1) * cos + root,
            2 * ((a - 1) - (a + 1) * cos),
            (a + 1) - (a - 1) * cos - root,
        ]
    )


def notch(freq_hz: float, q: float, sample_rate: float) -> NDArray[np.float64]:
    """A notch ``freq_hz / q`` wide at -3 dB, the one ``scipy.signal.iirnotch`` designs.

    The RBJ cookbook's notch is not quite this one: it takes sin(w0) / 2Q where
    this takes tan(w0 / 2Q), which makes the digital bandwidth exactly f0 / Q.
    """
    w0 = _angle(freq_hz, sample_rate)
    gain = 1.0 / (1.0 + math.tan(w0 / (2.0 * q)))
    cos = math.cos(w0)
    return _normalised([gain, -2.0 * gain * cos, gain, 1.0, -2.0 * gain * cos, 2.0 * gain - 1.0])


def _angle(freq_hz: float, sample_rate: float) -> float:
    if not 0.0 < freq_hz < sample_rate / 2.0:
        msg = f"a filter frequency must be between 0 and {sample_rate / 2.0:g} Hz at {sample_rate:g} Hz, not {freq_hz}"
        raise ValueError(msg)
    return 2.0 * math.pi * freq_hz / sample_rate


def _normalised(row: list[float]) -> NDArray[np.float64]:
    section = np.array([row], dtype=np.float64)
    return section / section[:, 3:4]


class Cascade:
    """Biquad sections in series, run over blocks of any length with the state carried by the caller.

    :meth:`run` gives what ``scipy.signal.sosfilt(sections, x, zi=state)``
    gives, to rounding. A state is an array of shape ``(len(sections), 2)``.
    """

    def __init__(self, sections: ArrayLike) -> None:
        sos = np.array(sections, dtype=np.float64, ndmin=2)
        if sos.ndim != 2 or sos.shape[1] != 6 or len(sos) == 0:
            msg = f"sections must be rows of b0 b1 b2 a0 a1 a2, not an array of shape {sos.shape}"
            raise ValueError(msg)
        for i, row in enumerate(sos):
            if row[3] == 0.0 or np.abs(np.roots(row[3:])).max(initial=0.0) >= 1.0:
                coefficients = " ".join(f"{v:g}" for v in row)
                msg = f"section {i} ({coefficients}) is unstable: sections need their poles inside |z| = 1"
                raise ValueError(msg)
        self.sections = sos / sos[:, 3:4]
        a, b, c, d = _state_space(self.sections)
        # A^(2^i): the sub-block scan needs A^(64 * 2^t) for up to _PIECE / 64 sub-blocks.
        self._squares = [a]
        while len(self._squares) < _PIECE.bit_length():
            self._squares.append(self._squares[-1] @ self._squares[-1])
        observe = _doubling(c[np.newaxis, :], self._squares, _SUB_BLOCK, axis=0)  # row k: C A^k
        self._ring_out = observe.T.copy()
        # Row k: A^(63 - k) B, what sample k of a sub-block leaves in the state at its end.
        self._reach = _doubling(b[:, np.newaxis], self._squares, _SUB_BLOCK, axis=1)[:, ::-1].T.copy()
        impulse = np.concatenate(([d], observe[: _SUB_BLOCK - 1] @ b))
        lag = np.arange(_SUB_BLOCK)[np.newaxis, :] - np.arange(_SUB_BLOCK)[:, np.newaxis]
        # Row j, column k: how much input sample j of a sub-block puts into its output sample k.
        self._convolve = np.where(lag >= 0, impulse[np.clip(lag, 0, None)], 0.0)
        self._steady = np.linalg.solve(np.eye(len(b)) - a, b)

    def zero_state(self) -> NDArray[np.float64]:
        """The state of a cascade that has heard nothing."""
        return np.zeros((len(self.sections), 2))

    def settled_state(self, value: float) -> NDArray[np.float64]:
        """The state after ``value`` has come in for ever: start there and a constant input gives no transient."""
        return np.reshape(self._steady * value, (-1, 2))

    def run(self, block: ArrayLike, state: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The block filtered, and the state to pass with the next block."""
        x = np.asarray(block, dtype=np.float64)
        s = np.array(state, dtype=np.float64).ravel()
        if x.ndim != 1 or s.shape != (2 * len(self.sections),):
            shape = (len(self.sections), 2)
            msg = f"run takes a 1-D block and a state of shape {shape}, not {x.shape} and {np.shape(state)}"
            raise ValueError(msg)
        y = np.empty(len(x))
        for start in range(0, len(x), _PIECE):
            y[start : start + _PIECE], s = self._piece(x[start : start + _PIECE], s)
        return y, s.reshape(-1, 2)

    def _piece(self, x: NDArray[np.float64], s: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = len(x)
        count = -(-n // _SUB_BLOCK)
        padded = np.zeros(count * _SUB_BLOCK)
        padded[:n] = x
        grid = padded.reshape(count, _SUB_BLOCK)
        # Row j of starts becomes the state at the start of sub-block j: its own input's share
        # first, then the scan adds every earlier row carried forward (row i by A^(64 (j - i))).
        starts = np.empty((count, len(s)))
        starts[0] = s
        starts[1:] = grid[:-1] @ self._reach
        step, power = 1, _SUB_BLOCK.bit_length() - 1
        while step < count:
            starts[step:] += starts[:-step] @ self._squares[power].T
            step, power = 2 * step, power + 1
        y = (grid @ self._convolve + starts @ self._ring_out).ravel()[:n]
        tail = n - (count - 1) * _SUB_BLOCK
        return y, self._carry(starts[-1], tail) + grid[-1, :tail] @ self._reach[_SUB_BLOCK - tail :]

    def _carry(self, s: NDArray[np.float64], steps: int) -> NDArray[np.float64]:
        """Where state ``s`` goes in ``steps`` samples of silence (A^steps s), by the bits of ``steps``."""
        for bit, square in enumerate(self._squares[: steps.bit_length()]):
            if steps >> bit & 1:
                s = square @ s
        return s


def _state_space(
    sections: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """A, B, C, D of the sections in series, the state being each section's transposed direct form II pair."""
    a = np.zeros((0, 0))
    b, c, d = np.zeros(0), np.zeros(0), 1.0
    for b0, b1, b2, _, a1, a2 in sections:
        # One section: y = b0 u + z1; z1' = (b1 - a1 b0) u - a1 z1 + z2; z2' = (b2 - a2 b0) u - a2 z1,
        # and its input u is the output of the sections before it, C s + D x.
        a_s = np.array([[-a1, 1.0], [-a2, 0.0]])
        b_s = np.array([b1 - a1 * b0, b2 - a2 * b0])
        size = len(b)
        grown = np.zeros((size + 2, size + 2))
        grown[:size, :size] = a
        grown[size:, :size] = np.outer(b_s, c)
        grown[size:, size:] = a_s
        a = grown
        b = np.concatenate((b, b_s * d))
        c = np.concatenate((b0 * c, [1.0, 0.0]))
        d *= b0
    return a, b, c, float(d)


def _doubling(
    first: NDArray[np.float64], squares: list[NDArray[np.float64]], count: int, *, axis: int
) -> NDArray[np.float64]:
    """``first`` times A^0 .. A^(count - 1), stacked along ``axis``: rows C A^k (axis 0) or columns A^k B (axis 1)."""
    table = first
    for square in squares:
        if table.shape[axis] >= count:
            break
        table = np.concatenate((table, table @ square if axis == 0 else square @ table), axis=axis)
    return table[:count] if axis == 0 else table[:, :count]
