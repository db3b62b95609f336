"""Payloads of the transfer protocol: chunk, fin, ack, status and event messages.

A recording travels as its manifest, then chunks of its ciphertext, then a fin.
Every message may arrive twice (QoS 1), so each carries what it needs to be
checked and applied idempotently: a chunk names its byte offset and the SHA-256
of its data; a fin names the total size and the SHA-256 of the whole file; an
ack names the recording and the byte ranges the agent holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from firmware.wire.errors import WireError
from firmware.wire.topics import check_recording_id

PROTOCOL_VERSION = 1

# Chunk payload: magic, offset (8 bytes big-endian), SHA-256 of the data, data.
CHUNK_MAGIC = b"LRC1"
CHUNK_HEADER_LEN = len(CHUNK_MAGIC) + 8 + 32
MAX_CHUNK_DATA = 256 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a recording's ciphertext at a byte offset."""

    offset: int
    data: bytes


def encode_chunk(offset: int, data: bytes) -> bytes:
    """Chunk payload bytes for ``data`` found at ``offset`` in the ciphertext."""
    if not 0 < len(data) <= MAX_CHUNK_DATA:
        msg = f"chunk of {len(data)} bytes is outside 1..{MAX_CHUNK_DATA}"
        raise WireError(msg)
    return CHUNK_MAGIC + offset.to_bytes(8, "big") + hashlib.sha256(data).digest() + data


def decode_chunk(payload: bytes) -> Chunk:
    """Check and split a chunk payload; a damaged one raises WireError."""
    if len(payload) <= CHUNK_HEADER_LEN or not payload.startswith(CHUNK_MAGIC):
        msg = f"chunk payload of {len(payload)} bytes has no valid header"
        raise WireError(msg)
    offset = int.from_bytes(payload[4:12], "big")
    digest = payload[12:CHUNK_HEADER_LEN]
    data = payload[CHUNK_HEADER_LEN:]
    if len(data) > MAX_CHUNK_DATA:
        msg = f"chunk of {len(data)} bytes is larger than {MAX_CHUNK_DATA}"
        raise WireError(msg)
    if hashlib.sha256(data).digest() != digest:
        msg = f"chunk at offset {offset} does not match its SHA-256"
        raise WireError(msg)
    return Chunk(offset, bytes(data))


def _load_json(payload: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{what} message is not JSON: {exc}"
        raise WireError(msg) from None
    if not isinstance(value, dict):
        msg = f"{what} message is not a JSON object"
        raise WireError(msg)
    version = value.get("v")
    if version != PROTOCOL_VERSION:
        msg = f"{what} message has protocol version {version!r}; this side speaks {PROTOCOL_VERSION}"
        raise WireError(msg)
    return value


def _dump_json(value: dict[str, Any]) -> bytes:
    # The version comes last so that no caller-supplied field can replace it.
    return json.dumps({**value, "v": PROTOCOL_VERSION}, separators=(",", ":")).encode()


def _field(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    # bool is an int in Python; a size of True is still nonsense.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        msg = f"{what} message field {key!r} is {value!r}; expected {kind.__name__}"
        raise WireError(msg)
    return value


@dataclass(frozen=True, slots=True)
class Fin:
    """The end of one recording's transfer."""

    size: int
    sha256: str  # hex of the whole ciphertext


def encode_fin(fin: Fin) -> bytes:
    """Fin payload bytes."""
    return _dump_json({"size": fin.size, "sha256": fin.sha256})


def decode_fin(payload: bytes) -> Fin:
    """Parse a fin payload or raise WireError."""
    obj = _load_json(payload, "fin")
    size = _field(obj, "size", int, "fin")
    digest = _field(obj, "sha256", str, "fin")
    if size < 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        msg = f"fin message has size {size!r} and sha256 {digest!r}; expected >= 0 and 64 hex digits"
        raise WireError(msg)
    return Fin(size, digest)


class AckStatus(StrEnum):
    """What the agent says about a recording."""

    STORED = "stored"  # durably archived: the device may delete its copy
    MISSING = "missing"  # some bytes (or the manifest) have not arrived: resend them
    REJECTED = "rejected"  # will never be accepted as sent (bad signature, unenrolled...)


Range = tuple[int, int]  # [start, end) byte range


@dataclass(frozen=True, slots=True)
class Ack:
    """The agent's answer about one recording."""

    rec_id: str
    status: AckStatus
    ranges: tuple[Range, ...] = field(default_factory=tuple)  # bytes the agent holds
    need_manifest: bool = False
    reason: str = ""


def encode_ack(ack: Ack) -> bytes:
    """Ack payload bytes."""
    return _dump_json(
        {
            "id": ack.rec_id,
            "status": str(ack.status),
            "ranges": [list(r) for r in ack.ranges],
            "need_manifest": ack.need_manifest,
            "reason": ack.reason,
        }
    )


def decode_ack(payload: bytes) -> Ack:
    """Parse an ack payload or raise WireError."""
    obj = _load_json(payload, "ack")
    rec_id = check_recording_id(_field(obj, "id", str, "ack"))
    try:
        status = AckStatus(str(obj.get("status")))
    except ValueError:
        msg = f"ack message has status {obj.get('status')!r}; expected one of stored, missing, rejected"
        raise WireError(msg) from None
    raw_ranges = obj.get("ranges", [])
    ranges: list[Range] = []
    if not isinstance(raw_ranges, list):
        msg = "ack message field 'ranges' is not a list"
        raise WireError(msg)
    for item in raw_ranges:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
            or not 0 <= item[0] <= item[1]
        ):
            msg = f"ack message has a bad range {item!r}; expected [start, end] with 0 <= start <= end"
            raise WireError(msg)
        ranges.append((item[0], item[1]))
    need_manifest = obj.get("need_manifest", False) is True
    reason = obj.get("reason", "")
    return Ack(rec_id, status, tuple(ranges), need_manifest, reason if isinstance(reason, str) else "")


def missing_ranges(held: tuple[Range, ...] | list[Range], size: int) -> list[Range]:
    """The byte ranges of ``[0, size)`` not covered by ``held``."""
    gaps: list[Range] = []
    pos = 0
    for start, end in sorted(held):
        if start > pos:
            gaps.append((pos, min(start, size)))
        pos = max(pos, end)
        if pos >= size:
            break
    if pos < size:
        gaps.append((pos, size))
    return [g for g in gaps if g[0] < g[1]]


def merge_range(held: list[Range], new: Range) -> list[Range]:
    """``held`` with ``new`` added, overlapping and touching ranges merged, sorted."""
    merged: list[Range] = []
    start, end = new
    for s, e in sorted(held):
        if e < start or s > end:
            merged.append((s, e))
        else:
            start, end = min(s, start), max(e, end)
    merged.append((start, end))
    return sorted(merged)


def encode_status(state: str, facts: dict[str, Any] | None = None) -> bytes:
    """Device status payload (retained): ``online`` or ``offline`` plus facts."""
    return _dump_json({**(facts or {}), "state": state})


def decode_status(payload: bytes) -> dict[str, Any]:
    """Parse a device status payload or raise WireError."""
    obj = _load_json(payload, "status")
    _field(obj, "state", str, "status")
    return obj


def encode_event(kind: str, facts: dict[str, Any] | None = None) -> bytes:
    """Line event payload: ``ringing``, ``answered`` or ``ended`` plus facts."""
    return _dump_json({**(facts or {}), "event": kind})
