"""The segment log: audio encrypted a second at a time, so that a crash loses at most the last moments.

A recording's main file is one age stream whose first chunk is completed only
when the call ends. Beside it the recorder appends, about once a second, the
audio since the last time as a small complete FLAC file inside a complete age
file of its own. After a power cut or a kill the device cannot decrypt anything (it holds
only the archive's public keys), but it can still deliver that log: it is the
recording, and the agent, which holds the identity, joins the segments.

Layout::

    MAGIC                                 b"LRSEGS1\\n"
    record*  length  uint32 big-endian    bytes of the age file that follows
             frames  uint64 big-endian    audio frames covered by all records so far
             age     ``length`` bytes     one age v1 file (binary, not armored) holding
                                          one FLAC file: the segment's audio

The recording is the segments' samples one after another. The frame count is
in the clear so that the device can say how long a recovered recording is
without decrypting it; the file size says about as much.
A record cut short by the crash is dropped; everything before it is whole,
because each append is followed by ``fsync``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from firmware.wire import age
from firmware.wire.errors import AgeError, WireError

MAGIC = b"LRSEGS1\n"
_RECORD = struct.Struct(">IQ")
MAX_RECORD = 16 << 20  # far above a second of any codec; a larger length is corruption


@dataclass(frozen=True, slots=True)
class Record:
    """Where one segment's age file sits in the log, and the frames recorded up to its end."""

    offset: int  # of the age file, after the record header
    length: int
    frames_end: int


@dataclass(frozen=True, slots=True)
class Scan:
    """The whole records in a log and where the last whole one ends."""

    records: tuple[Record, ...]
    valid_end: int  # bytes from the start of the log that hold only whole records
    torn: bool  # bytes after ``valid_end`` belong to a record cut short

    @property
    def frames(self) -> int:
        """Audio frames the whole records cover."""
        return self.records[-1].frames_end if self.records else 0


def encode_record(age_file: bytes, frames_end: int) -> bytes:
    """One record for the log: header and the segment's age file."""
    if not 0 < len(age_file) <= MAX_RECORD:
        msg = f"segment of {len(age_file)} bytes is outside 1..{MAX_RECORD}"
        raise WireError(msg)
    return _RECORD.pack(len(age_file), frames_end) + age_file


def scan(source: BinaryIO, size: int) -> Scan:
    """Walk the record headers of a log of ``size`` bytes; WireError if it is not a segment log."""
    source.seek(0)
    if source.read(len(MAGIC)) != MAGIC:
        msg = "not a linerec segment log: it does not start with LRSEGS1"
        raise WireError(msg)
    records: list[Record] = []
    pos = len(MAGIC)
    last_frames = 0
    while pos < size:
        header = source.read(_RECORD.size)
        if len(header) < _RECORD.size:
            return Scan(tuple(records), pos, torn=True)
        length, frames_end = _RECORD.unpack(header)
        if not 0 < length <= MAX_RECORD or frames_end < last_frames:
            msg = f"segment log is corrupt at byte {pos}: record of {length} bytes ending at frame {frames_end}"
            raise WireError(msg)
        body = pos + _RECORD.size
        if body + length > size:
            return Scan(tuple(records), pos, torn=True)
        records.append(Record(body, length, frames_end))
        source.seek(body + length)
        pos = body + length
        last_frames = frames_end
    return Scan(tuple(records), pos, torn=False)


def plaintext(source: BinaryIO, size: int, identities: Sequence[age.Identity]) -> Iterator[bytes]:
    """The decrypted segments of a log, in order; AgeError names a segment that will not open."""
    result = scan(source, size)
    if result.torn:
        msg = f"segment log ends in a record cut short at byte {result.valid_end}"
        raise WireError(msg)
    for number, record in enumerate(result.records):
        source.seek(record.offset)
        data = source.read(record.length)
        try:
            yield age.decrypt_bytes(data, identities, armored=False)
        except AgeError as exc:
            msg = f"segment {number} of the log cannot be decrypted: {exc}"
            raise AgeError(msg) from None
