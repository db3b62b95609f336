"""ASCII armor for age files: strict PEM (RFC 7468) labelled ``AGE ENCRYPTED FILE``.

An armored file is the binary age file in padded base64, 64 columns a line
(the last line may be shorter), between a BEGIN and an END line. Because armor
would otherwise make a file malleable, the reader accepts exactly one spelling:
canonical base64, no empty, short or long lines inside, every line ending like
the BEGIN line (LF or CRLF), and nothing but whitespace before BEGIN or after
END. Every failure raises :class:`AgeError` starting ``bad age armor``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

from .errors import AgeError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_ARMOR = "bad age armor"
_SCAN = 64 * 1024  # how much leading or trailing whitespace is read at a time


class Source(Protocol):
    """What the readers need from a binary file: ``read`` and ``readline``."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


def armor(data: bytes) -> bytes:
    """Armor a whole binary age file, as ``age -a`` writes it (LF line endings)."""
    text = base64.b64encode(data)
    lines = [text[start : start + COLUMNS] for start in range(0, len(text), COLUMNS)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


def looks_armored(first_line: bytes) -> bool:
    """Tell from a file's first line whether it is armor (or whitespace before armor)."""
    stripped = first_line.strip()
    return stripped.startswith(b"-----") or (not stripped and first_line != b"")


def _decode_line(line: bytes, number: int) -> bytes:
    if len(line) % 4:
        raise AgeError(f"{_ARMOR}: line {number} is not padded base64 (its length is not a multiple of 4)")
    try:
        data = binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        raise AgeError(f"{_ARMOR}: line {number} holds characters outside base64") from None
    # Only a padded line has spare bits or spare "=" that could spell the same bytes twice.
    if line.endswith(b"=") and binascii.b2a_base64(data, newline=False) != line:
        raise AgeError(f"{_ARMOR}: line {number} is not canonical base64")
    return data


class ArmorReader:
    """Reads the binary age file out of an armored one, decoding a line at a time.

    ``first_line`` is the part of ``source`` a caller already read to spot the
    armor. The trailing data is checked once the END line is read, so the last
    ``read`` fails if anything but whitespace follows it.
    """

    def __init__(self, source: Source, first_line: bytes = b"") -> None:
        self._source = source
        self._decoded = bytearray()
        self._scanned = 0  # bytes of _decoded already searched for a newline
        self._number = 0  # lines read so far, counted from the top of the file
        self._last_seen = False  # the short or padded line that must come just before END
        self._done = False
        self._eol = self._read_begin(first_line)

    def _read_begin(self, line: bytes) -> bytes:
        """Skip whitespace, check the BEGIN line and return its line ending."""
        line = line or self._source.readline(_SCAN)
        self._number = 1
        while line and not line.strip():
            if line.endswith(b"\n"):
                self._number += 1
            line = self._source.readline(_SCAN)
        stripped = line.lstrip()
        for eol in (b"\n", b"\r\n"):
            if stripped == BEGIN + eol:
                return eol
        if stripped == BEGIN:
            raise AgeError(f"{_ARMOR}: the file ends right after the BEGIN line")
        shown = stripped[:40].decode("ascii", "replace").rstrip()
        raise AgeError(f"{_ARMOR}: line {self._number} must be {BEGIN.decode()!r}, found {shown!r}")

    def _next_line(self) -> bytes:
        """Read one line and check its ending; the END line alone may end the file without one."""
        self._number += 1
        raw = self._source.readline(COLUMNS + len(self._eol) + 1)
        if raw.startswith(END) and not raw[len(END) :].strip():
            return END
        if raw.endswith(self._eol) and not raw[: -len(self._eol)].endswith(b"\r"):
            return raw[: -len(self._eol)]
        if not raw:
            raise AgeError(f"{_ARMOR}: the file ends without the {END.decode()!r} line")
        if raw.endswith(b"\n"):
            raise AgeError(f"{_ARMOR}: line {self._number} ends differently from the BEGIN line (LF and CRLF mixed)")
        if len(raw) > COLUMNS:
            raise AgeError(f"{_ARMOR}: line {self._number} is longer than {COLUMNS} columns")
        raise AgeError(f"{_ARMOR}: the file ends inside line {self._number}, before the END line")

    def _read_line(self) -> None:
        """Decode the next body line into the buffer, or finish at the END line."""
        line = self._next_line()
        if line == END:
            self._finish()
            return
        number = self._number
        if line.startswith(b"-----"):
            raise AgeError(f"{_ARMOR}: line {number} must be {END.decode()!r}")
        if not line:
            raise AgeError(f"{_ARMOR}: line {number} is empty")
        if self._last_seen:
            raise AgeError(f"{_ARMOR}: line {number - 1} is short or padded, so it must be the last before END")
        if len(line) > COLUMNS:
            raise AgeError(f"{_ARMOR}: line {number} is longer than {COLUMNS} columns")
        self._last_seen = len(line) < COLUMNS or line.endswith(b"=")
        self._decoded += _decode_line(line, number)

    def _finish(self) -> None:
        """Check that only whitespace follows the END line, reading to the end of the source."""
        while chunk := self._source.read(_SCAN):
            if chunk.strip():
                raise AgeError(f"{_ARMOR}: data follows the {END.decode()!r} line")
        self._done = True

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` decoded bytes (all of them when ``size`` is negative)."""
        while not self._done and (size < 0 or len(self._decoded) < size):
            self._read_line()
        if size < 0:
            size = len(self._decoded)
        data = bytes(self._decoded[:size])
        del self._decoded[:size]
        self._scanned = 0
        return data

    def readline(self, size: int = -1, /) -> bytes:
        """Read decoded bytes up to and including a newline, at most ``size`` of them."""
        while True:
            end = self._decoded.find(b"\n", self._scanned)
            if end >= 0:
                return self.read(end + 1 if size < 0 else min(end + 1, size))
            self._scanned = len(self._decoded)
            if self._done or 0 <= size <= len(self._decoded):
                return self.read(size)
            self._read_line()
