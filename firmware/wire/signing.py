"""Device signing keys: Ed25519, created on first run, public half pinned by the agent."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.wire.errors import WireError

PUBLIC_PREFIX = "ed25519:"


def load_or_create_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The device key at ``path``; a new one is written there (mode 0600) if none exists."""
    path = Path(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        msg = f"signing key {path} has mode {mode:04o}; it must be readable by its owner only (0600)"
        raise WireError(msg)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        msg = f"signing key {path} is not a PEM Ed25519 private key: {exc}"
        raise WireError(msg) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        msg = f"signing key {path} is a {type(loaded).__name__}; expected an Ed25519 key"
        raise WireError(msg)
    return loaded


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The ``ed25519:<base64>`` form of a public key, as enrolled on the agent."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Read an ``ed25519:<base64>`` public key, or raise WireError."""
    body = text.strip().removeprefix(PUBLIC_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        msg = f"public key {text!r} is not valid: expected ed25519:<base64 of 32 bytes>"
        raise WireError(msg)
    return Ed25519PublicKey.from_public_bytes(raw)
