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
4. the mark preamble is where that decision stays high for 32 bits (dips in
   noise or a short dropout do not end it); its middle tells Bell 202 from
   V.23 (they are 100 Hz apart, which survives a 2 % frequency offset) and gives
   the frequency offset, which the correlators then follow;
5. every byte is found by its start-bit edge (``firmware.dsp.fskbytes``): the
   first byte needs a right start bit and a value at most one bit from an
   accepted message type; each next one is expected ten bits after the last;
6. the message is read again coherently (``firmware.dsp.fsksequence``), which
   gives each data bit a soft value for the caller ID layer to judge how sure
   the reading is, and the signal-to-noise ratio it was read at. If that reading
   lengthens the message (its length byte was misread before), the bytes it
   calls for are added on the clock and it is read again; if it does not give an
   accepted type, the next candidate first byte is tried, a few at most.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.fskbytes import ByteReader, ReadBytes
from firmware.dsp.fsksequence import reread
from firmware.wire.errors import LinerecError

__all__ = [
    "BAUD",
    "NATIVE_RATES",
    "STANDARDS",
    "FskError",
    "FskFrame",
    "FskStandard",
    "demodulate",
    "demodulate_all",
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
_PREAMBLE_GAP_BITS = 32
_MAX_OFFSET = 0.04
# Framed bytes after the preamble tried as the message's first, in order, before giving up.
_FIRST_BYTE_TRIES = 4
# Coherent re-reads of one message: a corrected length byte may call for more bytes.
_REREADS = 3
# The first message's start is looked for this many bits after the preamble; a next
# one's this many after the last one's end, and only after a bit that clearly sounds mark.
_SEARCH_BITS = 400
_NEXT_SEARCH_BITS = 60
_NEXT_LEAD_LEVEL = 0.5
# A type byte one bit from an accepted type is read as that type only if the bit is this unsure.
_TYPE_DOUBT = 0.35
_TYPE_SURE = 0.2


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
    # Bit energy over noise density (dB) measured by the coherent re-read; -inf when
    # the message could not be re-read, so nothing relies on it being quiet.
    snr_db: float = -math.inf


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
    # In noise, or through a short dropout, the mark run's share dips below the level
    # for a while; ending it there would leave too little of it to give the tone's
    # frequency. It ends where the share stays low for as long as a window.
    gap = round(_PREAMBLE_GAP_BITS * bit)
    gone = np.flatnonzero(_moving_average((~held[first:]).astype(np.float64), gap) > 1.0 - 1e-9)
    end = first + int(gone[0]) - gap + 1 if len(gone) else len(held)
    return _Preamble(first - width + 1, end)


def _mark_frequency(
    probe: float,
    z: NDArray[np.complex128],
    decision: NDArray[np.float64],
    *,
    where: _Preamble,
    length: int,
    sample_rate: int,
) -> float:
    """The mark tone's frequency, from how fast the probe correlator ``z`` turns from bit to bit over the preamble."""
    # The ends of the held stretch may reach into the seizure or the data, and a
    # dropout may lie within it; a space tone there (louder with twist) would pull the
    # estimate, so the middle is used, and only pairs of bits that both sound mark.
    lo, hi = where.start + round(16 * length), where.end - round(24 * length)
    if hi - lo < 32 * length:
        lo, hi = where.start, where.end
    lo = max(lo, 2 * length)
    pairs = z[lo:hi] * np.conj(z[lo - length : hi - length])
    both = (decision[lo:hi] > 0.0) & (decision[lo - length : hi - length] > 0.0)
    if both.sum() <= length:
        return probe
    turn = np.angle(np.sum(pairs[both]))
    return probe + float(turn) * sample_rate / (2.0 * np.pi * length)


def _choose(
    x: NDArray[np.complex128], sample_rate: int, standards: Sequence[str], length: int, bit: float
) -> tuple[FskStandard, float, _Preamble] | None:
    """Which tone plan the burst uses, its frequency offset, and where its mark preamble is."""
    plans = [_standard(name) for name in standards]
    if len(plans) == 1:
        probe_mark, probe_space = plans[0].mark_hz, plans[0].space_hz
    else:
        probe_mark, probe_space = _PROBE_MARK_HZ, _PROBE_SPACE_HZ
    mark = _correlate(x, sample_rate, probe_mark, length)
    soft = _soft(mark, _correlate(x, sample_rate, probe_space, length))
    if soft is None:
        return None
    preamble = _find_preamble(soft.mark_on, bit)
    if preamble is None:
        return None
    mark_hz = _mark_frequency(probe_mark, mark, soft.decision, where=preamble, length=length, sample_rate=sample_rate)
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
    """Read the bytes of the first message of the first FSK burst in ``audio``; None if there is none.

    The arguments are those of :func:`demodulate_all`.
    """
    frames = demodulate_all(
        audio, sample_rate, standards=standards, accept_first=accept_first, wanted=wanted, max_bytes=max_bytes, most=1
    )
    return frames[0] if frames else None


def demodulate_all(
    audio: NDArray[np.float64],
    sample_rate: int,
    *,
    standards: Sequence[str] = ("bell202", "v23"),
    accept_first: Callable[[int], bool] = lambda _byte: True,
    wanted: Callable[[bytes], int | None] = lambda _data: None,
    max_bytes: int = 260,
    most: int = 4,
) -> list[FskFrame]:
    """Read the bytes of every message in the first FSK burst in ``audio`` (8000 or 16000 Hz), in order.

    ``accept_first`` vets each message's first byte (a message type); ``wanted``
    says, from the bytes so far, how many bytes the message has, so reading stops
    there instead of running into whatever follows. The first message follows the
    mark preamble; a sender may follow it with more on the same seizure (ETSI),
    each starting after a mark bit within a few bits of the last one's end.
    """
    if sample_rate not in NATIVE_RATES:
        msg = f"FSK demodulator runs at {' or '.join(map(str, NATIVE_RATES))} Hz, not {sample_rate} Hz"
        raise FskError(msg)
    bit = sample_rate / BAUD
    length = round(bit)
    samples = np.asarray(audio, dtype=np.float64)
    if len(samples) < 64 * bit or not np.all(np.isfinite(samples)):
        return []
    x = _analytic_band(samples, sample_rate)
    chosen = _choose(x, sample_rate, standards, length, bit)
    if chosen is None:
        return []
    plan, offset, preamble = chosen
    marks = (plan.mark_hz * (1.0 + offset), plan.space_hz * (1.0 + offset))
    soft = _soft(_correlate(x, sample_rate, marks[0], length), _correlate(x, sample_rate, marks[1], length))
    if soft is None:
        return []
    reader = ByteReader(soft.decision, bit, length)
    accepted = frozenset(v for v in range(256) if accept_first(v))
    # A type byte read with one bit wrong still marks where the message starts; the
    # coherent re-read, or failing that its soft bits, must then make it an accepted type.
    near = accepted | {v ^ (1 << place) for v in accepted for place in range(8)}
    frames: list[FskFrame] = []
    starts = reader.first_bytes(preamble.start + _PREAMBLE_BITS * bit - length, near, span=_SEARCH_BITS)
    while len(frames) < most:
        for edge, value in itertools.islice(starts, _FIRST_BYTE_TRIES):
            read = reader.follow(edge, value, wanted, max_bytes)
            message = _typed(
                _read_message(x, sample_rate, reader, marks, read, wanted=wanted, most=max_bytes), accepted
            )
            if message is not None:
                break
        else:
            break
        frames.append(
            FskFrame(
                standard=plan.name,
                data=message.data,
                start=round(edge),
                byte_ends=tuple(round(e + 10.0 * bit) for e in message.edges),
                freq_offset=offset,
                soft_bits=message.soft_bits,
                framing=message.framing,
                snr_db=message.snr_db,
            )
        )
        end = message.edges[min(wanted(message.data) or len(message.data), len(message.edges)) - 1] + 10.0 * bit
        starts = reader.first_bytes(end - length, near, span=_NEXT_SEARCH_BITS, lead_level=_NEXT_LEAD_LEVEL)
    return frames


@dataclass(frozen=True, slots=True)
class _Message:
    data: bytes
    edges: tuple[float, ...]
    soft_bits: tuple[tuple[float, ...], ...]
    framing: float
    snr_db: float


def _typed(message: _Message, accepted: frozenset[int]) -> _Message | None:
    """``message`` with its type byte read as an accepted type, if one doubtful bit is all between; else None.

    The type is one of a few values, so a doubtful bit that alone keeps it from
    being one is the bit misread; the checksum, which covers the type, checks it.
    The rest of the byte must be sure (but for the bit's neighbours, which the
    sequence detector doubts along with it): in a dropout or in noise every bit
    is doubtful, and one of them would always do.
    """
    value, soft = message.data[0], message.soft_bits[0]
    if value in accepted:
        return message
    flips = sorted((abs(soft[place]), place) for place in range(8) if value ^ (1 << place) in accepted)
    if not flips or flips[0][0] >= _TYPE_DOUBT:
        return None
    place = flips[0][1]
    if any(abs(soft[p]) < _TYPE_SURE for p in range(8) if abs(p - place) > 1):
        return None
    bits = tuple(-v if p == place else v for p, v in enumerate(soft))
    data = bytes((value ^ (1 << place),)) + message.data[1:]
    return dataclasses.replace(message, data=data, soft_bits=(bits, *message.soft_bits[1:]))


def _read_message(
    x: NDArray[np.complex128],
    sample_rate: int,
    reader: ByteReader,
    marks: tuple[float, float],
    read: ReadBytes,
    *,
    wanted: Callable[[bytes], int | None],
    most: int,
) -> _Message:
    """The message the edge reader found, read again coherently.

    The re-read may put right a length byte the edge reader got wrong; the bytes
    that length calls for are then added on the clock and the message read again.
    """
    message = _Message(
        bytes(read.data), tuple(read.edges), tuple(reader.soft_bits(e) for e in read.edges), 1.0, -math.inf
    )
    for attempt in range(_REREADS):
        again = reread(x, sample_rate, marks, reader.own_edges(read.edges), reader.bit)
        if again is None:
            break
        message = _Message(again.data, tuple(read.edges), again.soft_bits, again.framing, again.snr_db)
        read.data[:] = again.data
        if attempt == _REREADS - 1 or not reader.read_on(read, wanted(again.data), most):
            break
    return message
