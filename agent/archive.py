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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import ArchiveError, EnrolmentError, NotFound
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

# Each entry moves the schema from version N to N+1; append, never edit.
_MIGRATIONS = (
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        last_seen TEXT,
        status TEXT
    );
    CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        device TEXT NOT NULL REFERENCES devices(id),
        line TEXT NOT NULL,
        started_at TEXT NOT NULL,
        started_utc TEXT NOT NULL,
        answered_at TEXT,
        ended_at TEXT NOT NULL,
        duration_s REAL NOT NULL,
        caller_number TEXT,
        caller_name TEXT,
        caller_absent TEXT,
        answered INTEGER NOT NULL,
        hangup_cause TEXT NOT NULL,
        ring_count INTEGER NOT NULL,
        path TEXT NOT NULL,
        manifest_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX calls_by_time ON calls (started_utc, id);
    CREATE INDEX calls_by_device ON calls (device, started_utc, id);
    CREATE TABLE rejections (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        device TEXT NOT NULL,
        rec_id TEXT,
        reason TEXT NOT NULL
    );
    """,
    # 2: the untrimmed original kept beside a trimmed recording (audio.keep_original on the device).
    "ALTER TABLE calls ADD COLUMN original_path TEXT;",
)
SCHEMA_VERSION = len(_MIGRATIONS)

_CALL_COLUMNS = (
    "id, device, line, started_at, answered_at, ended_at, duration_s, caller_number, caller_name,"
    " caller_absent, answered, hangup_cause, ring_count, path, manifest_path, size, sha256, stored_at,"
    " original_path"
)
_SELECT_CALLS = f"SELECT {_CALL_COLUMNS} FROM calls"  # noqa: S608  (fixed column list)
# started_utc is the start time normalised to UTC, so that ordering by it is ordering by time.
_PLACEHOLDERS = ", ".join("?" * (_CALL_COLUMNS.count(",") + 2))
_INSERT_CALL = f"INSERT INTO calls ({_CALL_COLUMNS}, started_utc) VALUES ({_PLACEHOLDERS})"  # noqa: S608


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


def fsync_path(path: Path) -> None:
    """Flush a file's or directory's contents and entry table to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _caller_fields(caller_id: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    if not isinstance(caller_id, dict):
        return None, None, None
    absent = _text(caller_id.get("number_absent")) or _text(caller_id.get("name_absent"))
    return _text(caller_id.get("number")), _text(caller_id.get("name")), absent


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
            self._db.close()

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
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(sql, params)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                msg = f"archive index {self.db_path} cannot be written: {exc}"
                raise ArchiveError(msg) from None

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

    def get(self, rec_id: str) -> CallRow:
        """The index row of recording ``rec_id``."""
        rows = self._query(_SELECT_CALLS + " WHERE id = ?", (rec_id,))
        if not rows:
            msg = f"recording {rec_id!r} is not in the archive at {self.root}"
            raise NotFound(msg)
        return self._row(rows[0])

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
            yield self._row(row)

    def _row(self, row: sqlite3.Row) -> CallRow:
        values = dict(row)
        values["answered"] = bool(values["answered"])
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

    def _make_dirs(self, relative: Path) -> None:
        """Create ``root/relative`` a component at a time, fsyncing each new entry."""
        current = self.root
        for part in relative.parts:
            parent, current = current, current / part
            if not current.is_dir():
                current.mkdir(exist_ok=True)
                fsync_path(current)
                fsync_path(parent)

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
                self._place_original(relative, original_rel, Path(original))
            try:
                self._place_files(relative, audio_rel, manifest_rel, manifest_doc_age, Path(ciphertext))
            except ArchiveError:
                if original is not None:
                    self._unplace_original(original_rel, Path(original))
                raise
            number, name, absent = _caller_fields(manifest.caller_id)
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
                started.isoformat(timespec="milliseconds"),
            )
            try:
                self._write(_INSERT_CALL, row)
            except ArchiveError:
                self._unplace(audio_rel, manifest_rel, Path(ciphertext))
                if original is not None:
                    self._unplace_original(original_rel, Path(original))
                raise
            log.info("stored recording %s at %s", manifest.recording_id, self.root / audio_rel)
            return self.get(manifest.recording_id)

    def _place_files(self, relative: Path, audio_rel: Path, manifest_rel: Path, doc: bytes, ciphertext: Path) -> None:
        """Rename the ciphertext into place and write the manifest; all fsynced, or nothing left."""
        target = self.root / relative
        step_path = target
        try:
            self._make_dirs(relative)
            step_path = self.root / manifest_rel
            tmp = step_path.with_name(step_path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(doc)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(step_path)
            step_path = ciphertext
            fsync_path(ciphertext)
            step_path = self.root / audio_rel
            ciphertext.replace(step_path)
            step_path = target
            fsync_path(target)
            fsync_path(ciphertext.parent)
        except OSError as exc:
            self._unplace(audio_rel, manifest_rel, ciphertext)
            msg = f"cannot store a recording at {exc.filename or step_path}: {exc.strerror or exc}"
            raise ArchiveError(msg) from None

    def _place_original(self, relative: Path, original_rel: Path, original: Path) -> None:
        """Rename the untrimmed original into place, fsynced; before the recording, so a row never lacks it."""
        try:
            self._make_dirs(relative)
            fsync_path(original)
            original.replace(self.root / original_rel)
            fsync_path(self.root / relative)
            fsync_path(original.parent)
        except OSError as exc:
            self._unplace_original(original_rel, original)
            msg = f"cannot store a recording at {exc.filename or original_rel}: {exc.strerror or exc}"
            raise ArchiveError(msg) from None

    def _unplace_original(self, original_rel: Path, original: Path) -> None:
        placed = self.root / original_rel
        if placed.exists() and not original.exists():
            try:
                placed.replace(original)
            except OSError:
                log.exception("cannot move %s back to %s", placed, original)

    def _unplace(self, audio_rel: Path, manifest_rel: Path, ciphertext: Path) -> None:
        """Undo what ``_place_files`` did, as far as the disk lets us, so a retry can succeed."""
        audio = self.root / audio_rel
        manifest = self.root / manifest_rel
        for path in (manifest, manifest.with_name(manifest.name + ".tmp")):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if audio.exists() and not ciphertext.exists():
            try:
                audio.replace(ciphertext)
            except OSError:
                log.exception("cannot move %s back to %s", audio, ciphertext)

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
