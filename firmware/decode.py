"""``linerec decode callerid|dtmf|tones FILE``: run one of the line decoders over an audio file.

The file is read with soundfile (WAV, FLAC, Ogg), mixed to mono, and brought to
8 kHz (or kept at 16 kHz, which the decoders take natively). Results are one
JSON object per line with ``--json``, or one readable line each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.line.speech import to_telephone_band
from firmware.wire.errors import ConfigError, LinerecError

KINDS = ("callerid", "dtmf", "tones")
STANDARDS = ("auto", "bell202", "v23", "dtmf")
NATIVE_RATES = (8000, 16000)


class DecodeError(LinerecError, ValueError):
    """The file cannot be read as audio, or the request makes no sense."""


class Finding(Protocol):
    """Anything a decoder reports: it knows its JSON form."""

    def to_json(self) -> dict[str, Any]: ...


def read_audio(path: Path) -> tuple[NDArray[np.int16], int]:
    """The file's audio as int16 mono at 8 or 16 kHz."""
    try:
        data, rate = sf.read(path, dtype="float64", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        msg = f"cannot read {path} as audio: {exc}"
        raise DecodeError(msg) from None
    mono = data.mean(axis=1) * 32767.0
    if rate not in NATIVE_RATES:
        target = 16000 if rate > 16000 else 8000
        mono = to_telephone_band(mono, rate, target, low_hz=0.0, high_hz=0.45 * target)
        rate = target
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16), int(rate)


def decode(kind: str, path: Path, *, standard: str = "auto", country: str = "US") -> list[Finding]:
    """Everything the ``kind`` decoder finds in the file, in time order."""
    if kind not in KINDS:
        msg = f"decode {kind!r} is not known; expected one of {', '.join(KINDS)}"
        raise DecodeError(msg)
    if standard not in STANDARDS:
        msg = f"--standard {standard!r} is not known; expected one of {', '.join(STANDARDS)}"
        raise DecodeError(msg)
    audio, rate = read_audio(path)
    found: Sequence[Finding]
    if kind == "callerid":
        from firmware.dsp.callerid import decode_callerid  # noqa: PLC0415

        found = decode_callerid(audio, rate, standard=standard)
    elif kind == "dtmf":
        from firmware.dsp.dtmf import detect_dtmf  # noqa: PLC0415

        found = detect_dtmf(audio, rate)
    else:
        from firmware.dsp.tones import detect_tones  # noqa: PLC0415

        try:
            found = detect_tones(audio, rate, country=country)
        except ConfigError as exc:
            raise DecodeError(str(exc)) from None
    return list(found)


def describe(finding: Finding) -> str:
    """One readable line for a person."""
    item = finding.to_json()
    span = f"{item.get('start_s', 0.0):8.3f}-{item.get('end_s', 0.0):.3f} s"
    rest = "  ".join(f"{k}={v}" for k, v in item.items() if k not in ("start_s", "end_s") and v is not None)
    return f"{span}  {rest}"


def print_findings(findings: Sequence[Finding], out: TextIO, *, as_json: bool) -> None:
    """JSON Lines, or readable lines."""
    for finding in findings:
        print(json.dumps(finding.to_json()) if as_json else describe(finding), file=out)
