"""FSK caller ID on the wire: Bell 202 and V.23 bursts, made for tests and read back.

A burst is phase-continuous binary FSK at 1200 baud: a channel seizure of
alternating bits, a run of mark bits, then bytes framed 8N1 (a space start bit,
eight data bits LSB first, a mark stop bit). Bell 202 puts mark at 1200 Hz and
space at 2200 Hz; V.23 puts them at 1300 Hz and 2100 Hz.

The demodulator works on one burst-sized stretch of audio at 8000 or 16000 Hz:

1. band-pass 900-2600 Hz in the frequency domain (removes hum and line noise);
2. quadrature correlators: mix down at the mark and the space tone and average
   over one bit, which is the matched filter for a bit ending at each sample;
3. the soft decision is ``|mark| - g * |space|``, with ``g`` levelling the two
   tones (twist) and the whole scaled to about +-1;
4. the mark preamble is where that decision stays high for 32 bits; the tone
   there tells Bell 202 from V.23 (they are 100 Hz apart, which survives a 2 %
   frequency offset) and gives the frequency offset, which the correlators then
   follow;
5. every byte is found by its start-bit edge: the first byte needs a right start
   and stop bit; each next edge is expected ten bits after the last one and
   followed half way if found near there. A byte is read where one is due unless
   the line clearly holds mark there (idle mark between bytes is allowed), so one
   bad stop bit costs a checksum, not the clock;
6. the byte edges are levelled onto one bit clock line, and the whole message is
   read again coherently: a two-state Viterbi over the bits whose paths each
   track the carrier phase (the burst is phase-continuous, so a bit's tone shows
   a phase known from the bits before it), with start and stop bits known. A few
   clock shifts, and tone switches on whole samples or between them, are tried
   and the best metric kept. Each data bit's soft value (the soft-output Viterbi
   margin) is kept, for the caller ID layer to judge how sure the reading is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware.wire.errors import LinerecError

__all__ = [
    "BAUD",
    "NATIVE_RATES",
    "STANDARDS",
    "FskError",
    "FskFrame",
    "FskStandard",
    "demodulate",
    "fsk_burst",
]

BAUD = 1200.0
NATIVE_RATES = (8000, 16000)


class FskError(LinerecError, ValueError):
    """An FSK burst was asked for with settings no line could carry."""


@dataclass(frozen=True, slots=True)
class FskStandard:
    """One FSK tone plan."""

    name: str
    mark_hz: float
    space_hz: float


STANDARDS = {
    "bell202": FskStandard("bell202", 1200.0, 2200.0),
    "v23": FskStandard("v23", 1300.0, 2100.0),
}

# Between the two plans' marks and spaces: the first look at a burst uses these.
_PROBE_MARK_HZ = 1250.0
_PROBE_SPACE_HZ = 2150.0
_BAND_HZ = (900.0, 2600.0)
_PREAMBLE_BITS = 32
_PREAMBLE_LEVEL = 0.7
_START_LEVEL = -0.2
_MIN_BYTE_QUALITY = 0.25
_MAX_IDLE_BITS = 20
_IDLE_LEVEL = 0.5
_SEARCH_BITS = 400
_MAX_OFFSET = 0.04


def _standard(name: str) -> FskStandard:
    try:
        return STANDARDS[name]
    except KeyError:
        msg = f"FSK standard {name!r} is not known; expected one of {', '.join(STANDARDS)}"
        raise FskError(msg) from None


# --- the generator ---------------------------------------------------------------------


def burst_bits(message: bytes, *, seizure_bits: int = 300, mark_bits: int = 180) -> NDArray[np.uint8]:
    """The bits of a burst, in the order sent: seizure (0101...), mark, then each byte 8N1."""
    if seizure_bits < 0 or mark_bits < 0:
        msg = f"seizure_bits {seizure_bits} and mark_bits {mark_bits} must not be negative"
        raise FskError(msg)
    seizure = (np.arange(seizure_bits) % 2).astype(np.uint8)
    mark = np.ones(mark_bits, dtype=np.uint8)
    data = np.frombuffer(bytes(message), dtype=np.uint8)
    bits = (data[:, None] >> np.arange(8, dtype=np.uint8)) & 1
    framed = np.concatenate(
        [np.zeros((len(data), 1), np.uint8), bits.astype(np.uint8), np.ones((len(data), 1), np.uint8)], axis=1
    )
    return np.concatenate([seizure, mark, framed.ravel()])


def fsk_burst(
    message: bytes,
    *,
    standard: str,
    sample_rate: int,
    seizure_bits: int = 300,
    mark_bits: int = 180,
    level_dbfs: float = -13.0,
    freq_offset: float = 0.0,
    twist_db: float = 0.0,
) -> NDArray[np.float64]:
    """A phase-continuous FSK burst carrying ``message``, as float samples in [-1, 1].

    ``level_dbfs`` is the mark tone's level against a full-scale sine (0 dBFS is a
    peak of 1.0); ``twist_db`` is the space tone's level over the mark's.
    ``freq_offset`` is relative: 0.02 sends every tone 2 % high.
    """
    plan = _standard(standard)
    if sample_rate < 8000:
        msg = f"sample rate {sample_rate} Hz is too low for FSK caller ID; use 8000 Hz or more"
        raise FskError(msg)
    if not abs(freq_offset) <= 0.1:
        msg = f"freq_offset {freq_offset} must be between -0.1 and 0.1 (a fraction, 0.02 is +2 %)"
        raise FskError(msg)
    mark_amp = 10.0 ** (level_dbfs / 20.0)
    space_amp = mark_amp * 10.0 ** (twist_db / 20.0)
    if max(mark_amp, space_amp) > 1.0:
        msg = f"level {level_dbfs} dBFS with twist {twist_db} dB would clip; keep both tones at or below 0 dBFS"
        raise FskError(msg)
    bits = burst_bits(message, seizure_bits=seizure_bits, mark_bits=mark_bits)
    n = math.ceil(len(bits) * sample_rate / BAUD)
    index = np.minimum((np.arange(n) * BAUD / sample_rate).astype(np.int64), max(len(bits) - 1, 0))
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    is_mark = bits[index].astype(bool)
    freq = np.where(is_mark, plan.mark_hz, plan.space_hz) * (1.0 + freq_offset)
    phase = 2.0 * np.pi * np.concatenate([[0.0], np.cumsum(freq[:-1])]) / sample_rate
    out: NDArray[np.float64] = np.where(is_mark, mark_amp, space_amp) * np.sin(phase)
    return out


# --- the demodulator -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FskFrame:
    """The bytes read from one burst, and where they lie in the audio given."""

    standard: str
    data: bytes
    # Sample index of the first start bit, and of the end of each byte's stop bit.
    start: int
    byte_ends: tuple[int, ...]
    freq_offset: float
    # Each byte's eight data bits as soft decisions (LSB first): above 0 read as 1,
    # and the nearer 0, the less sure.
    soft_bits: tuple[tuple[float, ...], ...] = ()
    # Share of the start and stop bits whose tone, heard on its own, was the right one:
    # near 1 on a burst read in step, near a half when the bit clock slipped.
    framing: float = 1.0


def _analytic_band(x: NDArray[np.float64], sample_rate: int) -> NDArray[np.complex128]:
    """The 900-2600 Hz band of ``x`` as an analytic signal (positive frequencies only).

    Mixing an analytic signal down leaves no image at twice the tone, which a
    one-bit average would not remove.
    """
    n = len(x)
    spectrum = np.fft.fft(x)
    freqs = np.fft.fftfreq(n, 1.0 / sample_rate)
    low, high = _BAND_HZ
    taper = 150.0
    mask = np.clip((freqs - low + taper) / taper, 0.0, 1.0) * np.clip((high + taper - freqs) / taper, 0.0, 1.0)
    out: NDArray[np.complex128] = np.fft.ifft(spectrum * mask)
    return out


def _correlate(x: NDArray[np.complex128], sample_rate: int, freq: float, length: int) -> NDArray[np.complex128]:
    """Mix ``x`` down from ``freq`` and average over ``length`` samples ending at each sample."""
    t = np.arange(len(x)) / sample_rate
    z = x * np.exp(-2j * np.pi * freq * t)
    total = np.concatenate([np.zeros(length, dtype=np.complex128), np.cumsum(z)])
    out: NDArray[np.complex128] = (total[length:] - total[:-length]) / length
    return out


@dataclass(frozen=True, slots=True)
class _Soft:
    # About +1 on a mark bit and -1 on a space bit.
    decision: NDArray[np.float64]
    # Where the mark tone is on at full level and the space tone is off.
    mark_on: NDArray[np.bool_]


def _soft(mark: NDArray[np.complex128], space: NDArray[np.complex128]) -> _Soft | None:
    """Soft mark-minus-space decision from the two correlators.

    A loud tone leaks into the other tone's correlator (a one-bit window cannot
    separate tones 800 Hz apart), so with twist one correlator may tell mark from
    space far better than the other. Each is weighted by how far its level moves
    between mark and space bits (a linear discriminant for equal noise), and the
    threshold sits half way, so the zero crossing stays in the middle of a
    transition whatever the levels.
    """
    m, s = np.abs(mark), np.abs(space)
    total = m + s
    loud = total >= 0.5 * float(np.percentile(total, 90))
    mark_wins = loud & (m > s)
    space_wins = loud & (m <= s)
    if mark_wins.sum() < 8 or space_wins.sum() < 8:
        return None
    m_on, s_leak = float(np.median(m[mark_wins])), float(np.median(s[mark_wins]))
    s_on, m_leak = float(np.median(s[space_wins])), float(np.median(m[space_wins]))
    m_step, s_step = max(m_on - m_leak, 0.0), max(s_on - s_leak, 0.0)
    scale = 0.5 * (m_step * m_step + s_step * s_step)
    if scale <= 0.0:
        return None
    decision = (m_step * (m - 0.5 * (m_on + m_leak)) - s_step * (s - 0.5 * (s_on + s_leak))) / scale
    mark_on = (decision > 0.5) & (total > 0.5 * (m_on + s_leak))
    return _Soft(decision, mark_on)


def _moving_average(x: NDArray[np.float64], length: int) -> NDArray[np.float64]:
    total = np.concatenate([np.zeros(length), np.cumsum(x)])
    out: NDArray[np.float64] = (total[length:] - total[:-length]) / length
    return out


@dataclass(frozen=True, slots=True)
class _Preamble:
    start: int
    end: int


def _find_preamble(mark_on: NDArray[np.bool_], bit: float) -> _Preamble | None:
    width = round(_PREAMBLE_BITS * bit)
    if len(mark_on) <= width:
        return None
    held = _moving_average(mark_on.astype(np.float64), width) >= _PREAMBLE_LEVEL
    held[: width - 1] = False
    first = int(np.argmax(held))
    if not held[first]:
        return None
    drops = np.flatnonzero(~held[first:])
    end = first + int(drops[0]) if len(drops) else len(held)
    return _Preamble(first - width + 1, end)


def _mark_frequency(x: NDArray[np.complex128], sample_rate: int, probe: float, length: int, where: _Preamble) -> float:
    """The mark tone's frequency, from how fast the probe correlator turns over the preamble."""
    # The ends of the held stretch may reach into the seizure or the data, whose space
    # tone (louder with twist) would pull the estimate; the middle is pure mark.
    lo, hi = where.start + round(16 * length), where.end - round(24 * length)
    if hi - lo < 32 * length:
        lo, hi = where.start, where.end
    z = _correlate(x[lo:hi], sample_rate, probe, length)[length:]
    if len(z) <= length:
        return probe
    turn = np.angle(np.sum(z[length:] * np.conj(z[:-length])))
    return probe + float(turn) * sample_rate / (2.0 * np.pi * length)


