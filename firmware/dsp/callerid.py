"""Caller ID decoding: find FSK (Bell 202, V.23) and DTMF caller ID in line audio.

The message layer (SDMF/MDMF bytes, checksum, parameters) lives in
``firmware.dsp.cidmessage`` and is re-exported here; the modem in
``firmware.dsp.fsk``. This module finds bursts in a stream of audio and turns
each message in them (a burst may carry more than one) into a
:class:`DecodedCallerId`.

Finding bursts is done on 10 ms frames: a frame is "carrier" when most of its
300-3400 Hz power lies in 1000-2400 Hz and it is not silent. A run of carrier
frames (gaps of up to 50 ms bridged) is one burst, handed to the demodulator
with 30 ms either side. Every frame is judged on its own samples, so feeding
the audio in blocks of any size finds the same bursts as decoding it at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.cidmessage import (
    ABSENCE_REASONS,
    CallerIdError,
    MessageType,
    Param,
    checksum,
    encode_mdmf,
    encode_sdmf,
    iter_parameters,
    message_waiting,
    parse_message,
    split_message,
)
from firmware.dsp.dtmf import DATA, DtmfDetector, DtmfDigit, detect_dtmf
from firmware.dsp.fsk import NATIVE_RATES, STANDARDS, FskFrame, demodulate_all, fsk_burst
from firmware.line.base import CallerId
from firmware.line.speech import to_telephone_band

__all__ = [
    "ABSENCE_REASONS",
    "CallerIdDecoder",
    "CallerIdError",
    "DecodedCallerId",
    "MessageType",
    "Param",
    "checksum",
    "decode_callerid",
    "encode_mdmf",
    "encode_sdmf",
    "finding_from_bytes",
    "fsk_callerid_audio",
    "iter_parameters",
    "parse_message",
    "repair_one_bit",
    "split_message",
]

DECODE_STANDARDS = ("auto", "bell202", "v23", "dtmf")
_ABSENCE_NAMES = {"O": "unavailable", "P": "private"}
_KNOWN_TYPES = frozenset(
    (
        MessageType.SDMF_CALLER_ID,
        MessageType.SDMF_MESSAGE_WAITING,
        MessageType.MDMF_CALLER_ID,
        MessageType.MDMF_MESSAGE_WAITING,
    )
)
_SDMF_TYPES = (MessageType.SDMF_CALLER_ID, MessageType.SDMF_MESSAGE_WAITING)
_CALLER_ID_TYPES = (MessageType.SDMF_CALLER_ID, MessageType.MDMF_CALLER_ID)

_FRAMES_PER_SECOND = 100
_CARRIER_SHARE = 0.6
_CARRIER_BAND_HZ = (1000.0, 2400.0)
_LINE_BAND_HZ = (300.0, 3400.0)
# -50 dBFS: a sine this weak is below any real line's caller ID level.
_SILENCE_POWER = 0.5 * 10.0 ** (-50.0 / 10.0)
_GAP_FRAMES = 5
_PAD_FRAMES = 3
_MIN_FRAMES = 8
_MAX_FRAMES = 400
_FULL_SCALE = 32768.0
_DEMOD_RATE = 8000


@dataclass(frozen=True, slots=True)
class DecodedCallerId:
    """One caller ID message found in audio, whole or damaged."""

    # None when the checksum fails or the message is not caller ID (message waiting).
    caller_id: CallerId | None
    # "bell202-sdmf", "bell202-mdmf", "etsi-v23" or "dtmf".
    standard: str
    number: str | None
    name: str | None
    # MMDDHHMM as sent.
    time: str | None
    # "private", "unavailable" or None.
    number_absence: str | None
    name_absence: str | None
    # Set for message-waiting messages (0x06 SDMF, 0x82 MDMF).
    message_waiting: bool | None
    checksum_ok: bool
    # Seconds from the start of the audio: the burst's carrier onset, and the end of
    # the message's last stop bit.
    start_s: float
    end_s: float
    raw: bytes

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of what was found and where."""
        return {
            "standard": self.standard,
            "number": self.number,
            "name": self.name,
            "time": self.time,
            "number_absence": self.number_absence,
            "name_absence": self.name_absence,
            "message_waiting": self.message_waiting,
            "checksum_ok": self.checksum_ok,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
        }


# --- from message bytes to a finding ---------------------------------------------------


