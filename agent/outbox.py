"""The notification outbox: each delivery a durable row in SQLite, and the bookkeeping of its attempts.

A delivery is one event for one target. Its row is written before ``Notifier.enqueue``
returns, to a file in WAL mode that only its owner can read (caller numbers live in
it), and it records the status (``pending``, ``delivered`` or ``failed``), how many
attempts were made, when the next one is due and the last error. An ``Outcome`` is
what one attempt came to; the notifier turns it into the row's next state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.notify_event import iso_utc

STATUSES = ("pending", "delivered", "failed")
IDLE_S = 60.0  # the worker looks at the outbox at least this often


class OutboxError(AgentError, OSError):
    """The notification outbox file cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: success, or its error, whether trying again is pointless, and any wait asked for."""

    ok: bool
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None


def target_key(kind: str, url: str) -> str:
    """How a row names its target: the kind and a hash of the URL, which may hold a password or token."""
    return f"{kind}:{hashlib.sha256(url.encode()).hexdigest()[:24]}"


_SCHEMA = """
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    event TEXT NOT NULL,
    recording TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    next_at REAL NOT NULL,
    last_error TEXT,
    UNIQUE (target, event, recording)
);
CREATE INDEX deliveries_due ON deliveries (status, next_at);
"""
_SCHEMA_VERSION = 1
_APPLICATION_ID = 0x4C524E4F  # "LRNO" in the SQLite header: this file is a linerec notification outbox
_COLUMNS = "id, target, label, event, recording, payload, status, attempts, created_at, updated_at, next_at, last_error"
_INSERT = (
    f"INSERT OR IGNORE INTO deliveries ({_COLUMNS})"  # noqa: S608  (fixed columns)
    " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, NULL)"
)
# The delivery of this target, event and recording: the one just inserted, or the one that was there.
_EXISTING = "SELECT id FROM deliveries WHERE target = ? AND event = ? AND recording IS ? ORDER BY id = ? DESC"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice or webhook call and how far it got."""

    id: str
    target: str  # privacy-safe form of the URL
    event: str
    recording: str | None
    status: str  # pending, delivered or failed
    attempts: int
    created_at: float
    updated_at: float
    next_at: float | None  # when it is tried next; None once it is settled
    last_error: str | None
    target_key: str = field(repr=False, default="")  # which configured target: its kind and a hash of its URL
    payload: str = field(repr=False, default="{}")  # the event document as stored

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready report line (without the stored document)."""
        return {
            "id": self.id,
            "target": self.target,
            "event": self.event,
            "recording": self.recording,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
            "next_at": iso_utc(self.next_at) if self.next_at is not None else None,
            "last_error": self.last_error,
        }


class Outbox:
    """The SQLite file of deliveries; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # caller numbers live here: owner only
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open the notification outbox {path}: {getattr(exc, 'strerror', None) or exc}"
            raise OutboxError(msg) from None
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._check_or_create()
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            self._db.close()
            msg = f"cannot open the notification outbox {path}: {exc}"
            raise OutboxError(msg) from None

    def _check_or_create(self) -> None:
        """Make the schema in a new file; refuse a file that is something else, or from a newer agent."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        app = int(self._db.execute("PRAGMA application_id").fetchone()[0])
        if version == 0 and app == 0:
            if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                msg = "it is an SQLite file of something else"
                raise sqlite3.DatabaseError(msg)
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id = {_APPLICATION_ID};"
                f" PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;"
            )
        elif app != _APPLICATION_ID:
            msg = "it is an SQLite file of something else"
            raise sqlite3.DatabaseError(msg)
        elif version > _SCHEMA_VERSION:
            msg = f"it has schema version {version}; this agent knows versions up to {_SCHEMA_VERSION}"
            raise sqlite3.DatabaseError(msg)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                msg = f"the notification outbox {self.path} cannot be used: {exc}"
                raise OutboxError(msg) from None

    def add(self, event: str, recording: str | None, rows: list[tuple[str, str, str]], now: float) -> list[str]:
        """Store (target key, label, payload) deliveries at once; one already there for the recording is kept."""
        ids: list[str] = []
        with self._lock:
            self._run("BEGIN IMMEDIATE")
            try:
                for key, label, payload in rows:
                    new = str(uuid.uuid4())
                    self._run(_INSERT, (new, key, label, event, recording, payload, now, now, now))
                    found = self._run(_EXISTING, (key, event, recording, new))
                    ids.append(str(found[0][0]))
                self._run("COMMIT")
            except BaseException:
                with contextlib.suppress(OutboxError):
                    self._run("ROLLBACK")
                raise
        return ids

    def next_due(self, now: float) -> tuple[Delivery | None, float]:
        """The delivery most overdue, or None and how long until the next one is due."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM deliveries WHERE status = 'pending' ORDER BY next_at, created_at LIMIT 1"  # noqa: S608
        )
        if not rows:
            return None, IDLE_S
        delivery = _delivery(rows[0])
        wait = (delivery.next_at or 0.0) - now
        return (delivery, 0.0) if wait <= 0 else (None, min(wait, IDLE_S))

    def update(
        self, delivery_id: str, *, status: str, attempts: int, next_at: float, error: str | None, now: float
    ) -> None:
        self._run(
            "UPDATE deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
            (status, attempts, next_at, error, now, delivery_id),
        )

    def count(self, status: str) -> int:
        return int(self._run("SELECT count(*) FROM deliveries WHERE status = ?", (status,))[0][0])

    def list(self, status: str | None) -> list[Delivery]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._run(f"SELECT {_COLUMNS} FROM deliveries {where} ORDER BY created_at, id", params)  # noqa: S608
        return [_delivery(row) for row in rows]

    def prune(self, before: float) -> int:
        rows = self._run("DELETE FROM deliveries WHERE status = 'delivered' AND updated_at < ? RETURNING id", (before,))
        return len(rows)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    did, key, label, event, recording, payload, status, attempts, created, updated, next_at, error = row
    settled = status != "pending"
    return Delivery(
        id=str(did),
        target=str(label),
        event=str(event),
        recording=None if recording is None else str(recording),
        status=str(status),
        attempts=int(attempts) if isinstance(attempts, int) else 0,
        created_at=float(created) if isinstance(created, int | float) else 0.0,
        updated_at=float(updated) if isinstance(updated, int | float) else 0.0,
        next_at=None if settled or not isinstance(next_at, int | float) else float(next_at),
        last_error=None if error is None else str(error),
        target_key=str(key),
        payload=str(payload),
    )
