"""The archive's audit log: who listed, searched, heard, exported, held or deleted which call, and when.

Entries live in their own SQLite file (WAL, ``synchronous = FULL``: an entry is on disk
once ``record`` returns). Appends take SQLite's write lock (``BEGIN IMMEDIATE``), so the
CLI, the daemon and the web UI may append at once from threads and processes without
the sequence numbers or the chain ever forking. Three things make tampering show:

* ``hash``: SHA-256 over the entry's canonical encoding, which includes ``prev``, the
  hash of the entry before (64 zeros for the first). Anyone, without any secret, can
  see an entry that was edited (its hash left as it was), removed, swapped or
  duplicated in the middle.
* ``mac``: HMAC-SHA256 of the same bytes under a 32-byte secret key kept in its own
  file (mode 0600). Someone who edits an entry and recomputes the hashes from there to
  the end leaves a chain that hangs together; without the key, the macs do not.
* the head checkpoint: seq, hash and a mac of the last entry, in a small file next to
  the key, replaced atomically after every append. Removing entries from the end leaves
  a sound chain; the checkpoint still names the entry that was last.

What it cannot do: whoever holds the key and can write both the database and the
checkpoint can rewrite history undetectably. The remedy is a head kept somewhere else
(printed into a ticket, mailed to the office, signed into a report): ``head()`` gives
it, and ``verify(expected_head=...)`` proves that every entry up to it is unchanged and
still there; entries after an exported head have only the key's protection. Verifying
without the key checks the chain and that the entry the checkpoint names is still there
and unchanged, so a rewrite from the middle to the end still shows; it cannot tell who
wrote the entries, nor an entry forged after the checkpoint.

The checkpoint is written after the entry is committed, so a crash in between leaves it
one entry behind; the next append brings it up to date, and ``verify`` accepts entries
past the checkpoint (and says how many) as long as they chain and carry good macs.
``record`` refuses to append while the log does not match its checkpoint (entries
removed, the checkpoint missing or forged, or the wrong key), so that later appends do
not paper over a truncation; ``reset_checkpoint`` accepts the log as it stands once
someone has looked, and leaves an entry saying what the checkpoint was.

Encoding hashed and mac'd: ``b"linerec-audit/1\\n"`` then the UTF-8 JSON array
``[seq, at, actor, action, target, details, prev]`` without spaces and with non-ASCII
characters as they are, where ``details`` is the stored canonical JSON text (sorted
keys, no spaces) as a string. A JSON array of these values can be read back only one
way, so two different entries never encode to the same bytes.

An entry's fields and encoding are defined in ``agent.audit_entry``, the key and
checkpoint files are handled by ``agent.audit_key``, and the pass ``verify`` makes over
the rows is ``agent.audit_verify``; their public names can be imported from here too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.audit_entry import (
    ACTIONS,
    MAX_DETAILS_BYTES,
    MAX_TEXT_CHARS,
    ZERO_HASH,
    Action,
    AuditEntry,
    AuditError,
    AuditItem,
    Head,
    canonical_details,
    check_action,
    check_text,
    encode_entry,
    entry_time,
    is_hash,
)
from agent.audit_key import load_key, read_checkpoint, write_checkpoint
from agent.audit_verify import AuditProblem, AuditReport, ChainWalk, Finding

__all__ = [
    "ACTIONS",
    "APPLICATION_ID",
    "MAX_DETAILS_BYTES",
    "MAX_TEXT_CHARS",
    "SCHEMA_VERSION",
    "ZERO_HASH",
    "Action",
    "AuditEntry",
    "AuditError",
    "AuditItem",
    "AuditLog",
    "AuditProblem",
    "AuditReport",
    "Finding",
    "Head",
    "canonical_details",
    "encode_entry",
    "load_key",
    "read_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger("linerec.agent.audit")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4C524155  # "LRAU" in the SQLite header marks a linerec audit log
_SCHEMA = """
    CREATE TABLE entries (
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        details TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL
    );
    CREATE UNIQUE INDEX entries_by_seq ON entries (seq);
    CREATE INDEX entries_by_actor ON entries (actor, seq);
    CREATE INDEX entries_by_target ON entries (target, seq);
