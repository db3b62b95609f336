"""The run's checker catches each broken promise it is there for; otherwise the storm proves nothing."""

from __future__ import annotations

from pathlib import Path

from tests.support.invariants import Archived, Made, OutboxWatcher, Removal, delivery_problems

A = Made("20240601T000000000Z-00000000", "pi", 10, "aa" * 32)
B = Made("20240601T000001000Z-00000001", "pi", 20, "bb" * 32)


def archived(made: Made, *, file_sha: str | None = None, problem: str | None = None) -> Archived:
    return Archived(made.rec_id, made.device, made.sha256, file_sha or made.sha256, problem)


def test_a_clean_run_has_no_problems() -> None:
    removals = [Removal(A.rec_id, archived_then=True, where="deleted")]
    assert delivery_problems([A, B], [archived(A), archived(B)], removals) == []


def test_a_recording_archived_twice_is_reported() -> None:
    assert delivery_problems([A], [archived(A), archived(A)], []) == [f"{A.rec_id}: archived 2 times"]


def test_a_recording_never_archived_is_reported() -> None:
    assert delivery_problems([A, B], [archived(A)], []) == [f"{B.rec_id}: made but never archived"]


def test_a_file_whose_bytes_differ_from_the_manifest_is_reported() -> None:
    assert delivery_problems([A], [archived(A, file_sha="cc" * 32)], []) == [
        f"{A.rec_id}: SHA-256 made {A.sha256}, index {A.sha256}, file {'cc' * 32}"
    ]


def test_a_manifest_that_does_not_verify_is_reported() -> None:
    assert delivery_problems([A], [archived(A, problem="SignatureError: bad")], []) == [
        f"{A.rec_id}: stored manifest does not verify: SignatureError: bad"
    ]


def test_a_deletion_before_the_archive_held_it_is_reported() -> None:
    removals = [Removal(A.rec_id, archived_then=False, where="deleted")]
    assert delivery_problems([A], [archived(A)], removals) == [
        f"{A.rec_id}: deleted from the spool before the archive held it"
    ]


def test_a_rejection_stray_file_and_leftover_are_reported() -> None:
    problems = delivery_problems(
        [A],
        [archived(A)],
        [Removal(A.rec_id, archived_then=True, where="rejected")],
        strays=["pi/2024/x.age"],
        left_in_spool=[B.rec_id],
    )
    assert problems == [
        f"{A.rec_id}: left the outbox to rejected, not to the archive",
        "pi/2024/x.age: file in the archive that no index row names",
        f"{B.rec_id}: still in the spool",
    ]


def test_the_watcher_notes_an_id_deleted_from_the_outbox_before_the_archive_had_it(tmp_path: Path) -> None:
    outbox, rejected = tmp_path / "outbox", tmp_path / "rejected"
    for rec_id in (A.rec_id, B.rec_id):
        (outbox / rec_id).mkdir(parents=True)
    rejected.mkdir()
    stored = {A.rec_id}
    watcher = OutboxWatcher(outbox, rejected, stored.__contains__, period_s=3600)
    watcher.start()
    (outbox / A.rec_id).rmdir()
    (outbox / B.rec_id).rename(rejected / B.rec_id)
    watcher.stop()
    assert watcher.removals == [
        Removal(A.rec_id, archived_then=True, where="deleted"),
        Removal(B.rec_id, archived_then=False, where="rejected"),
    ]
