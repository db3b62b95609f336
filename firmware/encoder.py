"""Encode captured audio (FLAC, Opus or WAV) and encrypt it to the archive, block by block, straight to disk.

libsndfile writes through a file-like object and, when the file is closed,
seeks back to complete the header at the start (FLAC's STREAMINFO with the
total samples and MD5, WAV's chunk sizes; Ogg Opus needs nothing). age payload
chunks cannot be rewritten in place once sealed, so the writer keeps the first
payload chunk (64 KiB, about eight seconds of FLAC speech at 8 kHz) in memory
and reserves its room in the file; every later chunk is sealed and written as
soon as it fills. At close the first chunk is sealed and written into its
place. Memory stays flat: one chunk held, one filling. Because the file is
whole only once closed, :mod:`firmware.journal` keeps a crash-proof copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.errors import RecordingError
from firmware.wire import age

TAG = 16  # Poly1305 tag after every sealed chunk
SEALED = age.CHUNK_SIZE + TAG


class _AgeSink(io.RawIOBase):
    """A seekable file-like view of the plaintext that libsndfile writes, sealed into an age file."""

    def __init__(self, out: BinaryIO, recipients: tuple[str, ...]) -> None:
        super().__init__()
        file_key = age.new_file_key()
        self._out = out
        self._stream = age.PayloadStream(file_key)
        out.write(age.build_header(file_key, recipients) + self._stream.nonce)
        self._base = out.tell()
        self._head = bytearray()  # plaintext [0, CHUNK_SIZE): patched at close, sealed last
        self._tail = bytearray()  # plaintext of chunk ``_next`` onwards, not yet sealed
        self._next = 1
        self._pos = 0
        self._size = 0

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        return b""

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        if self._pos < self._size:
            self._patch(view)
        elif self._pos == self._size:
            self._append(view)
        else:
            msg = f"audio writer skipped ahead to byte {self._pos} of {self._size}"
            raise OSError(msg)
        return len(view)

    def _patch(self, view: memoryview) -> None:
        end = self._pos + len(view)
        if end > age.CHUNK_SIZE or end > self._size:
            msg = f"audio writer rewrote bytes {self._pos}-{end}, beyond the held first chunk"
            raise OSError(msg)
        self._head[self._pos : end] = view
        self._pos = end

    def _append(self, view: memoryview) -> None:
        self._pos += len(view)
        self._size = self._pos
        room = age.CHUNK_SIZE - len(self._head)
        if room > 0:
            self._head += view[:room]
            view = view[room:]
        self._tail += view
        # Seal a chunk only once data beyond it exists: the last chunk must be flagged final.
        while len(self._tail) > age.CHUNK_SIZE:
            self._write_chunk(self._next, self._tail[: age.CHUNK_SIZE], final=False)
            del self._tail[: age.CHUNK_SIZE]
            self._next += 1

    def _write_chunk(self, index: int, plaintext: bytes | bytearray, *, final: bool) -> None:
        self._out.seek(self._base + index * SEALED)
        self._out.write(self._stream.seal(index, bytes(plaintext), final=final))

    def finish(self) -> None:
        """Seal the last chunk and the held first chunk; trim the file to its true length."""
        if self._tail:
            self._write_chunk(self._next, self._tail, final=True)
            end = self._out.tell()
            self._write_chunk(0, self._head, final=False)
        else:
            self._write_chunk(0, self._head, final=True)
            end = self._out.tell()
        self._out.truncate(end)
        self._head.clear()
        self._tail.clear()


# codec name -> libsndfile (format, subtype); every one can be written block by block.
CODECS: dict[str, tuple[str, str]] = {
    "flac": ("FLAC", "PCM_16"),
    "opus": ("OGG", "OPUS"),
    "wav": ("WAV", "PCM_16"),
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def opus_compression_level(bitrate_kbps: float) -> float:
    """libsndfile's compression level for an Opus bit rate: it maps 0..1 onto 256..6 kb/s per channel."""
    return min(1.0, max(0.0, (256.0 - bitrate_kbps) / 250.0))


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    """What a finished recording file holds."""

    path: Path
    frames: int
    sample_rate: int
    codec: str
    size: int  # bytes of ciphertext
    sha256: str  # of the ciphertext
    pcm_sha256: str  # of the captured samples (int16 little-endian), to check a decode against

    @property
    def duration_s(self) -> float:
        """Seconds of audio."""
        return self.frames / self.sample_rate


class EncryptedAudioWriter:
    """Writes int16 mono blocks as an age-encrypted audio file at ``path``, fsynced at close."""

    def __init__(
        self,
        path: Path,
        *,
        recipients: tuple[str, ...],
        sample_rate: int,
        codec: str = "flac",
        opus_kbps: float = 16.0,
    ) -> None:
        if codec not in CODECS:
            msg = f"codec {codec!r} must be one of {', '.join(CODECS)}"
            raise RecordingError(msg)
        if codec == "opus" and sample_rate not in OPUS_RATES:
            msg = f"Opus cannot encode {sample_rate} Hz audio; it takes {', '.join(map(str, OPUS_RATES))}"
            raise RecordingError(msg)
        self.path = path
        self.sample_rate = sample_rate
        self.codec = codec
        self.frames = 0
        self._pcm_hash = hashlib.sha256()
        file_format, subtype = CODECS[codec]
        options = {"compression_level": opus_compression_level(opus_kbps)} if codec == "opus" else {}
        try:
            self._file = path.open("xb")
            self._sink = _AgeSink(self._file, recipients)
            self._audio = sf.SoundFile(
                self._sink,
                "w",
                samplerate=sample_rate,
                channels=1,
                subtype=subtype,
                format=file_format,
                **options,
            )
        except OSError as exc:
            msg = f"cannot start the recording file {path}: {exc}"
            raise RecordingError(msg) from None

    def write(self, block: NDArray[np.int16]) -> None:
        """Append one block of int16 samples."""
        samples = np.ascontiguousarray(block, dtype="<i2")
        try:
            self._audio.write(samples)
        except (OSError, RuntimeError) as exc:
            msg = f"cannot write the recording file {self.path}: {exc}"
            raise RecordingError(msg) from None
        self._pcm_hash.update(samples.tobytes())
        self.frames += len(samples)

    def close(self) -> EncodedAudio:
        """Finish the audio stream, seal the age file, fsync it, and describe it."""
        try:
            self._audio.close()
            self._sink.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            size, digest = file_sha256(self.path)
        except (OSError, RuntimeError) as exc:
            msg = f"cannot finish the recording file {self.path}: {exc}"
            raise RecordingError(msg) from None
        return EncodedAudio(
            path=self.path,
            frames=self.frames,
            sample_rate=self.sample_rate,
            codec=self.codec,
            size=size,
            sha256=digest,
            pcm_sha256=self._pcm_hash.hexdigest(),
        )

    def discard(self) -> None:
        """Stop writing and delete the file: none of this audio may be kept."""
        with contextlib.suppress(OSError, RuntimeError):
            self._audio.close()
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._file.closed:
            self.close()


def file_sha256(path: Path) -> tuple[int, str]:
    """Size and SHA-256 (hex) of a file, read in pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while piece := f.read(1 << 16):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()
