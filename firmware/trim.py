"""``linerec trim IN OUT``: the recorder's silence trimming, run offline on an audio file.

The file is read in blocks (flat memory however long it is), mixed to mono,
resampled with soxr when webrtcvad or the output format cannot take its rate,
cleaned of DC and hum (unless ``clean=False``), trimmed, and written in the
format OUT's extension names. OUT appears only when it is complete: it is
written beside itself under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile as sf
import soxr  # type: ignore[import-untyped]
from numpy.typing import NDArray

from firmware.dsp.filters import LineCleaner
from firmware.dsp.vad import VAD_RATES, Trimmer, TrimSettings
from firmware.errors import LinerecError

__all__ = [
    "OUTPUT_FORMATS",
    "TrimError",
    "TrimReport",
    "print_report",
    "processing_rate",
    "settings_from_options",
    "trim_file",
]

# Extension -> (soundfile format, subtype, sample rates it takes or None for any).
OUTPUT_FORMATS: Mapping[str, tuple[str, str, tuple[int, ...] | None]] = {
    ".wav": ("WAV", "PCM_16", None),
    ".flac": ("FLAC", "PCM_16", None),
    ".opus": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
    ".ogg": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
}
BLOCK_FRAMES = 1 << 16


class TrimError(LinerecError, ValueError):
    """The input cannot be read, the output cannot be written, or a trim option makes no sense."""


@dataclass(frozen=True)
class TrimReport:
    """What trimming a file did: the trim map in the input's time, and both durations."""

    segments: list[tuple[float, float]]
    input_s: float
    output_s: float
    sample_rate: int

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: seconds, rounded to the millisecond."""
        return {
            "segments": [[round(a, 3), round(b, 3)] for a, b in self.segments],
            "input_s": round(self.input_s, 3),
            "output_s": round(self.output_s, 3),
        }


def settings_from_options(options: Mapping[str, str | None]) -> TrimSettings:
    """TrimSettings from command-line text (``None`` keeps the default); errors name the option."""
    values: dict[str, int] = {}
    for field in fields(TrimSettings):
        text = options.get(field.name)
        if text is None:
            continue
        option = "--" + field.name.replace("_", "-")
        try:
            values[field.name] = int(text)
        except ValueError:
            msg = f"{option} takes a whole number, not {text!r}"
            raise TrimError(msg) from None
        try:
            TrimSettings(**{field.name: values[field.name]})
        except ValueError as exc:
            # The settings name the field first; the user typed the option.
            raise TrimError(option + str(exc).removeprefix(field.name)) from None
    return TrimSettings(**values)


def processing_rate(rate: int, allowed: tuple[int, ...] | None = None) -> int:
    """The rate to trim at: ``rate`` itself when webrtcvad (and the output) take it, else 8 or 16 kHz."""
    if rate in VAD_RATES and (allowed is None or rate in allowed):
        return rate
    return 8000 if abs(rate - 8000) < abs(rate - 16000) else 16000


def trim_file(src: Path, dst: Path, settings: TrimSettings | None = None, *, clean: bool = True) -> TrimReport:
    """Trim the audio file ``src`` into ``dst``; the report's times are the input's."""
    if dst.suffix.lower() not in OUTPUT_FORMATS:
        given = f"not {dst.suffix}" if dst.suffix else "and this name has no extension"
        msg = f"cannot write {dst}: trim writes .wav, .flac, .opus or .ogg files, {given}"
        raise TrimError(msg)
    if not src.is_file():
        msg = f"cannot read {src}: there is no such file"
        raise TrimError(msg)
    if not dst.parent.is_dir():
        msg = f"cannot write {dst}: the folder {dst.parent} does not exist"
        raise TrimError(msg)
    try:
        reader = sf.SoundFile(src)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise TrimError(_cannot_read(src, exc)) from None
    with reader:
        file_format, subtype, rates = OUTPUT_FORMATS[dst.suffix.lower()]
        rate = processing_rate(reader.samplerate, rates)
        partial = dst.with_name(f".{dst.name}.partial")
        try:
            with sf.SoundFile(partial, "w", rate, 1, subtype, format=file_format) as writer:
                trimmer = _trim_stream(src, reader, writer, rate, settings, clean=clean)
            partial.replace(dst)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            msg = f"cannot write {dst}: {_reason(exc)}"
            raise TrimError(msg) from None
        finally:
            partial.unlink(missing_ok=True)
        input_s = reader.frames / reader.samplerate
    return TrimReport(
        segments=trimmer.segments, input_s=input_s, output_s=trimmer.output_frames / rate, sample_rate=rate
    )


def _trim_stream(
    src: Path, reader: sf.SoundFile, writer: sf.SoundFile, rate: int, settings: TrimSettings | None, *, clean: bool
) -> Trimmer:
    resampler = None if rate == reader.samplerate else soxr.ResampleStream(reader.samplerate, rate, 1, "float64")
    cleaner = LineCleaner(rate) if clean else None
    trimmer = Trimmer(rate, settings)

    def push(mono: NDArray[np.float64], *, last: bool = False) -> None:
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        audio = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
        if cleaner is not None:
            audio = cleaner.process(audio)
        writer.write(trimmer.feed(audio))

    blocks = reader.blocks(BLOCK_FRAMES, dtype="float64", always_2d=True)
    while True:
        try:
            block = next(blocks, None)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise TrimError(_cannot_read(src, exc)) from None
        if block is None:
            break
        push(block.mean(axis=1))
    if resampler is not None:
        push(np.zeros(0), last=True)
    writer.write(trimmer.flush())
    return trimmer


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    return str(text).removeprefix("Error : ").rstrip(".")


def _cannot_read(src: Path, exc: BaseException) -> str:
    return f"cannot read {src} as audio: {_reason(exc)}"


def print_report(report: TrimReport, out: TextIO, *, as_json: bool) -> None:
    """One JSON object, or one readable line."""
    if as_json:
        print(json.dumps(report.to_json()), file=out)
        return
    count = len(report.segments)
    print(
        f"kept {report.output_s:.3f} s of {report.input_s:.3f} s in {count} segment{'s' * (count != 1)}"
        f" at {report.sample_rate} Hz",
        file=out,
    )
