"""The archive: device enrolment, where recordings land on disk, and what the index says."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent.archive
import agent.storage
from agent.archive import Archive
from agent.contacts import CONTACTS_SCHEMA
from agent.errors import ArchiveError, EnrolmentError, NotFound
from agent.index import consent_evidence
from firmware.wire.manifest import Manifest
from firmware.wire.signing import public_key_text

DEVICE = "pi-hall"
REC_ID = "20240305T233000123Z-0a1b2c3d"


def make_manifest(
    rec_id: str = REC_ID,
    *,
    device: str = DEVICE,
    started_at: str = "2024-03-05T23:30:00.123Z",
    ciphertext: bytes = b"age ciphertext stand-in",
    caller_id: dict[str, Any] | None = None,
) -> Manifest:
    """A plausible manifest of a two-minute answered call."""
    return Manifest(
        recording_id=rec_id,
        device_id=device,
        line="line1",
        started_at=started_at,
        answered_at=started_at,
        ended_at=started_at,
        ring_count=3,
        answered=True,
        hangup_cause="remote",
        caller_id=caller_id,
        consent={"rule": "one-party", "jurisdiction": "US-NY"},
        audio={"codec": "flac", "sample_rate": 8000, "duration_s": 121.5},
        ciphertext={
            "file": f"{rec_id}.flac.age",
            "size": len(ciphertext),
            "sha256": hashlib.sha256(ciphertext).hexdigest(),
        },
        firmware_version="0.1.0",
    )


class Clock:
    """A settable clock for the archive's timestamps."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def archive(tmp_path: Path, clock: Clock) -> Archive:
    with Archive(tmp_path / "archive", clock=clock) as opened:
        opened.enrol(DEVICE, public_key_text(Ed25519PrivateKey.generate()))
        yield opened


def incoming(archive: Archive, data: bytes, name: str = "audio.part") -> Path:
    path = archive.incoming_dir / name
    path.write_bytes(data)
    return path


# --- enrolment -------------------------------------------------------------------------


def test_enrolled_device_is_listed_with_its_pinned_key(tmp_path: Path, clock: Clock) -> None:
    key = Ed25519PrivateKey.generate()
    with Archive(tmp_path, clock=clock) as archive:
        archive.enrol("pi-kitchen", public_key_text(key))
        assert archive.devices() == [
            {
                "id": "pi-kitchen",
                "public_key": public_key_text(key),
                "enrolled_at": "2023-11-14T22:13:20.000Z",
                "last_seen": None,
                "status": None,
            }
        ]
        pinned = archive.device_key("pi-kitchen")
        assert pinned is not None
        assert public_key_text(pinned) == public_key_text(key)
        assert archive.device_key("pi-garage") is None


def test_enrolling_the_same_key_again_changes_nothing(archive: Archive, clock: Clock) -> None:
    before = archive.devices()
    clock.t += 3600
    archive.enrol(DEVICE, before[0]["public_key"])
    assert archive.devices() == before


def test_a_different_key_for_an_enrolled_device_is_refused_unless_replacing(archive: Archive) -> None:
    old = archive.devices()[0]["public_key"]
    new = public_key_text(Ed25519PrivateKey.generate())
    with pytest.raises(EnrolmentError) as caught:
        archive.enrol(DEVICE, new)
    assert str(caught.value) == (
        f"device 'pi-hall' is already enrolled with the key {old}; enrol it with replace to pin a different key"
    )
    assert archive.devices()[0]["public_key"] == old
    archive.enrol(DEVICE, new, replace=True)
    assert archive.devices()[0]["public_key"] == new


@pytest.mark.parametrize("text", ["ed25519:abc", "", "ed25519:" + "A" * 44, "ssh-ed25519 AAAA"])
def test_enrolment_refuses_key_text_that_is_not_an_ed25519_key(archive: Archive, text: str) -> None:
    with pytest.raises(EnrolmentError) as caught:
        archive.enrol("pi-new", text)
    assert str(caught.value) == f"public key {text!r} is not valid: expected ed25519:<base64 of 32 bytes>"
    assert isinstance(caught.value, ValueError)
    assert archive.device_key("pi-new") is None


