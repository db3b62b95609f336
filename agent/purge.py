"""Purge: delete the recordings retention says are due, so that the archive folder no longer holds them.

What a purge does, for each call the policy (``agent/retention.py``) finds due
and no legal hold in force covers:

1. It takes the index's write lock and checks again that the call is still
   there and still not held (a hold placed a moment ago wins).
2. Every file of the call (the recording, the untrimmed original, a segment
   log, the manifest) is overwritten in place with random bytes of the same
   length and fsynced, then unlinked, and its folder fsynced.
3. The call's rows go (``calls``, its consent evidence, tags and notes), with
   ``PRAGMA secure_delete`` on, so SQLite overwrites the deleted cells in their
   pages; a tombstone row records the id, the device, when, under which policy
   and by whom, and nothing about the caller. Then the transaction commits.
4. The audit log gets one ``purge`` entry for the call.

After the last call, the index is rebuilt with ``VACUUM`` and its write-ahead
log emptied with ``wal_checkpoint(TRUNCATE)``: deleting a row can leave a copy
of an index key in an interior b-tree page (secure_delete does not reach it),
and the WAL holds old page images until a checkpoint; the rebuilt file holds
only what is still in the archive. Rebuilding takes about 6 s per 750 MB of
index (a million calls), during which ingest waits, and needs that much free
space for SQLite's temporary copy. Deliveries about the call in the
notification outbox (they hold the caller's number and name) are deleted the
same way. A purge cut short (a crash, a full disk) is finished by running it
again: files already gone are skipped.

What this does not reach, and what to do about it:

* Copies outside the archive folder: backups, snapshots (LVM, ZFS, btrfs),
  replicas, a copy someone exported. Retention must be applied to those too.
* Blocks the filesystem or the device moved the data out of: copy-on-write
  filesystems (btrfs, ZFS) and journalling data modes write the random bytes
  elsewhere and leave the old blocks until they are reused; SSDs and SD cards
  remap writes (wear levelling) and keep old pages until they are erased. On
  such storage the overwrite cannot be relied on. The remedy is encryption
  below the archive: full-disk encryption (LUKS) whose key is destroyed with
  the disk, or per-recording keys that the agent destroys at purge, which makes
  any leftover ciphertext unreadable wherever it lies. Every recording is
  already age-encrypted to the archive identity, so leftover blocks are
  readable only with that identity; retiring an identity once no kept
  recording needs it (``linerec-agent keys``) puts them out of reach too.
* The audit log keeps that a recording existed, who heard it and that it was
  purged (ids and actors, and the filters of searches), by design.
* A device still holding a recording (its ack was lost and it was offline ever
  since) may send it again after a purge. The ingest finds its tombstone,
  answers ``stored`` so the device deletes its copy, and keeps none of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.annotate import facts_of, holds, holds_covering, policy_holds
from agent.errors import AgentError, ArchiveError
from agent.retention import Decision, Holds, RetentionSettings, due, oldest_possible_due, stamp
from agent.schema import CALL_COLUMNS, utc_text
from agent.storage import shred
from firmware.wire.errors import LinerecError

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow

log = logging.getLogger("linerec.agent.purge")

BATCH = 1000
_TAG_SEPARATOR = "\x1f"
_CHECKPOINT_TRIES = 20
_CANDIDATES = (
    f"SELECT {CALL_COLUMNS}, started_utc AS _started,"  # noqa: S608  (fixed columns; values are bound)
    " (SELECT group_concat(tag, char(31)) FROM call_tags WHERE call_id = calls.id) AS _tags"
    " FROM calls WHERE started_utc <= ? AND (started_utc > ? OR (started_utc = ? AND id > ?))"
    " ORDER BY started_utc, id LIMIT ?"
)


class PurgeError(AgentError, OSError):
    """A recording could not be deleted completely; running purge again finishes it."""


@dataclass(frozen=True, slots=True)
class Purged:
    """One recording a purge deleted."""

    id: str
    device: str
    policy: str
    due_at: str
    purged_at: str
    files: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready report line."""
        return asdict(self)


def plan(archive: Archive, settings: RetentionSettings, now: datetime) -> Iterator[tuple[CallRow, Decision]]:
    """Each call that is due for deletion at ``now`` and held by nothing, oldest first, read in batches."""
    cutoff = oldest_possible_due(settings, now)
    if cutoff is None:
        return
    in_force = policy_holds(holds(archive))
    # A call ends after it starts, so every call that ended by the cut-off started by it.
    after: tuple[str, str] = ("", "")
    while True:
        rows = archive.read(_CANDIDATES, (utc_text(cutoff), after[0], after[0], after[1], BATCH))
        if not rows:
            return
        yield from _judge(archive, rows, now, settings, in_force)
        after = (rows[-1]["_started"], rows[-1]["id"])


def _judge(
    archive: Archive, rows: list[sqlite3.Row], now: datetime, settings: RetentionSettings, in_force: Holds
) -> Iterator[tuple[CallRow, Decision]]:
    calls: dict[str, CallRow] = {}
    facts = []
    for raw in rows:
        values = dict(raw)
        tags = values.pop("_tags")
        del values["_started"]
        row = archive.row(values)
        calls[row.id] = row
        facts.append(facts_of(row, tags.split(_TAG_SEPARATOR) if tags else ()))
    for decision in due(facts, now, settings, in_force):
        yield calls[decision.id], decision