def _message_length(data: bytes) -> int | None:
    return data[1] + 3 if len(data) >= 2 else None


def _standard_name(modulation: str, message_type: int) -> str:
    if modulation == "v23":
        return "etsi-v23"
    return "bell202-sdmf" if message_type in _SDMF_TYPES else "bell202-mdmf"


def _sent_time(message_type: int, data: bytes) -> str | None:
    if message_type in _SDMF_TYPES:
        return data[:8].decode("latin-1") if message_type == MessageType.SDMF_CALLER_ID and len(data) >= 8 else None
    for param_type, value in iter_parameters(data):
        if param_type == Param.DATE_TIME:
            return value.decode("latin-1")
    return None


def finding_from_bytes(
    raw: bytes, *, modulation: str, start_s: float, end_s: float, trusted: bool = True
) -> DecodedCallerId:
    """A finding for the message bytes read from one burst; damage gives ``checksum_ok=False``.

    ``trusted=False`` (the burst was too noisy to believe) is reported as damage too,
    and so is a message whose sum checks but which no exchange would send (letters
    in the number, control characters in the name): with a one-byte sum, two bit
    errors in the same place of two bytes cancel out.
    """
    standard = _standard_name(modulation, raw[0] if raw else 0)
    damaged = DecodedCallerId(None, standard, None, None, None, None, None, None, False, start_s, end_s, raw)
    if not trusted or not _plausible(raw):
        return damaged
    try:
        message_type, data = split_message(raw)
        time = _sent_time(message_type, data)
        if message_type in _CALLER_ID_TYPES:
            caller = parse_message(raw, standard=standard)
            waiting = None
        else:
            caller, waiting = None, message_waiting(raw)
    except CallerIdError:
        return damaged
    return DecodedCallerId(
        caller_id=caller,
        standard=standard,
        number=caller.number if caller else None,
        name=caller.name if caller else None,
        time=time,
        number_absence=_ABSENCE_NAMES.get(caller.number_absent or "") if caller else None,
        name_absence=_ABSENCE_NAMES.get(caller.name_absent or "") if caller else None,
        message_waiting=waiting,
        checksum_ok=True,
        start_s=start_s,
        end_s=end_s,
        raw=raw,
    )


# --- one bit error, put right ------------------------------------------------------------

# Only a bit this unsure (soft decisions run about -1..+1) is ever flipped, and only
# when no other bit that would fix the checksum is nearly as unsure.
_REPAIR_DOUBT = 0.35
_REPAIR_LEAD = 0.2
# A burst with more doubtful bits than this share is too noisy to repair, or to trust
# at all: two errors in the same bit place of two bytes cancel in the checksum.
_REPAIR_SHARE = 0.04
_TRUST_SHARE = 0.08
# Bits this unsure count as doubtful when judging a whole burst.
_DOUBT = 0.2
# Two misreadings this doubtful that together keep the sum make a checked message unsafe.
_AMBIGUOUS = 0.15
_REPAIRED_STANDARDS = ("bell202",)
# Repair only a burst this clean (bit energy over noise density, dB): in louder noise
# two or three misread bits that add up to the one-bit remainder are about as likely.
_REPAIR_SNR_DB = 10.0
# A burst whose start and stop bits are not mostly heard right was read out of step.
_FRAMING_SHARE = 0.8


_NUMBER_CHARACTERS = frozenset("0123456789*#+- ")


def _doubtful_share(soft_bits: Sequence[Sequence[float]]) -> float:
    values = np.abs(np.asarray(soft_bits, dtype=np.float64))
    return float(np.mean(values < _DOUBT)) if values.size else 1.0


def _plausible(raw: bytes) -> bool:
    """Whether a checked message reads as a sender would have written it."""
    try:
        message_type, data = split_message(raw)
        time = _sent_time(message_type, data)
        if message_type not in _CALLER_ID_TYPES:
            return True
        caller = parse_message(raw)
    except CallerIdError:
        return False
    number_ok = caller.number is None or set(caller.number) <= _NUMBER_CHARACTERS
    name_ok = caller.name is None or all(" " <= c <= "~" for c in caller.name)
    return number_ok and name_ok and (time is None or time.isdigit())


