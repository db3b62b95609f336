"""A recording played in the browser: the decrypted audio as a byte range, decrypting only what the range needs.

An age file (``.flac.age``, ``.opus.age``, ``.wav.age``) is served as the
plaintext file it holds, through :class:`~agent.envelope.AgePlaintext`, which
decrypts one 64 KiB chunk at a time: Chromium plays FLAC, Ogg Opus and WAV as
they are. A segment log (a call recovered after a crash: many small FLAC files)
has no single file to serve, so it is served as a WAV whose bytes are made on
the fly from the segments a range touches.

Ranges follow RFC 9110 section 14: one range per request (``bytes=A-B``,
``bytes=A-``, ``bytes=-N``); a request with several ranges, or with one we
cannot read, gets the whole file (the RFC allows ignoring Range), and a range
that starts past the end gets 416.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.envelope import AgePlaintext
from agent.errors import AgentError
from agent.samples import SegmentLogReader, cannot_decrypt
from firmware.wire import age
from firmware.wire.errors import AgeError

PIECE = 65536
MEDIA_TYPES = {"flac": "audio/flac", "opus": "audio/ogg", "wav": "audio/wav"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_WAV_HEADER = 44


class RangeNotSatisfiable(AgentError, ValueError):
    """A byte range that starts past the end of the audio."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) the Range header asks for; None for the whole file.

    RangeNotSatisfiable when the range cannot be served from a file of ``size`` bytes.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None  # several ranges, another unit, or garbage: the whole file
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            msg = f"range {header!r} asks for no bytes of a {size}-byte file"
            raise RangeNotSatisfiable(msg)
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size:
        msg = f"range {header!r} starts past the end of a {size}-byte file"
        raise RangeNotSatisfiable(msg)
    if end < start:
        return None  # last before first: invalid syntax, so the header is ignored
    return start, end


class AudioView:
    """The bytes of a recording as the browser gets them: a size, a media type, and any range of them."""

    media_type: str
    size: int

    def pieces(self, first: int, last: int) -> Iterator[bytes]:
        """Bytes ``first`` to ``last`` (inclusive), a piece at a time."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the archived file."""


@dataclass
class _AgeView(AudioView):
    file: BinaryIO
    plaintext: AgePlaintext
    media_type: str
    size: int

    def pieces(self, first: int, last: int) -> Iterator[bytes]:
        self.plaintext.seek(first)
        left = last - first + 1
        while left > 0:
            piece = self.plaintext.read(min(PIECE, left))
            if self.plaintext.error is not None:
                raise cannot_decrypt(Path(self.file.name), self.plaintext.error)
            if not piece:
                msg = f"recording ends {left} bytes early"
                raise AgentError(msg)
            left -= len(piece)
            yield piece

    def close(self) -> None:
        self.file.close()


def wav_header(rate: int, frames: int) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV file of ``frames`` frames."""
    data = frames * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


class _WavView(AudioView):
    """A segment log as one WAV file; a range decodes only the segments it overlaps."""

    def __init__(self, reader: SegmentLogReader) -> None:
        self.reader = reader
        self.media_type = MEDIA_TYPES["wav"]
        self.header = wav_header(reader.rate, reader.frames)
        self.size = _WAV_HEADER + reader.frames * 2

    def pieces(self, first: int, last: int) -> Iterator[bytes]:
        if first < _WAV_HEADER:
            yield self.header[first : last + 1]
            first = _WAV_HEADER
        if last < first:
            return
        frame_first, frame_last = (first - _WAV_HEADER) // 2, (last - _WAV_HEADER) // 2 + 1
        skip = (first - _WAV_HEADER) % 2
        left = last - first + 1
        for block in self.reader.blocks(frame_first, frame_last):
            data = block.astype("<i2").tobytes()[skip:]
            skip = 0
            yield data[:left]
            left -= len(data)
            if left <= 0:
                return

    def close(self) -> None:
        self.reader.close()


def open_view(source: Path, identities: Sequence[age.Identity]) -> AudioView:
    """The browser's view of the archived recording at ``source``."""
    if source.name.endswith(".segments"):
        return _WavView(SegmentLogReader.open(source, identities))
    codec = source.name.removesuffix(".age").rsplit(".", 1)[-1]
    try:
        f = source.open("rb")
    except OSError as exc:
        msg = f"recording file {source.name} cannot be opened: {exc.strerror}"
        raise AgentError(msg) from None
    try:
        plaintext = AgePlaintext(f, identities)
    except AgeError as exc:
        f.close()
        raise cannot_decrypt(source, exc) from None
    return _AgeView(f, plaintext, MEDIA_TYPES.get(codec, "application/octet-stream"), plaintext.size)


def stream(view: AudioView, first: int, last: int) -> Iterator[bytes]:
    """The range's bytes, closing the view when they are sent (or the browser goes away)."""
    try:
        yield from view.pieces(first, last)
    finally:
        view.close()
