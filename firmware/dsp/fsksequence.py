"""The coherent re-read of an FSK burst's bits, once its bytes have been found.

The edge reader (``firmware.dsp.fskbytes``) finds where each byte starts; this
module levels those start-bit edges onto one bit clock line and reads the whole
message again as one sequence: a Viterbi over the bits, whose states are the
last two bits and whose paths each track the carrier phase (the burst is
phase-continuous, so a bit's tone shows a phase known from the bits before it),
with start and stop bits known. A few clock shifts, and tone switches on whole
samples or between them, are tried and the best metric kept. Each data bit's
soft value (the soft-output Viterbi margin, shrunk where the noise is loud) is
kept, for the caller ID layer to judge how sure the reading is, with the
signal-to-noise ratio measured on the way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Reread", "reread"]

# Phase tracking in the sequence detector: how much of its phase reference each bit renews.
_TRACK = 0.1
# Bits a trellis state remembers. With one, a path that misread a bit is judged
# against the right one a bit later, before the carrier phase it put wrong (60
# degrees per bit in Bell 202, 120 in V.23) has cost it much; two let it cost one
# more bit, which Bell 202 needs.
_MEMORY = 2
# Bit energy over noise density (a ratio, 10 dB) at and above which a metric lead is
# taken at face value. Below it the soft values shrink, so the caller ID layer's
# checks against checksum collisions tighten as the noise grows.
_REFERENCE_SNR = 10.0 ** (10.0 / 10.0)
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


def _soft_traceback(
    came: NDArray[np.int8], lead_by: NDArray[np.float64], pred: NDArray[np.int64], last: int
) -> tuple[list[int], list[float]]:
    """The kept path's bits, and per bit the smallest metric lead over a dropped path that read it otherwise.

    ``came[k, s]`` says which of state ``s``'s two predecessors (``pred[s]``) its
    survivor came from. Where a dropped path joins the kept one, its bits differ
    back to where the two parted; they are traced back along the dropped path.
    """
    count = len(came)
    states = [0] * count
    state = last
    for k in range(count - 1, -1, -1):
        states[k] = state
        state = int(pred[state, came[k, state]])
    sure = [math.inf] * count
    for k in range(1, count):
        margin = float(lead_by[k, states[k]])
        if not math.isfinite(margin):
            continue
        other = int(pred[states[k], 1 - came[k, states[k]]])
        j = k - 1
        while j >= 0 and other != states[j]:
            if (other ^ states[j]) & 1:
                sure[j] = min(sure[j], margin)
            other = int(pred[other, came[j, other]])
            j -= 1
    return [state & 1 for state in states], sure


@dataclass(frozen=True, slots=True)
class _Trellis:
    """The kept and dropped survivors of every state at every bit, for every clock."""

    came: NDArray[np.int8]  # (bit, clock, state): which predecessor the survivor came from
    lead_by: NDArray[np.float64]  # (bit, clock, state): its metric lead over the other
    metric: NDArray[np.float64]  # (clock, state) at the end
    pred: NDArray[np.int64]  # (state, 2): each state's two predecessors


def _viterbi(
    corr: Sequence[NDArray[np.complex128]],
    turn: Sequence[NDArray[np.complex128]],
    level: Sequence[NDArray[np.float64]],
    size: NDArray[np.float64],
    known: NDArray[np.int64],
) -> _Trellis:
    """Run the trellis over every clock at once (arrays are per clock and bit; index 0 space, 1 mark).

    Each path keeps its own phase reference in the sender's frame: renewed from
    the path's own correlations, turned on by each bit's tone, so the decision is
    coherent and a misread bit puts the phase of the bits after it wrong.
    """
    clocks_n, count = corr[0].shape
    states_n = 1 << _MEMORY
    bit_of = np.arange(states_n) & 1
    pred = np.stack([(np.arange(states_n) >> 1) | (h << (_MEMORY - 1)) for h in (0, 1)], axis=1)
    # Per bit: (clock, state, 1) so they broadcast over the two predecessors.
    c_all = np.stack(corr, axis=2)[:, :, bit_of, None].transpose(1, 0, 2, 3)
    t_all = np.stack(turn, axis=2)[:, :, bit_of].transpose(1, 0, 2)
    lev = np.stack(level, axis=1)[:, bit_of, None]
    half = (0.5 * lev[None, :, :, :] * lev[None, :, :, :]) * size.T[:, :, None, None]
    barred = np.where((known[:, None] >= 0) & (bit_of[None, :] != known[:, None]), -np.inf, 0.0)[:, None, :, None]
    metric = np.full((clocks_n, states_n), -np.inf)
    metric[:, states_n - 1] = 0.0  # the lead is known mark
    # The phase reference starts from the first lead bit, so that bit reads as coherent.
    ref = np.repeat(corr[1][:, :1], states_n, axis=1)
    came = np.zeros((count, clocks_n, states_n), dtype=np.int8)
    lead_by = np.zeros((count, clocks_n, states_n))
    keep = 1.0 - _TRACK
    for k in range(count):
        r = ref[:, pred]
        c = c_all[k]
        cand = metric[:, pred] + lev * (c * np.conj(r)).real / np.maximum(np.abs(r), 1e-300) - half[k] + barred[k]
        up = cand[:, :, 1] > cand[:, :, 0]
        metric = np.where(up, cand[:, :, 1], cand[:, :, 0])
        with np.errstate(invalid="ignore"):
            lead_by[k] = np.abs(cand[:, :, 1] - cand[:, :, 0])
        came[k] = up
        ref = t_all[k] * (keep * np.where(up, r[:, :, 1], r[:, :, 0]) + c[:, :, 0])
    return _Trellis(came, lead_by, metric, pred)


def _sequence_bits(
    x: NDArray[np.complex128],
    sample_rate: int,
    marks: tuple[float, float],
    clocks: Sequence[tuple[NDArray[np.float64], bool]],
    lead: int,
) -> _Read | None:
    """The most likely bit sequence of a phase-continuous burst, with how sure each bit is.

    ``clocks`` are the bit clocks to try: each the times (in samples) where the
    ``lead`` known mark bits and then the message bits (8N1 frames) start, the
    last entry where the message ends, and whether the sender switches tone on
    whole samples (a burst made at this rate) or anywhere between them.

    Each bit's samples are correlated with the mark and the space tone started at
    the bit's start; a bit of tone ``f`` lasting ``n`` samples turns the carrier
    on by ``2 pi f n / rate``, so given the bits before it the phase each
    correlation should show is known. The trellis (``_viterbi``) reads them. The
    clock with the best final metric is kept. Sureness of a bit is the metric
    lead of the kept path over the best path that read the bit otherwise
    (soft-output Viterbi), scaled so a clean bit reads about 1 and shrunk where
    the noise is loud; the last value is the share of start and stop bits whose
    own tone was the louder, and the bit energy over noise density measured.
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
    trellis = _viterbi(corr, turn, level, size, known)
    # The best clock, judged per bit and per unit of signal so twist or level does not favour one.
    top = np.maximum(level[0], level[1])
    scale = top * top * np.mean(size, axis=1)
    final = np.max(trellis.metric, axis=1) / np.maximum(scale, 1e-300)
    pick = int(np.argmax(final))
    if not np.isfinite(final[pick]) or scale[pick] <= 0.0:
        return None
    last = int(np.argmax(trellis.metric[pick]))
    bits, sure = _soft_traceback(trellis.came[:, pick], trellis.lead_by[:, pick], trellis.pred, last)
    is_frame = known[lead:] >= 0
    chosen = np.abs(corr[1][pick, lead:]) > np.abs(corr[0][pick, lead:])
    framing = float(np.mean(chosen[is_frame] == (known[lead:][is_frame] == 1))) if is_frame.any() else 0.0
    mark = np.asarray(bits) == 1
    heard = np.where(mark, np.abs(corr[1][pick]), np.abs(corr[0][pick]))
    expected = np.where(mark, level[1][pick], level[0][pick]) * size[pick]
    snr = _bit_snr(heard / np.maximum(expected, 1e-300))
    # A bit's log-likelihood ratio is its metric lead over the noise power, so a lead
    # read in loud noise is worth less; in quiet, what noise is left does not make the
    # errors (timing and the model do), and the lead is taken as it is.
    worth = min(1.0, snr / _REFERENCE_SNR)
    sureness = [min(worth * v / (2.0 * float(scale[pick])), 2.0) for v in sure[lead:]]
    return _Read(bits[lead:], sureness, framing, 10.0 * math.log10(max(snr, 1e-30)))