def _changes(raw: bytes, soft_bits: Sequence[Sequence[float]]) -> list[tuple[float, int, int]]:
    """(doubt, byte index, bit mask) of every likely misreading: one bit, or two neighbouring bits swapped.

    A change is as doubtful as its surest bit. Type and length bytes are left out.
    """
    found: list[tuple[float, int, int]] = []
    for index in range(2, min(len(raw), len(soft_bits))):
        value, soft = raw[index], soft_bits[index]
        for place in range(8):
            found.append((abs(soft[place]), index, 1 << place))
            if place < 7 and (value >> place & 1) != (value >> (place + 1) & 1):
                found.append((max(abs(soft[place]), abs(soft[place + 1])), index, 3 << place))
    return found


def _ambiguity(raw: bytes, soft_bits: Sequence[Sequence[float]]) -> float:
    """How sure the surer of the likeliest pair of misreadings is that together leave the sum as it is.

    A one-byte sum cannot tell such a pair from the message sent, so a checked
    message with a doubtful pair (a low value here) is not believed.
    """
    best: dict[int, list[tuple[float, int]]] = {}
    for doubt, index, mask in sorted(_changes(raw, soft_bits)):
        kept = best.setdefault(((raw[index] ^ mask) - raw[index]) & 0xFF, [])
        if len(kept) < 2 and all(other != index for _, other in kept):
            kept.append((doubt, index))
    level = math.inf
    for delta, changes in best.items():
        for doubt, index in changes:
            for other_doubt, other in best.get(-delta & 0xFF, []):
                if other != index:
                    level = min(level, max(doubt, other_doubt))
    return level


def repair_one_bit(raw: bytes, soft_bits: Sequence[Sequence[float]]) -> bytes | None:
    """``raw`` with its one doubtful bit (or two neighbouring bits) flipped, when that alone makes the checksum hold.

    The checksum is a sum, so one wrong bit leaves a remainder of plus or minus a
    power of two; so does the demodulator's commonest slip, two neighbouring bits
    of a byte read swapped (01 for 10), since the tone's phase after them is the
    same either way. Of the changes that would make the sum hold, the least
    certain is made if it is clearly the least certain (a change is as certain as
    its surest bit). Type and length bytes are never changed, and the result must
    still read as a sensible message.
    """
    residual = sum(raw) & 0xFF
    if residual == 0 or len(raw) < 3 or len(raw) != raw[1] + 3 or len(soft_bits) < len(raw):
        return None
    doubts: list[tuple[float, int, int]] = []
    for index in range(2, len(raw)):
        value = raw[index]
        for place in range(8):
            for mask in (1 << place, 3 << place) if place < 7 else (1 << place,):
                if (value ^ mask) - value + residual & 0xFF:
                    continue
                doubt = max(abs(soft_bits[index][p]) for p in range(place, place + mask.bit_length() - place))
                doubts.append((doubt, index, mask))
    doubts.sort()
    if not doubts or doubts[0][0] >= _REPAIR_DOUBT:
        return None
    if len(doubts) > 1 and doubts[1][0] < doubts[0][0] + _REPAIR_LEAD:
        return None
    _, index, mask = doubts[0]
    fixed = bytearray(raw)
    fixed[index] ^= mask
    return bytes(fixed) if _plausible(bytes(fixed)) else None


# --- finding bursts in a stream --------------------------------------------------------


def _as_float(audio: NDArray[np.int16] | NDArray[np.float64]) -> NDArray[np.float64]:
    a = np.asarray(audio)
    if a.ndim != 1:
        a = a.reshape(-1)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float64) / _FULL_SCALE
    out = a.astype(np.float64)
    out[~np.isfinite(out)] = 0.0
    return out


