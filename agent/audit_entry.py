"""What an audit entry is: the words it may use, its limits, and the bytes its hash and mac cover.

Both the writer (``agent.audit``) and the verifier (``agent.audit_verify``) read an
entry through this module, so the two can never disagree about its encoding, which
``agent.audit`` documents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from agent.errors import AgentError


class AuditError(AgentError, ValueError):
    """The audit log, its key or its checkpoint cannot be used as asked, or an entry is malformed."""


class Action(StrEnum):
    """What someone did; the only words an entry's ``action`` may be."""

    LIST = "list"
    SEARCH = "search"
    SHOW = "show"
    EXPORT = "export"
    LISTEN = "listen"
    TAG = "tag"
    NOTE = "note"
    BOOKMARK = "bookmark"
    HOLD = "hold"
    RELEASE = "release"
    PURGE = "purge"
    DELETE = "delete"
    ENROL = "enrol"
    ROTATE_KEY = "rotate_key"
    USER = "user"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    VERIFY = "verify"
    SERVE = "serve"
    AUDIT = "audit"  # someone read this log
    RESET_CHECKPOINT = "reset_checkpoint"


ACTIONS = frozenset(action.value for action in Action)

ZERO_HASH = "0" * 64
MAX_DETAILS_BYTES = 8192
MAX_TEXT_CHARS = 512
_ENTRY_DOMAIN = b"linerec-audit/1\n"


class Head(NamedTuple):
    """The seq and hash of a log's last entry: ``(0, ZERO_HASH)`` for an empty log."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditItem:
    """One thing to record, for ``record_many``."""

    actor: str
    action: str
    target: str | None = None
    details: dict[str, Any] | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded access, as stored."""

    seq: int
    at: str  # UTC, ISO 8601 with microseconds and a Z
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    prev: str
    hash: str
    mac: str

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready object (one line of an audit listing)."""
        return asdict(self)


def encode_entry(fields: tuple[int, str, str, str, str | None, str, str]) -> bytes:
    """The bytes an entry's hash and mac are computed over: (seq, at, actor, action, target, details, prev)."""
    return _ENTRY_DOMAIN + json.dumps(list(fields), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def canonical_details(details: dict[str, Any] | None, action: str = "?") -> str:
    """``details`` as stored: JSON with sorted keys and no spaces; AuditError if it is not a small JSON object."""
    if details is None:
        return "{}"
    if not isinstance(details, dict):
        msg = f"audit details of {action!r} must be a JSON object, not {type(details).__name__}"
        raise AuditError(msg)
    try:
        text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
        same = json.loads(text) == details
    except (TypeError, ValueError) as exc:
        msg = f"audit details of {action!r} are not JSON: {exc}"
        raise AuditError(msg) from None
    if not same:
        msg = f"audit details of {action!r} do not survive JSON unchanged (keys must be text, lists not tuples)"
        raise AuditError(msg)
    if size > MAX_DETAILS_BYTES:
        msg = f"audit details of {action!r} take {size} bytes; at most {MAX_DETAILS_BYTES} are allowed"
        raise AuditError(msg)
    return text


def check_action(action: object) -> str:
    """``action`` if it is one of ``ACTIONS``; AuditError otherwise."""
    if not isinstance(action, str) or action not in ACTIONS:
        msg = f"audit action {action!r} is not one of: {', '.join(sorted(ACTIONS))}"
        raise AuditError(msg)
    return str(action)


def check_text(what: str, value: object) -> str:
    """``value`` if it is a short line of printable text, as an actor or target must be; AuditError otherwise."""
    if not isinstance(value, str) or not value:
        msg = f"audit {what} must be non-empty text, not {value!r}"
        raise AuditError(msg)
    if len(value) > MAX_TEXT_CHARS or not value.isprintable():
        msg = f"audit {what} {value[:40]!r} must be at most {MAX_TEXT_CHARS} printable characters"
        raise AuditError(msg)
    return value


def entry_time(at: datetime) -> str:
    """``at`` as an entry stores it: UTC, ISO 8601 with microseconds and a Z; AuditError if it has no zone."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        msg = f"audit time {at!r} must be a timezone-aware datetime"
        raise AuditError(msg)
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def is_hash(value: object) -> bool:
    """Whether ``value`` looks like an entry hash: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
