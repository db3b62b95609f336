"""The notices played to the line: the owner's recordings per rule and language, or the recorder warning tone.

Each notice is known by an id (its file name, or ``tone-1400hz``) and the
SHA-256 of the exact samples played, so a recording's manifest can prove which
notice the caller heard. The built-in notice is the recorder warning tone:
1400 Hz for 0.5 s (Federal Standard 1037C; ITU-T E.180 Supplement 2), also the
periodic beep. An express-consent question must be speech: the owner's file, or
one spoken by espeak-ng when it is installed (``linerec consent prompt``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.wire.errors import ConfigError

TONE_HZ = 1400.0
TONE_S = 0.5
TONE_DBFS = -10.0
RULES = ("one-party", "all-party", "notice", "express")
DEFAULT_QUESTION = (
    "This call may be recorded. To agree, press 1. To refuse, press 2, and the call will not be recorded."
)


@dataclass(frozen=True, eq=False)
class Notice:
    """Audio to play to the line, with what identifies it in the evidence."""

    id: str
    audio: NDArray[np.int16]
    sample_rate: int

    @property
    def sha256(self) -> str:
        """SHA-256 of the samples played (int16 little-endian)."""
        return hashlib.sha256(self.audio.astype("<i2").tobytes()).hexdigest()

    @property
    def duration_s(self) -> float:
        """Seconds the notice lasts."""
        return len(self.audio) / self.sample_rate


def warning_tone(sample_rate: int, seconds: float = TONE_S) -> Notice:
    """The recorder warning tone, with 10 ms ramps so it starts and stops without clicks."""
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sample_rate))
    level = 32767 * 10 ** (TONE_DBFS / 20)
    audio = np.rint(level * ramp * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
    return Notice(f"tone-{TONE_HZ:g}hz-{seconds:g}s", audio, sample_rate)


def load_notice(path: Path, sample_rate: int, *, key: str) -> Notice:
    """An owner's notice file (WAV, FLAC, Opus...) as mono at the line's rate; ConfigError names ``key``."""
    try:
        audio, rate = sf.read(path, dtype="float64", always_2d=True)
    except (OSError, RuntimeError) as exc:
        msg = f"{key}: {path} cannot be read as audio: {exc}"
        raise ConfigError(msg) from None
    mono = audio.mean(axis=1)
    if not len(mono):
        msg = f"{key}: {path} holds no audio"
        raise ConfigError(msg)
    if rate != sample_rate:
        import soxr  # type: ignore[import-untyped]  # noqa: PLC0415  (only when a file needs it)

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    samples = np.clip(np.rint(mono * 32767), -32768, 32767).astype(np.int16)
    return Notice(path.name, samples, sample_rate)


def speak(text: str, out: Path, *, sample_rate: int = 8000, voice: str = "en") -> None:
    """Say ``text`` with espeak-ng into ``out`` (format by extension) at ``sample_rate``."""
    program = shutil.which("espeak-ng")
    if program is None:
        msg = "espeak-ng is not installed; record the prompt yourself, or apt-get install espeak-ng"
        raise ConfigError(msg)
    if not text.strip():
        msg = "the prompt text is empty"
        raise ConfigError(msg)
    with tempfile.TemporaryDirectory(prefix="linerec-prompt-") as tmp:
        wav = Path(tmp) / "prompt.wav"
        done = subprocess.run(
            [program, "-v", voice, "-s", "150", "-w", str(wav), text],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0 or not wav.exists():
            msg = f"espeak-ng could not speak with voice {voice!r}: {done.stderr.strip() or done.returncode}"
            raise ConfigError(msg)
        notice = load_notice(wav, sample_rate, key="prompt")
    try:
        sf.write(out, notice.audio, sample_rate)
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        msg = f"cannot write the prompt to {out}: {exc}"
        raise ConfigError(msg) from None


class NoticeLibrary:
    """The notice for each rule (and language), the beep, and the express question."""

    def __init__(
        self,
        sample_rate: int,
        files: Mapping[str, Mapping[str, Path]] | None = None,
        *,
        language: str = "en",
    ) -> None:
        self.sample_rate = sample_rate
        self.language = language
        self.tone = warning_tone(sample_rate)
        self._notices: dict[tuple[str, str], Notice] = {}
        for lang, by_rule in (files or {}).items():
            for rule, path in by_rule.items():
                if rule not in (*RULES, "question"):
                    msg = f"consent.notices.{lang}.{rule} is not a rule; expected one of {', '.join(RULES)} or question"
                    raise ConfigError(msg)
                self._notices[(lang, rule)] = load_notice(path, sample_rate, key=f"consent.notices.{lang}.{rule}")

    def for_rule(self, rule: str, language: str | None = None) -> Notice:
        """The notice announcing a recording under ``rule``; the warning tone unless the owner gave one."""
        lang = language or self.language
        return self._notices.get((lang, rule)) or self._notices.get((self.language, rule)) or self.tone

    def question(self, language: str | None = None) -> Notice:
        """The express-consent question: the owner's, or one spoken by espeak-ng now."""
        lang = language or self.language
        found = self._notices.get((lang, "question")) or self._notices.get((self.language, "question"))
        if found is not None:
            return found
        key = ("en", "question-spoken")
        if key not in self._notices:
            with tempfile.TemporaryDirectory(prefix="linerec-question-") as tmp:
                path = Path(tmp) / "question-en.wav"
                try:
                    speak(DEFAULT_QUESTION, path, sample_rate=self.sample_rate)
                except ConfigError as exc:
                    msg = f"consent.notices.{lang}.question is needed for express consent: {exc}"
                    raise ConfigError(msg) from None
                self._notices[key] = load_notice(path, self.sample_rate, key="question")
        return self._notices[key]
