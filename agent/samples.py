"""The samples of an archived recording, read a block at a time from any frame, without decrypting to disk.

* An age file (``<id>.flac.age``, ``.opus.age``, ``.wav.age``) is read by
  libsndfile through :class:`~agent.envelope.AgePlaintext`, a seekable view that
  decrypts a 64 KiB chunk when it is read: a snippet from the fourth hour of a
  call decrypts the chunks it needs (and those libsndfile reads to seek).
* A segment log (``<id>.flac.segments``) says in the clear how many frames each
  segment ends at, so only the segments a snippet touches are decrypted and
  decoded, each on its own.

Either way memory holds a chunk or a segment at a time, never the call.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self

from agent.envelope import AgePlaintext
from agent.errors import AgentError
from firmware.wire import age, segments
from firmware.wire.errors import AgeError, WireError

if TYPE_CHECKING:
    from numpy.typing import NDArray

BLOCK = 65536
CODECS = ("flac", "opus", "wav")


def cannot_decrypt(source: Path, exc: Exception) -> AgentError:
    """The error for an archived file that does not open or authenticate."""
    return AgentError(f"cannot decrypt {source.name}: {exc}")


class SampleReader(ABC):
    """An archived recording's format, rate and length, and its samples from any frame."""

    def __init__(self, source: Path, *, codec: str, rate: int, frames: int) -> None:
        self.source = source
        self.codec = codec  # of the archived file, "" for a segment log (many small files)
        self.rate = rate
        self.frames = frames
        self._open: list[Any] = []

    @abstractmethod
    def blocks(self, first: int, last: int) -> Iterator[NDArray[Any]]:
        """int16 blocks holding frames ``first`` up to ``last``, in order."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the archived file and the decoder."""
        for item in reversed(self._open):
            item.close()
        self._open.clear()


def open_samples(source: Path, identities: Sequence[age.Identity]) -> SampleReader:
    """A reader for the archived recording at ``source``."""
    if source.name.endswith(".segments"):
        return SegmentLogReader.open(source, identities)
    return AgeFileReader.open(source, identities)


class AgeFileReader(SampleReader):
    """One audio file inside one age file."""

    def __init__(self, source: Path, *, f: BinaryIO, plaintext: AgePlaintext, audio: Any) -> None:
        codec = source.name.removesuffix(".age").rsplit(".", 1)[-1]
        super().__init__(
            source, codec=codec if codec in CODECS else "", rate=int(audio.samplerate), frames=int(audio.frames)
        )
        self.plaintext = plaintext
        self._audio = audio
        self._open = [f, audio]

    @classmethod
    def open(cls, source: Path, identities: Sequence[age.Identity]) -> AgeFileReader:
        """Open the header, check the end of the payload, and read the audio file's header."""
        import soundfile as sf  # noqa: PLC0415  (numpy stays out of the agent until audio is needed)

        f = source.open("rb")
        try:
            plaintext = AgePlaintext(f, identities)
            if plaintext.size == 0:
                # The device trimmed the whole call away as silence: there is no audio file at all.
                f.close()
                msg = f"recording {source.name} holds no audio"
                raise AgentError(msg)
            audio = sf.SoundFile(plaintext)
        except AgeError as exc:
            f.close()
            raise cannot_decrypt(source, exc) from None
        except (sf.LibsndfileError, RuntimeError) as exc:
            f.close()
            msg = f"the decrypted recording {source.name} is not audio: {exc}"
            raise AgentError(msg) from None
        return cls(source, f=f, plaintext=plaintext, audio=audio)

    def blocks(self, first: int, last: int) -> Iterator[NDArray[Any]]:
        """Seek to ``first`` and read up to ``last``; a chunk failing authentication is an error."""
        self._audio.seek(first)
        left = last - first
        while left > 0:
            block = self._audio.read(min(BLOCK, left), dtype="int16")
            if self.plaintext.error is not None:
                raise cannot_decrypt(self.source, self.plaintext.error)
            if not len(block):
                msg = f"recording {self.source.name} ends {left} frames before the {self.frames} its header gives"
                raise AgentError(msg)
            left -= len(block)
            yield block


class SegmentLogReader(SampleReader):
    """A segment log: small FLAC files, each in its own age file, the recording's samples one after another."""

    def __init__(
        self, source: Path, *, f: BinaryIO, records: tuple[segments.Record, ...], identities: Sequence[age.Identity]
    ) -> None:
        super().__init__(source, codec="", rate=0, frames=records[-1].frames_end if records else 0)
        self._file = f
        self._records = records
        self._identities = identities
        self._open = [f]
        if records:
            self.rate = self._decode(0)[1]

    @classmethod
    def open(cls, source: Path, identities: Sequence[age.Identity]) -> SegmentLogReader:
        """Walk the log's records (their frame counts are in the clear) and decode the first for the rate."""
        f = source.open("rb")
        try:
            scan = segments.scan(f, os.fstat(f.fileno()).st_size)
            if scan.torn:
                msg = f"segment log ends in a record cut short at byte {scan.valid_end}"
                raise WireError(msg)
            return cls(source, f=f, records=scan.records, identities=identities)
        except WireError as exc:
            f.close()
            raise cannot_decrypt(source, exc) from None
        except AgentError:
            f.close()
            raise

    def _decode(self, number: int) -> tuple[NDArray[Any], int]:
        import soundfile as sf  # noqa: PLC0415

        record = self._records[number]
        self._file.seek(record.offset)
        try:
            flac = age.decrypt_bytes(self._file.read(record.length), self._identities, armored=False)
        except AgeError as exc:
            msg = f"segment {number} of the log cannot be decrypted: {exc}"
            raise cannot_decrypt(self.source, AgeError(msg)) from None
        try:
            audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
        except (sf.LibsndfileError, RuntimeError) as exc:
            msg = f"segment {number} of {self.source.name} is not audio: {exc}"
            raise AgentError(msg) from None
        expected = record.frames_end - (self._records[number - 1].frames_end if number else 0)
        if len(audio) != expected:
            msg = f"segment {number} of {self.source.name} holds {len(audio)} frames; the log says {expected}"
            raise AgentError(msg)
        if self.rate and rate != self.rate:
            msg = f"{self.source.name} changes sample rate from {self.rate} to {rate} Hz mid-recording"
            raise AgentError(msg)
        return audio, int(rate)

    def blocks(self, first: int, last: int) -> Iterator[NDArray[Any]]:
        """The segments that overlap the frames asked for, cut to them; the others are not decrypted."""
        end = 0
        for number, record in enumerate(self._records):
            begin, end = end, record.frames_end
            if end <= first or begin == end:
                continue
            if begin >= last:
                return
            audio, _ = self._decode(number)
            yield audio[max(first - begin, 0) : min(last, end) - begin]