class _Reader:
    """Reads 8N1 bytes off a soft decision by their start-bit edges."""

    def __init__(self, decision: NDArray[np.float64], bit: float, length: int) -> None:
        self.d = decision
        self.bit = bit
        self.length = length
        falls = np.flatnonzero((decision[:-1] >= 0.0) & (decision[1:] < 0.0))
        a, b = decision[falls], decision[falls + 1]
        # The correlator is half in the start bit at the zero crossing.
        self.edges = falls + a / (a - b) - length / 2.0 + 1.0

    def soft_bits(self, edge: float) -> tuple[float, ...]:
        points = np.rint(edge + np.arange(1, 9) * self.bit + self.length - 1).astype(np.int64)
        return tuple(float(v) for v in self.d[np.clip(points, 0, len(self.d) - 1)])

    def byte_at(self, edge: float) -> tuple[int, bool, float] | None:
        """(value, framing ok, quality) of the byte whose start bit begins at ``edge``."""
        points = np.rint(edge + np.arange(10) * self.bit + self.length - 1).astype(np.int64)
        if points[0] < 0 or points[-1] >= len(self.d):
            return None
        v = self.d[points]
        value = int(np.sum((v[1:9] > 0.0).astype(np.int64) << np.arange(8)))
        framed = bool(v[0] < _START_LEVEL and v[9] > 0.0)
        return value, framed, float(np.mean(np.abs(v)))

    def edges_between(self, low: float, high: float) -> NDArray[np.float64]:
        lo, hi = np.searchsorted(self.edges, [low, high])
        return self.edges[lo:hi]

    def first_byte(self, after: float, accept: Callable[[int], bool]) -> tuple[float, int] | None:
        for edge in self.edges_between(after, after + _SEARCH_BITS * self.bit):
            got = self.byte_at(float(edge))
            if got and got[1] and got[2] >= _MIN_BYTE_QUALITY and accept(got[0]):
                return float(edge), got[0]
        return None

    def next_byte(self, last: float) -> tuple[float, int] | None:
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