@dataclass(frozen=True, slots=True)
class _Read:
    bits: list[int]
    sure: list[float]
    framing: float
    snr_db: float


def _bit_snr(heard: NDArray[np.float64]) -> float:
    """Bit energy over noise density, from each bit's level on its own tone over the level expected.

    The spread of that ratio is the noise's in-phase part, half its power.
    """
    return 1.0 / max(2.0 * float(np.var(heard)), 1e-30)


@dataclass(frozen=True, slots=True)
class Reread:
    """A message's bytes as the sequence detector read them."""

    data: bytes
    # Each byte's eight data bits as soft decisions (LSB first), as in ``FskFrame``.
    soft_bits: tuple[tuple[float, ...], ...]
    framing: float
    # Bit energy over noise density as the re-read measured it, in dB.
    snr_db: float


def reread(
    x: NDArray[np.complex128], sample_rate: int, marks: tuple[float, float], edges: Sequence[float], bit: float
) -> Reread | None:
    """Read the bytes whose start bits begin near ``edges`` again, coherently; None if the audio cannot hold them.

    ``x`` is the burst's band as an analytic signal, ``marks`` the (mark, space)
    frequencies with the offset already applied, ``bit`` the bit length in samples.
    """
    clocks = [
        (_bit_bounds(edges, bit, _LEAD_BITS, line, shift), whole)
        for line in _clock_lines(edges, bit)
        for shift in _SHIFTS
        for whole in (True, False)
    ]
    read = _sequence_bits(x, sample_rate, marks, clocks, _LEAD_BITS)
    if read is None:
        return None
    bits, sure = read.bits, read.sure
    frames = np.asarray(bits, dtype=np.int64).reshape(len(edges), 10)[:, 1:9]
    data = bytes(int(v) for v in np.sum(frames << np.arange(8), axis=1))
    signs = np.where(frames > 0, 1.0, -1.0) * np.asarray(sure).reshape(len(edges), 10)[:, 1:9]
    return Reread(data, tuple(tuple(float(v) for v in row) for row in signs), read.framing, read.snr_db)
