"""Turn an archived recording back into audio a person can play: decrypt, join, convert.

An archived recording is one age file holding FLAC, Opus or WAV (its name says
which: ``<id>.flac.age``), or, for a call the device recovered after a crash, a
segment log (``<id>.flac.segments``) of small FLAC files each in its own age
file. A FLAC recording exported as FLAC is copied byte for byte; everything else
is decoded and written again.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from firmware.wire import age, segments
from firmware.wire.errors import AgeError, WireError

if TYPE_CHECKING:
    from numpy.typing import NDArray

OUTPUTS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
BLOCK = 65536


def export(source: Path, target: Path, identities: Sequence[age.Identity]) -> None:
    """Write the recording at ``source`` to ``target`` (.wav or .flac), decrypted."""
    suffix = target.suffix.lower()
    if suffix not in OUTPUTS:
        msg = f"output {target} must end in .wav or .flac"
        raise AgentError(msg)
    if not source.is_file():
        msg = f"recording file {source} is missing from the archive"
        raise AgentError(msg)
    with tempfile.TemporaryDirectory(prefix="linerec-export-") as tmp:
        if source.name.endswith(".segments"):
            rate, blocks = _segment_blocks(source, identities)
            _write(target, rate, blocks)
            return
        plain = Path(tmp) / source.name.removesuffix(".age")
        _decrypt_to(source, plain, identities)
        if source.name.endswith(".flac.age") and suffix == ".flac":
            _copy(plain, target)
        else:
            rate, blocks = _file_blocks(plain)
            _write(target, rate, blocks)


def _decrypt_to(source: Path, target: Path, identities: Sequence[age.Identity]) -> None:
    try:
        with source.open("rb") as src, target.open("xb") as out:
            target.chmod(0o600)
            for piece in age.Decryptor(src, identities).chunks():
                out.write(piece)
    except AgeError as exc:
        msg = f"cannot decrypt {source.name}: {exc}"
        raise AgentError(msg) from None


def _segment_blocks(source: Path, identities: Sequence[age.Identity]) -> tuple[int, Iterator[NDArray[Any]]]:
    """The sample rate and the samples of a segment log, a segment at a time."""
    import soundfile as sf  # noqa: PLC0415  (numpy stays out of the agent until audio is needed)

    f = source.open("rb")
    pieces = segments.plaintext(f, source.stat().st_size, identities)

    def decoded() -> Iterator[tuple[int, NDArray[Any]]]:
        try:
            for number, flac in enumerate(pieces):
                try:
                    audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
                except (sf.LibsndfileError, RuntimeError) as exc:
                    msg = f"segment {number} of {source.name} is not audio: {exc}"
                    raise AgentError(msg) from None
                yield rate, audio
        except (AgeError, WireError) as exc:
            msg = f"cannot decrypt {source.name}: {exc}"
            raise AgentError(msg) from None
        finally:
            f.close()

    stream = decoded()
    first = next(stream, None)
    if first is None:
        f.close()
        msg = f"recording {source.name} holds no audio"
        raise AgentError(msg)

    def blocks() -> Iterator[NDArray[Any]]:
        yield first[1]
        for rate, audio in stream:
            if rate != first[0]:
                msg = f"{source.name} changes sample rate from {first[0]} to {rate} Hz mid-recording"
                raise AgentError(msg)
            yield audio

    return first[0], blocks()


def _file_blocks(plain: Path) -> tuple[int, Iterator[NDArray[Any]]]:
    import soundfile as sf  # noqa: PLC0415

    try:
        f = sf.SoundFile(plain)
    except (sf.LibsndfileError, RuntimeError) as exc:
        msg = f"the decrypted recording is not audio: {exc}"
        raise AgentError(msg) from None

    def blocks() -> Iterator[NDArray[Any]]:
        with f:
            yield from f.blocks(blocksize=BLOCK, dtype="int16")

    return f.samplerate, blocks()


def _write(target: Path, rate: int, blocks: Iterator[NDArray[Any]]) -> None:
    import soundfile as sf  # noqa: PLC0415

    file_format, subtype = OUTPUTS[target.suffix.lower()]
    try:
        with sf.SoundFile(target, "w", samplerate=rate, channels=1, subtype=subtype, format=file_format) as out:
            for block in blocks:
                out.write(block)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        msg = f"cannot write {target}: {exc}"
        raise AgentError(msg) from None


def _copy(source: Path, target: Path) -> None:
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        msg = f"cannot write {target}: {exc.strerror}"
        raise AgentError(msg) from None
