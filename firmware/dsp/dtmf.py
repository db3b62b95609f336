"""DTMF digits: find the key presses in line audio, and make test tones.

The detector meets the receiver requirements of ITU-T Q.24 (AT&T practice):

* frequency: accepts ±1.5 % deviation, rejects ±3.5 % (limit 2 %);
* duration: accepts 40 ms tones, rejects 23 ms and shorter (limit 5 analysis hops, 31.9 ms);
* a pause of 40 ms separates two digits; a drop-out of up to 10 ms inside a digit does not
  (up to :data:`MAX_GAP_HOPS` silent hops, about 19 ms, are bridged);
* twist: accepts the high group up to 4 dB above the low group and the low group up to 8 dB
  above the high group; it rejects a high group more than 6 dB above the low group and a
  low group more than 10 dB above the high group;
* detects at 15 dB signal-to-noise ratio, over a 26 dB range of levels (-10 to -36 dBFS per
  tone); each tone must reach :data:`MIN_TONE_DBFS` (-45 dBFS).

How: the audio is cut into Hann-windowed frames of 102 samples (12.75 ms at 8 kHz, 204 at
16 kHz) every 51 samples, and one matrix product gives every frame's spectrum at the eight
tones, their second harmonics and a plain (rectangular-window) view of the eight tones. A
frame names a digit when the strongest row and column tone hold most of the frame's energy,
stand well clear of the other tones of their group, show no second harmonic and have an
acceptable twist. Frames naming the same digit join into a run; a drop-out of up to
:data:`MAX_GAP_HOPS` frames, silent or naming another digit (noise can), is bridged. A
102-sample frame cannot tell 1.5 % from 3.5 % by its magnitude, so a run's frequencies are
measured from the phase each tone advances from one frame to the next: the phase is
accumulated over the run, and a run whose tones are more than 2 % off their nominal
frequency, or whose phase does not advance steadily as a tone's does (speech), is dropped.
The run's length is counted in frames whose tone power is at least a quarter of the run's
peak, which is the frames whose centres lie inside the tone, so it measures the tone itself
and not the frame overlap.

The thresholds live in :mod:`firmware.dsp.dtmflimits`: Q.24's for digits during a call,
looser ones for caller ID on-hook. Levels are in dBFS per tone: a sine of amplitude 1.0
(32768 in int16) is 0 dBFS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.dtmflimits import DATA, TALK, DtmfLimits
from firmware.wire.errors import LinerecError

__all__ = [
    "COLUMN_HZ",
    "DATA",
    "DIGITS",
    "ROW_HZ",
    "TALK",
    "DtmfDetector",
    "DtmfDigit",
    "DtmfError",
    "DtmfLimits",
    "detect_dtmf",
    "generate_dtmf",
]

DIGITS = "123A456B789C*0#D"
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
SAMPLE_RATES = (8000, 16000)

# Frame length and hop at 8 kHz; both double at 16 kHz so the timing is the same.
FRAME_8K = 102
HOP_8K = 51

# Each tone must reach this level at the run's peak; frames weaker than FLOOR_DBFS are silence.
MIN_TONE_DBFS = -45.0
FLOOR_DBFS = -65.0
# Run length and bridging, in hops of 6.375 ms.
MIN_ON_HOPS = 5
MAX_GAP_HOPS = 3

# Frames kept at each end of a run to place its edges once its peak is known.
_EDGE_FRAMES = 6
_INT16_SCALE = 32768.0


class DtmfError(LinerecError, ValueError):
    """The DTMF detector or generator was given a setting it cannot use."""


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press: the digit and when its tone started and ended, in seconds from the stream's start."""

    digit: str
    start_s: float
    end_s: float

    def to_json(self) -> dict[str, str | float]:
        return {"digit": self.digit, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(frozen=True, slots=True)
class _Frame:
    """One analysed frame that could be part of a digit: its tones' powers and phase advances."""

    index: int
    digit: int
    low: float
    high: float
    energy: float
    adv_row: complex
    adv_col: complex
    clean: bool


@dataclass(slots=True)
class _Run:
    """Frames naming one digit, gathered until a long enough gap ends it."""

    digit: int
    peak: float
    last_on: int
    frames: list[tuple[int, float, bool]] = field(default_factory=list)
    # Frames naming another digit since this run's own last frame: a drop-out if the run's digit
    # comes back in time, the next digit if it does not.
    rival: _Run | None = None
    unclean_middle: int = 0
    middle: int = 0
    phase_row: complex = 0j
    phase_col: complex = 0j
    phase_row_abs: float = 0.0
    phase_col_abs: float = 0.0
    low_power: float = 0.0
    high_power: float = 0.0
    low_sum: float = 0.0
    high_sum: float = 0.0
    energy_sum: float = 0.0

    @classmethod
    def begin(cls, frame: _Frame) -> _Run:
        run = cls(digit=frame.digit, peak=frame.low + frame.high, last_on=frame.index)
        run.keep(frame)
        return run

    def take(self, frame: _Frame) -> None:
        """Add a later frame naming this run's digit."""
        power = frame.low + frame.high
        self.peak = max(self.peak, power)
        if power * 4.0 < self.peak:
            return
        if frame.index - 1 == self.last_on:
            self.phase_row += frame.adv_row
            self.phase_col += frame.adv_col
            self.phase_row_abs += abs(frame.adv_row)
            self.phase_col_abs += abs(frame.adv_col)
        self.last_on = frame.index
        self.keep(frame)

    def keep(self, frame: _Frame) -> None:
        self.low_power = max(self.low_power, frame.low)
        self.high_power = max(self.high_power, frame.high)
        self.low_sum += frame.low
        self.high_sum += frame.high
        self.energy_sum += frame.energy
        self.frames.append((frame.index, frame.low + frame.high, frame.clean))
        if len(self.frames) > 2 * _EDGE_FRAMES:
            self.middle += 1
            self.unclean_middle += not self.frames.pop(_EDGE_FRAMES)[2]


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in SAMPLE_RATES:
        raise DtmfError(f"DTMF sample rate {sample_rate} Hz is not supported: use 8000 or 16000 and resample first")


class DtmfDetector:
    """Streaming DTMF detector: feed blocks of any size, get each digit once its tone has ended.

    Memory is bounded: it keeps less than one frame of audio and a few frames of each run.
    """

    def __init__(self, sample_rate: int = 8000, *, limits: DtmfLimits = TALK) -> None:
        self._limits = limits
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        scale = sample_rate // 8000
        self._frame = FRAME_8K * scale
        self._hop = HOP_8K * scale
        n = np.arange(self._frame)
        window = np.sin(np.pi * (n + 0.5) / self._frame) ** 2
        tones = np.array(ROW_HZ + COLUMN_HZ)
        harmonics = 2.0 * np.array(COLUMN_HZ)
        angles_h = 2.0 * np.pi * np.outer(n, np.concatenate([tones, harmonics])) / sample_rate
        angles_r = 2.0 * np.pi * np.outer(n, tones) / sample_rate
        # The frame's lowest DFT bins below limits.ignore_below_hz: their energy (mains hum, its
        # first harmonics, DC) is left out of the frame energy the tones are measured against.
        bins = math.ceil(limits.ignore_below_hz * self._frame / sample_rate)
        angles_l = 2.0 * np.pi * np.outer(n, np.arange(bins)) / self._frame
        # Columns: Hann cos/sin for 8 tones + 4 harmonics, rectangular cos/sin for 8 tones, low bins.
        self._basis = np.concatenate(
            [
                window[:, None] * np.cos(angles_h),
                -window[:, None] * np.sin(angles_h),
                np.cos(angles_r),
                -np.sin(angles_r),
                window[:, None] * np.cos(angles_l),
                window[:, None] * np.sin(angles_l[:, 1:]),
            ],
            axis=1,
        )
        # Parseval over N bins: bin 0 counts once, the others also stand for their mirror images.
        self._low_weights = np.full(max(0, 2 * bins - 1), 2.0 / self._frame)
        self._low_weights[:1] /= 2.0
        # A Hann-windowed tone of amplitude A gives |X| = A * sum(w) / 2; these map |X|^2 to A^2.
        self._hann_gain = 4.0 / float(window.sum()) ** 2
        self._rect_gain = 4.0 / float(self._frame) ** 2
        self._energy_gain = 2.0 / float((window**2).sum())
        self._window_sq = window**2
        # One hop of the nominal tone turns its phase by this much; what is left is the offset.
        self._hop_turn = np.exp(-2j * np.pi * tones * self._hop / sample_rate)
        self._hop_rad_per_hz = 2.0 * np.pi * self._hop / sample_rate
        self._tones = tones
        self.reset()

    def reset(self) -> None:
        """Forget all audio and any digit in progress; the next sample is time zero."""
        self._buffer = np.zeros(0)
        self._frames_done = 0
        self._previous: NDArray[np.complex128] | None = None
        self._run: _Run | None = None

    def feed(self, audio: NDArray[np.int16] | NDArray[np.float64]) -> list[DtmfDigit]:
        """Take the next block of audio; return the digits that ended within what has been fed."""
        samples = _as_float(audio)
        buffer = np.concatenate([self._buffer, samples]) if self._buffer.size else samples
        if buffer.size < self._frame:
            self._buffer = buffer.copy()
            return []
        count = (buffer.size - self._frame) // self._hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(buffer, self._frame)[:: self._hop][:count]
        self._buffer = buffer[count * self._hop :].copy()
        return self._analyse(frames)

    def flush(self) -> list[DtmfDigit]:
        """End the stream: return the digit still sounding, if any, and reset."""
        digits = self.feed(np.zeros(self._frame))
        if self._run is not None:
            digit = self._finish(self._run)
            if digit is not None:
                digits.append(digit)
        self.reset()
        return digits

    # --- analysis ---------------------------------------------------------------------------

    def _analyse(self, frames: NDArray[np.float64]) -> list[DtmfDigit]:
        first = self._frames_done
        self._frames_done += len(frames)
        spectrum = frames @ self._basis
        hann = spectrum[:, :12] + 1j * spectrum[:, 12:24]
        rect = spectrum[:, 24:32] ** 2 + spectrum[:, 32:40] ** 2
        power = (hann.real**2 + hann.imag**2) * self._hann_gain
        energy = (frames**2) @ self._window_sq
        if self._low_weights.size:
            energy = np.maximum(energy - spectrum[:, 40:] ** 2 @ self._low_weights, 0.0)
        energy *= self._energy_gain
        tones = hann[:, :8]
        previous = np.empty_like(tones)
        previous[0] = self._previous if self._previous is not None else 0.0
        previous[1:] = tones[:-1]
        self._previous = tones[-1].copy()
        advance = tones * np.conj(previous) * self._hop_turn

        row = np.argmax(power[:, :4], axis=1)
        col = np.argmax(power[:, 4:8], axis=1)
        picks = np.arange(len(frames))
        p_row = power[picks, row]
        p_col = power[picks, 4 + col]
        valid = self._valid(power, energy, col, p_row, p_col)
        clean = self._clean(rect, row, col)

        digits: list[DtmfDigit] = []
        indices = np.flatnonzero(valid)
        for k, digit_code, p_low, p_high, e, adv_row, adv_col, is_clean in zip(
            indices.tolist(),
            (row[indices] * 4 + col[indices]).tolist(),
            p_row[indices].tolist(),
            p_col[indices].tolist(),
            energy[indices].tolist(),
            advance[indices, row[indices]].tolist(),
            advance[indices, 4 + col[indices]].tolist(),
            clean[indices].tolist(),
            strict=True,
        ):
            self._close_if_gap(first + k, digits)
            self._take(_Frame(first + k, digit_code, p_low, p_high, e, adv_row, adv_col, is_clean))
        self._close_if_gap(self._frames_done, digits)
        return digits

    def _valid(
        self,
        power: NDArray[np.float64],
        energy: NDArray[np.float64],
        col: NDArray[np.intp],
        p_row: NDArray[np.float64],
        p_col: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """Frames whose strongest row and column tones could be a DTMF digit (or part of one)."""
        floor = 0.5 * 10.0 ** (FLOOR_DBFS / 10.0)
        picks = np.arange(len(power))
        valid = (p_row > floor) & (p_col > floor)
        valid &= p_row + p_col >= self._limits.frame_energy_ratio * energy
        # A frame at a tone's edge can show a few dB more twist than the tone; the run's peak
        # powers decide the twist, this only sheds frames that are nothing like a digit.
        limits = self._limits
        twist = p_col / np.maximum(p_row, 1e-30)
        valid &= twist <= 10.0 ** ((limits.max_twist_db + 6.0) / 10.0)
        valid &= twist >= 10.0 ** ((limits.min_twist_db - 6.0) / 10.0)
        valid &= power[picks, 8 + col] * 10.0 ** (limits.harmonic_ratio_db / 10.0) <= p_col
        result: NDArray[np.bool_] = valid
        return result

    def _clean(self, rect: NDArray[np.float64], row: NDArray[np.intp], col: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Frames whose chosen tones stand clear of the rest of their group.

        Only a frame wholly inside a tone is held to this: a cut-off tone spreads over its
        neighbours in a rectangular window.
        """
        picks = np.arange(len(rect))
        peak_ratio = 10.0 ** (self._limits.peak_ratio_db / 10.0)
        rows, cols = rect[:, :4], rect[:, 4:]
        best_row = rows[picks, row]
        best_col = cols[picks, col]
        others_row = np.where(np.arange(4) == row[:, None], 0.0, rows).max(axis=1)
        others_col = np.where(np.arange(4) == col[:, None], 0.0, cols).max(axis=1)
        clean: NDArray[np.bool_] = (others_row * peak_ratio <= best_row) & (others_col * peak_ratio <= best_col)
        return clean

    def _take(self, frame: _Frame) -> None:
        run = self._run
        if run is None:
            self._run = _Run.begin(frame)
        elif frame.digit == run.digit:
            run.rival = None
            run.take(frame)
        elif run.rival is not None and run.rival.digit == frame.digit:
            run.rival.take(frame)
        else:
            # In noise a frame or two inside a tone can name a neighbouring digit. Like a
            # drop-out, that must not split the tone (which would lose it or report it twice);
            # if the other digit lasts longer than a drop-out, _close_if_gap hands over to it.
            run.rival = _Run.begin(frame)

    def _close_if_gap(self, index: int, digits: list[DtmfDigit]) -> None:
        run = self._run
        if run is not None and index - run.last_on - 1 > MAX_GAP_HOPS:
            self._emit(run, digits)
            if run.rival is not None:
                self._run = run.rival
                self._close_if_gap(index, digits)

    def _emit(self, run: _Run, digits: list[DtmfDigit]) -> None:
        self._run = None
        digit = self._finish(run)
        if digit is not None:
            digits.append(digit)

    def _window_gain(self, offset_hz: float) -> float:
        return _hann_response(offset_hz * self._frame / self.sample_rate)

    def _finish(self, run: _Run) -> DtmfDigit | None:
        """The digit a finished run stands for, or None when it fails the run-wide checks."""
        on = [index for index, power, _ in run.frames if power * 4.0 >= run.peak]
        first, last = on[0], on[-1]
        if last - first + 1 < MIN_ON_HOPS:
            return None
        # Only frames wholly inside the tone are held to the peak-ratio check: neither end frame,
        # nor one the tone only partly covers (a cut-off tone spreads over its neighbours). Noise
        # may spoil one frame in four. "Wholly inside" is judged against the strongest frame
        # between the ends, not the run's peak: in noise an end frame can outshine every frame
        # of the tone itself, and then no frame would be held to the check and the digit is lost.
        inside = [(power, clean) for index, power, clean in run.frames if first < index < last]
        top = max((power for power, _ in inside), default=0.0)
        core = [clean for power, clean in inside if power >= 0.8 * top]
        unclean = core.count(False) + run.unclean_middle
        if not core or 4 * unclean > len(core) + run.middle:
            return None
        row, col = divmod(run.digit, 4)
        gains = []
        for phase, total, nominal in (
            (run.phase_row, run.phase_row_abs, self._tones[row]),
            (run.phase_col, run.phase_col_abs, self._tones[4 + col]),
        ):
            if total <= 0.0 or abs(phase) < self._limits.coherence * total:
                return None
            offset_hz = math.atan2(phase.imag, phase.real) / self._hop_rad_per_hz
            if abs(offset_hz) > self._limits.freq_tolerance * nominal:
                return None
            gains.append(self._window_gain(offset_hz))
        low, high = run.low_power / gains[0], run.high_power / gains[1]
        if min(low, high) < 0.5 * 10.0 ** (MIN_TONE_DBFS / 10.0):
            return None
        if not self._limits.min_twist_db <= 10.0 * math.log10(high / low) <= self._limits.max_twist_db:
            return None
        if run.low_sum / gains[0] + run.high_sum / gains[1] < self._limits.energy_ratio * run.energy_sum:
            return None
        # A frame is on when its centre lies inside the tone, so the tone spans half a hop either side.
        start = (first * self._hop + (self._frame - self._hop) / 2) / self.sample_rate
        end = (last * self._hop + (self._frame + self._hop) / 2) / self.sample_rate
        return DtmfDigit(DIGITS[run.digit], round(start, 4), round(end, 4))


def _hann_response(bins: float) -> float:
    """Power response of a Hann-windowed DFT bin to a tone ``bins`` bins off its centre."""
    return float(np.sinc(bins) / (1.0 - bins * bins)) ** 2 if abs(bins) < 1.0 else 0.25


def _as_float(audio: NDArray[np.int16] | NDArray[np.float64]) -> NDArray[np.float64]:
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise DtmfError(f"DTMF audio must be one channel (a 1-D array), not shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float64) / _INT16_SCALE
    out = samples.astype(np.float64)
    # NaN or infinity would poison every frame it touches: treat it as silence. Samples far past
    # full scale are clipped so that squaring them cannot overflow.
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), -1e6, 1e6)


def detect_dtmf(
    audio: NDArray[np.int16] | NDArray[np.float64], sample_rate: int, *, limits: DtmfLimits = TALK
) -> list[DtmfDigit]:
    """Every digit in a whole recording."""
    detector = DtmfDetector(sample_rate, limits=limits)
    return detector.feed(audio) + detector.flush()


def generate_dtmf(
    digits: str,
    sample_rate: int,
    *,
    on_ms: float = 70,
    off_ms: float = 70,
    level_dbfs: float = -10.0,
    twist_db: float = 0.0,
    freq_offset: float = 0.0,
) -> NDArray[np.float64]:
    """DTMF tones for ``digits``, each ``on_ms`` long and followed by ``off_ms`` of silence.

    ``level_dbfs`` is the mean level of the two tones; ``twist_db`` is the high group's level
    minus the low group's, split evenly about ``level_dbfs`` (positive: high group louder).
    ``freq_offset`` moves both tones by that fraction (+0.015 is +1.5 %).
    """
    if sample_rate <= 0:
        raise DtmfError(f"DTMF sample rate {sample_rate} Hz must be positive")
    bad = sorted({d for d in digits if d not in DIGITS})
    if bad:
        raise DtmfError(f"DTMF digits {''.join(bad)!r} are not keys; use {DIGITS!r}")
    if on_ms < 0 or off_ms < 0:
        raise DtmfError(f"DTMF on_ms {on_ms} and off_ms {off_ms} must not be negative")
    on = round(on_ms * sample_rate / 1000)
    off = round(off_ms * sample_rate / 1000)
    t = np.arange(on) / sample_rate
    low_amp = 10.0 ** ((level_dbfs - twist_db / 2) / 20)
    high_amp = 10.0 ** ((level_dbfs + twist_db / 2) / 20)
    pieces: list[NDArray[np.float64]] = []
    for d in digits:
        row, col = divmod(DIGITS.index(d), 4)
        f_low = ROW_HZ[row] * (1 + freq_offset)
        f_high = COLUMN_HZ[col] * (1 + freq_offset)
        pieces.append(low_amp * np.sin(2 * np.pi * f_low * t) + high_amp * np.sin(2 * np.pi * f_high * t))
        pieces.append(np.zeros(off))
    return np.concatenate(pieces) if pieces else np.zeros(0)
