"""DTMF detector measurements: talk-off on synthetic speech and the Q.24 boundary cases.

A library for the bench: it prints nothing. :func:`talkoff` counts the digits our detector and
multimon-ng find in espeak-ng speech (there are none to find); :func:`q24_cases` and
:func:`q24_cases_multimon` run every Q.24 receiver boundary through each decoder.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.dsp.dtmf import COLUMN_HZ, DIGITS, ROW_HZ, detect_dtmf, generate_dtmf

RATE = 8000

# Harvard sentences (IEEE 1969), public domain; numbers and key names on purpose.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "Please call me back on five five five, one two three four, extension nine.",
    "Press one for sales, press two for service, or hold for the operator.",
    "Hello? Yes, this is Maria. Could you say that again, the line is very noisy.",
    "Oh, eeeee, mmmm, aaaah, ooooh, la la la la la.",
    "The hash key and the star key are at the bottom of the keypad.",
    "Well, I think we should meet at half past seven near the station.",
)
VOICES = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb-scotland+f2",
    "en-gb-x-rp+m3",
    "de+f4",
    "fr-fr",
    "es+m5",
)
# Pitch (0-99) and speed (words per minute) give each voice more than one register.
PITCHES = (50, 80, 25, 95)
SPEEDS = (160, 130, 200)

Case = tuple[str, NDArray[np.float64], str]


def speech(minutes: float, cache: Path) -> tuple[NDArray[np.float64], float]:
    """At least ``minutes`` of espeak-ng speech at 8 kHz (or all it can make), and its length in minutes.

    Each utterance is kept as a WAV file in ``cache``, so a second call costs only the reading.
    """
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise FileNotFoundError("talk-off needs espeak-ng and sox on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    pieces: list[NDArray[np.float64]] = []
    total = 0
    gap = np.zeros(RATE // 5)
    for number, (voice, pitch, speed, sentence) in enumerate(itertools.product(VOICES, PITCHES, SPEEDS, SENTENCES)):
        if total >= minutes * 60 * RATE:
            break
        path = cache / f"utt{number:05d}.wav"
        if not path.exists():
            raw = cache / f"utt{number:05d}.raw.wav"
            args = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), sentence]
            subprocess.run(args, check=True, capture_output=True)
            subprocess.run(["sox", str(raw), "-r", str(RATE), "-b", "16", str(path)], check=True, capture_output=True)
            raw.unlink()
        audio, _ = sf.read(path, dtype="float64")
        pieces += [audio, gap]
        total += len(audio) + len(gap)
    joined = np.concatenate(pieces) if pieces else np.zeros(0)
    return joined, len(joined) / RATE / 60


def multimon_digits(audio: NDArray[np.float64], rate: int = RATE) -> str:
    """The digits multimon-ng finds in ``audio`` (it reads the WAV through sox at 22050 Hz)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.wav"
        sf.write(path, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")
        out = subprocess.run(
            ["multimon-ng", "-q", "-a", "DTMF", "-t", "wav", str(path)], check=True, capture_output=True, text=True
        ).stdout
    return "".join(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("DTMF:"))


def our_digits(audio: NDArray[np.float64], rate: int = RATE) -> str:
    return "".join(d.digit for d in detect_dtmf(audio, rate))


def talkoff(minutes: float) -> tuple[int, int, float]:
    """False digits in espeak-ng speech: (ours, multimon-ng's, minutes of speech used)."""
    with tempfile.TemporaryDirectory() as tmp:
        audio, used = speech(minutes, Path(tmp))
    # Speech peaks near full scale from espeak-ng; -6 dB keeps sox and the WAV from clipping.
    audio = 0.5 * audio
    return len(our_digits(audio)), len(multimon_digits(audio)), used


def two_tones(
    digit: str, ms: float, *, row_offset: float = 0.0, col_offset: float = 0.0, rate: int = RATE
) -> NDArray[np.float64]:
    """One digit at -10 dBFS per tone with its row and column moved separately."""
    row, col = divmod(DIGITS.index(digit), 4)
    t = np.arange(round(ms * rate / 1000)) / rate
    amp = 10 ** (-10 / 20)
    return amp * (
        np.sin(2 * np.pi * ROW_HZ[row] * (1 + row_offset) * t)
        + np.sin(2 * np.pi * COLUMN_HZ[col] * (1 + col_offset) * t)
    )


def _pad(audio: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.concatenate([np.zeros(RATE // 10), audio, np.zeros(RATE // 10)])


def _noisy(audio: NDArray[np.float64], snr_db: float, seed: int) -> NDArray[np.float64]:
    """``audio`` plus white noise in 300-3400 Hz, ``snr_db`` below the tones' total power."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.normal(size=audio.size))
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spectrum, audio.size)
    power = float(np.mean(audio[audio != 0] ** 2))
    return audio + noise * np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise**2))


def q24_signals() -> list[Case]:
    """(case name, audio at 8 kHz, digits a compliant receiver reports; empty when it must reject)."""
    cases: list[Case] = []
    for sign, label in ((1, "+"), (-1, "-")):
        for group in ("row", "col"):
            for dev, expect in ((0.015, True), (0.035, False)):
                key = "row_offset" if group == "row" else "col_offset"
                audio = np.concatenate(
                    [np.concatenate([two_tones(d, 50, **{key: sign * dev}), np.zeros(400)]) for d in DIGITS]
                )
                cases.append((f"{group} {label}{dev:.1%}", _pad(audio), DIGITS if expect else ""))
    cases.append(("40 ms tones", _pad(generate_dtmf(DIGITS, RATE, on_ms=40, off_ms=40)), DIGITS))
    cases.append(("23 ms tones", _pad(generate_dtmf(DIGITS, RATE, on_ms=23, off_ms=40)), ""))
    cases.append(("40 ms pause", _pad(generate_dtmf("5555", RATE, on_ms=50, off_ms=40)), "5555"))
    tone = generate_dtmf("5", RATE, on_ms=40, off_ms=0)
    dropout = np.concatenate([tone, np.zeros(RATE // 100), tone])
    cases.append(("10 ms drop-out", _pad(dropout), "5"))
    for twist, expect in ((4.0, True), (-8.0, True), (8.0, False), (-12.0, False)):
        audio = generate_dtmf(DIGITS, RATE, on_ms=50, off_ms=50, twist_db=twist)
        cases.append((f"twist {twist:+.0f} dB", _pad(audio), DIGITS if expect else ""))
    for seed in range(3):
        audio = _pad(generate_dtmf(DIGITS, RATE, on_ms=50, off_ms=50))
        cases.append((f"S/N 15 dB #{seed + 1}", _noisy(audio, 15.0, seed), DIGITS))
    for level in (-10.0, -36.0):
        audio = generate_dtmf(DIGITS, RATE, on_ms=50, off_ms=50, level_dbfs=level)
        cases.append((f"level {level:.0f} dBFS", _pad(audio), DIGITS))
    return cases


def _run(decode: Callable[[NDArray[np.float64]], str]) -> list[tuple[str, bool, bool]]:
    results = []
    for name, audio, expected in q24_signals():
        got = decode(audio)
        detected = got == expected if expected else bool(got)
        results.append((name, bool(expected), detected))
    return results


def q24_cases() -> list[tuple[str, bool, bool]]:
    """(case, a compliant receiver detects it, our detector did) for every Q.24 boundary.

    "Detected" means the exact digits for a case that must be accepted, and any digit at all
    for one that must be rejected.
    """
    return _run(our_digits)


def q24_cases_multimon() -> list[tuple[str, bool, bool]]:
    """The same cases through multimon-ng."""
    return _run(multimon_digits)