def test_enrolment_refuses_a_device_id_that_is_not_a_safe_name(archive: Archive) -> None:
    with pytest.raises(EnrolmentError) as caught:
        archive.enrol("../etc", public_key_text(Ed25519PrivateKey.generate()))
    assert str(caught.value).startswith("device id '../etc' is not valid: use 1-63 lowercase letters")


def test_status_of_a_device_is_kept_with_the_time_it_was_seen(archive: Archive, clock: Clock) -> None:
    clock.t += 60
    archive.note_status(DEVICE, {"v": 1, "state": "online", "spool": 2})
    archive.note_status("pi-unknown", {"v": 1, "state": "online"})
    (device,) = archive.devices()
    assert device["last_seen"] == "2023-11-14T22:14:20.000Z"
    assert device["status"] == {"v": 1, "state": "online", "spool": 2}


# --- storing -----------------------------------------------------------------------------


def test_store_files_the_recording_by_device_and_utc_date(archive: Archive) -> None:
    data = os.urandom(4096)
    # 00:30 at UTC+1 is still the 5th of March in UTC.
    manifest = make_manifest(
        started_at="2024-03-06T00:30:00.000+01:00",
        ciphertext=data,
        caller_id={"number": "2125550100", "name": "ALICE", "number_absent": None, "name_absent": None},
    )
    source = incoming(archive, data)
    row = archive.store(manifest, b"encrypted manifest", source)

    day = archive.root / DEVICE / "2024" / "03" / "05"
    assert row.path == str(day / f"{REC_ID}.flac.age")
    assert row.manifest_path == str(day / f"{REC_ID}.manifest.age")
    assert Path(row.path).read_bytes() == data
    assert Path(row.manifest_path).read_bytes() == b"encrypted manifest"
    assert not source.exists()
    assert sorted(p.name for p in day.iterdir()) == [f"{REC_ID}.flac.age", f"{REC_ID}.manifest.age"]
    assert (row.device, row.caller_number, row.caller_name, row.caller_absent) == (DEVICE, "2125550100", "ALICE", None)
    assert (row.duration_s, row.answered, row.ring_count, row.size) == (121.5, True, 3, 4096)
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert archive.has(REC_ID)
    assert archive.get(REC_ID) == row


