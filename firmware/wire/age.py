"""age v1 encryption to X25519 recipients, streaming both ways (C2SP age.md).

Only the parts linerec uses are here: X25519 recipients and identities, the
binary format and the STREAM payload. Reading also takes ASCII-armored files
(:mod:`.armor`) and passphrase (scrypt) files (:mod:`.stanzas`), so a file
someone made by hand with ``age -a`` or ``age -p`` still opens. Post-quantum
recipients are refused with a message that says so.

Every failure to read a file raises :class:`AgeError`, and its text tells at
which stage the file failed: ``bad age armor``, ``bad age header``,
``age header MAC``, ``no identity matches`` or ``bad age payload``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator, Sequence
from io import BytesIO
from typing import BinaryIO, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import bech32
from .armor import ArmorReader, Source, armor, looks_armored
from .errors import AgeError
from .stanzas import (
    FILE_KEY_SIZE,
    HEADER,
    Identity,
    Passphrase,
    Stanza,
    b64decode,
    b64encode,
    hkdf,
    unwrap,
    wrap_x25519,
)

__all__ = [
    "CHUNK_SIZE",
    "AgeError",
    "Decryptor",
    "Encryptor",
    "Identity",
    "Passphrase",
    "PayloadStream",
    "armor",
    "build_header",
    "decrypt_bytes",
    "encrypt_bytes",
    "generate_identity",
    "load_identities",
    "new_file_key",
    "parse_identity",
    "parse_recipient",
    "read_header",
    "recipient_of",
]

CHUNK_SIZE = 65536
TAG_SIZE = 16
NONCE_SIZE = 16
_SEALED_CHUNK = CHUNK_SIZE + TAG_SIZE
_MAX_INDEX = 1 << 88
_VERSION_LINE = b"age-encryption.org/v1\n"
_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "AGE-SECRET-KEY-"
_BODY_COLUMNS = 64
_MAX_LINE = 64 * 1024
_PAYLOAD = "bad age payload"


def generate_identity() -> str:
    """Make a new secret key, spelled as age spells it: ``AGE-SECRET-KEY-1...``."""
    return bech32.encode(_IDENTITY_HRP, X25519PrivateKey.generate().private_bytes_raw())


def recipient_of(identity: str) -> str:
    """Give the public ``age1...`` recipient that encrypts to ``identity``."""
    return bech32.encode(_RECIPIENT_HRP, parse_identity(identity).public_key().public_bytes_raw())


def _decode_key(text: str, hrp: str, what: str) -> bytes:
    try:
        found, data = bech32.decode(text.strip())
    except bech32.Bech32Error as exc:
        raise AgeError(f"{what}: {exc}") from None
    if found != hrp:
        raise AgeError(f"{what}: expected the prefix {hrp!r}1, found {found!r}1")
    if len(data) != 32:
        raise AgeError(f"{what}: holds {len(data)} bytes, an X25519 key has 32")
    return data


def parse_recipient(text: str) -> X25519PublicKey:
    """Read an ``age1...`` recipient."""
    data = _decode_key(text, _RECIPIENT_HRP, f"age recipient {text.strip()!r} is not valid")
    return X25519PublicKey.from_public_bytes(data)


def parse_identity(text: str) -> X25519PrivateKey:
    """Read an ``AGE-SECRET-KEY-1...`` identity (the text is never echoed in errors)."""
    if text.strip().upper().startswith("AGE-SECRET-KEY-PQ-"):
        raise AgeError("post-quantum age identities (AGE-SECRET-KEY-PQ-1...) are not supported")
    data = _decode_key(text, _IDENTITY_HRP, "age identity is not valid")
    return X25519PrivateKey.from_private_bytes(data)


def load_identities(path: str | os.PathLike[str]) -> list[X25519PrivateKey]:
    """Read an age identity file: one identity a line, blank lines and ``#`` comments ignored."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:  # noqa: PTH123 - takes str or PathLike alike
            lines = handle.read().splitlines()
    except OSError as exc:
        raise AgeError(f"cannot read age identity file {name}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AgeError(f"age identity file {name} is not UTF-8 text") from None
    keys: list[X25519PrivateKey] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            keys.append(parse_identity(stripped))
        except AgeError as exc:
            raise AgeError(f"age identity file {name}, line {number}: {exc}") from None
    if not keys:
        raise AgeError(f"age identity file {name} holds no AGE-SECRET-KEY-1 identity")
    return keys


def new_file_key() -> bytes:
    """Draw a fresh 16-byte file key."""
    return os.urandom(FILE_KEY_SIZE)


def _header_mac(file_key: bytes, header: bytes) -> bytes:
    return hmac.digest(hkdf(file_key, b"", b"header"), header, "sha256")


def build_header(file_key: bytes, recipients: Sequence[str]) -> bytes:
    """Build the whole header for ``file_key``, one X25519 stanza per recipient, MAC line last."""
    if len(file_key) != FILE_KEY_SIZE:
        raise AgeError(f"age file key has {len(file_key)} bytes, it must have {FILE_KEY_SIZE}")
    if isinstance(recipients, str) or not recipients:
        raise AgeError("age encryption needs at least one age1... recipient, as a list")
    keys = [parse_recipient(text) for text in recipients]
    header = _VERSION_LINE + b"".join(wrap_x25519(file_key, key) for key in keys) + b"---"
    return header + b" " + b64encode(_header_mac(file_key, header)) + b"\n"


class _HeaderReader:
    """Reads header lines, keeping the raw bytes the MAC will cover."""

    def __init__(self, source: Source, first_line: bytes) -> None:
        self._source = source
        self._pending = first_line
        self.raw: list[bytes] = []

    def line(self) -> bytes:
        line, self._pending = self._pending or self._source.readline(_MAX_LINE + 1), b""
        if not line.endswith(b"\n"):
            if len(line) > _MAX_LINE:
                raise AgeError(f"{HEADER}: a header line is longer than {_MAX_LINE} bytes")
            raise AgeError(f"{HEADER}: the file ends inside the header")
        self.raw.append(line)
        return line[:-1]

    def body(self) -> bytes:
        parts = []
        while True:
            line = self.line()
            if len(line) > _BODY_COLUMNS:
                raise AgeError(f"{HEADER}: stanza body line is longer than {_BODY_COLUMNS} columns")
            parts.append(b64decode(line, "stanza body"))
            if len(line) < _BODY_COLUMNS:
                return b"".join(parts)


def _check_version(line: bytes) -> None:
    if line + b"\n" == _VERSION_LINE:
        return
    if looks_armored(line):
        raise AgeError(f"{HEADER}: the file is ASCII-armored, but was opened as a binary age file")
    if line.startswith(b"age-encryption.org/"):
        version = line.decode("ascii", "replace")
        raise AgeError(f"{HEADER}: unsupported version line {version!r}, expected v1")
    raise AgeError(f"{HEADER}: not an age file (no 'age-encryption.org/v1' line)")


def _parse_args(line: bytes) -> tuple[bytes, ...]:
    args = tuple(line[3:].split(b" "))
    for arg in args:
        if not arg or any(not 33 <= byte <= 126 for byte in arg):
            raise AgeError(f"{HEADER}: stanza line has an empty or non-printable argument")
    return args


def _open_source(source: Source, armored: bool | None) -> tuple[Source, bytes]:
    """Return the binary age stream and its first line, taking any armor off on the way."""
    first = source.readline(_MAX_LINE + 1)
    if armored or (armored is None and looks_armored(first)):
        reader = ArmorReader(source, first)
        return reader, reader.readline(_MAX_LINE + 1)
    return source, first


def read_header(source: Source, first_line: bytes) -> tuple[list[Stanza], bytes, bytes]:
    """Read the header: its stanzas, the bytes the MAC covers, and the MAC."""
    reader = _HeaderReader(source, first_line)
    _check_version(reader.line())
    stanzas: list[Stanza] = []
    while True:
        line = reader.line()
        if line.startswith(b"-> "):
            args = _parse_args(line)
            stanzas.append(Stanza(args, reader.body()))
        elif line.startswith(b"--- "):
            mac_text = line[4:]
            if len(mac_text) != 43:
                raise AgeError(f"{HEADER}: MAC line must hold 43 base64 characters")
            covered = b"".join(reader.raw[:-1]) + b"---"
            return stanzas, covered, b64decode(mac_text, "MAC")
        else:
            raise AgeError(f"{HEADER}: expected a '-> ' stanza or the '--- ' MAC line")


def _chunk_nonce(index: int, *, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class PayloadStream:
    """Seals and opens the payload's 64 KiB chunks, for writers that place chunks themselves."""

    def __init__(self, file_key: bytes, nonce: bytes | None = None) -> None:
        if len(file_key) != FILE_KEY_SIZE:
            raise AgeError(f"age file key has {len(file_key)} bytes, it must have {FILE_KEY_SIZE}")
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else bytes(nonce)
        if len(self.nonce) != NONCE_SIZE:
            raise AgeError(f"age payload nonce has {len(self.nonce)} bytes, it must have 16")
        self._aead = ChaCha20Poly1305(hkdf(file_key, self.nonce, b"payload"))

    def seal(self, index: int, plaintext: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        """Encrypt chunk ``index``; only the final chunk may be short, and empty only at index 0."""
        size = len(plaintext)
        if not 0 <= index < _MAX_INDEX:
            raise AgeError(f"age chunk index {index} is outside 0 to 2**88 - 1")
        if size > CHUNK_SIZE or (size < CHUNK_SIZE and not final):
            raise AgeError(f"age chunk {index} has {size} bytes; non-final chunks hold exactly 64 KiB")
        if final and size == 0 and index != 0:
            raise AgeError("age final chunk may be empty only when the whole file is empty")
        return self._aead.encrypt(_chunk_nonce(index, final=final), plaintext, None)

    def open(self, index: int, sealed: bytes | memoryview, *, final: bool) -> bytes:
        """Decrypt and authenticate chunk ``index``."""
        try:
            return self._aead.decrypt(_chunk_nonce(index, final=final), sealed, None)
        except InvalidTag:
            raise AgeError(f"{_PAYLOAD}: chunk {index} fails authentication") from None


def _write_all(sink: BinaryIO, data: bytes) -> None:
    written = sink.write(data)
    # A raw (unbuffered) sink may take only part of the data.
    while written is not None and written < len(data):
        data = data[written:]
        written = sink.write(data)


class Encryptor:
    """Writes an age file to ``sink`` as plaintext is written to it, 64 KiB at a time.

    Closing writes the final chunk; the sink itself stays open. Leaving a
    ``with`` block by an exception does *not* write the final chunk, so a file
    cut short by an error can never pass for a complete one.
    """

    def __init__(self, sink: BinaryIO, recipients: Sequence[str]) -> None:
        file_key = new_file_key()
        header = build_header(file_key, recipients)
        self._sink = sink
        self._stream = PayloadStream(file_key)
        self._buffer = bytearray()
        self._index = 0
        self.closed = False
        _write_all(sink, header + self._stream.nonce)

    def writable(self) -> bool:
        return True

    def _emit(self, plaintext: bytes | bytearray | memoryview, *, final: bool) -> None:
        _write_all(self._sink, self._stream.seal(self._index, plaintext, final=final))
        self._index += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take plaintext; full chunks go to the sink once more data shows they are not last."""
        if self.closed:
            raise ValueError("write to a closed age Encryptor")
        view = memoryview(data).cast("B")
        size = len(view)
        pos = 0
        while pos < size:
            if len(self._buffer) == CHUNK_SIZE:
                self._emit(self._buffer, final=False)
                self._buffer.clear()
            if not self._buffer and size - pos > CHUNK_SIZE:
                # More data follows this slice, so it is not the last chunk.
                self._emit(view[pos : pos + CHUNK_SIZE], final=False)
                pos += CHUNK_SIZE
                continue
            take = min(CHUNK_SIZE - len(self._buffer), size - pos)
            self._buffer += view[pos : pos + take]
            pos += take
        return size

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        """Write the final chunk; the sink stays open."""
        if self.closed:
            return
        self.closed = True
        self._emit(self._buffer, final=True)
        self._buffer = bytearray()

    def abort(self) -> None:
        """Stop without the final chunk, leaving a file every reader rejects as truncated."""
        self.closed = True
        self._buffer = bytearray()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Decryptor:
    """Reads authenticated plaintext from an age file, holding at most two chunks at once.

    ``identities`` may mix X25519 keys and :class:`Passphrase` objects. An
    ASCII-armored file is recognised by its BEGIN line (whitespace may come
    first) and decoded as it is read; ``armored=True`` insists on armor,
    ``armored=False`` refuses it. The header is read and its MAC checked on
    construction. ``source`` is not closed by :meth:`close`.
    """

    def __init__(
        self, source: BinaryIO | Source, identities: Sequence[Identity], *, armored: bool | None = None
    ) -> None:
        source, first_line = _open_source(source, armored)
        stanzas, covered, mac = read_header(source, first_line)
        file_key = unwrap(stanzas, identities)
        if not hmac.compare_digest(_header_mac(file_key, covered), mac):
            raise AgeError("age header MAC does not verify: the header was altered or corrupted")
        nonce = _read_exact(source, NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise AgeError(f"{HEADER}: the file ends before the 16-byte payload nonce")
        self._source = source
        self._stream = PayloadStream(file_key, nonce)
        self._index = 0
        self._carry = b""
        self._done = False
        self._error: AgeError | None = None
        self._current = memoryview(b"")
        self.closed = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes | None:
        """Decrypt the next chunk, or return None after the final one."""
        if self._error is not None:
            raise self._error
        if self._done:
            return None
        try:
            return self._decrypt_next()
        except AgeError as exc:
            # Later reads must fail too, never report a clean end of file.
            self._error = exc
            raise

    def _decrypt_next(self) -> bytes:
        # One byte past a full chunk tells whether this chunk is the last.
        data = self._carry + _read_exact(self._source, _SEALED_CHUNK + 1 - len(self._carry))
        index = self._index
        self._index += 1
        if len(data) > _SEALED_CHUNK:
            self._carry = data[_SEALED_CHUNK:]
            return self._open(index, memoryview(data)[:_SEALED_CHUNK], final=False)
        self._done = True
        self._carry = b""
        if len(data) < TAG_SIZE:
            if index == 0 and not data:
                raise AgeError(f"{_PAYLOAD}: the file has no chunks after the nonce")
            raise AgeError(f"{_PAYLOAD}: chunk {index} is truncated, shorter than its 16-byte tag")
        plaintext = self._open(index, data, final=True)
        if not plaintext and index > 0:
            raise AgeError(f"{_PAYLOAD}: the final chunk is empty but the file is not")
        return plaintext

    def _open(self, index: int, sealed: bytes | memoryview, *, final: bool) -> bytes:
        try:
            return self._stream.open(index, sealed, final=final)
        except AgeError as exc:
            # The other flag opening it means a cut or extended file, not a damaged chunk.
            try:
                self._stream.open(index, sealed, final=not final)
            except AgeError:
                raise exc from None
        if final:
            raise AgeError(f"{_PAYLOAD}: the file ends without a final chunk (truncated)")
        raise AgeError(f"{_PAYLOAD}: data follows the final chunk {index}")

    def chunks(self) -> Iterator[bytes]:
        """Yield the remaining plaintext chunk by chunk."""
        if self._current:
            rest, self._current = bytes(self._current), memoryview(b"")
            yield rest
        while (chunk := self._next_chunk()) is not None:
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes of plaintext (all of it when ``n`` is negative)."""
        if self.closed:
            raise ValueError("read from a closed age Decryptor")
        if n < 0:
            return b"".join(self.chunks())
        parts: list[bytes] = []
        while n > 0:
            if not self._current:
                chunk = self._next_chunk()
                if chunk is None:
                    break
                self._current = memoryview(chunk)
            part = self._current[:n]
            self._current = self._current[len(part) :]
            parts.append(bytes(part))
            n -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        self.closed = True
        self._current = memoryview(b"")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close()


def _read_exact(source: Source, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the source."""
    parts = []
    while size > 0 and (more := source.read(size)):
        parts.append(more)
        size -= len(more)
    return b"".join(parts)  # a single part comes back as is, without a copy


def encrypt_bytes(data: bytes, recipients: Sequence[str]) -> bytes:
    """Encrypt ``data`` in memory to the given ``age1...`` recipients."""
    sink = BytesIO()
    with Encryptor(sink, recipients) as encryptor:
        encryptor.write(data)
    return sink.getvalue()


def decrypt_bytes(data: bytes, identities: Sequence[Identity], *, armored: bool | None = None) -> bytes:
    """Decrypt a whole age file held in memory, binary or armored (see :class:`Decryptor`)."""
    with Decryptor(BytesIO(data), identities, armored=armored) as decryptor:
        return decryptor.read()
