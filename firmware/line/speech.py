"""Voices for simulated conversations: text in, telephone-band int16 speech out.

:class:`EspeakVoice` speaks with the ``espeak-ng`` program; :class:`SynthVoice`
needs no program and makes a seeded voice-like signal (pitch pulses through
formant resonances, syllable rhythm, word gaps) that voice activity detectors take
for speech. Both deliver the telephone band (300-3400 Hz) at about -20 dBFS RMS.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import zlib
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.line.base import LineError

__all__ = [
    "SPEECH_LEVEL_DBFS",
    "EspeakVoice",
    "SynthVoice",
    "VoiceSource",
    "default_voice",
    "to_telephone_band",
]

SPEECH_LEVEL_DBFS = -20.0
TELEPHONE_LOW_HZ = 300.0
TELEPHONE_HIGH_HZ = 3400.0
_FULL_SCALE = 32767.0
_LOW_TAPER_HZ = 80.0
_HIGH_TAPER_HZ = 150.0


class VoiceSource(Protocol):
    """Something that can speak a line of a scripted conversation."""

    def say(self, text: str, speaker: str, sample_rate: int) -> NDArray[np.int16]:
        """``text`` spoken by ``speaker`` as int16 mono at ``sample_rate``."""
        ...


def _taper(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """0 below 0, 1 above 1, a raised cosine between."""
    ramp: NDArray[np.float64] = 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))
    return ramp


def to_telephone_band(
    audio: NDArray[np.floating] | NDArray[np.integer],
    rate_in: int,
    rate_out: int,
    *,
    low_hz: float = TELEPHONE_LOW_HZ,
    high_hz: float = TELEPHONE_HIGH_HZ,
) -> NDArray[np.float64]:
    """Resample ``audio`` from ``rate_in`` to ``rate_out`` and keep only ``low_hz``..``high_hz``.

    The resampling is done in the frequency domain: the spectrum of the (padded)
    input is cut to the output's band and transformed back at the output length.
    Everything above the pass band is removed before the rate changes, so nothing
    aliases. The band edges are raised-cosine tapers just inside the band (80 Hz
    above ``low_hz``, 150 Hz below ``high_hz``), and ``high_hz`` is lowered to 95 %
    of the output's Nyquist frequency if it would not fit.
    """
    if rate_in <= 0 or rate_out <= 0:
        msg = f"sample rates must be positive, not {rate_in} -> {rate_out}"
        raise ValueError(msg)
    x = np.asarray(audio, dtype=np.float64)
    n_out = round(len(x) * rate_out / rate_in)
    if len(x) == 0 or n_out == 0:
        return np.zeros(n_out, dtype=np.float64)
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    # Zero padding on both sides keeps the circular wrap of the FFT away from the
    # signal; lengths are multiples of `down` so the output length is exact.
    pad = down * math.ceil(0.05 * rate_in / down)
    blocks = math.ceil((len(x) + 2 * pad) / down)
    n_in_padded, n_out_padded = blocks * down, blocks * up
    padded = np.zeros(n_in_padded, dtype=np.float64)
    padded[pad : pad + len(x)] = x
    spectrum = np.fft.rfft(padded)

    # The tapers lie inside the band, so nothing outside low_hz..high_hz survives.
    high = min(high_hz, 0.95 * rate_out / 2.0)
    low = max(low_hz, 0.0)
    n_bins = n_out_padded // 2 + 1
    freqs = np.arange(n_bins, dtype=np.float64) * (rate_in / n_in_padded)
    mask = _taper((freqs - low) / _LOW_TAPER_HZ) * _taper((high - freqs) / _HIGH_TAPER_HZ)
    out_spectrum = np.zeros(n_bins, dtype=np.complex128)
    keep = min(n_bins, len(spectrum))
    out_spectrum[:keep] = spectrum[:keep] * mask[:keep]
    y = np.fft.irfft(out_spectrum, n=n_out_padded) * (n_out_padded / n_in_padded)
    start = pad * up // down
    return np.asarray(y[start : start + n_out], dtype=np.float64)


def _to_int16_at_level(x: NDArray[np.float64], level_dbfs: float) -> NDArray[np.int16]:
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    if rms > 0.0:
        x = x * (_FULL_SCALE * 10.0 ** (level_dbfs / 20.0) / rms)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _stable_hash(text: str) -> int:
    # zlib.crc32, unlike hash(), is the same in every process.
    return zlib.crc32(text.encode("utf-8"))


# --- espeak-ng ------------------------------------------------------------------------

_ESPEAK_VOICES: Mapping[str, tuple[str, int]] = {
    "caller": ("en-us+m3", 38),
    "callee": ("en-us+f2", 62),
}
_ESPEAK_OTHER_VOICES: tuple[tuple[str, int], ...] = (
    ("en-gb+m4", 45),
    ("en-us+f4", 70),
    ("en-gb+f3", 55),
)


class EspeakVoice:
    """Speech from the ``espeak-ng`` program, one voice per speaker, on the telephone band."""

    def __init__(
        self,
        *,
        program: str = "espeak-ng",
        voices: Mapping[str, tuple[str, int]] | None = None,
        words_per_minute: int = 160,
        level_dbfs: float = SPEECH_LEVEL_DBFS,
        timeout_s: float = 30.0,
    ) -> None:
        if not 80 <= words_per_minute <= 450:
            msg = f"words_per_minute must be 80..450, not {words_per_minute}"
            raise ValueError(msg)
        self._program = program
        self._voices = dict(_ESPEAK_VOICES if voices is None else voices)
        self._speed = words_per_minute
        self._level = level_dbfs
        self._timeout = timeout_s

    def _voice_for(self, speaker: str) -> tuple[str, int]:
        if speaker in self._voices:
            return self._voices[speaker]
        return _ESPEAK_OTHER_VOICES[_stable_hash(speaker) % len(_ESPEAK_OTHER_VOICES)]

    def say(self, text: str, speaker: str, sample_rate: int) -> NDArray[np.int16]:
        """``text`` spoken in ``speaker``'s espeak-ng voice, as int16 at ``sample_rate``."""
        voice, pitch = self._voice_for(speaker)
        command = [self._program, "--stdout", "-v", voice, "-s", str(self._speed)]
        command += ["-p", str(pitch), "--", text]
        try:
            done = subprocess.run(command, capture_output=True, timeout=self._timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            msg = f"{self._program} could not speak {text[:40]!r}: {exc}"
            raise LineError(msg) from exc
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip() or "no message"
            msg = f"{self._program} exited with status {done.returncode}: {detail}"
            raise LineError(msg)
        try:
            data, rate = sf.read(io.BytesIO(done.stdout), dtype="float64", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as exc:
            msg = f"{self._program} wrote audio that is not a readable WAV file: {exc}"
            raise LineError(msg) from exc
        mono = np.asarray(data.mean(axis=1), dtype=np.float64)
        band = to_telephone_band(mono, int(rate), sample_rate)
        return _to_int16_at_level(band, self._level)


# --- a voice-like signal without any program -----------------------------------------

# (F1, F2, F3) in Hz of a few vowels of an adult male voice (Peterson & Barney).
_VOWEL_FORMANTS: tuple[tuple[float, float, float], ...] = (
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
    (660.0, 1720.0, 2410.0),
    (490.0, 1350.0, 1690.0),
)
_FORMANT_BANDWIDTHS = (90.0, 110.0, 170.0)
_VOWELS = frozenset("aeiouy")
# Pitch centres (Hz) and formant scale of the two usual speakers.
_SPEAKER_SHAPES: Mapping[str, tuple[float, float]] = {
    "caller": (115.0, 1.0),
    "callee": (185.0, 1.12),
}


def _syllable_count(word: str) -> int:
    groups, previous = 0, False
    for char in word.lower():
        vowel = char in _VOWELS
        groups += vowel and not previous
        previous = vowel
    return max(groups, 1)


class SynthVoice:
    """A seeded voice-like signal: no words, but the rhythm and spectrum of speech.

    Each syllable is a glottal pulse train (pitch 90-220 Hz, gently falling)
    shaped by three formant resonances of a random vowel, under a rise-and-fall
    envelope at about four syllables a second; some syllables start with a short
    fricative noise, and words are separated by short gaps. The same text,
    speaker and seed always give the same samples.
    """

    def __init__(self, *, seed: int = 0, level_dbfs: float = SPEECH_LEVEL_DBFS) -> None:
        self._seed = seed
        self._level = level_dbfs

    def _shape(self, speaker: str) -> tuple[float, float]:
        if speaker in _SPEAKER_SHAPES:
            return _SPEAKER_SHAPES[speaker]
        h = _stable_hash(speaker)
        return 100.0 + (h % 100), 1.0 + (h % 13) / 100.0

    def say(self, text: str, speaker: str, sample_rate: int) -> NDArray[np.int16]:
        """A voice-like rendering of ``text`` for ``speaker``, as int16 at ``sample_rate``."""
        rng = np.random.default_rng([self._seed, _stable_hash(speaker), _stable_hash(text)])
        f0, formant_scale = self._shape(speaker)
        pieces: list[NDArray[np.float64]] = [np.zeros(int(0.05 * sample_rate))]
        for word in text.split() or ["..."]:
            for _ in range(_syllable_count(word)):
                duration = rng.uniform(0.16, 0.3)
                pieces.append(self._syllable(rng, duration, f0, formant_scale, sample_rate))
            pieces.append(np.zeros(int(rng.uniform(0.06, 0.14) * sample_rate)))
        signal = np.concatenate(pieces)
        band = to_telephone_band(signal, sample_rate, sample_rate)
        return _to_int16_at_level(band, self._level)

    @staticmethod
    def _syllable(
        rng: np.random.Generator, duration: float, f0: float, formant_scale: float, rate: int
    ) -> NDArray[np.float64]:
        n = max(int(duration * rate), 16)
        t = np.arange(n) / rate
        start_pitch = f0 * rng.uniform(0.88, 1.18)
        pitch = np.clip(start_pitch * (1.0 - 0.25 * t / duration), 90.0, 220.0)
        phase = np.cumsum(pitch / rate)
        pulses = np.diff(np.floor(phase), prepend=0.0)
        excitation = pulses + 0.02 * rng.standard_normal(n)

        formants = np.array(_VOWEL_FORMANTS[rng.integers(len(_VOWEL_FORMANTS))]) * formant_scale
        freqs = np.fft.rfftfreq(n, 1.0 / rate)
        envelope = np.zeros_like(freqs)
        for centre, bandwidth, weight in zip(formants, _FORMANT_BANDWIDTHS, (1.0, 0.6, 0.3), strict=True):
            envelope += weight / (1.0 + ((freqs - centre) / (bandwidth / 2.0)) ** 2)
        voiced = np.fft.irfft(np.fft.rfft(excitation) * envelope, n=n)

        # Rise and fall of one syllable: about four a second.
        voiced *= np.sin(np.pi * t / duration) ** 0.7
        if rng.random() < 0.4:
            voiced += SynthVoice._fricative(rng, n, rate) * float(np.std(voiced))
        return np.asarray(voiced, dtype=np.float64)

    @staticmethod
    def _fricative(rng: np.random.Generator, n: int, rate: int) -> NDArray[np.float64]:
        length = min(n, int(0.04 * rate))
        noise = np.zeros(n)
        burst = rng.standard_normal(length) * np.hanning(length)
        spectrum = np.fft.rfft(burst)
        freqs = np.fft.rfftfreq(length, 1.0 / rate)
        spectrum[(freqs < 1800.0) | (freqs > 3300.0)] = 0.0
        noise[:length] = np.fft.irfft(spectrum, n=length) * 1.5
        return noise


def default_voice() -> VoiceSource:
    """``espeak-ng`` when it is installed and speaks, else the program-free voice."""
    if shutil.which("espeak-ng"):
        voice = EspeakVoice()
        try:
            sample = voice.say("test", "caller", 8000)
        except LineError:
            pass
        else:
            if sample.size and np.any(sample):
                return voice
    return SynthVoice()