# Phase tracking in the sequence detector: how much of its phase reference each bit renews.
_TRACK = 0.1
# Known mark bits before the first start bit that set up the phase reference.
_LEAD_BITS = 16
# Where the bit clock's samples fall is tried at these shifts (samples) from the fitted line.
_SHIFTS = tuple(np.arange(-1.0, 1.01, 0.25))
# A bit is re-read only where the byte clock puts it within this share of a bit of the fitted line.
_CLOCK_SLACK = 0.6


def _clock_lines(edges: Sequence[float], bit: float) -> list[tuple[float, float]]:
    """(first edge, byte period) of the bit clock lines worth trying for a message's bytes.

    The bytes' start-bit edges are levelled onto one straight line (the sender's
    clock does not wander; noise moves single edges), with the period fitted and
    with the nominal period. Edges clearly off the line (idle mark between bytes,
    or noise) do not pull it.
    """
    e = np.asarray(edges, dtype=np.float64)
    index = np.arange(len(e), dtype=np.float64)
    lines = []
    for fitted in (False, True):
        slope = 10.0 * bit
        if fitted and len(e) < 8:
            continue
        near = np.ones(len(e), dtype=bool)
        for _ in range(2):
            if fitted:
                slope, intercept = np.polyfit(index[near], e[near], 1)
            else:
                intercept = float(np.median((e - slope * index)[near]))
            near = np.abs(e - intercept - slope * index) < _CLOCK_SLACK * bit
            if near.sum() < max(3, len(e) // 2):
                break
        lines.append((float(intercept), float(slope)))
    return lines


def _bit_bounds(
    edges: Sequence[float], bit: float, lead: int, line: tuple[float, float], shift: float
) -> NDArray[np.float64]:
    """Sample index where each bit of the message starts, and where the last one ends.

    Edges near the clock line are moved onto it; each stop bit runs to the next
    start bit, so any idle mark between bytes belongs to it.
    """
    e = np.asarray(edges, dtype=np.float64)
    intercept, slope = line
    on_line = intercept + slope * np.arange(len(e))
    e = np.where(np.abs(e - on_line) < _CLOCK_SLACK * bit, on_line, e) + shift
    starts = (e[:, None] + np.arange(10) * bit).ravel()
    before = e[0] - np.arange(lead, 0, -1) * bit
    return np.concatenate([before, starts, [e[-1] + 10.0 * bit]])


def _tone_correlations(
    x: NDArray[np.complex128],
    sample_rate: int,
    marks: tuple[float, float],
    times: NDArray[np.float64],
    bounds: NDArray[np.int64],
) -> tuple[list[NDArray[np.complex128]], list[NDArray[np.complex128]]]:
    """Per tone (space, mark): each bit's correlation with the tone started at its start, and the tone's turn."""
    n = np.arange(len(x))
    corr, turn = [], []
    for f in (marks[1], marks[0]):
        w = 2.0 * np.pi * f / sample_rate
        total = np.concatenate([[0.0], np.cumsum(x * np.exp(-1j * w * n))])
        corr.append((total[bounds[:, 1:]] - total[bounds[:, :-1]]) * np.exp(1j * w * times[:, :-1]))
        turn.append(np.exp(1j * w * np.diff(times, axis=1)))
    return corr, turn


def _soft_traceback(back: NDArray[np.int64], lead_by: NDArray[np.float64], last: int) -> tuple[list[int], list[float]]:
    """The kept path's bits, and per bit the smallest metric lead over a dropped path that read it otherwise.

    Where a dropped path joins the kept one, its bits differ back to where the two
    parted; they are traced back along the dropped path. The bit where they join
    is rated with them (conservatively: it ends the doubtful stretch).
    """
    count = len(back)
    states = [0] * count
    state = last
    for k in range(count - 1, -1, -1):
        states[k] = state
        state = int(back[k, state])
    sure = [math.inf] * count
    for k in range(1, count):
        margin = float(lead_by[k, states[k]])
        if not math.isfinite(margin):
            continue
        other = 1 - int(back[k, states[k]])
        j = k - 1
        while j >= 0 and other != states[j]:
            sure[j] = min(sure[j], margin)
            other = int(back[j, other])
            j -= 1
        if j < k - 1:
            sure[k] = min(sure[k], margin)
    return states, sure


def _sequence_bits(
    x: NDArray[np.complex128],
    sample_rate: int,
    marks: tuple[float, float],
    clocks: Sequence[tuple[NDArray[np.float64], bool]],
    lead: int,
) -> tuple[list[int], list[float], float] | None:
    """The most likely bit sequence of a phase-continuous burst, with how sure each bit is.

    ``clocks`` are the bit clocks to try: each the times (in samples) where the
    ``lead`` known mark bits and then the message bits (8N1 frames) start, the
    last entry where the message ends, and whether the sender switches tone on
    whole samples (a burst made at this rate) or anywhere between them.

    Each bit's samples are correlated with the mark and the space tone started at
    the bit's start; a bit of tone ``f`` lasting ``n`` samples turns the carrier
    on by ``2 pi f n / rate``, so given the bits before it the phase each
    correlation should show is known. A two-state trellis (the last bit) keeps per
    path its own phase reference, renewed from the path's own correlations, so
    the decision is coherent and uses that a wrong bit shifts the phase of every
    bit after it. The clock with the best final metric is kept. Sureness of a bit
    is the metric lead of the kept path over the best path that read the bit
    otherwise (soft-output Viterbi), scaled so a clean bit reads about 1; the
    last value is the share of start and stop bits whose own tone was the louder.
    """
    count = len(clocks[0][0]) - 1 if clocks else 0
    if count <= lead or any(len(t) != count + 1 for t, _ in clocks):
        return None
    times = np.stack([np.ceil(t - 0.5) if whole else t for t, whole in clocks])
    bounds = np.ceil(times - 1e-9).astype(np.int64)
    keep = (bounds[:, 0] >= 0) & (bounds[:, -1] <= len(x))
    if not keep.any():
        return None
    times, bounds = times[keep], bounds[keep]
    # corr[b], turn[b]: (clock, bit); b = 0 space, 1 mark.
    corr, turn = _tone_correlations(x, sample_rate, marks, times, bounds)
    size = np.maximum(np.diff(bounds, axis=1), 1).astype(np.float64)
    # Each tone's level per sample (the tones may differ: twist), from the bits where it is the louder.
    louder = np.abs(corr[1]) > np.abs(corr[0])
    level = [
        np.array([np.median(np.abs(c[i][m[i]]) / size[i][m[i]]) if m[i].any() else 0.0 for i in range(len(c))])
        for c, m in ((corr[0], ~louder), (corr[1], louder))
    ]
    known = np.full(count, -1)
    known[:lead] = 1
    known[lead::10] = 0
    known[lead + 9 :: 10] = 1
    clocks_n = len(times)
    rows = np.arange(clocks_n)
    metric = np.array([[-np.inf, 0.0]] * clocks_n)
    phase = np.ones((clocks_n, 2), dtype=np.complex128)
    ref = np.zeros((clocks_n, 2), dtype=np.complex128)
    back = np.zeros((count, clocks_n, 2), dtype=np.int64)
    lead_by = np.zeros((count, clocks_n, 2))
    for k in range(count):
        unit = np.where(ref != 0, ref / np.maximum(np.abs(ref), 1e-300), 1.0)
        new_metric, new_phase, new_ref = np.empty_like(metric), np.empty_like(phase), np.empty_like(ref)
        for b in (0, 1):
            seen = corr[b][:, k, None] * np.conj(phase)
            gain = level[b][:, None] * ((seen * np.conj(unit)).real - 0.5 * level[b][:, None] * size[:, k, None])
            cand = metric + gain
            if known[k] == 1 - b:
                cand = np.full_like(cand, -np.inf)
            came = np.argmax(cand, axis=1)
            best = cand[rows, came]
            other = cand[rows, 1 - came]
            back[k, :, b] = came
            lead_by[k, :, b] = np.where(np.isfinite(other), best - np.where(np.isfinite(other), other, 0.0), np.inf)
            new_metric[:, b] = best
            new_phase[:, b] = phase[rows, came] * turn[b][:, k]
            new_ref[:, b] = (1.0 - _TRACK) * ref[rows, came] + seen[rows, came]
        metric, phase, ref = new_metric, new_phase, new_ref
    # The best clock, judged per bit and per unit of signal so twist or level does not favour one.
    top = np.maximum(level[0], level[1])
    scale = top * top * np.mean(size, axis=1)
    final = np.max(metric, axis=1) / np.maximum(scale, 1e-300)
    pick = int(np.argmax(final))
    if not np.isfinite(final[pick]) or scale[pick] <= 0.0:
        return None
    states, sure = _soft_traceback(back[:, pick, :], lead_by[:, pick, :], int(np.argmax(metric[pick])))
    unit_size = float(scale[pick])
    bits = states
    is_frame = known[lead:] >= 0
    chosen = np.abs(corr[1][pick, lead:]) > np.abs(corr[0][pick, lead:])
    framing = float(np.mean(chosen[is_frame] == (known[lead:][is_frame] == 1))) if is_frame.any() else 0.0
    return bits[lead:], [min(v / (2.0 * unit_size), 2.0) for v in sure[lead:]], framing


def _choose(
    x: NDArray[np.complex128], sample_rate: int, standards: Sequence[str], length: int, bit: float
) -> tuple[FskStandard, float, _Preamble] | None:
    """Which tone plan the burst uses, its frequency offset, and where its mark preamble is."""
    plans = [_standard(name) for name in standards]
    if len(plans) == 1:
        probe_mark, probe_space = plans[0].mark_hz, plans[0].space_hz
    else:
        probe_mark, probe_space = _PROBE_MARK_HZ, _PROBE_SPACE_HZ
    soft = _soft(_correlate(x, sample_rate, probe_mark, length), _correlate(x, sample_rate, probe_space, length))
    if soft is None:
        return None
    preamble = _find_preamble(soft.mark_on, bit)
    if preamble is None:
        return None
    mark_hz = _mark_frequency(x, sample_rate, probe_mark, length, preamble)
    plan = min(plans, key=lambda p: abs(math.log(mark_hz / p.mark_hz)) if mark_hz > 0 else 0.0)
    offset = min(max(mark_hz / plan.mark_hz - 1.0, -_MAX_OFFSET), _MAX_OFFSET)
    return plan, offset, preamble


def demodulate(
    audio: NDArray[np.float64],
    sample_rate: int,
    *,
    standards: Sequence[str] = ("bell202", "v23"),
    accept_first: Callable[[int], bool] = lambda _byte: True,
    wanted: Callable[[bytes], int | None] = lambda _data: None,
    max_bytes: int = 260,
) -> FskFrame | None:
    """Read the bytes of the first FSK burst in ``audio`` (8000 or 16000 Hz); None if there is none.

    ``accept_first`` vets the first byte after the mark preamble (a message type);
    ``wanted`` says, from the bytes so far, how many bytes the message has, so
    reading stops there instead of running into whatever follows.
    """
    if sample_rate not in NATIVE_RATES:
        msg = f"FSK demodulator runs at {' or '.join(map(str, NATIVE_RATES))} Hz, not {sample_rate} Hz"
        raise FskError(msg)
    bit = sample_rate / BAUD
    length = round(bit)
    samples = np.asarray(audio, dtype=np.float64)
    if len(samples) < 64 * bit or not np.all(np.isfinite(samples)):
        return None
    x = _analytic_band(samples, sample_rate)
    chosen = _choose(x, sample_rate, standards, length, bit)
    if chosen is None:
        return None
    plan, offset, preamble = chosen
    scale = 1.0 + offset
    soft = _soft(
        _correlate(x, sample_rate, plan.mark_hz * scale, length),
        _correlate(x, sample_rate, plan.space_hz * scale, length),
    )
    if soft is None:
        return None
    reader = _Reader(soft.decision, bit, length)
    first = reader.first_byte(preamble.start + _PREAMBLE_BITS * bit - length, accept_first)
    if first is None:
        return None
    edge, value = first
    start, data, edges = edge, bytearray((value,)), [edge]
    while len(data) < max_bytes:
        need = wanted(bytes(data))
        if need is not None and len(data) >= need:
            break
        got = reader.next_byte(edge)
        if got is None:
            break
        edge, value = got
        data.append(value)
        edges.append(edge)
    # Bytes the old reader lost, where the message says there are more, lie on the clock.
    need = wanted(bytes(data))
    while need is not None and len(data) < min(need, max_bytes) and edge + 20.0 * bit + length < len(x):
        edge += 10.0 * bit
        read_here = reader.byte_at(edge)
        data.append(read_here[0] if read_here else 0)
        edges.append(edge)
    soft_bits = tuple(reader.soft_bits(e) for e in edges)
    framing = 1.0
    marks = (plan.mark_hz * scale, plan.space_hz * scale)
    # Each byte's own start-bit edge, not the followed one, for the clock line.
    raw_edges = []
    for e in edges:
        near = reader.edges_between(e - bit / 2.0, e + bit / 2.0)
        raw_edges.append(float(near[np.argmin(np.abs(near - e))]) if len(near) else e)
    clocks = [
        (_bit_bounds(raw_edges, bit, _LEAD_BITS, line, shift), whole)
        for line in _clock_lines(raw_edges, bit)
        for shift in _SHIFTS
        for whole in (True, False)
    ]
    read = _sequence_bits(x, sample_rate, marks, clocks, _LEAD_BITS)
    if read is not None:
        bits, sure, framing = read
        frames = np.asarray(bits, dtype=np.int64).reshape(len(edges), 10)[:, 1:9]
        data = bytearray(int(v) for v in np.sum(frames << np.arange(8), axis=1))
        signs = np.where(frames > 0, 1.0, -1.0) * np.asarray(sure).reshape(len(edges), 10)[:, 1:9]
        soft_bits = tuple(tuple(float(v) for v in row) for row in signs)
    return FskFrame(
        standard=plan.name,
        data=bytes(data),
        start=round(start),
        byte_ends=tuple(round(e + 10.0 * bit) for e in edges),
        freq_offset=offset,
        soft_bits=soft_bits,
        framing=framing,
    )
