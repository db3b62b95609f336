"""The age envelope of archived files, opened for the archive's own work.

Export wants to seek in a recording without writing its plaintext anywhere;
key rotation wants to know which identity opens a file, and to give a file a
new header without touching its payload. Both need more than a stream
decryptor: the header on its own, the file key, and the payload's place in
the file. Archived files are binary age v1 files as the devices write them
(armored files are refused here).

age keeps the header and the payload apart on purpose (C2SP age.md): the
payload key is derived from the file key and the payload nonce only, and the
header MAC from the file key only. A new header that wraps the same file key
to other recipients, with a MAC made with that file key, therefore fits the
payload as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from firmware.wire import age, segments
from firmware.wire.age import read_header as read_age_header
from firmware.wire.armor import looks_armored
from firmware.wire.errors import AgeError, WireError
from firmware.wire.stanzas import Identity, Stanza, hkdf, unwrap

TAG = 16
NONCE = 16
SEALED = age.CHUNK_SIZE + TAG
_MAX_LINE = 64 * 1024
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Header:
    """An age header as read: its stanzas, the bytes its MAC covers, the MAC, and its length in the file."""

    stanzas: tuple[Stanza, ...]
    covered: bytes
    mac: bytes
    length: int  # the payload nonce starts here

    def opens_with(self, identity: Identity) -> bool:
        """Whether ``identity`` unwraps one of the stanzas (the MAC is not checked)."""
        try:
            unwrap(self.stanzas, [identity])
        except AgeError:
            return False
        return True

    def file_key(self, identities: Sequence[Identity]) -> bytes:
        """The file key, once an identity opens a stanza and the header MAC verifies with it."""
        file_key = unwrap(self.stanzas, identities)
        expected = hmac.digest(hkdf(file_key, b"", b"header"), self.covered, "sha256")
        if not hmac.compare_digest(expected, self.mac):
            msg = "age header MAC does not verify: the header was altered or corrupted"
            raise AgeError(msg)
        return file_key


def read_header(source: BinaryIO) -> Header:
    """The header of the binary age file ``source`` (read from its start)."""
    source.seek(0)
    first = source.readline(_MAX_LINE + 1)
    if looks_armored(first):
        msg = "bad age header: the file is ASCII-armored; archived files are binary age files"
        raise AgeError(msg)
    stanzas, covered, mac = read_age_header(source, first)
    return Header(tuple(stanzas), covered, mac, source.tell())


def payload_sha256(source: BinaryIO, start: int) -> str:
    """SHA-256 of the bytes from ``start`` (the end of the header) to the end of the file."""
    digest = hashlib.sha256()
    source.seek(start)
    while block := source.read(_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def segment_log_payload_sha256(source: BinaryIO, size: int) -> str:
    """A digest of a segment log that leaves out every segment's age header.

    Over ``LRSEGS1\\n`` and, per record, its frame count, its payload's length
    (8 bytes big-endian each) and the payload itself (nonce and sealed chunks):
    what a new header per segment leaves unchanged.
    """
    scan = segments.scan(source, size)
    if scan.torn:
        msg = f"segment log ends in a record cut short at byte {scan.valid_end}"
        raise WireError(msg)
    digest = hashlib.sha256(segments.MAGIC)
    for record in scan.records:
        source.seek(record.offset)
        piece = source.read(record.length)
        header = read_header(io.BytesIO(piece))
        payload = piece[header.length :]
        digest.update(struct.pack(">QQ", record.frames_end, len(payload)))
        digest.update(payload)
    return digest.hexdigest()


def file_sha256(path: os.PathLike[str] | str) -> str:
    """SHA-256 of a whole file, read a block at a time."""
    with open(path, "rb") as f:  # noqa: PTH123 - takes str or PathLike alike
        return payload_sha256(f, 0)


class AgePlaintext(io.RawIOBase):
    """A read-only, seekable view of an age file's plaintext; a chunk is decrypted only when read.

    The last chunk is opened when the view is made, so a file cut short or
    extended is refused at once; every byte handed out has been authenticated.
    At most one decrypted chunk (64 KiB) is held. ``source`` stays the
    caller's to close.

    libsndfile reads through callbacks, where an exception would only be
    printed: a chunk that fails authentication there ends the data instead,
    and the error waits in :attr:`error` for the caller to raise.
    """

    def __init__(self, source: BinaryIO, identities: Sequence[Identity]) -> None:
        super().__init__()
        header = read_header(source)
        file_key = header.file_key(identities)
        nonce = source.read(NONCE)
        if len(nonce) != NONCE:
            msg = "bad age header: the file ends before the 16-byte payload nonce"
            raise AgeError(msg)
        self._source = source
        self._stream = age.PayloadStream(file_key, nonce)
        self._base = header.length + NONCE
        payload = source.seek(0, io.SEEK_END) - self._base
        count = max(1, -(-payload // SEALED))
        last = payload - (count - 1) * SEALED
        if last < TAG:
            msg = "bad age payload: the last chunk is shorter than its 16-byte tag (truncated)"
            raise AgeError(msg)
        self._count = count
        self._last_sealed = last
        self.size = (count - 1) * age.CHUNK_SIZE + last - TAG
        self._cached: tuple[int, bytes] = (-1, b"")
        if not self._chunk(count - 1) and count > 1:
            msg = "bad age payload: the final chunk is empty but the file is not"
            raise AgeError(msg)
        self._pos = 0
        self.error: AgeError | None = None

    def _chunk(self, index: int) -> bytes:
        if self._cached[0] == index:
            return self._cached[1]
        final = index == self._count - 1
        self._source.seek(self._base + index * SEALED)
        sealed = self._source.read(self._last_sealed if final else SEALED)
        try:
            plain = self._stream.open(index, sealed, final=final)
        except AgeError:
            if final and len(sealed) == SEALED and self._opens_as_inner(index, sealed):
                msg = "bad age payload: the file ends without a final chunk (cut short)"
                raise AgeError(msg) from None
            raise
        self._cached = (index, plain)
        return plain

    def _opens_as_inner(self, index: int, sealed: bytes) -> bool:
        try:
            self._stream.open(index, sealed, final=False)
        except AgeError:
            return False
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence, self._pos)
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size and self.error is None:
            index, offset = divmod(self._pos, age.CHUNK_SIZE)
            try:
                plain = self._chunk(index)
            except AgeError as exc:
                self.error = exc
                break
            take = min(len(view) - done, len(plain) - offset)
            view[done : done + take] = plain[offset : offset + take]
            done += take
            self._pos += take
        return done
