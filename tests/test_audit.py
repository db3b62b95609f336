"""The audit log: every access recorded in a chain that shows any edit, removal, swap, insertion or truncation."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.audit import (
    ACTIONS,
    ZERO_HASH,
    Action,
    AuditEntry,
    AuditError,
    AuditItem,
    AuditLog,
    Finding,
    Head,
    write_checkpoint,
)
from agent.errors import AgentError

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    """A settable clock for the log's timestamps."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        self.t += 1.5
        return self.t


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite"


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit.key"


@pytest.fixture
def audit(db_path: Path, key_path: Path) -> Iterator[AuditLog]:
    with AuditLog(db_path, key_path, clock=Clock()) as opened:
        yield opened


def fill(audit: AuditLog, count: int) -> list[AuditEntry]:
    """``count`` plausible entries: listens, exports and a hold by two people."""
    actions = (Action.LISTEN, Action.EXPORT, Action.SHOW, Action.HOLD)
    return [
        audit.record(
            ("alice", "bob")[n % 2], actions[n % 4], f"20240305T2330{n:05d}Z-0a1b2c3d", {"n": n, "why": "review"}
        )
        for n in range(count)
    ]


def intrude(db_path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Edit the log's database directly, as someone with the file but not the program would."""
    db = sqlite3.connect(db_path)
    try:
        for sql, params in statements:
            db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def rows(db_path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT seq, at, actor, action, target, details, prev, hash, mac FROM entries").fetchall()
    finally:
        db.close()


def encode(*fields: object) -> bytes:
    """The documented encoding of (seq, at, actor, action, target, details, prev), written out independently."""
    body = json.dumps(list(fields), ensure_ascii=False, separators=(",", ":"))
    return b"linerec-audit/1\n" + body.encode()


def rechain(db_path: Path, start: int, key: bytes | None = None) -> None:
    """Recompute hashes (and, given the key, macs) from entry ``start`` on, after an edit."""
    db = sqlite3.connect(db_path)
    try:
        prev = db.execute("SELECT hash FROM entries WHERE seq = ?", (start - 1,)).fetchone()
        prev_hash = prev[0] if prev else ZERO_HASH
        for row in db.execute(
            "SELECT seq, at, actor, action, target, details FROM entries WHERE seq >= ? ORDER BY seq", (start,)
        ).fetchall():
            encoded = encode(*row, prev_hash)
            digest = hashlib.sha256(encoded).hexdigest()
            mac = hmac.new(key, encoded, hashlib.sha256).hexdigest() if key else "f" * 64
            db.execute("UPDATE entries SET prev = ?, hash = ?, mac = ? WHERE seq = ?", (prev_hash, digest, mac, row[0]))
            prev_hash = digest
        db.commit()
    finally:
        db.close()


def kinds(audit: AuditLog, **kwargs: Any) -> list[tuple[int | None, str]]:
    report = audit.verify(**kwargs)
    assert report.ok is (report.problem_count == 0)
    return [(p.seq, str(p.kind)) for p in report.problems]


# --- what an entry is -------------------------------------------------------------------


def test_entries_are_numbered_from_one_and_each_links_to_the_one_before(audit: AuditLog) -> None:
    entries = fill(audit, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == ZERO_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.hash
    assert list(audit.entries()) == entries
    assert audit.head() == Head(5, entries[-1].hash)
    report = audit.verify()
    assert report.ok
    assert (report.entries, report.head, report.checkpoint, report.macs_checked) == (
        5,
        audit.head(),
        audit.head(),
        True,
    )


def test_hash_and_mac_follow_the_documented_encoding(audit: AuditLog, key_path: Path) -> None:
    entry = audit.record("alice", "tag", "rec-1", {"tag": "Käufer", "b": [1, 2.5, None]})
    assert rows(audit.path)[0][5] == '{"b":[1,2.5,null],"tag":"Käufer"}'
    encoded = encode(1, entry.at, "alice", "tag", "rec-1", '{"b":[1,2.5,null],"tag":"Käufer"}', ZERO_HASH)
    assert entry.hash == hashlib.sha256(encoded).hexdigest()
    assert entry.mac == hmac.new(key_path.read_bytes(), encoded, hashlib.sha256).hexdigest()


def test_times_are_utc_with_microseconds(audit: AuditLog) -> None:
    given_time = datetime(2024, 3, 5, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert audit.record("alice", "show", at=given_time).at == "2024-03-05T21:30:00.123456Z"
    assert audit.record("alice", "show").at == "2023-11-14T22:13:21.500000Z"  # from the injected clock


def test_to_json_gives_every_field(audit: AuditLog) -> None:
    entry = audit.record("cli:root", "purge", None, {"deleted": 3})
    doc = json.loads(json.dumps(entry.to_json()))
    assert doc == {
        "seq": 1,
        "at": entry.at,
        "actor": "cli:root",
        "action": "purge",
        "target": None,
        "details": {"deleted": 3},
        "prev": ZERO_HASH,
        "hash": entry.hash,
        "mac": entry.mac,
    }


def test_key_is_made_private_once_and_reused(db_path: Path, key_path: Path) -> None:
    with AuditLog(db_path, key_path) as audit:
        first = audit.record("alice", "login")
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert len(key_path.read_bytes()) == 32
    assert db_path.stat().st_mode & 0o777 == 0o600
    key = key_path.read_bytes()
    with AuditLog(db_path, key_path) as audit:
        second = audit.record("alice", "logout")
        assert audit.verify().ok
    assert key_path.read_bytes() == key
    assert second.prev == first.hash


def test_checkpoint_follows_every_append(audit: AuditLog, key_path: Path) -> None:
    head_file = key_path.with_name("audit.key.head")
    for n in range(3):
        entry = audit.record("alice", "listen", f"rec-{n}")
        doc = json.loads(head_file.read_text())
        assert (doc["seq"], doc["hash"]) == (entry.seq, entry.hash)
    assert head_file.stat().st_mode & 0o777 == 0o600


def test_entries_filter_and_order(audit: AuditLog) -> None:
    fill(audit, 10)
    assert [e.seq for e in audit.entries(actor="bob")] == [2, 4, 6, 8, 10]
    assert [e.seq for e in audit.entries(action="export")] == [2, 6, 10]
    assert [e.seq for e in audit.entries(target="20240305T233000003Z-0a1b2c3d")] == [4]
    assert [e.seq for e in audit.entries(since=7)] == [8, 9, 10]
    assert [e.seq for e in audit.entries(newest_first=True, limit=3)] == [10, 9, 8]
    assert [e.seq for e in audit.entries(actor="alice", action="listen", since=1)] == [5, 9]
    assert [e.seq for e in audit.entries(before=4)] == [1, 2, 3]
    assert [e.seq for e in audit.entries(since=3, before=8, newest_first=True, limit=2)] == [7, 6]
    assert list(audit.entries(before=1)) == []
    assert list(audit.entries(actor="carol")) == []


def test_record_many_is_all_or_nothing(audit: AuditLog) -> None:
    fill(audit, 2)
    items = [AuditItem("cli:root", "delete", f"rec-{n}") for n in range(3)]
    with pytest.raises(AuditError):
        audit.record_many([*items, AuditItem("cli:root", "erase", "rec-9")])
    assert audit.head().seq == 2
    assert [e.seq for e in audit.record_many(items)] == [3, 4, 5]
    assert audit.verify().ok


def test_a_reopened_log_continues_its_chain(db_path: Path, key_path: Path) -> None:
    with AuditLog(db_path, key_path) as audit:
        fill(audit, 3)
    with AuditLog(db_path, key_path) as audit:
        entry = audit.record("alice", "verify")
        assert entry.seq == 4
        assert audit.verify().ok


def test_a_log_can_be_read_and_verified_without_its_key(db_path: Path, key_path: Path) -> None:
    with AuditLog(db_path, key_path) as audit:
        fill(audit, 3)
        exported = audit.head()
    with AuditLog(db_path, None, head_path=key_path.with_name("audit.key.head")) as reader:
        report = reader.verify(expected_head=exported)
        assert report.ok
        assert not report.macs_checked
        assert len(list(reader.entries())) == 3
        with pytest.raises(AuditError) as raised:
            reader.record("alice", "show")
    assert str(raised.value) == (
        f"audit log {db_path} was opened without its key; it can be read and verified, not appended to"
    )


# --- several writers at once ------------------------------------------------------------


def test_threads_appending_at_once_never_fork_the_chain(audit: AuditLog) -> None:
    def work(name: str) -> None:
        for n in range(40):
            audit.record(name, "listen", f"rec-{n}")

    threads = [threading.Thread(target=work, args=(f"user{t}",)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [e.seq for e in audit.entries()] == list(range(1, 161))
    report = audit.verify()
    assert report.ok, report.problems
    for t in range(4):
        assert [e.target for e in audit.entries(actor=f"user{t}")] == [f"rec-{n}" for n in range(40)]


APPENDER = """
import sys
from pathlib import Path
from agent.audit import AuditLog
print("ready", flush=True)
sys.stdin.read()  # the start signal: the test closes our stdin once every writer is ready
with AuditLog(Path(sys.argv[1]), Path(sys.argv[2])) as audit:
    for n in range(int(sys.argv[4])):
        audit.record(sys.argv[3], "listen", f"rec-{n}")
"""


def test_processes_appending_at_once_never_fork_the_chain(db_path: Path, key_path: Path) -> None:
    # Nothing exists yet: the writers also race to create the log and its key.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(db_path), str(key_path), name, "120"],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for name in ("daemon", "cli:alice")
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    with AuditLog(db_path, key_path) as audit:
        for n in range(60):
            audit.record("web:bob", "show", f"rec-{n}")
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.close()
        assert [e.seq for e in audit.entries()] == list(range(1, 301))
        report = audit.verify()
        assert report.ok, report.problems
        assert report.beyond_checkpoint == 0
        for name, count in (("daemon", 120), ("cli:alice", 120), ("web:bob", 60)):
            assert [e.target for e in audit.entries(actor=name)] == [f"rec-{n}" for n in range(count)]


# --- tampering --------------------------------------------------------------------------


def test_an_edited_field_is_found_and_named(audit: AuditLog) -> None:
    fill(audit, 6)
    intrude(audit.path, ("UPDATE entries SET actor = 'mallory' WHERE seq = 3", ()))
    report = audit.verify()
    assert not report.ok
    assert [(p.seq, p.kind, p.message) for p in report.problems] == [
        (3, Finding.EDITED, "entry 3 was edited: its fields do not match its hash")
    ]


def test_an_edit_with_recomputed_hashes_is_found_by_the_macs(audit: AuditLog, db_path: Path, key_path: Path) -> None:
    fill(audit, 6)
    intrude(db_path, ("UPDATE entries SET target = 'someone-else' WHERE seq = 3", ()))
    rechain(db_path, 3)
    assert kinds(audit) == [
        (3, "mac mismatch"),
        (4, "mac mismatch"),
        (5, "mac mismatch"),
        (6, "mac mismatch"),
        (6, "head mismatch"),
    ]
    # Without the key and the checkpoint the chain alone hangs together: that is what the mac is for.
    with AuditLog(db_path, None) as reader:
        assert reader.verify().ok
    # Without the key but with the checkpoint, the end no longer matches.
    with AuditLog(db_path, None, head_path=key_path.with_name("audit.key.head")) as reader:
        assert kinds(reader) == [(6, "head mismatch")]


def test_a_removed_middle_entry_is_found(audit: AuditLog) -> None:
    fill(audit, 6)
    intrude(audit.path, ("DELETE FROM entries WHERE seq = 4", ()))
    report = audit.verify()
    assert [(p.seq, p.kind, p.message) for p in report.problems] == [(4, Finding.MISSING, "entry 4 is missing")]


def test_swapped_entries_are_found(audit: AuditLog) -> None:
    fill(audit, 6)
    intrude(
        audit.path,
        ("UPDATE entries SET rowid = -1 WHERE seq = 3", ()),
        ("UPDATE entries SET rowid = 3 WHERE seq = 4", ()),
        ("UPDATE entries SET rowid = 4 WHERE seq = 3", ()),
    )
    assert [e.seq for e in audit.entries()] == [1, 2, 3, 4, 5, 6]  # reading goes by seq
    report = audit.verify()
    assert [(p.seq, p.kind, p.message) for p in report.problems] == [
        (4, Finding.REORDERED, "entry 4 is stored before entry 3"),
        (3, Finding.REORDERED, "entry 3 is stored after entry 4"),
    ]


def test_swapped_contents_with_renumbered_seqs_are_found(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 6)
    third, fourth = rows(db_path)[2], rows(db_path)[3]
    swap = "UPDATE entries SET at = ?, actor = ?, action = ?, target = ?, details = ?, prev = ?, hash = ?, mac = ?"
    intrude(db_path, (swap + " WHERE seq = 3", fourth[1:]), (swap + " WHERE seq = 4", third[1:]))
    assert kinds(audit) == [(3, "edited"), (4, "edited"), (5, "reordered")]
    rechain(db_path, 3)  # even with hashes made good again, the macs give it away
    assert kinds(audit) == [
        (3, "mac mismatch"),
        (4, "mac mismatch"),
        (5, "mac mismatch"),
        (6, "mac mismatch"),
        (6, "head mismatch"),
    ]


def test_a_duplicated_entry_is_found_as_inserted(audit: AuditLog, db_path: Path) -> None:
    fill(audit, 4)
    intrude(
        db_path,
        ("DROP INDEX entries_by_seq", ()),
        (
            "INSERT INTO entries (seq, at, actor, action, target, details, prev, hash, mac)"
            " SELECT seq, at, 'mallory', action, target, details, prev, hash, mac FROM entries WHERE seq = 2",
            (),
        ),
    )
    assert kinds(audit) == [(2, "edited"), (2, "inserted")]


def test_an_entry_forged_at_the_end_without_the_key_is_found(audit: AuditLog, db_path: Path) -> None:
    last = fill(audit, 3)[-1]
    encoded = encode(4, last.at, "alice", "purge", "all", "{}", last.hash)
    intrude(
        db_path,
        (
            "INSERT INTO entries (seq, at, actor, action, target, details, prev, hash, mac)"
            " VALUES (4, ?, 'alice', 'purge', 'all', '{}', ?, ?, ?)",
            (last.at, last.hash, hashlib.sha256(encoded).hexdigest(), "0" * 64),
        ),
    )
    report = audit.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(4, Finding.MAC_MISMATCH)]
    assert report.beyond_checkpoint == 1


def test_removed_last_entries_are_found_by_the_checkpoint(audit: AuditLog) -> None:
    fill(audit, 6)
    intrude(audit.path, ("DELETE FROM entries WHERE seq >= 5", ()))
    report = audit.verify()
    assert [(p.seq, p.kind, p.message) for p in report.problems] == [
        (5, Finding.TRUNCATED, "the log ends at entry 4 but the checkpoint names entry 6: entries 5 to 6 are gone")
    ]


def test_a_replaced_checkpoint_is_still_caught_by_an_exported_head(audit: AuditLog, key_path: Path) -> None:
    fill(audit, 6)
    exported = audit.head()
    fill(audit, 2)
    head_file = key_path.with_name("audit.key.head")
    truncated_head = head_file.read_bytes()
    intrude(audit.path, ("DELETE FROM entries WHERE seq >= 5", ()))
    # The intruder holds the key: a checkpoint for the shortened log, mac and all.
    write_checkpoint(head_file, key_path.read_bytes(), audit.head())
    audit.record("mallory", "show")
    audit.record("mallory", "show")
    assert head_file.read_bytes() != truncated_head
    assert audit.verify().ok  # nothing on this machine can tell any more...
    report = audit.verify(expected_head=exported)  # ...but the head exported earlier can
    assert [(p.seq, p.kind) for p in report.problems] == [(6, Finding.HEAD_MISMATCH)]
    intrude(audit.path, ("DELETE FROM entries WHERE seq >= 5", ()))
    (key_path.with_name("audit.key.head")).unlink()
    assert (5, "truncated") in kinds(audit, expected_head=exported)


def test_a_forged_or_missing_checkpoint_is_reported(audit: AuditLog, key_path: Path) -> None:
    fill(audit, 3)
    head_file = key_path.with_name("audit.key.head")
    doc = json.loads(head_file.read_text())
    head_file.write_text(json.dumps({**doc, "seq": 2}))
    report = audit.verify()
    assert [(p.kind, p.message) for p in report.problems] == [
        (
            Finding.CHECKPOINT,
            f"the head checkpoint {head_file} was not written with this audit key (forged, or the wrong key)",
        )
    ]
    head_file.unlink()
    assert [(p.kind, p.message) for p in audit.verify().problems] == [
        (Finding.CHECKPOINT, f"the head checkpoint {head_file} is missing")
    ]
    head_file.write_text("{not json")
    assert kinds(audit) == [(None, "checkpoint")]


def test_a_checkpoint_behind_by_a_crash_is_accepted_and_caught_up(audit: AuditLog, key_path: Path) -> None:
    fill(audit, 3)
    head_file = key_path.with_name("audit.key.head")
    before = head_file.read_bytes()
    audit.record("alice", "show")
    head_file.write_bytes(before)  # as if the process died between the commit and the checkpoint
    report = audit.verify()
    assert report.ok
    assert report.beyond_checkpoint == 1
    audit.record("alice", "show")
    assert audit.verify().beyond_checkpoint == 0


def test_appending_stops_after_a_truncation_until_the_checkpoint_is_reset(audit: AuditLog) -> None:
    fill(audit, 6)
    intrude(audit.path, ("DELETE FROM entries WHERE seq >= 5", ()))
    with pytest.raises(AuditError) as raised:
        audit.record("alice", "show")
    assert str(raised.value) == (
        f"audit log {audit.path} does not match its checkpoint: the log ends at entry 4 but its checkpoint names"
        " entry 6; nothing is recorded until it has been verified and the checkpoint reset"
    )
    assert audit.head().seq == 4
    reset = audit.reset_checkpoint("cli:root")
    assert (reset.seq, reset.action) == (5, "reset_checkpoint")
    assert reset.details["checkpoint"][0] == 6
    assert audit.record("alice", "show").seq == 6
    assert audit.verify().ok


def test_a_checkpoint_that_cannot_be_written_stops_further_appends(tmp_path: Path, db_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    head_path = blocker / "audit.head"
    with AuditLog(db_path, tmp_path / "audit.key", head_path=head_path) as audit:
        with pytest.raises(AuditError) as raised:
            audit.record("alice", "show")
        assert str(raised.value) == (
            f"audit entry recorded, but its checkpoint {head_path} cannot be written: Not a directory"
        )
        assert audit.head().seq == 1
        with pytest.raises(AuditError, match=r"does not match its checkpoint: the head checkpoint .* cannot be read"):
            audit.record("alice", "show")
        assert audit.head().seq == 1


def test_text_that_is_not_utf8_and_a_seq_that_is_not_a_number_are_reported(audit: AuditLog) -> None:
    fill(audit, 4)
    intrude(
        audit.path,
        ("UPDATE entries SET actor = CAST(x'ff616c' AS TEXT) WHERE seq = 2", ()),
        ("UPDATE entries SET seq = 'three' WHERE seq = 3", ()),
    )
    report = audit.verify()
    assert [(p.seq, p.kind, p.message) for p in report.problems] == [
        (2, Finding.EDITED, "entry 2 was edited: actor not stored as text"),
        (None, Finding.EDITED, "the entry in row 3 has seq 'three', not a whole number from 1"),
        (3, Finding.MISSING, "entry 3 is missing"),
    ]
    with pytest.raises(AuditError) as raised:
        list(audit.entries())
    assert str(raised.value) == f"audit log {audit.path} has a damaged entry (seq 2); run verify"


def test_a_log_whose_table_was_dropped_cannot_be_verified(audit: AuditLog) -> None:
    fill(audit, 2)
    intrude(audit.path, ("DROP TABLE entries", ()))
    with pytest.raises(AuditError) as raised:
        audit.verify()
    assert str(raised.value) == f"audit log {audit.path} cannot be read: no such table: entries"


# --- bad input ----------------------------------------------------------------------------


def test_an_unknown_action_is_refused(audit: AuditLog) -> None:
    with pytest.raises(AuditError) as raised:
        audit.record("alice", "peek", "rec-1")
    assert str(raised.value) == f"audit action 'peek' is not one of: {', '.join(sorted(ACTIONS))}"
    assert audit.head().seq == 0


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({"tags": {"a", "b"}}, "audit details of 'tag' are not JSON: Object of type set is not JSON serializable"),
        ({"x": float("nan")}, "audit details of 'tag' are not JSON: Out of range float values are not JSON compliant"),
        (["a"], "audit details of 'tag' must be a JSON object, not list"),
        (
            {"at": (1, 2)},
            "audit details of 'tag' do not survive JSON unchanged (keys must be text, lists not tuples)",
        ),
        ({"big": "x" * 9000}, "audit details of 'tag' take 9010 bytes; at most 8192 are allowed"),
    ],
)
def test_details_that_are_not_a_small_json_object_are_refused(audit: AuditLog, details: Any, message: str) -> None:
    with pytest.raises(AuditError) as raised:
        audit.record("alice", "tag", "rec-1", details)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("actor", "target", "message"),
    [
        ("", None, "audit actor must be non-empty text, not ''"),
        ("alice\nforged line", None, "audit actor 'alice\\nforged line' must be at most 512 printable characters"),
        ("alice", "rec\x1b[2J", "audit target 'rec\\x1b[2J' must be at most 512 printable characters"),
        ("alice", "", "audit target must be non-empty text, not ''"),
    ],
)
def test_actors_and_targets_must_be_printable_text(
    audit: AuditLog, actor: str, target: str | None, message: str
) -> None:
    with pytest.raises(AuditError) as raised:
        audit.record(actor, "show", target)
    assert str(raised.value) == message


def test_a_naive_time_is_refused(audit: AuditLog) -> None:
    with pytest.raises(AuditError) as raised:
        audit.record("alice", "show", at=datetime(2024, 3, 5, 12, 0))
    assert str(raised.value) == ("audit time datetime.datetime(2024, 3, 5, 12, 0) must be a timezone-aware datetime")


def test_another_sqlite_database_is_not_taken_for_an_audit_log(tmp_path: Path, key_path: Path) -> None:
    other = tmp_path / "index.sqlite"
    intrude(other, ("CREATE TABLE calls (id TEXT PRIMARY KEY)", ()))
    with pytest.raises(AuditError) as raised:
        AuditLog(other, key_path)
    assert str(raised.value) == f"{other} is not a linerec audit log (it is some other SQLite database)"
    assert not key_path.exists()


def test_a_garbage_file_is_not_an_audit_log(tmp_path: Path, key_path: Path) -> None:
    garbage = tmp_path / "audit.sqlite"
    garbage.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(AuditError) as raised:
        AuditLog(garbage, key_path)
    assert str(raised.value) == f"{garbage} is not a linerec audit log (file is not a database)"


def test_a_newer_schema_is_refused(db_path: Path, key_path: Path) -> None:
    AuditLog(db_path, key_path).close()
    intrude(db_path, ("PRAGMA user_version = 7", ()))
    with pytest.raises(AuditError) as raised:
        AuditLog(db_path, key_path)
    assert str(raised.value) == f"audit log {db_path} has schema version 7; this agent knows versions up to 1"


def test_opening_without_a_key_never_creates_a_log(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    with pytest.raises(AuditError) as raised:
        AuditLog(missing, None)
    assert str(raised.value) == f"there is no audit log at {missing}"
    assert not missing.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_others_can_read_is_refused(db_path: Path, key_path: Path, mode: int) -> None:
    AuditLog(db_path, key_path).close()
    key_path.chmod(mode)
    with pytest.raises(AuditError) as raised:
        AuditLog(db_path, key_path)
    assert (
        str(raised.value) == f"audit key {key_path} has mode {mode:04o}; it must be readable by its owner only (0600)"
    )


def test_a_key_of_the_wrong_length_is_refused(db_path: Path, key_path: Path) -> None:
    key_path.parent.mkdir()
    key_path.write_bytes(os.urandom(16))
    key_path.chmod(0o600)
    with pytest.raises(AuditError) as raised:
        AuditLog(db_path, key_path)
    assert str(raised.value) == f"audit key {key_path} holds 16 bytes; an audit key is exactly 32 bytes"


def test_a_lost_key_is_not_silently_replaced(db_path: Path, key_path: Path) -> None:
    with AuditLog(db_path, key_path) as audit:
        fill(audit, 2)
    key_path.unlink()
    with pytest.raises(AuditError) as raised:
        AuditLog(db_path, key_path)
    assert str(raised.value) == (
        f"audit key {key_path} is missing; the log already has entries made with it, so restore it"
    )
    assert not key_path.exists()


def test_a_different_key_cannot_append(db_path: Path, key_path: Path) -> None:
    with AuditLog(db_path, key_path) as audit:
        fill(audit, 2)
    key_path.write_bytes(os.urandom(32))
    with AuditLog(db_path, key_path) as audit:
        with pytest.raises(AuditError, match="not written with this audit key"):
            audit.record("alice", "show")
        assert {kind for _, kind in kinds(audit)} == {"mac mismatch", "checkpoint"}


def test_bad_reading_arguments_are_refused(audit: AuditLog) -> None:
    with pytest.raises(AuditError, match=r"^audit action 'peek' is not one of"):
        audit.entries(action="peek")
    with pytest.raises(AuditError) as raised:
        audit.entries(limit=-1)
    assert str(raised.value) == "audit limit must be a whole number from 0, not -1"
    with pytest.raises(AuditError) as raised:
        audit.verify(expected_head=(3, "nothex"))
    assert str(raised.value) == "expected audit head (3, 'nothex') is not (seq, 64 lowercase hex digits)"
    with pytest.raises(AuditError, match=r"^expected audit head 'abc' is not"):
        audit.verify(expected_head="abc")  # type: ignore[arg-type]
    with pytest.raises(AuditError) as raised:
        audit.entries(since=-2)
    assert str(raised.value) == "audit since must be a seq (a whole number from 0), not -2"
    with pytest.raises(AuditError) as raised:
        audit.entries(before=True)
    assert str(raised.value) == "audit before must be a seq (a whole number from 0), not True"


def test_every_error_is_one_line_and_an_agent_error(tmp_path: Path) -> None:
    assert issubclass(AuditError, AgentError)
    assert issubclass(AuditError, ValueError)
    garbage = tmp_path / "x.sqlite"
    garbage.write_bytes(b"\x00" * 10 + b"SQLite format 3\x00" * 100)
    with pytest.raises(AuditError) as raised:
        AuditLog(garbage, tmp_path / "k")
    assert "\n" not in str(raised.value)


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
names = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=12)
items = st.builds(
    AuditItem,
    actor=names,
    action=st.sampled_from(sorted(ACTIONS)),
    target=st.none() | names,
    details=st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(items, max_size=8))
def test_any_sequence_of_appends_verifies(batch: list[AuditItem]) -> None:
    with tempfile.TemporaryDirectory() as tmp, AuditLog(Path(tmp, "audit.sqlite"), Path(tmp, "audit.key")) as audit:
        recorded = [audit.record(i.actor, i.action, i.target, i.details) for i in batch]
        assert [e.seq for e in recorded] == list(range(1, len(batch) + 1))
        assert list(audit.entries()) == recorded
        assert [(e.actor, e.action, e.target, e.details) for e in recorded] == [
            (i.actor, i.action, i.target, i.details or {}) for i in batch
        ]
        report = audit.verify()
        assert report.ok, report.problems
        assert report.entries == len(batch)
        assert report.head == audit.head() == ((recorded[-1].seq, recorded[-1].hash) if recorded else (0, ZERO_HASH))


@pytest.fixture(scope="module")
def sealed_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A closed six-entry log (every field filled) to copy and damage."""
    root = tmp_path_factory.mktemp("sealed")
    with AuditLog(root / "audit.sqlite", root / "audit.key", clock=Clock()) as audit:
        for n in range(6):
            audit.record(f"user{n}", Action.LISTEN, f"rec-{n}", {"n": n, "note": "ünïcode"})
    return root / "audit.sqlite", root / "audit.key"


FIELDS = ("seq", "at", "actor", "action", "target", "details", "prev", "hash", "mac")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_changed_in_any_field_is_found(sealed_log: tuple[Path, Path], data: st.DataObject) -> None:
    original_db, key = sealed_log
    seq = data.draw(st.integers(1, 6), label="entry")
    field = data.draw(st.sampled_from(FIELDS), label="field")
    with tempfile.TemporaryDirectory() as tmp:
        db_copy, head_copy = Path(tmp, "audit.sqlite"), Path(tmp, "audit.head")
        shutil.copy(original_db, db_copy)
        shutil.copy(key.with_name("audit.key.head"), head_copy)
        value = rows(db_copy)[seq - 1][FIELDS.index(field)]
        raw = value.to_bytes(8, "big", signed=True) if field == "seq" else value.encode()
        pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
        flip = data.draw(st.integers(1, 255), label="change")
        changed = raw[:pos] + bytes([raw[pos] ^ flip]) + raw[pos + 1 :]
        if field == "seq":
            new_value: int | bytes = int.from_bytes(changed, "big", signed=True)
            update = "UPDATE entries SET seq = ? WHERE seq = ?"
        else:
            new_value = changed
            update = f"UPDATE entries SET {field} = CAST(? AS TEXT) WHERE seq = ?"  # noqa: S608
        intrude(db_copy, ("DROP INDEX entries_by_seq", ()), (update, (new_value, seq)))
        with AuditLog(db_copy, key, head_path=head_copy) as audit:
            report = audit.verify()
    assert not report.ok
    if field != "seq":
        assert seq in [p.seq for p in report.problems], report.problems


# --- size -------------------------------------------------------------------------------------


def test_verifying_a_long_log_streams_in_flat_memory(audit: AuditLog) -> None:
    note = "reviewed for the quarterly consent audit; " * 5
    audit.record_many(
        AuditItem(f"user{n % 7}", Action.LISTEN, f"20240305T2330{n:06d}Z-0a1b2c3d", {"n": n, "note": note})
        for n in range(20_000)
    )
    stored = sqlite3.connect(audit.path)
    try:
        size = stored.execute("SELECT SUM(LENGTH(details) + LENGTH(target) + 200) FROM entries").fetchone()[0]
    finally:
        stored.close()
    assert size > 5_000_000  # far more than the bound below: the rows cannot all be held at once
    tracemalloc.start()
    try:
        report = audit.verify()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok
    assert report.entries == 20_000
    assert peak < 1_000_000, peak


def test_many_problems_are_counted_but_not_all_kept(audit: AuditLog) -> None:
    fill(audit, 30)
    intrude(audit.path, ("UPDATE entries SET actor = 'mallory'", ()))
    report = audit.verify(max_problems=5)
    assert len(report.problems) == 5
    assert report.problem_count == 30
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["ok"] is False
    assert doc["problems"][0] == {
        "seq": 1,
        "kind": "edited",
        "message": "entry 1 was edited: its fields do not match its hash",
    }
