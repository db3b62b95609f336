"""``verify``: every archived file against its signed manifest and its row, and files nobody names."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive, CallRow
from agent.cli import main as agent_main
from agent.integrity import Verifier
from firmware.wire import age
from tests.support.studio import Studio, rec_id


@dataclass
class Site:
    tmp: Path
    conf: Path
    studio: Studio
    plain: CallRow  # one file
    kept: CallRow  # a recording and its untrimmed original

    def verify(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
        capsys.readouterr()
        status = agent_main(["--config", str(self.conf), "verify", "--json"])
        return status, json.loads(capsys.readouterr().out)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Archive(tmp_path / "archive") as archive:
        studio = Studio(archive)
        identity = tmp_path / "identity.txt"
        identity.write_text(studio.identity + "\n")
        conf = tmp_path / "agent.toml"
        conf.write_text(f'[agent]\nidentity = "{identity}"\narchive_dir = "{tmp_path / "archive"}"\n')
        plain = studio.store(rec_id(1, 9, 1))
        kept = studio.store(rec_id(2, 9, 2), original=True)
        yield Site(tmp_path, conf, studio, plain, kept)


def kinds(report: dict[str, object]) -> list[tuple[str, str | None]]:
    problems = report["problems"]
    assert isinstance(problems, list)
    return [(p["kind"], p["id"]) for p in problems]


def test_a_sound_archive_verifies_and_says_what_it_checked(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = site.verify(capsys)
    assert status == 0
    assert report == {
        "ok": True,
        "recordings": 2,
        "files": 3,
        "bytes": site.plain.size + site.kept.size,
        "problem_count": 0,
        "by_kind": {},
        "problems": [],
    }
    assert agent_main(["--config", str(site.conf), "verify"]) == 0
    assert capsys.readouterr().out.strip() == f"2 recordings, 3 files, {report['bytes']} bytes checked: ok"


def test_a_flipped_byte_is_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(site.plain.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    status, report = site.verify(capsys)
    assert status == 1
    assert report["problems"] == [
        {
            "id": site.plain.id,
            "path": site.plain.path,
            "kind": "sha256",
            "message": "recording file does not match the SHA-256 in its signed manifest",
        }
    ]


def test_a_flipped_byte_in_the_original_and_a_truncated_recording_are_found(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.kept.original_path is not None
    original = Path(site.kept.original_path)
    data = bytearray(original.read_bytes())
    data[-1] ^= 0x80
    original.write_bytes(bytes(data))
    Path(site.plain.path).write_bytes(Path(site.plain.path).read_bytes()[:-10])
    status, report = site.verify(capsys)
    assert status == 1
    assert kinds(report) == [("size", site.plain.id), ("sha256", site.kept.id)]


def test_a_missing_file_is_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert site.kept.original_path is not None
    Path(site.kept.original_path).unlink()
    Path(site.plain.manifest_path).unlink()
    status, report = site.verify(capsys)
    assert status == 1
    assert kinds(report) == [("missing", site.plain.id), ("missing", site.kept.id)]
    assert [p["message"] for p in report["problems"]] == ["manifest file is missing", "original file is missing"]


def test_a_forged_manifest_is_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    # The same call signed by a key the archive never pinned, sealed to the archive so it opens.
    with Archive(site.tmp / "elsewhere") as other:
        forger = Studio(other, key=Ed25519PrivateKey.generate(), identity=site.studio.identity)
        forger.store(site.plain.id)
        Path(site.plain.manifest_path).write_bytes(forger.manifests[site.plain.id])
    status, report = site.verify(capsys)
    assert status == 1
    assert report["problems"] == [
        {
            "id": site.plain.id,
            "path": site.plain.manifest_path,
            "kind": "signature",
            "message": "manifest signature does not verify against the device's enrolled key",
        }
    ]


def test_a_manifest_of_another_recording_is_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    Path(site.plain.manifest_path).write_bytes(Path(site.kept.manifest_path).read_bytes())
    status, report = site.verify(capsys)
    assert status == 1
    assert kinds(report) == [("mismatch", site.plain.id)]


def test_a_row_whose_hash_was_changed_is_found(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(site.tmp / "archive" / "index.sqlite") as db:
        db.execute("UPDATE calls SET sha256 = ? WHERE id = ?", ("0" * 64, site.plain.id))
    status, report = site.verify(capsys)
    assert status == 1
    assert report["problems"] == [
        {
            "id": site.plain.id,
            "path": site.plain.path,
            "kind": "mismatch",
            "message": "the index row's SHA-256 or size is not the signed manifest's",
        }
    ]


def test_files_no_row_names_are_found_and_the_index_is_not_one(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    day = Path(site.plain.path).parent
    (day / "notes.txt").write_text("left here by someone")
    (day / f"{rec_id(9, 9, 9)}.flac.age").write_bytes(b"a recording the index does not know")
    (site.tmp / "archive" / ".incoming" / "pi-hall").mkdir(parents=True)
    (site.tmp / "archive" / ".incoming" / "pi-hall" / "audio.part").write_bytes(b"a transfer in progress")
    status, report = site.verify(capsys)
    assert status == 1
    assert sorted(p["path"] for p in report["problems"]) == [  # type: ignore[attr-defined, index]
        str(day / f"{rec_id(9, 9, 9)}.flac.age"),
        str(day / "notes.txt"),
    ]
    assert report["by_kind"] == {"unreferenced": 2}


def test_the_wrong_identity_cannot_open_the_manifests(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = site.tmp / "wrong.txt"
    wrong.write_text(age.generate_identity() + "\n")
    assert agent_main(["--config", str(site.conf), "verify", "--identity", str(wrong), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert kinds(report) == [("manifest", site.plain.id), ("manifest", site.kept.id)]
    assert report["problems"][0]["message"].startswith("manifest cannot be decrypted: ")


def test_verify_is_in_the_audit_log(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.verify(capsys)
    assert agent_main(["--config", str(site.conf), "audit", "list", "--action", "verify", "--json"]) == 0
    [entry] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["details"] == {"what": "archive"}


def test_a_rewrap_check_decides_about_files_that_no_longer_hash_as_signed(site: Site) -> None:
    path = Path(site.plain.path)
    path.write_bytes(path.read_bytes() + b"!")
    asked: list[tuple[str, str]] = []

    def rewrapped(row: CallRow, role: str, _path: Path, signed: str) -> str | None:
        asked.append((row.id, role))
        return None if signed == row.sha256 else "not the signed file"

    verifier = Verifier(site.studio.archive, site.studio.identities, rewrapped=rewrapped)
    assert verifier.run().ok
    assert asked == [(site.plain.id, "recording")]
    assert not Verifier(site.studio.archive, site.studio.identities).run().ok