class CallerIdDecoder:
    """Streaming FSK caller ID decoder: feed audio blocks in order, get messages as bursts end.

    Memory is bounded: only the current burst (at most about 4 s) and a few
    frames before it are kept.
    """

    def __init__(self, sample_rate: int, *, standards: Sequence[str] = ("bell202", "v23")) -> None:
        if sample_rate < _DEMOD_RATE:
            msg = f"caller ID decoding needs a sample rate of 8000 Hz or more, not {sample_rate} Hz"
            raise CallerIdError(msg)
        unknown = [name for name in standards if name not in STANDARDS]
        if unknown or not standards:
            msg = f"FSK standards {list(standards)!r} are not all known; expected some of {', '.join(STANDARDS)}"
            raise CallerIdError(msg)
        self.sample_rate = sample_rate
        self.standards = tuple(standards)
        self._frame = sample_rate // _FRAMES_PER_SECOND
        freqs = np.fft.rfftfreq(self._frame, 1.0 / sample_rate)
        self._window = np.hanning(self._frame)
        self._band = (freqs >= _CARRIER_BAND_HZ[0]) & (freqs <= _CARRIER_BAND_HZ[1])
        self._line = (freqs >= _LINE_BAND_HZ[0]) & (freqs <= _LINE_BAND_HZ[1])
        self._power_scale = 2.0 / (self._frame * float(np.sum(self._window**2)))
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far, as if just built."""
        self._buffer = np.zeros(0, dtype=np.float64)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._next_frame = 0
        self._burst_first: int | None = None
        self._burst_last = 0

    def feed(self, audio: NDArray[np.int16] | NDArray[np.float64]) -> list[DecodedCallerId]:
        """Messages whose bursts ended in or before this block."""
        self._buffer = np.concatenate([self._buffer, _as_float(audio)])
        end = self._buffer_start + len(self._buffer)
        count = end // self._frame - self._next_frame
        if count <= 0:
            return []
        first = self._next_frame * self._frame - self._buffer_start
        frames = self._buffer[first : first + count * self._frame].reshape(count, self._frame)
        carrier = self._carrier(frames)
        found: list[DecodedCallerId] = []
        for offset, on in enumerate(carrier):
            self._step(self._next_frame + offset, bool(on), found)
        self._next_frame += count
        self._trim()
        return found

    def flush(self) -> list[DecodedCallerId]:
        """Messages from a burst still open at the end of the stream; then start afresh."""
        found: list[DecodedCallerId] = []
        if self._burst_first is not None:
            self._close(found)
        self.reset()
        return found

    def _carrier(self, frames: NDArray[np.float64]) -> NDArray[np.bool_]:
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        band = power[:, self._band].sum(axis=1) * self._power_scale
        line = power[:, self._line].sum(axis=1) * self._power_scale
        on: NDArray[np.bool_] = (band >= _CARRIER_SHARE * line) & (band > _SILENCE_POWER)
        return on

    def _step(self, index: int, on: bool, found: list[DecodedCallerId]) -> None:
        if self._burst_first is None:
            if on:
                self._burst_first = self._burst_last = index
            return
        if on:
            self._burst_last = index
        if index - self._burst_last > _GAP_FRAMES or index - self._burst_first >= _MAX_FRAMES:
            self._close(found)

    def _close(self, found: list[DecodedCallerId]) -> None:
        first, last = self._burst_first, self._burst_last
        self._burst_first = None
        if first is None or last - first + 1 < _MIN_FRAMES:
            return
        lo = max(0, (first - _PAD_FRAMES) * self._frame)
        hi = min((last + 1 + _PAD_FRAMES) * self._frame, self._buffer_start + len(self._buffer))
        segment = self._buffer[lo - self._buffer_start : hi - self._buffer_start]
        found.extend(self._demodulate(segment, lo, first * self._frame))

    def _trim(self) -> None:
        if self._burst_first is not None:
            keep_from = (self._burst_first - _PAD_FRAMES) * self._frame
        else:
            keep_from = (self._next_frame - _PAD_FRAMES) * self._frame
        drop = max(0, keep_from - self._buffer_start)
        if drop:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop

    def _demodulate(self, segment: NDArray[np.float64], offset: int, onset: int) -> list[DecodedCallerId]:
        rate = self.sample_rate
        if rate not in NATIVE_RATES:
            segment = to_telephone_band(segment, rate, _DEMOD_RATE)
            rate = _DEMOD_RATE
        frames = demodulate_all(
            segment,
            rate,
            standards=self.standards,
            accept_first=_KNOWN_TYPES.__contains__,
            wanted=_message_length,
        )
        found: list[DecodedCallerId] = []
        for frame in frames:
            start_s = offset / self.sample_rate + frame.start / rate
            # The burst starts with its carrier (the seizure), found to the 10 ms frame.
            finding = self._finding(frame, rate, offset, start_s if found else min(onset / self.sample_rate, start_s))
            # A later message on the same seizure is reported only whole: where the line
            # falls quiet after the last one, noise would read as a damaged one.
            if finding.checksum_ok or not found:
                found.append(finding)
        return found

    def _finding(self, frame: FskFrame, rate: int, offset: int, start_s: float) -> DecodedCallerId:
        need = _message_length(frame.data) or len(frame.data)
        raw = frame.data[:need]
        doubt = _doubtful_share(frame.soft_bits[:need]) if frame.framing >= _FRAMING_SHARE else 1.0
        # V.23 tones lie further apart in phase per bit, so its reader slips single bits
        # rarely; measured, repair there put right almost nothing and risked wrong messages.
        repairable = frame.standard in _REPAIRED_STANDARDS and frame.snr_db >= _REPAIR_SNR_DB
        if sum(raw) & 0xFF and doubt <= _REPAIR_SHARE and repairable:
            raw = repair_one_bit(raw, frame.soft_bits) or raw
        end_s = offset / self.sample_rate + frame.byte_ends[len(raw) - 1] / rate
        trusted = doubt <= _TRUST_SHARE and _ambiguity(raw, frame.soft_bits) >= _AMBIGUOUS
        return finding_from_bytes(raw, modulation=frame.standard, start_s=start_s, end_s=end_s, trusted=trusted)


# --- whole files and test signals ------------------------------------------------------


def decode_callerid(
    audio: NDArray[np.int16] | NDArray[np.float64], sample_rate: int, *, standard: str = "auto"
) -> list[DecodedCallerId]:
    """Every caller ID message in ``audio``; ``standard`` is "auto", "bell202", "v23" or "dtmf".

    "auto" listens for both FSK tone plans. Integer audio is taken as 16-bit
    samples, float audio as full scale at +-1.0.
    """
    if standard not in DECODE_STANDARDS:
        msg = f"caller ID standard {standard!r} is not known; expected one of {', '.join(DECODE_STANDARDS)}"
        raise CallerIdError(msg)
    if standard == "dtmf":
        return _decode_dtmf(audio, sample_rate)
    standards = ("bell202", "v23") if standard == "auto" else (standard,)
    decoder = CallerIdDecoder(sample_rate, standards=standards)
    return decoder.feed(audio) + decoder.flush()


def fsk_callerid_audio(message: bytes, *, standard: str, sample_rate: int, **burst_options: Any) -> NDArray[np.float64]:
    """A caller ID message as an FSK burst with 50 ms of silence either side, for tests and the simulator."""
    quiet = np.zeros(sample_rate // 20)
    burst = fsk_burst(message, standard=standard, sample_rate=sample_rate, **burst_options)
    return np.concatenate([quiet, burst, quiet])


# --- DTMF caller ID --------------------------------------------------------------------

# Digits further apart than this belong to different messages.
_DTMF_GAP_S = 0.5
_DTMF_ABSENCE = {"00": "unavailable", "10": "private"}
_DTMF_ABSENCE_CODES = {"unavailable": "O", "private": "P"}
# Denmark sends "D1#" when the caller restricted the number, "D2#" for an international call
# and "D3#" for a technical reason; read as digits they would give the number "1", "2" or "3".
_DTMF_REASONS = {"1": "private", "2": "unavailable", "3": "unavailable"}
# Start-to-start intervals must lie within these multiples of the typical one: a lost digit
# makes one about 2x, a split tone one well under 1x.
_DTMF_PACE = (0.6, 1.6)


def _dtmf_groups(digits: Sequence[DtmfDigit]) -> list[list[DtmfDigit]]:
    groups: list[list[DtmfDigit]] = []
    for digit in digits:
        if groups and digit.start_s - groups[-1][-1].end_s <= _DTMF_GAP_S:
            groups[-1].append(digit)
        else:
            groups.append([digit])
    return groups


def _evenly_paced(group: Sequence[DtmfDigit]) -> bool:
    """Whether the digits start at a steady pace, as one sender's do.

    Tone starts are measured to a hop or two even in noise, so start-to-start intervals
    show a lost digit (an interval twice the usual) or a tone split in two by the noise
    (one much shorter), even when several digits are lost and the typical interval is off.
    """
    intervals = sorted(b.start_s - a.start_s for a, b in itertools.pairwise(group))
    if len(intervals) < 2:
        return True
    typical = intervals[len(intervals) // 2]
    return _DTMF_PACE[0] * typical <= intervals[0] and intervals[-1] <= _DTMF_PACE[1] * typical


def _dtmf_finding(group: Sequence[DtmfDigit]) -> DecodedCallerId | None:
    """Read ``A<number>C``, ``D<number>C``, ``A<number>#`` or ``<number>#``, and absence codes.

    Absence: ``B00`` / ``B10`` inside the frame, or Denmark's ``D1#`` to ``D3#``.
    """
    text = "".join(d.digit for d in group)
    starts, ends = text[0] in "AD", text[-1] in "C#"
    if not (starts or ends) or len(text) < 3:
        return None
    body = text[1 if starts else 0 : -1 if ends else None]
    absence = None
    if body.startswith("B"):
        absence = _DTMF_ABSENCE.get(body[1:3])
        body = body[3:]
    elif text[0] == "D" and text[-1] == "#" and body in _DTMF_REASONS:
        absence, body = _DTMF_REASONS[body], ""
    # A message ending in "C" opens with "A" or "D"; without it, its opening digits may be lost too.
    framed = ends and (starts or text[-1] == "#")
    ok = framed and (body.isdigit() or (absence is not None and not body))
    # DTMF caller ID carries no checksum, but its digits come at an even pace: an uneven
    # one is a digit lost in the noise or a tone split in two, and the number is wrong.
    ok = ok and _evenly_paced(group)
    number = body if ok and body else None
    caller = (
        CallerId(number, None, _DTMF_ABSENCE_CODES.get(absence or ""), None, "dtmf", text.encode("ascii"))
        if ok
        else None
    )
    return DecodedCallerId(
        caller_id=caller,
        standard="dtmf",
        number=number,
        name=None,
        time=None,
        number_absence=absence if ok else None,
        name_absence=None,
        message_waiting=None,
        checksum_ok=bool(ok),
        start_s=group[0].start_s,
        end_s=group[-1].end_s,
        raw=text.encode("ascii"),
    )


def _decode_dtmf(audio: NDArray[np.int16] | NDArray[np.float64], sample_rate: int) -> list[DecodedCallerId]:
    found = (_dtmf_finding(group) for group in _dtmf_groups(detect_dtmf(audio, sample_rate, limits=DATA)))
    return [f for f in found if f is not None]


class DtmfCallerIdDecoder:
    """Streaming DTMF caller ID: digits grouped by pauses, each group read as a message when it is over."""

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._detector = DtmfDetector(sample_rate, limits=DATA)
        self._digits: list[DtmfDigit] = []
        self._fed = 0

    def reset(self) -> None:
        """Forget everything heard."""
        self._detector.reset()
        self._digits = []
        self._fed = 0

    def feed(self, audio: NDArray[np.int16] | NDArray[np.float64]) -> list[DecodedCallerId]:
        """Take the next block; return the messages whose digits ended more than a pause ago."""
        self._fed += len(audio)
        self._digits += self._detector.feed(audio)
        return self._complete(final=False)

    def flush(self) -> list[DecodedCallerId]:
        """Everything still pending, as if the line went quiet now."""
        self._digits += self._detector.flush()
        found = self._complete(final=True)
        self.reset()
        return found

    def _complete(self, *, final: bool) -> list[DecodedCallerId]:
        now = self._fed / self._rate
        done = [g for g in _dtmf_groups(self._digits) if final or now - g[-1].end_s > _DTMF_GAP_S]
        if not done:
            return []
        last = done[-1][-1]
        self._digits = [d for d in self._digits if d.start_s > last.end_s]
        return [f for f in (_dtmf_finding(g) for g in done) if f is not None]


class LineCallerIdDecoder:
    """Every caller ID standard at once, for a line whose standard is not known: FSK and DTMF."""

    def __init__(self, sample_rate: int) -> None:
        self._decoders = (CallerIdDecoder(sample_rate), DtmfCallerIdDecoder(sample_rate))

    def reset(self) -> None:
        """Forget everything heard."""
        for decoder in self._decoders:
            decoder.reset()

    def feed(self, audio: NDArray[np.int16] | NDArray[np.float64]) -> list[DecodedCallerId]:
        """Take the next block; return the messages completed in it, in time order."""
        return sorted((f for d in self._decoders for f in d.feed(audio)), key=lambda f: f.end_s)

    def flush(self) -> list[DecodedCallerId]:
        """Everything still pending."""
        return sorted((f for d in self._decoders for f in d.flush()), key=lambda f: f.end_s)
