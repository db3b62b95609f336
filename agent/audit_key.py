"""The audit log's secrets on disk: its 32-byte key file and the keyed head checkpoint kept beside it.

Why the checkpoint exists and what it can and cannot prove is set out in ``agent.audit``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from pathlib import Path

from agent.audit_entry import AuditError, Head, is_hash

log = logging.getLogger("linerec.agent.audit")

_HEAD_DOMAIN = b"linerec-audit-head/1\n"
_HEAD_FORMAT = "linerec-audit-head/1"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_key(key_path: Path, *, create: bool) -> bytes:
    """The 32-byte audit key at ``key_path``; with ``create``, a new one is made (mode 0600) if there is none."""
    try:
        info = key_path.stat()
    except FileNotFoundError:
        if not create:
            msg = f"audit key {key_path} is missing; the log already has entries made with it, so restore it"
            raise AuditError(msg) from None
        return _create_key(key_path)
    except OSError as exc:
        msg = f"audit key {key_path} cannot be read: {exc.strerror}"
        raise AuditError(msg) from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        msg = f"audit key {key_path} is not a regular file"
        raise AuditError(msg)
    if mode & 0o077:
        msg = f"audit key {key_path} has mode {mode:04o}; it must be readable by its owner only (0600)"
        raise AuditError(msg)
    try:
        key = key_path.read_bytes()
    except OSError as exc:
        msg = f"audit key {key_path} cannot be read: {exc.strerror}"
        raise AuditError(msg) from None
    if len(key) != 32:
        msg = f"audit key {key_path} holds {len(key)} bytes; an audit key is exactly 32 bytes"
        raise AuditError(msg)
    return key


def _create_key(key_path: Path) -> bytes:
    key = secrets.token_bytes(32)
    tmp = key_path.with_name(f".{key_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, key_path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            return load_key(key_path, create=False)
        finally:
            tmp.unlink()
        _fsync_dir(key_path.parent)
    except OSError as exc:
        msg = f"cannot create the audit key {key_path}: {exc.strerror}"
        raise AuditError(msg) from None
    log.info("created audit key %s", key_path)
    return key


def _head_mac(key: bytes, head: Head) -> str:
    payload = _HEAD_DOMAIN + json.dumps([head.seq, head.hash], separators=(",", ":")).encode()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def read_checkpoint(head_path: Path, key: bytes | None) -> tuple[Head | None, str | None]:
    """The head the checkpoint file records, or None and why it cannot be trusted."""
    try:
        doc = json.loads(head_path.read_bytes())
    except FileNotFoundError:
        return None, f"the head checkpoint {head_path} is missing"
    except OSError as exc:
        return None, f"the head checkpoint {head_path} cannot be read: {exc.strerror}"
    except (ValueError, RecursionError):
        return None, f"the head checkpoint {head_path} is not JSON"
    seq = doc.get("seq") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != _HEAD_FORMAT
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 0
        or not is_hash(doc.get("hash"))
        or not isinstance(doc.get("mac"), str)
    ):
        return None, f"the head checkpoint {head_path} is not a {_HEAD_FORMAT} document"
    head = Head(seq, doc["hash"])
    if key is not None and not hmac.compare_digest(doc["mac"].encode(), _head_mac(key, head).encode()):
        return head, f"the head checkpoint {head_path} was not written with this audit key (forged, or the wrong key)"
    return head, None


def write_checkpoint(head_path: Path, key: bytes, head: Head) -> None:
    """Replace the checkpoint with ``head``: temp file, fsync, rename, fsync of the directory."""
    doc = {"format": _HEAD_FORMAT, "seq": head.seq, "hash": head.hash, "mac": _head_mac(key, head)}
    tmp = head_path.with_name(head_path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(json.dumps(doc, sort_keys=True).encode() + b"\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(head_path)
    _fsync_dir(head_path.parent)