"""
_COLUMNS = "seq, at, actor, action, target, details, prev, hash, mac"


def _text_or_bytes(raw: bytes) -> str | bytes:
    # A byte edited by hand may leave TEXT that is not UTF-8; verify reports it instead of failing.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class AuditLog:
    """An append-only, hash-chained, keyed audit log; safe to share between threads and processes.

    ``key_path`` None opens an existing log to read and verify only (the macs are then
    not checked, and the checkpoint only if ``head_path`` is given). ``head_path``
    defaults to the key's path with ``.head`` appended.
    """

    def __init__(
        self,
        path: Path,
        key_path: Path | None,
        *,
        head_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.key_path = Path(key_path) if key_path is not None else None
        if head_path is not None:
            self.head_path: Path | None = Path(head_path)
        else:
            self.head_path = self.key_path.with_name(self.key_path.name + ".head") if self.key_path else None
        self._clock = clock
        self._lock = threading.RLock()
        if self.key_path is None and not self.path.is_file():
            msg = f"there is no audit log at {self.path}"
            raise AuditError(msg)
        if self.key_path is not None:
            self._create_private(self.path)
            with contextlib.suppress(OSError):  # a failure shows, with its reason, at the first append
                (self.head_path or self.key_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = self._connect(create=self.key_path is not None)
        try:
            self._open_schema()
            empty = self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None
            self._key = load_key(self.key_path, create=empty) if self.key_path is not None else None
        except sqlite3.Error as exc:
            self._db.close()
            msg = f"{self.path} is not a linerec audit log ({exc})"
            raise AuditError(msg) from None
        except AuditError:
            self._db.close()
            raise

    @staticmethod
    def _create_private(path: Path) -> None:
        """Make a new log file readable by its owner only; SQLite gives its WAL files the same mode."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            msg = f"cannot create the audit log {path}: {exc.strerror}"
            raise AuditError(msg) from None

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        uri = f"{self.path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            msg = f"cannot open the audit log {self.path}: {exc}"
            raise AuditError(msg) from None
        db.text_factory = _text_or_bytes
        db.execute("PRAGMA busy_timeout = 10000")
        return db

    def _open_schema(self) -> None:
        app_id, version = self._identity()
        if app_id == 0 and self.key_path is not None:
            if self._is_blank():
                self._db.execute("PRAGMA journal_mode = WAL")
            # Decided under the write lock: of several processes opening a new file, one creates it.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._identity() == (0, 0) and self._is_blank():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            app_id, version = self._identity()
        if app_id != APPLICATION_ID:
            msg = f"{self.path} is not a linerec audit log (it is some other SQLite database)"
            raise AuditError(msg)
        if version > SCHEMA_VERSION:
            msg = (
                f"audit log {self.path} has schema version {version}; this agent knows versions up to {SCHEMA_VERSION}"
            )
            raise AuditError(msg)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")

    def _identity(self) -> tuple[int, int]:
        app_id = int(self._db.execute("PRAGMA application_id").fetchone()[0])
        return app_id, int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _is_blank(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None

    def close(self) -> None:
        """Close the log; the object cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- appending -----------------------------------------------------------------

    def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        details: dict[str, Any] | None = None,
        *,
        at: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry; it is durable, chained and in the checkpoint when this returns."""
        return self.record_many([AuditItem(actor, action, target, details, at)])[0]

    def record_many(self, items: Iterable[AuditItem]) -> list[AuditEntry]:
        """Append several entries in one transaction (all or none), e.g. every recording one purge deleted."""
        rows = [self._prepare(item) for item in items]
        return self._append(rows, check=True)

    def reset_checkpoint(self, actor: str) -> AuditEntry:
        """Accept the log as it stands after a mismatch was looked into; the new entry says what the checkpoint was."""
        key, head_path = self._writable()
        old, problem = read_checkpoint(head_path, key)
        details = {"checkpoint": list(old) if old else None, "problem": problem}
        row = self._prepare(AuditItem(actor, Action.RESET_CHECKPOINT, str(head_path), details))
        entry = self._append([row], check=False)[0]
        log.warning("audit checkpoint %s reset by %s at entry %d (was %s)", head_path, actor, entry.seq, old)
        return entry

    def _prepare(self, item: AuditItem) -> tuple[str, str, str, str | None, str, dict[str, Any]]:
        actor = check_text("actor", item.actor)
        action = check_action(item.action)
        target = None if item.target is None else check_text("target", item.target)
        details = canonical_details(item.details, action)
        at = entry_time(item.at if item.at is not None else datetime.fromtimestamp(self._clock(), UTC))
        return at, actor, action, target, details, json.loads(details)

    def _append(
        self, rows: list[tuple[str, str, str, str | None, str, dict[str, Any]]], *, check: bool
    ) -> list[AuditEntry]:
        key, head_path = self._writable()
        out: list[AuditEntry] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq, prev = self._db_head()
                    if check:
                        self._check_checkpoint(Head(seq, prev), key, head_path)
                    for at, actor, action, target, details, obj in rows:
                        seq += 1
                        encoded = encode_entry((seq, at, actor, action, target, details, prev))
                        digest = hashlib.sha256(encoded).hexdigest()
                        mac = hmac.new(key, encoded, hashlib.sha256).hexdigest()
                        self._db.execute(
                            f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                            (seq, at, actor, action, target, details, prev, digest, mac),
                        )
                        out.append(AuditEntry(seq, at, actor, action, target, obj, prev, digest, mac))
                        prev = digest
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                msg = f"audit log {self.path} cannot be written: {exc}"
                raise AuditError(msg) from None
            self._advance_checkpoint(key, head_path)
        return out

    def _writable(self) -> tuple[bytes, Path]:
        if self._key is None or self.head_path is None:
            msg = f"audit log {self.path} was opened without its key; it can be read and verified, not appended to"
            raise AuditError(msg)
        return self._key, self.head_path

    def _db_head(self) -> Head:
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return Head(0, ZERO_HASH)
        if not isinstance(row[0], int) or not isinstance(row[1], str):
            msg = f"audit log {self.path} has a damaged last entry; run verify"
            raise AuditError(msg)
        return Head(row[0], row[1])

    def _check_checkpoint(self, head: Head, key: bytes, head_path: Path) -> None:
        if head.seq == 0 and not head_path.exists():
            return  # a new log
        checkpoint, problem = read_checkpoint(head_path, key)
        if problem is None and checkpoint is not None:
            if checkpoint.seq > head.seq:
                problem = f"the log ends at entry {head.seq} but its checkpoint names entry {checkpoint.seq}"
            elif checkpoint.seq > 0:
                row = self._db.execute("SELECT hash FROM entries WHERE seq = ?", (checkpoint.seq,)).fetchone()
                if row is None or row[0] != checkpoint.hash:
                    problem = f"entry {checkpoint.seq} is not the one its checkpoint names"
        if problem is not None:
            msg = (
                f"audit log {self.path} does not match its checkpoint: {problem}; nothing is recorded"
                " until it has been verified and the checkpoint reset"
            )
            raise AuditError(msg)

    def _advance_checkpoint(self, key: bytes, head_path: Path) -> None:
        """Write the committed head under the write lock, so a slower process never writes an older one."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                write_checkpoint(head_path, key, self._db_head())
            finally:
                self._db.execute("ROLLBACK")
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            msg = f"audit entry recorded, but its checkpoint {head_path} cannot be written: {reason}"
            raise AuditError(msg) from None

    # --- reading -------------------------------------------------------------------

    def head(self) -> Head:
        """The seq and hash of the last entry, to print or export so that ``verify`` can check against it later."""
        with self._lock:
            try:
                return self._db_head()
            except sqlite3.Error as exc:
                msg = f"audit log {self.path} cannot be read: {exc}"
                raise AuditError(msg) from None

    def entries(
        self,
        *,
        since: int | None = None,
        before: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[AuditEntry]:
        """Entries after seq ``since`` and before seq ``before``, optionally of one actor, action or target,
        oldest (or newest) first."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if action is not None:
            check_action(action)
        for name, bound, test in (("since", since, "seq > ?"), ("before", before, "seq < ?")):
            if bound is None:
                continue
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                msg = f"audit {name} must be a seq (a whole number from 0), not {bound!r}"
                raise AuditError(msg)
            clauses.append(test)
            params.append(bound)
        sql = f"SELECT {_COLUMNS} FROM entries"  # noqa: S608  (fixed columns; values are bound)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            if not isinstance(limit, int) or limit < 0:
                msg = f"audit limit must be a whole number from 0, not {limit!r}"
                raise AuditError(msg)
            sql += " LIMIT ?"
            params.append(limit)
        return self._stream(sql, tuple(params))

    def _stream(self, sql: str, params: tuple[Any, ...]) -> Iterator[AuditEntry]:
        db = self._connect(create=False)  # its own connection: a slow reader holds no lock of ours
        try:
            for row in db.execute(sql, params):
                yield self._entry(row)
        except sqlite3.Error as exc:
            msg = f"audit log {self.path} cannot be read: {exc}"
            raise AuditError(msg) from None
        finally:
            db.close()

    def _entry(self, row: tuple[Any, ...]) -> AuditEntry:
        seq, at, actor, action, target, details, prev, digest, mac = row
        try:
            obj = json.loads(details) if isinstance(details, str) else None
        except (ValueError, RecursionError):
            obj = None
        texts = (at, actor, action, prev, digest, mac, "" if target is None else target)
        if not isinstance(obj, dict) or not isinstance(seq, int) or not all(isinstance(t, str) for t in texts):
            msg = f"audit log {self.path} has a damaged entry (seq {seq!r}); run verify"
            raise AuditError(msg)
        return AuditEntry(seq, at, actor, action, target, obj, prev, digest, mac)

    def verify(self, *, expected_head: tuple[int, str] | None = None, max_problems: int = 1000) -> AuditReport:
        """Check every entry's hash, link and (with the key) mac, and the end against the checkpoint(s).

        Streams the rows: memory stays flat however long the log is. ``expected_head``
        is a head exported earlier with ``head()``.
        """
        refs: list[tuple[str, Head]] = []
        if expected_head is not None:
            seq, digest = (
                expected_head if isinstance(expected_head, tuple | list) and len(expected_head) == 2 else (-1, "")
            )
            if not isinstance(seq, int) or seq < 0 or not is_hash(digest):
                msg = f"expected audit head {expected_head!r} is not (seq, 64 lowercase hex digits)"
                raise AuditError(msg)
            refs.append(("the exported head", Head(seq, digest)))
        checkpoint, checkpoint_problem = None, None
        if self.head_path is not None:
            checkpoint, checkpoint_problem = read_checkpoint(self.head_path, self._key)
            if checkpoint is not None and checkpoint_problem is None:
                refs.insert(0, ("the checkpoint", checkpoint))
        # The checkpoint is read before the snapshot is taken, so it is never ahead of what is read.
        db = self._connect(create=False)
        try:
            db.execute("BEGIN")
            walk = ChainWalk(db, self._key, refs, max_problems)
            for row in db.execute(f"SELECT rowid, {_COLUMNS} FROM entries ORDER BY rowid"):  # noqa: S608
                walk.row(row)
            walk.finish()
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            msg = f"audit log {self.path} cannot be read: {exc}"
            raise AuditError(msg) from None
        finally:
            db.close()
        fresh = walk.rows == 0 and checkpoint is None and self.head_path is not None and not self.head_path.exists()
        if checkpoint_problem is not None and not fresh:
            walk.add(None, Finding.CHECKPOINT, checkpoint_problem)
        trusted = checkpoint if checkpoint_problem is None else None
        return AuditReport(
            ok=walk.count == 0,
            entries=walk.rows,
            head=walk.head,
            checkpoint=trusted,
            macs_checked=self._key is not None,
            beyond_checkpoint=max(0, walk.head.seq - trusted.seq) if trusted is not None else 0,
            problems=tuple(walk.problems),
            problem_count=walk.count,
        )
