"""The spool keeps every recording whole in exactly one place until the agent has stored it."""

from __future__ import annotations

import errno
import logging
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.spool import AUDIO_NAME, MANIFEST_NAME, Spool, SpooledRecording, SpoolError
from firmware.wire.errors import WireError
from firmware.wire.messages import Ack, AckStatus

IDS = [
    "20240301T101500000Z-0000000a",
    "20240301T091500000Z-0000000b",
    "20240302T080000000Z-0000000c",
]


def fill(spool: Spool, rec_id: str, size: int = 1000, seed: int = 1) -> bytes:
    """Write a recording's two files into incoming/<id>/ as the encoder would; return the audio."""
    folder = spool.begin(rec_id)
    audio = random.Random(seed).randbytes(size)
    (folder / MANIFEST_NAME).write_bytes(b"manifest of " + rec_id.encode())
    (folder / AUDIO_NAME).write_bytes(audio)
    return audio


def stored(rec_id: str) -> Ack:
    return Ack(rec_id, AckStatus.STORED)


def test_new_spool_makes_private_directories(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for name in ("incoming", "outbox", "rejected"):
        path = tmp_path / "spool" / name
        assert path.is_dir()
        assert path.stat().st_mode & 0o777 == 0o700
    assert spool.pending() == []
    assert spool.depth() == 0
    assert spool.bytes_pending() == 0


def test_pending_lists_sealed_recordings_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for size, rec_id in enumerate(IDS, start=1):
        fill(spool, rec_id, size=size * 100)
        sealed = spool.seal(rec_id)
        assert sealed == SpooledRecording(
            rec_id, tmp_path / "outbox" / rec_id / MANIFEST_NAME, tmp_path / "outbox" / rec_id / AUDIO_NAME
        )
    assert [r.rec_id for r in spool.pending()] == sorted(IDS)
    assert [r.size for r in spool.pending()] == [200, 100, 300]
    assert spool.depth() == 3
    assert spool.bytes_pending() == 600
    assert list((tmp_path / "incoming").iterdir()) == []


def test_unsealed_recording_is_not_pending(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, IDS[0])
    assert spool.pending() == []


def test_begin_twice_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.begin(IDS[0])
    with pytest.raises(SpoolError) as info:
        spool.begin(IDS[0])
    assert str(info.value) == f"spool already holds recording {IDS[0]} in {tmp_path / 'incoming' / IDS[0]}"


def test_seal_needs_both_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    folder = spool.begin(IDS[0])
    (folder / MANIFEST_NAME).write_bytes(b"m")
    with pytest.raises(SpoolError) as info:
        spool.seal(IDS[0])
    assert str(info.value) == f"spool cannot seal recording {IDS[0]}: {folder / AUDIO_NAME} is missing"
    assert (folder / MANIFEST_NAME).exists()
    assert spool.pending() == []


def test_get_names_a_recording_that_is_not_waiting(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError) as info:
        spool.get(IDS[0])
    assert str(info.value) == f"spool has no recording {IDS[0]} waiting in {tmp_path / 'outbox'}"


@pytest.mark.parametrize(
    ("ack", "why"),
    [
        (Ack(IDS[0], AckStatus.MISSING, ((0, 10),)), "the ack says missing, not stored"),
        (Ack(IDS[0], AckStatus.REJECTED, reason="bad"), "the ack says rejected, not stored"),
        (Ack(IDS[1], AckStatus.STORED), f"the ack is for {IDS[1]}"),
    ],
)
def test_remove_refuses_anything_but_a_stored_ack_for_that_recording(tmp_path: Path, ack: Ack, why: str) -> None:
    spool = Spool(tmp_path)
    audio = fill(spool, IDS[0])
    rec = spool.seal(IDS[0])
    with pytest.raises(SpoolError) as info:
        spool.remove_delivered(IDS[0], ack)
    assert str(info.value) == f"spool refuses to delete recording {IDS[0]}: {why}"
    assert rec.audio.read_bytes() == audio
    assert rec.manifest.exists()
    assert spool.pending() == [rec]


def test_remove_after_stored_deletes_the_recording(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for rec_id in IDS[:2]:
        fill(spool, rec_id)
        spool.seal(rec_id)
    spool.remove_delivered(IDS[1], stored(IDS[1]))
    assert [r.rec_id for r in spool.pending()] == [IDS[0]]
    assert not (tmp_path / "outbox" / IDS[1]).exists()
    assert list((tmp_path / ".trash").iterdir()) == []
    with pytest.raises(SpoolError):
        spool.remove_delivered(IDS[1], stored(IDS[1]))


def test_deletion_cut_short_is_finished_at_the_next_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, IDS[0])
    spool.seal(IDS[0])
    # What a power cut between the rename and the unlinks leaves behind.
    (tmp_path / "outbox" / IDS[0]).rename(tmp_path / ".trash" / IDS[0])
    again = Spool(tmp_path)
    assert list((tmp_path / ".trash").iterdir()) == []
    assert again.pending() == []


def test_quarantine_keeps_the_files_with_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    audio = fill(spool, IDS[0])
    spool.seal(IDS[0])
    spool.quarantine(IDS[0], "device test-pi is not enrolled")
    kept = tmp_path / "rejected" / IDS[0]
    assert (kept / AUDIO_NAME).read_bytes() == audio
    assert (kept / MANIFEST_NAME).read_bytes() == b"manifest of " + IDS[0].encode()
    assert (kept / "reason.txt").read_text() == "device test-pi is not enrolled\n"
    assert spool.pending() == []
    with pytest.raises(SpoolError):
        spool.begin(IDS[0])


def test_a_rejected_recording_is_listed_with_its_reason_and_goes_back_to_the_outbox_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    audio = fill(spool, IDS[0])
    spool.seal(IDS[0])
    spool.quarantine(IDS[0], "device test-pi is not enrolled")
    assert spool.rejected_recordings() == [(IDS[0], "device test-pi is not enrolled")]
    spool.requeue(IDS[0])
    assert spool.rejected_recordings() == []
    [back] = spool.pending()
    assert back.rec_id == IDS[0] and back.audio.read_bytes() == audio
    assert sorted(p.name for p in back.audio.parent.iterdir()) == [AUDIO_NAME, MANIFEST_NAME]


def test_requeue_refuses_what_is_not_rejected_or_would_overwrite(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError) as info:
        spool.requeue(IDS[1])
    assert str(info.value) == f"spool has no rejected recording {IDS[1]} in {tmp_path / 'rejected'}"
    with pytest.raises(WireError, match="is not valid"):
        spool.requeue("../outbox")
    fill(spool, IDS[0])
    spool.seal(IDS[0])
    spool.quarantine(IDS[0], "refused")
    (tmp_path / "outbox" / IDS[0]).mkdir()  # the spool never makes one id twice, but a hand may copy one back
    with pytest.raises(SpoolError) as info:
        spool.requeue(IDS[0])
    assert (
        str(info.value) == f"spool cannot send recording {IDS[0]} again: {tmp_path / 'outbox' / IDS[0]} already exists"
    )
    assert spool.rejected_recordings() == [(IDS[0], "refused")]


def test_recover_lists_unsealed_recordings_and_keeps_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    fill(spool, IDS[0])
    spool.begin(IDS[2])  # crashed before the encoder wrote anything
    fill(spool, IDS[1])
    spool.seal(IDS[1])
    with caplog.at_level(logging.WARNING, logger="linerec.spool"):
        left = Spool(tmp_path).recover()
    assert left == sorted([IDS[0], IDS[2]])
    assert (tmp_path / "incoming" / IDS[0] / AUDIO_NAME).exists()
    assert (tmp_path / "incoming" / IDS[2]).is_dir()
    assert [r.rec_id for r in spool.pending()] == [IDS[1]]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert warned[0].startswith(f"recording {IDS[0]} was never sealed")


def test_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError) as info:
        Spool(blocker)
    assert str(info.value) == f"spool could not use {blocker}: it exists and is not a directory"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts tiny tmpfs file systems (64 KiB) so that the spool meets a full disk."""
    mounts: list[Path] = []

    def mount(options: str) -> Path:
        path = tmp_path / f"tiny{len(mounts)}"
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size=64k{options}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.decode().strip()}")
        mounts.append(path)
        return path

    try:
        yield mount
    finally:
        for path in mounts:
            subprocess.run(["umount", str(path)], check=True)


def _fill_disk(path: Path) -> None:
    with (path / "ballast").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_full_disk_on_quarantine_loses_nothing(small_tmpfs: Callable[[str], Path]) -> None:
    tiny_disk = small_tmpfs(",nr_inodes=1000")
    spool = Spool(tiny_disk / "spool")
    audio = fill(spool, IDS[0], size=8000)
    spool.seal(IDS[0])
    _fill_disk(tiny_disk)
    reason_path = tiny_disk / "spool" / "outbox" / IDS[0] / "reason.txt"
    with pytest.raises(SpoolError) as info:
        spool.quarantine(IDS[0], "x" * 20000)
    assert str(info.value) == f"spool could not write {reason_path}: No space left on device"
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    rec = spool.get(IDS[0])
    assert rec.audio.read_bytes() == audio
    assert sorted(p.name for p in rec.audio.parent.iterdir()) == [AUDIO_NAME, MANIFEST_NAME]
    # Space comes back: the same call now works.
    (tiny_disk / "ballast").unlink()
    spool.quarantine(IDS[0], "refused")
    assert (tiny_disk / "spool" / "rejected" / IDS[0] / AUDIO_NAME).read_bytes() == audio


def test_no_inodes_left_on_begin_is_a_clear_error_and_sealed_ones_still_deliver(
    small_tmpfs: Callable[[str], Path],
) -> None:
    tiny_disk = small_tmpfs(",nr_inodes=16")
    spool = Spool(tiny_disk / "spool")
    fill(spool, IDS[0])
    spool.seal(IDS[0])
    made = 0
    with pytest.raises(SpoolError) as info:
        for n in range(100):
            spool.begin(f"20240401T000000000Z-{n:08x}")
            made += 1
    failed = tiny_disk / "spool" / "incoming" / f"20240401T000000000Z-{made:08x}"
    assert str(info.value) == f"spool could not create the directory {failed}: No space left on device"
    assert not failed.exists()
    spool.remove_delivered(IDS[0], stored(IDS[0]))
    assert spool.pending() == []


def test_a_recording_with_its_original_is_read_as_one_stream_across_the_join(tmp_path: Path) -> None:
    from firmware.spool import ORIGINAL_NAME  # noqa: PLC0415

    spool = Spool(tmp_path)
    folder = spool.begin(IDS[0])
    audio, original = os.urandom(1000), os.urandom(2500)
    (folder / MANIFEST_NAME).write_bytes(b"manifest")
    (folder / AUDIO_NAME).write_bytes(audio)
    (folder / ORIGINAL_NAME).write_bytes(original)
    rec = spool.seal(IDS[0])
    assert rec.size == 3500
    with rec.open() as stream:
        pieces = []
        for start in range(0, 3500, 300):  # chunks that straddle the join
            stream.seek(start)
            pieces.append(stream.read(300))
        stream.seek(3500)
        assert stream.read(300) == b""
    assert b"".join(pieces) == audio + original
