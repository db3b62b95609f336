"""Streaming filters for line audio: hum and rumble removal, loudness levelling, noise reduction.

Each filter is an object that takes int16 mono blocks of any length as they
arrive and returns int16. Filter state is carried from block to block, so a
recording fed in blocks comes out the same (to within 1 LSB) as the same
recording fed whole; the whole-array helpers at the end of the module do the
latter. A filter with a delay reports it as ``latency_frames``: its output runs
that many samples behind its input (the stream starts with that much silence)
and ``flush()`` hands back the delayed tail. "Frames" counts samples of the one
channel, as soundfile does.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from firmware.dsp import iir

__all__ = [
    "HIGHPASS_HZ",
    "NOTCH_Q",
    "Leveller",
    "LineCleaner",
    "Mains",
    "NoiseReducer",
    "clean",
    "detect_mains",
    "level",
    "reduce_noise",
]

Mains = Literal[50, 60, "auto"] | None

# Telephone speech starts at 300 Hz. A 4th-order Butterworth at 120 Hz costs it
# 0.003 dB there and 0.07 dB at 200 Hz, and takes 30 dB off 50 Hz, 24 dB off 60 Hz.
HIGHPASS_HZ = 120.0
HIGHPASS_ORDER = 4
# A constant Q keeps every notch as wide, relative to its frequency, as the grid's
# drift (which scales with the harmonic number): 5 Hz wide at 50 Hz, 25 Hz at 250 Hz.
NOTCH_Q = 10.0
MAINS_HARMONICS = 5
AUTO_LISTEN_S = 2.0
# Below 200 Hz a telephone line carries hum but no speech, so the first three
# harmonics tell the families apart without speech confusing the count.
_AUTO_HARMONICS = 3
_AUTO_HALF_WIDTH_HZ = 1.5
_FAMILIES = (50, 60)


def _samples(block: ArrayLike) -> NDArray[np.int16]:
    audio = np.asarray(block)
    if audio.dtype != np.int16 or audio.ndim != 1:
        msg = f"audio blocks must be 1-D int16 arrays, not {audio.ndim}-D {audio.dtype}"
        raise ValueError(msg)
    return audio


def _to_int16(y: NDArray[np.floating]) -> NDArray[np.int16]:
    np.clip(y, -32768.0, 32767.0, out=y)
    np.rint(y, out=y)
    return y.astype(np.int16)


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int) or sample_rate < 4000:
        msg = f"sample_rate must be a whole number of Hz, 4000 or more, not {sample_rate!r}"
        raise ValueError(msg)


def detect_mains(audio: ArrayLike, sample_rate: int) -> Literal[50, 60]:
    """Which mains family, 50 or 60 Hz, hums louder in ``audio`` (50 on a tie)."""
    x = np.asarray(audio, dtype=np.float64)
    x = (x - x.mean()) * np.hanning(len(x))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)

    def hum(family: int) -> float:
        near = np.zeros(len(freqs), dtype=bool)
        for k in range(1, _AUTO_HARMONICS + 1):
            near |= np.abs(freqs - k * family) <= _AUTO_HALF_WIDTH_HZ
        return float(power[near].sum())

    return 60 if hum(60) > hum(50) else 50


def _notches(family: int, harmonics: int, q: float, sample_rate: int) -> NDArray[np.float64]:
    return np.vstack([iir.notch(k * family, q, sample_rate) for k in range(1, harmonics + 1)])


class LineCleaner:
    """Takes DC, rumble below the telephone band and mains hum out of line audio as it streams.

    A Butterworth high-pass (4th order, ``highpass_hz``, 120 Hz by default)
    removes DC and rumble; its state is primed with the first sample, so a DC
    offset does not start the recording with a click. Notches (constant Q,
    ``notch_q``) at the mains frequency and its first ``harmonics`` multiples take
    out the hum the high-pass leaves: with the defaults 50-250 Hz or 60-300 Hz,
    all below the speech band.

    ``mains_hz`` is 50 or 60 for that family, None for no notches, or ``"auto"``:
    both families are notched for the first two seconds while the cleaner
    measures which one hums louder at its first three harmonics, and from then
    on only that family is notched. The switch happens at the same sample however
    the stream is cut into blocks. The sections run as one linear system a block
    at a time (:class:`firmware.dsp.iir.Cascade`), in float64.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        highpass_hz: float = HIGHPASS_HZ,
        mains_hz: Mains = "auto",
        harmonics: int = MAINS_HARMONICS,
        notch_q: float = NOTCH_Q,
    ) -> None:
        _check_rate(sample_rate)
        nyquist = sample_rate / 2.0
        if not 0.0 < highpass_hz <= 0.1 * nyquist:
            msg = f"highpass_hz must be above 0 and at most {0.1 * nyquist:g} Hz at {sample_rate} Hz, not {highpass_hz}"
            raise ValueError(msg)
        if mains_hz not in (50, 60, "auto", None):
            msg = f"mains_hz must be 50, 60, 'auto' or None, not {mains_hz!r}"
            raise ValueError(msg)
        if not isinstance(harmonics, int) or not 1 <= harmonics <= 10:
            msg = f"harmonics must be a whole number from 1 to 10, not {harmonics!r}"
            raise ValueError(msg)
        if not 1.0 <= notch_q <= 100.0:
            msg = f"notch_q must be from 1 to 100, not {notch_q}"
            raise ValueError(msg)
        self._rate = sample_rate
        self._choice = mains_hz
        self._highpass = iir.butterworth_highpass(HIGHPASS_ORDER, highpass_hz, sample_rate)
        self._notch_rows = {f: _notches(f, harmonics, notch_q, sample_rate) for f in _FAMILIES}
        self._listen_frames = round(AUTO_LISTEN_S * sample_rate)
        # Built once per set of notched families: a cascade's tables take milliseconds to make.
        self._cascades: dict[tuple[int, ...], iir.Cascade] = {}
        self.reset()

    @property
    def mains_hz(self) -> int | None:
        """The mains family being notched; None while ``"auto"`` still listens, or with no notches."""
        return self._mains

    def reset(self) -> None:
        """Start a new stream: forget the filter state and, with ``"auto"``, the mains family."""
        self._mains: int | None = self._choice if isinstance(self._choice, int) else None
        families = _FAMILIES if self._choice == "auto" else () if self._mains is None else (self._mains,)
        self._cascade = self._cascade_for(families)
        self._state: NDArray[np.float64] | None = None
        self._heard = np.zeros(self._listen_frames if self._choice == "auto" else 0, dtype=np.float32)
        self._fed = 0

    def process(self, block: ArrayLike) -> NDArray[np.int16]:
        """The cleaned block: as many samples as came in."""
        x = _samples(block).astype(np.float64)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        if self._state is None:
            self._state = self._cascade.settled_state(float(x[0]))
        if self._choice != "auto" or self._mains is not None:
            return _to_int16(self._filter(x))
        take = min(len(x), self._listen_frames - self._fed)
        self._heard[self._fed : self._fed + take] = x[:take]
        self._fed += take
        head = self._filter(x[:take])
        if self._fed < self._listen_frames:
            return _to_int16(head)
        self._settle(detect_mains(self._heard, self._rate))
        return _to_int16(np.concatenate((head, self._filter(x[take:]))))

    def _cascade_for(self, families: tuple[int, ...]) -> iir.Cascade:
        if families not in self._cascades:
            rows = [self._highpass, *(self._notch_rows[f] for f in families)]
            self._cascades[families] = iir.Cascade(np.vstack(rows))
        return self._cascades[families]

    def _filter(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        assert self._state is not None
        y, self._state = self._cascade.run(x, self._state)
        return y

    def _settle(self, family: int) -> None:
        # Dropping the other family's sections keeps the state of the rest, so the
        # only change at the switch is the other family's notches going away.
        n_highpass = len(self._highpass)
        n_notches = len(self._notch_rows[family])
        first = n_highpass + _FAMILIES.index(family) * n_notches
        keep = np.r_[0:n_highpass, first : first + n_notches]
        self._cascade = self._cascade_for((family,))
        assert self._state is not None
        self._state = self._state[keep]
        self._mains = family
        self._heard = np.zeros(0, dtype=np.float32)


# --- loudness ----------------------------------------------------------------------

LEVEL_HOP_S = 0.1
LEVEL_BLOCK_HOPS = 4  # ITU-R BS.1770 momentary loudness: 400 ms blocks every 100 ms
LEVEL_MEMORY_S = 10.0
LEVEL_SLEW_DB_PER_S = 6.0
_RELATIVE_GATE_LU = 10.0
LIMITER_LOOKAHEAD_S = 0.002
LIMITER_HOLD_S = 0.010


def _k_weighting(sample_rate: int) -> NDArray[np.float64]:
    """BS.1770's K-weighting (a +4 dB shelf above 1.5 kHz, a 38 Hz high-pass) as sections at any rate.

    These are the cookbook shelf and high-pass that pyloudnorm's meter uses, not
    the standard's 48 kHz coefficients carried to the rate: at 8 kHz they stay
    within 0.3 dB of the standard's response from 20 Hz to 3.9 kHz, where the
    usual re-derivation of the 48 kHz coefficients for other rates strays by 0.5 dB.
    """
    shelf = iir.high_shelf(1500.0, 4.0, 1.0 / math.sqrt(2.0), sample_rate)
    return np.vstack((shelf, iir.highpass(38.0, 0.5, sample_rate)))


class Leveller:
    """Rides the gain of a recording slowly towards a loudness target, and never lets a peak clip.

    Loudness is measured the BS.1770 way: K-weighted power in 400 ms blocks every
    100 ms. A block counts only when it is louder than ``gate_lufs`` and no more
    than 10 LU below the running estimate, so pauses, breaths and line noise never
    move the gain: it holds through a pause instead of creeping up on the noise
    (no pumping). The estimate is the mean power of the counted blocks over about
    the last 10 s. The first counted block sets the gain to ``target_lufs`` minus
    the estimate; after that it follows at no more than 6 dB/s, within
    ``-max_gain_db``..``max_gain_db``, interpolated across each 100 ms so it never
    steps. A look-ahead limiter (2 ms attack, 10 ms hold) then keeps every sample
    within ``ceiling_dbfs``; it is the reason for ``latency_frames``.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        target_lufs: float = -20.0,
        max_gain_db: float = 24.0,
        ceiling_dbfs: float = -1.0,
        gate_lufs: float = -50.0,
    ) -> None:
        _check_rate(sample_rate)
        if not -60.0 <= target_lufs <= -6.0:
            msg = f"target_lufs must be from -60 to -6, not {target_lufs}"
            raise ValueError(msg)
        if not 0.0 <= max_gain_db <= 40.0:
            msg = f"max_gain_db must be from 0 to 40, not {max_gain_db}"
            raise ValueError(msg)
        if not -20.0 <= ceiling_dbfs <= 0.0:
            msg = f"ceiling_dbfs must be from -20 to 0, not {ceiling_dbfs}"
            raise ValueError(msg)
        if not gate_lufs < target_lufs:
            msg = f"gate_lufs must be below target_lufs ({target_lufs}), not {gate_lufs}"
            raise ValueError(msg)
        self._target, self._max_gain, self._gate = target_lufs, max_gain_db, gate_lufs
        self._ceiling = 32767.0 * 10.0 ** (ceiling_dbfs / 20.0)
        self._kweight = iir.Cascade(_k_weighting(sample_rate))
        self._hop = round(LEVEL_HOP_S * sample_rate)
        self._memory = round(LEVEL_MEMORY_S / LEVEL_HOP_S)
        self._slew = LEVEL_SLEW_DB_PER_S * LEVEL_HOP_S
        self._attack = max(2, round(LIMITER_LOOKAHEAD_S * sample_rate))
        self._window = self._attack + round(LIMITER_HOLD_S * sample_rate)
        self.reset()

    @property
    def latency_frames(self) -> int:
        """How many samples the output runs behind the input."""
        return self._attack - 1

    @property
    def gain_db(self) -> float:
        """The slow gain now being applied (before the limiter)."""
        return self._gain_to

    def reset(self) -> None:
        """Start a new stream: unity gain, nothing measured, an empty limiter."""
        self._kstate = self._kweight.zero_state()
        self._hops: deque[float] = deque(maxlen=LEVEL_BLOCK_HOPS)
        self._hop_fill, self._hop_energy = 0, 0.0
        self._estimate: float | None = None  # mean K-weighted power of the counted blocks
        self._counted = 0
        self._gain_from = self._gain_to = 0.0
        self._need_tail = np.ones(self._window - 1)
        self._min_tail = np.ones(self._attack - 1)
        self._delay = np.zeros(self._attack - 1)

    def process(self, block: ArrayLike) -> NDArray[np.int16]:
        """The levelled block, ``latency_frames`` late: as many samples as came in."""
        x = _samples(block).astype(np.float64)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        weighted, self._kstate = self._kweight.run(x, self._kstate)
        power = weighted * weighted
        gains = np.empty(len(x))
        i = 0
        while i < len(x):
            take = min(len(x) - i, self._hop - self._hop_fill)
            ramp = (self._hop_fill + 1 + np.arange(take)) / self._hop
            gains[i : i + take] = self._gain_from + (self._gain_to - self._gain_from) * ramp
            self._hop_energy += float(power[i : i + take].sum())
            self._hop_fill += take
            i += take
            if self._hop_fill == self._hop:
                self._end_hop()
        return self._limit(x * 10.0 ** (gains / 20.0))

    def flush(self) -> NDArray[np.int16]:
        """The last ``latency_frames`` samples, still held by the limiter's look-ahead."""
        return self._limit(np.zeros(self.latency_frames))

    def _end_hop(self) -> None:
        self._hops.append(self._hop_energy / (self._hop * 32768.0**2))
        self._hop_fill, self._hop_energy = 0, 0.0
        self._gain_from = self._gain_to
        if len(self._hops) < LEVEL_BLOCK_HOPS:
            return
        block = sum(self._hops) / LEVEL_BLOCK_HOPS
        loudness = _lufs(block)
        if loudness <= self._gate:
            return
        if self._estimate is not None and loudness <= _lufs(self._estimate) - _RELATIVE_GATE_LU:
            return
        # A running mean that turns into an exponential one: quick to settle at the
        # start of a call, slow (about 10 s) once it has heard that much speech.
        self._counted = min(self._counted + 1, self._memory)
        first = self._estimate is None
        self._estimate = block if self._estimate is None else self._estimate + (block - self._estimate) / self._counted
        wanted = min(max(self._target - _lufs(self._estimate), -self._max_gain), self._max_gain)
        step = wanted - self._gain_to
        self._gain_to = wanted if first else self._gain_to + min(max(step, -self._slew), self._slew)

    def _limit(self, x: NDArray[np.float64]) -> NDArray[np.int16]:
        # The gain each sample may have is the smallest any sample within the hold
        # window asks for, averaged over the attack: every sample's own limit is
        # then met by the time it leaves the look-ahead delay.
        need = np.minimum(1.0, self._ceiling / np.maximum(np.abs(x), 1e-9))
        needs = np.concatenate((self._need_tail, need))
        lowest = _window_minima(needs, self._window)
        self._need_tail = needs[len(needs) - (self._window - 1) :]
        lows = np.concatenate((self._min_tail, lowest))
        sums = np.cumsum(lows)
        smooth = (sums[self._attack - 1 :] - np.concatenate(([0.0], sums[: -self._attack]))) / self._attack
        self._min_tail = lows[len(lows) - (self._attack - 1) :]
        delayed = np.concatenate((self._delay, x))
        self._delay = delayed[len(x) :]
        return _to_int16(delayed[: len(x)] * smooth)


def _window_minima(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """The minimum of every run of ``width`` samples in ``x``: ``len(x) - width + 1`` of them.

    Van Herk and Gil-Werman's way: in tiles of ``width``, a run is the suffix of
    one tile and the prefix of the next, so two running minima give every run in
    three passes over the data, however wide it is.
    """
    tiles = -(-len(x) // width)
    padded = np.full(tiles * width, np.inf)
    padded[: len(x)] = x
    grid = padded.reshape(tiles, width)
    prefix = np.minimum.accumulate(grid, axis=1).ravel()
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    count = len(x) - width + 1
    return np.minimum(suffix[:count], prefix[width - 1 : width - 1 + count])


def _lufs(mean_square: float) -> float:
    return -0.691 + 10.0 * math.log10(max(mean_square, 1e-12))


# --- noise reduction ---------------------------------------------------------------

NOISE_FRAME_S = 0.032
NOISE_SMOOTHING = 0.8
NOISE_OVERSUBTRACT = 3.0
GAIN_SMOOTHING = 0.5


class NoiseReducer:
    """Turns down steady background noise (hiss, line noise) by spectral gating, as it streams.

    The audio is cut into frames of about 32 ms (a power of two: 256 samples at
    8 kHz) with 50 % overlap and square-root Hann windows, so with every gain at 1
    the output is the input exactly, ``latency_frames`` (one frame less a sample)
    late. Per frequency bin the noise floor is the minimum of the smoothed power,
    allowed to rise by at most ``rise_db_per_s``: it follows a change of line
    noise within seconds but not speech, whose bins keep falling back to the floor
    between syllables. Each bin's gain is 1 - 3 x noise / power, smoothed over
    frames and never below ``-reduction_db``: noise is turned down evenly instead
    of being carved into the isolated tonal blips known as musical noise.
    """

    def __init__(self, sample_rate: int, *, reduction_db: float = 12.0, rise_db_per_s: float = 2.0) -> None:
        _check_rate(sample_rate)
        if not 0.0 <= reduction_db <= 40.0:
            msg = f"reduction_db must be from 0 to 40, not {reduction_db}"
            raise ValueError(msg)
        if not 0.1 <= rise_db_per_s <= 20.0:
            msg = f"rise_db_per_s must be from 0.1 to 20, not {rise_db_per_s}"
            raise ValueError(msg)
        self._size: int = 1 << round(math.log2(NOISE_FRAME_S * sample_rate))
        self._hop = self._size // 2
        self._window = np.sqrt(np.hanning(self._size + 1)[:-1])
        self._floor = 10.0 ** (-reduction_db / 20.0)
        self._rise = 10.0 ** (rise_db_per_s * self._hop / sample_rate / 10.0)
        self.reset()

    @property
    def latency_frames(self) -> int:
        """How many samples the output runs behind the input."""
        return self._size - 1

    def reset(self) -> None:
        """Start a new stream: no noise learnt, silence in the delay."""
        self._input = np.zeros(self._size - self._hop)
        self._overlap = np.zeros(self._hop)
        self._ready = np.zeros(self._hop - 1)
        bins = self._size // 2 + 1
        self._power = np.zeros(bins)
        self._noise = np.zeros(bins)
        self._gain = np.ones(bins)
        self._started = False

    def process(self, block: ArrayLike) -> NDArray[np.int16]:
        """The block with its noise turned down, ``latency_frames`` late: as many samples as came in."""
        x = _samples(block)
        self._take(x.astype(np.float64))
        out, self._ready = self._ready[: len(x)], self._ready[len(x) :]
        return _to_int16(out.copy())

    def flush(self) -> NDArray[np.int16]:
        """The last ``latency_frames`` samples, still inside the frames being overlapped."""
        self._take(np.zeros(self._size))
        out, self._ready = self._ready[: self.latency_frames], self._ready[self.latency_frames :]
        return _to_int16(out.copy())

    def _take(self, x: NDArray[np.float64]) -> None:
        data = np.concatenate((self._input, x))
        count = (len(data) - self._size) // self._hop + 1 if len(data) >= self._size else 0
        if count == 0:
            self._input = data
            return
        frames = np.lib.stride_tricks.sliding_window_view(data, self._size)[:: self._hop][:count]
        spectra = np.fft.rfft(frames * self._window, axis=1)
        power = spectra.real**2 + spectra.imag**2
        for k in range(count):
            spectra[k] *= self._gains(power[k])
        shaped = np.fft.irfft(spectra, n=self._size, axis=1) * self._window
        tails = np.concatenate((self._overlap[np.newaxis], shaped[:-1, self._hop :]))
        finished = (shaped[:, : self._hop] + tails).ravel()
        self._overlap = shaped[-1, self._hop :].copy()
        self._input = data[count * self._hop :]
        self._ready = np.concatenate((self._ready, finished))

    def _gains(self, power: NDArray[np.float64]) -> NDArray[np.float64]:
        if not self._started:
            self._power, self._started = power, True
        else:
            self._power = NOISE_SMOOTHING * self._power + (1.0 - NOISE_SMOOTHING) * power
        risen = self._noise * self._rise
        # A floor that has never heard anything (digital silence) learns the first sound.
        self._noise = np.where(risen < 1.0, self._power, np.minimum(self._power, risen))
        wanted = np.maximum(1.0 - NOISE_OVERSUBTRACT * self._noise / np.maximum(self._power, 1e-9), self._floor)
        self._gain = GAIN_SMOOTHING * self._gain + (1.0 - GAIN_SMOOTHING) * wanted
        return self._gain


# --- whole arrays ------------------------------------------------------------------


def clean(audio: ArrayLike, sample_rate: int, *, mains_hz: Mains = "auto") -> NDArray[np.int16]:
    """A whole recording through :class:`LineCleaner`."""
    return LineCleaner(sample_rate, mains_hz=mains_hz).process(audio)


def level(audio: ArrayLike, sample_rate: int, *, target_lufs: float = -20.0) -> NDArray[np.int16]:
    """A whole recording through :class:`Leveller`, realigned with the input."""
    leveller = Leveller(sample_rate, target_lufs=target_lufs)
    out = np.concatenate((leveller.process(audio), leveller.flush()))
    return out[leveller.latency_frames :]


def reduce_noise(audio: ArrayLike, sample_rate: int, *, reduction_db: float = 12.0) -> NDArray[np.int16]:
    """A whole recording through :class:`NoiseReducer`, realigned with the input."""
    reducer = NoiseReducer(sample_rate, reduction_db=reduction_db)
    out = np.concatenate((reducer.process(audio), reducer.flush()))
    return out[reducer.latency_frames :]