def test_store_fsyncs_both_files_and_the_new_directories(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(agent.storage.os, "fsync", recording_fsync)
    row = archive.store(make_manifest(), b"doc", incoming(archive, b"age ciphertext stand-in"))
    day = archive.root / DEVICE / "2024" / "03" / "05"
    # The ciphertext is synced before it is renamed: under its incoming name.
    assert str(archive.incoming_dir / "audio.part") in synced
    assert row.manifest_path + ".tmp" in synced
    for directory in (archive.root, archive.root / DEVICE, day.parent.parent, day.parent, day):
        assert str(directory) in synced


def test_storing_a_recording_twice_returns_the_row_already_there(archive: Archive, clock: Clock) -> None:
    first = archive.store(make_manifest(), b"doc", incoming(archive, b"age ciphertext stand-in"))
    clock.t += 10
    again = archive.store(make_manifest(), b"other doc", incoming(archive, b"age ciphertext stand-in"))
    assert again == first
    assert [row.id for row in archive.calls()] == [REC_ID]
    assert Path(first.manifest_path).read_bytes() == b"doc"


def test_store_of_a_missing_ciphertext_names_the_path_and_indexes_nothing(archive: Archive) -> None:
    missing = archive.incoming_dir / "gone.part"
    with pytest.raises(ArchiveError) as caught:
        archive.store(make_manifest(), b"doc", missing)
    assert str(caught.value) == f"cannot store a recording at {missing}: No such file or directory"
    assert isinstance(caught.value, OSError)
    assert not archive.has(REC_ID)
    assert list((archive.root / DEVICE / "2024" / "03" / "05").iterdir()) == []


def test_store_that_cannot_create_its_directory_leaves_the_ciphertext_where_it_was(archive: Archive) -> None:
    (archive.root / DEVICE).write_text("a file where a directory should be")
    source = incoming(archive, b"age ciphertext stand-in")
    with pytest.raises(ArchiveError, match=r"^cannot store a recording at .*/archive/pi-hall: File exists$"):
        archive.store(make_manifest(), b"doc", source)
    assert source.read_bytes() == b"age ciphertext stand-in"
    assert list(archive.calls()) == []


def test_a_garbled_start_time_files_the_call_under_the_date_in_its_id(archive: Archive) -> None:
    row = archive.store(make_manifest(started_at="yesterday"), b"doc", incoming(archive, b"age ciphertext stand-in"))
    assert row.path == str(archive.root / DEVICE / "2024" / "03" / "05" / f"{REC_ID}.flac.age")


# --- reading -----------------------------------------------------------------------------


def test_get_of_an_unknown_recording_says_what_is_missing_where(archive: Archive) -> None:
    with pytest.raises(NotFound) as caught:
        archive.get("20240101T000000000Z-00000000")
    assert str(caught.value) == f"recording '20240101T000000000Z-00000000' is not in the archive at {archive.root}"
    assert isinstance(caught.value, LookupError)


def test_calls_come_newest_first_and_filter_by_device(archive: Archive) -> None:
    archive.enrol("pi-shop", public_key_text(Ed25519PrivateKey.generate()))
    stored = [
        ("20240301T080000000Z-00000001", DEVICE, "2024-03-01T08:00:00.000Z"),
        ("20240303T080000000Z-00000003", "pi-shop", "2024-03-03T08:00:00.000Z"),
        # Earlier in UTC than the call above though its local clock reads later.
        ("20240302T230000000Z-00000002", DEVICE, "2024-03-03T09:00:00.000+10:00"),
    ]
    for number, (rec_id, device, started) in enumerate(stored):
        manifest = make_manifest(rec_id, device=device, started_at=started)
        archive.store(manifest, b"doc", incoming(archive, b"age ciphertext stand-in", f"{number}.part"))
    assert [row.id[-1] for row in archive.calls()] == ["3", "2", "1"]
    assert [row.id[-1] for row in archive.calls(device=DEVICE)] == ["2", "1"]
    assert [row.id[-1] for row in archive.calls(limit=1)] == ["3"]
    assert list(archive.calls(device="pi-nobody")) == []


def test_call_row_json_holds_what_a_listing_shows(archive: Archive) -> None:
    row = archive.store(
        make_manifest(caller_id={"number": None, "name": None, "number_absent": "P", "name_absent": "P"}),
        b"doc",
        incoming(archive, b"age ciphertext stand-in"),
    )
    shown = row.to_json()
    for key in ("id", "device", "started_at", "duration_s", "caller_number", "caller_name", "answered", "path"):
        assert key in shown
    assert shown["caller_absent"] == "P"
    assert shown["caller_number"] is None
    assert shown["answered"] is True


def test_rejections_are_kept_and_logged(archive: Archive, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="linerec.agent.archive"):
        archive.log_rejection("pi-rogue", REC_ID, "device pi-rogue is not enrolled")
        archive.log_rejection(DEVICE, None, "status message is not JSON")
    assert archive.rejections() == [
        {
            "at": "2023-11-14T22:13:20.000Z",
            "device": "pi-rogue",
            "rec_id": REC_ID,
            "reason": "device pi-rogue is not enrolled",
        },
        {"at": "2023-11-14T22:13:20.000Z", "device": DEVICE, "rec_id": None, "reason": "status message is not JSON"},
    ]
    assert f"rejected {REC_ID} from device pi-rogue: device pi-rogue is not enrolled" in caplog.messages


# --- the index file ----------------------------------------------------------------------


def test_everything_survives_closing_and_reopening(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "archive"
    with Archive(root, clock=clock) as archive:
        archive.enrol(DEVICE, public_key_text(Ed25519PrivateKey.generate()))
        row = archive.store(make_manifest(), b"doc", incoming(archive, b"age ciphertext stand-in"))
        archive.log_rejection(DEVICE, None, "bad")
        devices = archive.devices()
    with Archive(root, clock=clock) as archive:
        assert archive.get(REC_ID) == row
        assert archive.devices() == devices
        assert len(archive.rejections()) == 1


def test_index_runs_in_wal_mode_with_a_schema_version(archive: Archive) -> None:
    with sqlite3.connect(archive.db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == agent.archive.SCHEMA_VERSION


def test_an_index_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    db_path = tmp_path / "index.sqlite"
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ArchiveError) as caught:
        Archive(tmp_path)
    assert str(caught.value) == (
        f"archive index {db_path} has schema version 99; this agent knows versions up to {agent.archive.SCHEMA_VERSION}"
    )


def test_an_index_that_is_not_a_database_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "index.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ArchiveError, match=r"^cannot open the archive index .*index\.sqlite: file is not a database$"):
        Archive(tmp_path)


def test_store_whose_index_write_fails_puts_the_ciphertext_back(archive: Archive) -> None:
    # A trigger makes SQLite itself refuse the row, as a full disk would.
    with sqlite3.connect(archive.db_path) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON calls BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    source = incoming(archive, b"age ciphertext stand-in")
    with pytest.raises(ArchiveError, match="database or disk is full"):
        archive.store(make_manifest(), b"doc", source)
    assert source.read_bytes() == b"age ciphertext stand-in"
    assert list((archive.root / DEVICE / "2024" / "03" / "05").iterdir()) == []
    assert not archive.has(REC_ID)
    with sqlite3.connect(archive.db_path) as db:
        db.execute("DROP TRIGGER full")
    assert archive.store(make_manifest(), b"doc", source).size == len(b"age ciphertext stand-in")


def test_an_untrimmed_original_is_filed_beside_the_recording_and_named_by_its_codec(archive: Archive) -> None:
    data, original = os.urandom(1000), os.urandom(3000)
    manifest = make_manifest(ciphertext=data + original)
    manifest.audio["codec"] = "opus"
    row = archive.store(manifest, b"m", incoming(archive, data), incoming(archive, original, "original.part"))
    day = archive.root / DEVICE / "2024" / "03" / "05"
    assert row.path == str(day / f"{REC_ID}.opus.age")
    assert row.original_path == str(day / f"{REC_ID}.original.opus.age")
    assert Path(row.original_path).read_bytes() == original
    assert archive.get(REC_ID).original_path == row.original_path


def test_a_recording_recovered_from_a_device_journal_is_filed_as_a_segment_log(archive: Archive) -> None:
    manifest = make_manifest()
    manifest.audio["container"] = "segments"
    row = archive.store(manifest, b"m", incoming(archive, b"age ciphertext stand-in"))
    assert row.path.endswith(f"{REC_ID}.flac.segments")
    assert row.original_path is None


def test_an_index_from_the_first_schema_gains_the_original_column_and_keeps_its_rows(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(agent.archive._MIGRATIONS[0])
    db.execute("INSERT INTO devices VALUES ('pi-hall', 'k', '2024-01-01', NULL, NULL)")
    db.execute(
        "INSERT INTO calls VALUES ('20240305T233000123Z-0a1b2c3d', 'pi-hall', 'line1', 's', 's', NULL, 'e', 1.0,"
        " NULL, NULL, NULL, 1, 'remote', 1, 'p.flac.age', 'p.manifest.age', 1, 'h', 'now')"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Archive(root) as archive:
        row = archive.get(REC_ID)
    assert (row.path, row.original_path) == (str(root / "p.flac.age"), None)


# --- schema 3: search, consent facts, tags, notes, holds, tombstones, contacts ------------------


def test_an_index_from_the_second_schema_gains_search_and_keeps_its_rows(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(agent.archive._MIGRATIONS[0] + agent.archive._MIGRATIONS[1])
    db.execute("INSERT INTO devices VALUES ('pi-hall', 'k', '2024-01-01', NULL, NULL)")
    db.execute(
        "INSERT INTO calls VALUES ('20240305T233000123Z-0a1b2c3d', 'pi-hall', 'line1', 's',"
        " '2024-03-05T23:30:00.123+00:00', NULL, 'e', 1.0, '+1 (212) 555-0142', NULL, NULL, 1, 'remote', 1,"
        " 'p.flac.age', 'p.manifest.age', 1, 'h', 'now', NULL)"
    )
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with Archive(root) as archive:
        row = archive.get(REC_ID)
        digits = archive.read("SELECT caller_digits FROM calls")[0][0]
        version = archive.read("PRAGMA user_version")[0][0]
    assert (row.caller_number, row.consent_rule, row.consent_recorded) == ("+1 (212) 555-0142", None, None)
    assert (digits, version) == ("12125550142", agent.archive.SCHEMA_VERSION)


def test_the_contacts_table_is_the_one_the_contacts_module_expects(archive: Archive, tmp_path: Path) -> None:
    reference = sqlite3.connect(tmp_path / "reference.sqlite")
    reference.executescript(CONTACTS_SCHEMA)
    for pragma in ("table_info(contacts)", "index_list(contacts)", "index_info(contacts_by_national)"):
        ours = [tuple(row) for row in archive.read(f"PRAGMA {pragma}")]
        assert ours == reference.execute(f"PRAGMA {pragma}").fetchall(), pragma
    reference.close()


def test_consent_facts_are_columns_and_the_evidence_is_kept_whole(archive: Archive) -> None:
    manifest = make_manifest(caller_id={"number": "020 7946-0018", "name": None})
    consent: dict[str, Any] = {
        "rule": "express",
        "jurisdiction": "GB",
        "recorded": False,
        "notices": [{"kind": "question", "id": "q1", "offset_s": 0.5}],
        "express": {"answer": "no", "digit": "2", "offset_s": 6.1},
    }
    row = archive.store(replace(manifest, consent=consent), b"doc", incoming(archive, b"age ciphertext stand-in"))
    assert (row.consent_rule, row.consent_jurisdiction, row.consent_recorded) == ("express", "GB", False)
    assert (row.consent_notice, row.consent_express) == (True, "no")
    assert archive.read("SELECT caller_digits FROM calls")[0][0] == "02079460018"
    assert consent_evidence(archive, REC_ID) == consent


def test_a_call_without_consent_evidence_has_no_consent_facts(archive: Archive) -> None:
    row = archive.store(replace(make_manifest(), consent=None), b"doc", incoming(archive, b"age ciphertext stand-in"))
    assert (row.consent_rule, row.consent_recorded, row.consent_notice, row.consent_express) == (None,) * 4
    assert archive.read("SELECT count(*) FROM call_consent")[0][0] == 0


def test_the_index_overwrites_what_it_deletes(archive: Archive) -> None:
    assert archive.read("PRAGMA secure_delete")[0][0] == 1
    assert archive.read("PRAGMA foreign_keys")[0][0] == 1


def test_a_failed_transaction_leaves_nothing_behind(archive: Archive) -> None:
    archive.store(make_manifest(), b"doc", incoming(archive, b"age ciphertext stand-in"))
    with pytest.raises(RuntimeError), archive.transaction() as db:
        db.execute("INSERT INTO call_tags (call_id, tag) VALUES (?, 'x')", (REC_ID,))
        raise RuntimeError
    assert archive.read("SELECT count(*) FROM call_tags")[0][0] == 0
    refused = pytest.raises(ArchiveError, match=r"^archive index .* cannot be written: FOREIGN KEY constraint failed$")
    with refused, archive.transaction() as db:
        db.execute("INSERT INTO call_tags (call_id, tag) VALUES ('20200101T000000000Z-00000000', 'x')")


def test_deleting_a_call_takes_its_tags_notes_and_evidence_with_it(archive: Archive) -> None:
    archive.store(make_manifest(), b"doc", incoming(archive, b"age ciphertext stand-in"))
    with archive.transaction() as db:
        db.execute("INSERT INTO call_tags VALUES (?, 'a')", (REC_ID,))
        db.execute("INSERT INTO notes (call_id, at, author, text) VALUES (?, 'now', 'me', 'hello')", (REC_ID,))
        db.execute("DELETE FROM calls WHERE id = ?", (REC_ID,))
    for table in ("call_tags", "notes", "call_consent"):
        assert archive.read(f"SELECT count(*) FROM {table}")[0][0] == 0, table  # noqa: S608