def _files(row: CallRow) -> list[Path]:
    found = [Path(row.path), Path(row.manifest_path)]
    if row.original_path is not None:
        found.insert(1, Path(row.original_path))
    return found


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def purge_one(archive: Archive, row: CallRow, decision: Decision, *, actor: str) -> Purged | None:
    """Delete one due recording as the module says; None when it is gone already or a hold now covers it."""
    with archive.transaction() as db:
        if not archive.has(row.id):
            return None
        current = archive.get(row.id)
        tags = [r[0] for r in db.execute("SELECT tag FROM call_tags WHERE call_id = ?", (row.id,))]
        held = holds_covering(holds(archive), facts_of(current, tags))
        if held:
            log.info("recording %s not purged: hold %d was placed since the plan", row.id, held[0].id)
            return None
        files = size = 0
        for path in _files(current):
            try:
                wiped = shred(path)
            except OSError as exc:
                msg = f"cannot overwrite {path} of recording {row.id}: {exc.strerror or exc}; run purge again"
                raise PurgeError(msg) from None
            if wiped is not None:
                files += 1
                size += wiped
        purged_at = stamp(datetime.fromtimestamp(archive.now(), UTC))
        db.execute("DELETE FROM calls WHERE id = ?", (row.id,))
        if _has_table(db, "payload_digests"):
            db.execute("DELETE FROM payload_digests WHERE rec_id = ?", (row.id,))
        db.execute(
            "INSERT OR REPLACE INTO tombstones (call_id, device, purged_at, policy, actor) VALUES (?, ?, ?, ?, ?)",
            (row.id, current.device, purged_at, decision.policy, actor),
        )
    log.info("purged recording %s of device %s under %s", row.id, current.device, decision.policy)
    return Purged(row.id, current.device, decision.policy, stamp(decision.due_at), purged_at, files, size)


def _empty_wal(db: sqlite3.Connection, path: Path) -> None:
    """Checkpoint the whole WAL into the database file and truncate it, waiting out readers for a while."""
    for _ in range(_CHECKPOINT_TRIES):
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy:
            return
        time.sleep(0.25)
    msg = (
        f"{path}: another process kept reading, so its write-ahead log still holds old pages;"
        " run purge again when the index is less busy"
    )
    raise ArchiveError(msg)


def compact(archive: Archive) -> None:
    """Rebuild the index and empty its write-ahead log, so no freed page or old frame keeps a deleted row."""
    with archive.connection() as db:
        try:
            db.execute("VACUUM")
            _empty_wal(db, archive.db_path)
        except sqlite3.Error as exc:
            msg = f"archive index {archive.db_path} cannot be compacted after the purge: {exc}"
            raise ArchiveError(msg) from None


def scrub_outbox(path: Path, ids: list[str]) -> int:
    """Delete the notification outbox's deliveries about ``ids`` the same way; how many went."""
    if not ids or not path.is_file():
        return 0
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        msg = f"cannot open the notification outbox {path} to remove purged calls from it: {exc}"
        raise ArchiveError(msg) from None
    try:
        db.execute("PRAGMA secure_delete = ON")
        columns = {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
        if "recording" not in columns:
            return 0  # not an outbox: nothing of ours to remove
        cursor = db.execute(
            "DELETE FROM deliveries WHERE recording IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        )
        removed = cursor.rowcount
        db.execute("VACUUM")
        _empty_wal(db, path)
    except sqlite3.Error as exc:
        msg = f"the notification outbox {path} cannot be cleaned of purged calls: {exc}"
        raise ArchiveError(msg) from None
    finally:
        db.close()
    return removed


@dataclass
class Purge:
    """One purge run: the policy, who runs it, and the outbox to clean after it."""

    archive: Archive
    settings: RetentionSettings
    actor: str
    outbox: Path | None = None
    on_purged: Callable[[Purged], object] | None = None  # e.g. the audit entry; runs after each commit

    def due(self, now: datetime) -> Iterator[tuple[CallRow, Decision]]:
        """What would go at ``now``, oldest first (a dry run lists these)."""
        return plan(self.archive, self.settings, now)

    def run(self, now: datetime, progress: Callable[[Purged | None], object] | None = None) -> list[Purged]:
        """Delete every recording due at ``now``, then compact the index and clean the outbox; what went.

        ``progress`` hears of each due recording as it is dealt with (None: a hold now
        covers it, or it was gone already).
        """
        done: list[Purged] = []
        try:
            for row, decision in self.due(now):
                purged = purge_one(self.archive, row, decision, actor=self.actor)
                if purged is not None:
                    done.append(purged)
                    if self.on_purged is not None:
                        self.on_purged(purged)
                if progress is not None:
                    progress(purged)
        except BaseException:
            if done:  # best effort: the error that stopped the run is the one to report
                with contextlib.suppress(LinerecError):
                    self.finish(done)
            raise
        self.finish(done)
        return done

    def finish(self, done: list[Purged]) -> None:
        """Compact the index and clean the outbox after ``done`` were deleted."""
        if not done:
            return
        compact(self.archive)
        if self.outbox is not None:
            scrub_outbox(self.outbox, [p.id for p in done])
