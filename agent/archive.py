"""The archive: encrypted recordings on disk and an SQLite index of who called when.

Layout under the archive root::

    index.sqlite                       the index (WAL mode)
    .incoming/                         transfers in progress (same filesystem)
    <device>/<YYYY>/<MM>/<DD>/<id>.flac.age       (or .opus.age, .wav.age; .flac.segments
                                                  for a call recovered after a crash)
    <device>/<YYYY>/<MM>/<DD>/<id>.manifest.age

A recording is in the archive once its index row is committed; the files are
renamed into place and fsynced (with their directories) before that, so a row
never points at a file a power cut could take away.

Queries live in ``agent/index.py``, tags, notes and legal holds in
``agent/annotate.py``, deletion in ``agent/purge.py`` and re-checking in
``agent/integrity.py``; they reach the index through ``read``, ``stream`` and
``transaction`` here. Every connection runs with ``secure_delete`` on, so a
deleted row's bytes are overwritten in its page rather than left in free space.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import ArchiveError, EnrolmentError, NotFound
from agent.schema import CALL_COLUMNS, INSERT_CALL, MIGRATIONS, SCHEMA_VERSION, digits, install_functions, utc_text
from agent.storage import fsync_path, place_files, place_original, unplace, unplace_original
from firmware.wire.errors import WireError
from firmware.wire.manifest import Manifest
from firmware.wire.signing import parse_public_key, public_key_text
from firmware.wire.topics import check_device_id, check_recording_id

log = logging.getLogger("linerec.agent.archive")

AUDIO_CODECS = ("flac", "opus", "wav")


def audio_suffix(manifest: Manifest) -> str:
    """The archive file's ending, which says how to open it: ``.flac.age``, ``.opus.age``, ``.flac.segments``."""
    codec = manifest.audio.get("codec")
    codec = codec if codec in AUDIO_CODECS else "flac"
    if manifest.audio.get("container") == "segments":
        return f".{codec}.segments"
    return f".{codec}.age"


MANIFEST_SUFFIX = ".manifest.age"

# The schema and its migrations live in agent/schema.py; these names are kept for readers of the index.
_MIGRATIONS = MIGRATIONS
__all__ = ["AUDIO_CODECS", "MANIFEST_SUFFIX", "SCHEMA_VERSION", "Archive", "CallRow", "audio_suffix", "fsync_path"]
_SELECT_CALLS = f"SELECT {CALL_COLUMNS} FROM calls"  # noqa: S608  (fixed column list)


