"""age recipient stanzas: wrapping the file key to X25519 keys, and unwrapping it again.

A stanza is one ``-> type args`` line of the header plus its body. This module
knows two types: ``X25519`` (public keys) and ``scrypt`` (passphrases, which
linerec only ever opens, never writes). Stanzas of other types are skipped, as
the spec asks, so a file made for several kinds of recipient still opens with
the identity we hold.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import AgeError

FILE_KEY_SIZE = 16
# age's own default ceiling: 2**22 scrypt rounds need 4 GiB and most of a minute.
MAX_SCRYPT_WORK_FACTOR = 22
HEADER = "bad age header"
_WRAPPED_SIZE = FILE_KEY_SIZE + 16  # the file key plus its Poly1305 tag
_ZERO_NONCE = bytes(12)
_X25519_INFO = b"age-encryption.org/v1/X25519"
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_SCRYPT_SALT_SIZE = 16
_DECIMAL = re.compile(rb"[1-9][0-9]*")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 with a 32-byte output, the only length age uses."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def b64encode(data: bytes) -> bytes:
    """Encode as the header does: base64 without ``=`` padding."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes, what: str) -> bytes:
    """Decode unpadded base64, accepting only the one canonical spelling of each value."""
    if text.translate(None, _B64_ALPHABET) or len(text) % 4 == 1:
        raise AgeError(f"{HEADER}: {what} is not unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeError(f"{HEADER}: {what} is not unpadded base64") from None
    if b64encode(data) != text:
        raise AgeError(f"{HEADER}: {what} is not canonical base64 (non-zero trailing bits)")
    return data


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza as read from a header: its arguments (type first) and body."""

    args: tuple[bytes, ...]
    body: bytes


@dataclass(frozen=True)
class Passphrase:
    """A passphrase that opens files made with ``age -p``; its text never shows in a repr.

    ``max_work_factor`` is the largest scrypt work factor (log2 of N) this
    passphrase will be tried at; lower it on small machines, where 2**22 rounds
    would not fit in memory.
    """

    text: str = field(repr=False)
    max_work_factor: int = MAX_SCRYPT_WORK_FACTOR

    def __post_init__(self) -> None:
        if not self.text:
            raise AgeError("age passphrase is empty")
        if not 1 <= self.max_work_factor <= MAX_SCRYPT_WORK_FACTOR:
            raise AgeError(
                f"age passphrase max_work_factor {self.max_work_factor} is outside 1 to {MAX_SCRYPT_WORK_FACTOR}"
            )


Identity = X25519PrivateKey | Passphrase


def _x25519_wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    if shared == bytes(32):
        raise AgeError(f"{HEADER}: X25519 share gives the all-zero shared secret")
    return hkdf(shared, share + recipient, _X25519_INFO)


def wrap_x25519(file_key: bytes, recipient: X25519PublicKey) -> bytes:
    """Write the stanza (both lines) that gives ``file_key`` to ``recipient``."""
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError:
        raise AgeError("age recipient is a low-order X25519 point, which no one can decrypt") from None
    wrap_key = _x25519_wrap_key(shared, share, recipient.public_bytes_raw())
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    # A 32-byte body is 43 base64 characters: one body line, shorter than 64 columns.
    return b"-> X25519 " + b64encode(share) + b"\n" + b64encode(body) + b"\n"


def _check_x25519(stanza: Stanza) -> None:
    if len(stanza.args) != 2:
        raise AgeError(f"{HEADER}: X25519 stanza must have exactly one argument")
    if len(b64decode(stanza.args[1], "X25519 share")) != 32:
        raise AgeError(f"{HEADER}: X25519 share must be 32 bytes")
    if len(stanza.body) != _WRAPPED_SIZE:
        raise AgeError(f"{HEADER}: X25519 stanza body must be 32 bytes")


def _check_scrypt(stanza: Stanza, count: int) -> None:
    if count > 1:
        raise AgeError(f"{HEADER}: a scrypt stanza must be the only stanza")
    if len(stanza.args) != 3:
        raise AgeError(f"{HEADER}: scrypt stanza must have exactly two arguments, a salt and a work factor")
    if len(b64decode(stanza.args[1], "scrypt salt")) != _SCRYPT_SALT_SIZE:
        raise AgeError(f"{HEADER}: scrypt salt must be {_SCRYPT_SALT_SIZE} bytes")
    text = stanza.args[2]
    if not _DECIMAL.fullmatch(text):
        shown = text.decode("ascii", "replace")
        raise AgeError(f"{HEADER}: scrypt work factor {shown!r} is not a decimal number without leading zeros")
    # Compare as text first so a 40-digit number is never turned into an int.
    if len(text) > 2 or int(text) > MAX_SCRYPT_WORK_FACTOR:
        raise AgeError(
            f"{HEADER}: scrypt work factor {text.decode()} is above the limit of {MAX_SCRYPT_WORK_FACTOR}"
            " (each step doubles the time and memory it takes)"
        )
    if len(stanza.body) != _WRAPPED_SIZE:
        raise AgeError(f"{HEADER}: scrypt stanza body must be 32 bytes")


def _check(stanzas: Sequence[Stanza]) -> None:
    """Refuse malformed X25519 and scrypt stanzas, whoever the file is for."""
    for stanza in stanzas:
        if stanza.args[0] == b"X25519":
            _check_x25519(stanza)
        elif stanza.args[0] == b"scrypt":
            _check_scrypt(stanza, len(stanzas))


def _open_x25519(stanza: Stanza, identity: X25519PrivateKey) -> bytes | None:
    share = b64decode(stanza.args[1], "X25519 share")
    try:
        shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:
        shared = bytes(32)  # the library refuses low-order points: all-zero secret
    wrap_key = _x25519_wrap_key(shared, share, identity.public_key().public_bytes_raw())
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None


def _open_scrypt(stanza: Stanza, passphrase: Passphrase) -> bytes | None:
    work_factor = int(stanza.args[2])
    if work_factor > passphrase.max_work_factor:
        raise AgeError(
            f"{HEADER}: scrypt work factor {work_factor} is above the limit of "
            f"{passphrase.max_work_factor} set for this passphrase"
        )
    salt = _SCRYPT_LABEL + b64decode(stanza.args[1], "scrypt salt")
    kdf = Scrypt(salt=salt, length=32, n=1 << work_factor, r=8, p=1)
    wrap_key = kdf.derive(passphrase.text.encode("utf-8"))
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None


def unwrap(stanzas: Sequence[Stanza], identities: Sequence[Identity]) -> bytes:
    """Check every stanza, then find the file key with the first identity that opens one."""
    _check(stanzas)
    for identity in identities:
        for stanza in stanzas:
            if isinstance(identity, Passphrase):
                file_key = _open_scrypt(stanza, identity) if stanza.args[0] == b"scrypt" else None
            else:
                file_key = _open_x25519(stanza, identity) if stanza.args[0] == b"X25519" else None
            if file_key is not None:
                return file_key
    hint = " (it was made with a passphrase)" if stanzas and stanzas[0].args[0] == b"scrypt" else ""
    raise AgeError(f"no identity matches any recipient of this age file{hint}")