@dataclass(frozen=True, slots=True)
class CallRow:
    """One archived recording as the index knows it."""

    id: str
    device: str
    line: str
    started_at: str
    answered_at: str | None
    ended_at: str
    duration_s: float
    caller_number: str | None
    caller_name: str | None
    caller_absent: str | None  # why the number (or name) was withheld, as the line reported it
    answered: bool
    hangup_cause: str
    ring_count: int
    path: str  # absolute path of the encrypted audio
    manifest_path: str  # absolute path of the encrypted signed manifest
    size: int
    sha256: str
    stored_at: str
    original_path: str | None = None  # absolute path of the untrimmed original, when the device kept one
    # The consent evidence in brief (None: the device sent none); the whole of it is in ``show``.
    consent_rule: str | None = None  # e.g. "one-party", "all-party", "express"
    consent_jurisdiction: str | None = None  # the region whose rule won, e.g. "US-CA"
    consent_recorded: bool | None = None  # False: consent was refused or the number is never recorded
    consent_notice: bool | None = None  # a notice (announcement or question) was played
    consent_express: str | None = None  # the caller's answer to an express question: yes, no or timeout

    @property
    def has_audio(self) -> bool:
        """Whether the recording holds any audio (a missed or refused call holds none)."""
        return self.duration_s > 0

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready object (one line of ``linerec-agent list``)."""
        return asdict(self)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _caller_fields(caller_id: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    if not isinstance(caller_id, dict):
        return None, None, None
    absent = _text(caller_id.get("number_absent")) or _text(caller_id.get("name_absent"))
    return _text(caller_id.get("number")), _text(caller_id.get("name")), absent


def _flag(value: object) -> int | None:
    return int(value) if isinstance(value, bool) else None


def _consent_fields(consent: dict[str, Any] | None) -> tuple[Any, ...]:
    """The consent columns of a call, and its evidence as JSON text (all None without evidence)."""
    if not isinstance(consent, dict):
        return None, None, None, None, None, None
    notices = consent.get("notices")
    express = consent.get("express")
    return (
        _text(consent.get("rule")),
        _text(consent.get("jurisdiction")),
        _flag(consent.get("recorded")),
        int(bool(notices)) if isinstance(notices, list) else None,
        _text(express.get("answer")) if isinstance(express, dict) else None,
        json.dumps(consent, sort_keys=True, separators=(",", ":")),
    )


class Archive:
    """Recordings on disk plus their index; safe to share between threads."""

    def __init__(
        self,
        root: Path,
        db_path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root).absolute()
        self.incoming_dir = self.root / ".incoming"
        self.db_path = Path(db_path) if db_path is not None else self.root / "index.sqlite"
        self._clock = clock
        self._lock = threading.RLock()
        self._reader: sqlite3.Connection | None = None  # for ``stream``; lent to one stream at a time
        try:
            self.incoming_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the archive directory {self.incoming_dir}: {exc.strerror}"
            raise ArchiveError(msg) from None
        try:
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA secure_delete = ON")
            install_functions(self._db)
            self._migrate()
        except sqlite3.Error as exc:
            msg = f"cannot open the archive index {self.db_path}: {exc}"
            raise ArchiveError(msg) from None

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self._db.close()
            msg = (
                f"archive index {self.db_path} has schema version {version};"
                f" this agent knows versions up to {SCHEMA_VERSION}"
            )
            raise ArchiveError(msg)
        for number in range(version, SCHEMA_VERSION):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the index; the archive object cannot be used afterwards."""
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._db.close()

    def now(self) -> float:
        """The archive's clock (seconds since the epoch), for times written into the index."""
        return self._clock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
                cursor.row_factory = sqlite3.Row
                return cursor.fetchall()
            except sqlite3.Error as exc:
                msg = f"archive index {self.db_path} cannot be read: {exc}"
                raise ArchiveError(msg) from None

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self.transaction() as db:
            db.execute(sql, params)

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Every row a query gives; for small answers (use ``stream`` for long ones)."""
        return self._query(sql, params)

    def stream(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[sqlite3.Row]:
        """The rows of a query, one at a time, from a connection of their own (memory stays flat)."""
        with self._lock:
            db, self._reader = self._reader, None
        cursor = None
        try:
            if db is None:
                db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA busy_timeout = 10000")
                install_functions(db)
            cursor = db.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            yield from cursor
        except sqlite3.Error as exc:
            msg = f"archive index {self.db_path} cannot be read: {exc}"
            raise ArchiveError(msg) from None
        finally:
            if cursor is not None:
                cursor.close()  # ends the statement, and with it the read snapshot it held
            if db is not None:
                with self._lock:
                    if self._reader is None and not db.in_transaction:
                        self._reader = db
                    else:
                        db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The index's connection inside ``BEGIN IMMEDIATE`` (the write lock), committed if the block ends well."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                msg = f"archive index {self.db_path} cannot be written: {exc}"
                raise ArchiveError(msg) from None

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The index's connection, held for the block; for helpers that manage their own transaction."""
        with self._lock:
            yield self._db

    # --- devices -----------------------------------------------------------------

    def enrol(self, device_id: str, public_key: str, *, replace: bool = False) -> None:
        """Pin ``public_key`` (``ed25519:<base64>``) as the signing key of ``device_id``."""
        try:
            check_device_id(device_id)
            key_text = public_key_text(parse_public_key(public_key))
        except WireError as exc:
            raise EnrolmentError(str(exc)) from None
        with self._lock:
            rows = self._query("SELECT public_key FROM devices WHERE id = ?", (device_id,))
            if rows and rows[0]["public_key"] == key_text:
                return
            if rows and not replace:
                msg = (
                    f"device {device_id!r} is already enrolled with the key {rows[0]['public_key']};"
                    " enrol it with replace to pin a different key"
                )
                raise EnrolmentError(msg)
            if rows:
                self._write("UPDATE devices SET public_key = ? WHERE id = ?", (key_text, device_id))
                log.warning("device %s: signing key replaced by %s", device_id, key_text)
            else:
                self._write(
                    "INSERT INTO devices (id, public_key, enrolled_at) VALUES (?, ?, ?)",
                    (device_id, key_text, _iso(self._clock())),
                )
                log.info("device %s enrolled with key %s", device_id, key_text)

    def device_key(self, device_id: str) -> Ed25519PublicKey | None:
        """The pinned signing key of ``device_id``, or None if it is not enrolled."""
        rows = self._query("SELECT public_key FROM devices WHERE id = ?", (device_id,))
        return parse_public_key(rows[0]["public_key"]) if rows else None

    def devices(self) -> list[dict[str, Any]]:
        """Every enrolled device: id, public_key, enrolled_at, last_seen and last status."""
        rows = self._query("SELECT id, public_key, enrolled_at, last_seen, status FROM devices ORDER BY id")
        return [{**dict(row), "status": json.loads(row["status"]) if row["status"] else None} for row in rows]

    def note_status(self, device_id: str, status: dict[str, Any]) -> None:
        """Remember the latest status a device published (devices not enrolled are ignored)."""
        self._write(
            "UPDATE devices SET last_seen = ?, status = ? WHERE id = ?",
            (_iso(self._clock()), json.dumps(status, sort_keys=True), device_id),
        )

    # --- recordings --------------------------------------------------------------

    def has(self, rec_id: str) -> bool:
        """Whether recording ``rec_id`` is archived."""
        return bool(self._query("SELECT 1 FROM calls WHERE id = ?", (rec_id,)))

    def purged_from(self, rec_id: str) -> str | None:
        """The device recording ``rec_id`` came from if a purge deleted it (its tombstone says), else None."""
        rows = self._query("SELECT device FROM tombstones WHERE call_id = ?", (rec_id,))
        return str(rows[0][0]) if rows else None

    def settled(self, rec_id: str) -> bool:
        """Whether recording ``rec_id`` needs no more bytes: archived, or archived and purged since."""
        sql = "SELECT 1 FROM calls WHERE id = ? UNION ALL SELECT 1 FROM tombstones WHERE call_id = ? LIMIT 1"
        return bool(self._query(sql, (rec_id, rec_id)))

    def get(self, rec_id: str) -> CallRow:
        """The index row of recording ``rec_id``."""
        rows = self._query(_SELECT_CALLS + " WHERE id = ?", (rec_id,))
        if not rows:
            msg = f"recording {rec_id!r} is not in the archive at {self.root}"
            raise NotFound(msg)
        return self.row(rows[0])

    def calls(self, *, device: str | None = None, limit: int | None = None) -> Iterator[CallRow]:
        """Archived recordings, newest first, optionally of one device and at most ``limit``."""
        sql = _SELECT_CALLS
        params: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            params = (device,)
        sql += " ORDER BY started_utc DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, max(limit, 0))
        for row in self._query(sql, params):
            yield self.row(row)

    def row(self, row: sqlite3.Row | Mapping[str, Any]) -> CallRow:
        """A ``calls`` row (selected with ``agent.schema.CALL_COLUMNS``) as a CallRow with absolute paths."""
        values = dict(row)
        values["answered"] = bool(values["answered"])
        for name in ("consent_recorded", "consent_notice"):
            if values[name] is not None:
                values[name] = bool(values[name])
        values["path"] = str(self.root / values["path"])
        values["manifest_path"] = str(self.root / values["manifest_path"])
        if values["original_path"] is not None:
            values["original_path"] = str(self.root / values["original_path"])
        return CallRow(**values)

    def _day_dir(self, manifest: Manifest) -> tuple[Path, datetime]:
        started = _utc(manifest.started_at)
        if started is None:
            # The id starts with the start time too; a garbled started_at must not lose the call.
            try:
                started = datetime.strptime(manifest.recording_id[:8], "%Y%m%d").replace(tzinfo=UTC)
            except ValueError:
                started = datetime.fromtimestamp(self._clock(), UTC)
        return Path(manifest.device_id, f"{started:%Y}", f"{started:%m}", f"{started:%d}"), started

    def store(
        self, manifest: Manifest, manifest_doc_age: bytes, ciphertext: Path, original: Path | None = None
    ) -> CallRow:
        """Move a verified recording's ciphertext into the archive, write its manifest, index it.

        ``ciphertext`` (and ``original``, the untrimmed copy when the device kept one) must be
        on the archive's filesystem (``incoming_dir`` is). Storing a recording that is
        already archived returns its row and touches nothing.
        """
        check_recording_id(manifest.recording_id)
        check_device_id(manifest.device_id)
        with self._lock:
            if self.has(manifest.recording_id):
                return self.get(manifest.recording_id)
            relative, started = self._day_dir(manifest)
            audio_rel = relative / (manifest.recording_id + audio_suffix(manifest))
            manifest_rel = relative / (manifest.recording_id + MANIFEST_SUFFIX)
            original_rel = relative / (manifest.recording_id + ".original" + audio_suffix(manifest))
            if original is not None:
                place_original(self.root, relative, original_rel, Path(original))
            try:
                place_files(
                    self.root,
                    relative,
                    audio_rel=audio_rel,
                    manifest_rel=manifest_rel,
                    doc=manifest_doc_age,
                    ciphertext=Path(ciphertext),
                )
            except ArchiveError:
                if original is not None:
                    unplace_original(self.root, original_rel, Path(original))
                raise
            number, name, absent = _caller_fields(manifest.caller_id)
            *consent, evidence = _consent_fields(manifest.consent)
            row = (
                manifest.recording_id,
                manifest.device_id,
                manifest.line,
                manifest.started_at,
                manifest.answered_at,
                manifest.ended_at,
                manifest.duration_s,
                number,
                name,
                absent,
                int(manifest.answered),
                manifest.hangup_cause,
                manifest.ring_count,
                str(audio_rel),
                str(manifest_rel),
                manifest.ciphertext["size"],
                manifest.ciphertext["sha256"],
                _iso(self._clock()),
                str(original_rel) if original is not None else None,
                *consent,
                utc_text(started),
                digits(number),
            )
            try:
                self._index(row, evidence)
            except ArchiveError:
                unplace(self.root, audio_rel, manifest_rel, Path(ciphertext))
                if original is not None:
                    unplace_original(self.root, original_rel, Path(original))
                raise
            log.info("stored recording %s at %s", manifest.recording_id, self.root / audio_rel)
            return self.get(manifest.recording_id)

    def _index(self, row: tuple[Any, ...], evidence: str | None) -> None:
        """Commit a recording's row (and its consent evidence): from then on it is in the archive."""
        with self.transaction() as db:
            db.execute(INSERT_CALL, row)
            if evidence is not None:
                db.execute("INSERT INTO call_consent (call_id, evidence) VALUES (?, ?)", (row[0], evidence))

    # --- rejections --------------------------------------------------------------

    def log_rejection(self, device_id: str, rec_id: str | None, reason: str) -> None:
        """Record that something a device sent was refused, and why."""
        log.warning("rejected %s from device %s: %s", rec_id or "message", device_id, reason)
        self._write(
            "INSERT INTO rejections (at, device, rec_id, reason) VALUES (?, ?, ?, ?)",
            (_iso(self._clock()), device_id, rec_id, reason),
        )

    def rejections(self) -> list[dict[str, Any]]:
        """Every refusal logged, oldest first: at, device, rec_id, reason."""
        rows = self._query("SELECT at, device, rec_id, reason FROM rejections ORDER BY seq")
        return [dict(row) for row in rows]
