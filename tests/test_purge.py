"""Purge: due recordings go for good (files, index, outbox), legal holds keep theirs, and a tombstone stays.

The recordings are real age files with signed, encrypted manifests. The proof
that a purged recording is gone is a search of every file under the archive
folder (the index and its WAL included) for pieces of its ciphertext, of its
manifest and for its caller's number, name and note; the same search finds
them all before the purge, so the test can fail.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import annotate, config
from agent.archive import Archive
from agent.cli import main as agent_main
from agent.ingest import Ingest
from agent.notify import Notifier
from agent.purge import Purge, plan, purge_one
from agent.retention import RetentionSettings
from firmware.wire import topics
from firmware.wire.messages import AckStatus, Fin, decode_ack, encode_chunk, encode_fin
from tests.support.studio import Studio, found_in, rec_id, windows

TARGET_NUMBER = "3125550177"
TARGET_NAME = "ZEBULON QUIRK"
NOTE = "promised a callback about the kiwi-banana order"


class Clock:
    def __init__(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


def write_conf(tmp_path: Path, extra: str = "") -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'[agent]\nidentity = "{tmp_path / "identity.txt"}"\narchive_dir = "{tmp_path / "archive"}"\n'
        "[retention]\ndefault_days = 0\n[retention.devices]\npi-temp = 30\n" + extra
    )
    return conf


@dataclass
class Site:
    """An archive of real calls on two devices; pi-temp's are kept 30 days, pi-hall's forever."""

    tmp: Path
    conf: Path
    hall: Studio
    temp: Studio
    target: str

    @property
    def root(self) -> Path:
        return self.tmp / "archive"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    secret = tmp_path / "webhook.key"
    secret.write_bytes(b"a-crm-secret-of-enough-length\n")
    secret.chmod(0o600)
    conf = write_conf(tmp_path, f'[[webhook]]\nurl = "http://127.0.0.1:9/hooks"\nsecret_file = "{secret}"\n')
    with Archive(tmp_path / "archive") as archive:
        hall = Studio(archive)
        (tmp_path / "identity.txt").write_text(hall.identity + "\n")
        temp = Studio(archive, device="pi-temp", key=Ed25519PrivateKey.generate(), identity=hall.identity)
        for day in range(1, 13):
            hall.store(rec_id(day, 9, day), number=f"21255501{day:02d}", name=f"CALLER {day}")
        target = rec_id(14, 10, 99)
        temp.store(target, number=TARGET_NUMBER, name=TARGET_NAME, original=True, size=20_000)
        temp.store(rec_id(15, 10, 100), number="2125550999", name="OTHER TEMP")
        annotate.change_tags(archive, target, add=["complaint"])
        annotate.add_note(archive, target, "cli:ann", NOTE)
        yield Site(tmp_path, conf, hall, temp, target)


def needles(site: Site, rid: str) -> list[bytes]:
    return [
        *windows(site.temp.audio[rid]),
        *windows(site.temp.manifests[rid]),
        TARGET_NUMBER.encode(),
        TARGET_NAME.encode(),
        NOTE.encode(),
    ]


def test_a_purged_recording_cannot_be_found_anywhere_under_the_archive_folder(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config.load(site.conf)
    with Archive(site.root) as archive:
        row = archive.get(site.target)
        outbox = Notifier(cfg.notify, cfg.notify.outbox_path(site.root))
        assert len(outbox.notify_stored(row)) == 1  # the CRM is down: the delivery waits, caller and all
        outbox.stop()
    # A hard link made beforehand (as a backup tool might) shows whether the bytes were overwritten in place.
    link = site.tmp / "linked.age"
    os.link(row.path, link)
    recording = link.read_bytes()
    looked_for = needles(site, site.target)
    assert {n for _, n in found_in(site.root, looked_for)} == set(looked_for)
    kept = [*windows(site.hall.audio[rec_id(3, 9, 3)]), b"CALLER 3"]

    assert agent_main(["--config", str(site.conf), "--as", "records-officer", "purge"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{site.target}  pi-temp          purged under device pi-temp 30 d (due since 2024-04-13")
    assert out[-1].startswith("2 recording(s) purged, ")

    assert found_in(site.root, looked_for) == []
    assert {n for _, n in found_in(site.root, kept)} == set(kept)
    overwritten = link.read_bytes()
    assert len(overwritten) == len(recording)
    assert not any(w in overwritten for w in windows(recording))
    assert not Path(row.path).exists() and not Path(row.manifest_path).exists()
    assert row.original_path is not None and not Path(row.original_path).exists()
    assert not (site.root / "index.sqlite-wal").exists() or (site.root / "index.sqlite-wal").stat().st_size == 0


def test_the_tombstone_says_when_and_why_and_nothing_about_the_caller(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert agent_main(["--config", str(site.conf), "--as", "records-officer", "purge", "--json"]) == 0
    purged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["id"] for p in purged] == [site.target, rec_id(15, 10, 100)]
    assert purged[0]["files"] == 3  # recording, original, manifest
    assert agent_main(["--config", str(site.conf), "tombstones", "--json"]) == 0
    stones = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert stones[0] == {
        "id": site.target,
        "device": "pi-temp",
        "purged_at": purged[0]["purged_at"],
        "policy": "device pi-temp 30 d",
        "actor": "records-officer",
    }
    assert agent_main(["--config", str(site.conf), "show", site.target]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"linerec-agent: error: recording '{site.target}' was purged at {purged[0]['purged_at']}"
        " under device pi-temp 30 d by records-officer; only its tombstone remains"
    )
    assert agent_main(["--config", str(site.conf), "audit", "list", "--action", "purge", "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["target"] for e in entries] == [None, site.target, rec_id(15, 10, 100)]
    assert entries[1]["actor"] == "records-officer"
    assert entries[1]["details"]["policy"] == "device pi-temp 30 d"


def test_a_dry_run_lists_what_would_go_and_why_and_deletes_nothing(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    before = found_in(site.root, needles(site, site.target))
    assert agent_main(["--config", str(site.conf), "purge", "--dry-run", "--json"]) == 0
    plan_lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert plan_lines == [
        {
            "id": site.target,
            "policy": "device pi-temp 30 d",
            "due_at": "2024-04-13T10:00:00Z",
            "device": "pi-temp",
            "dry_run": True,
        },
        {
            "id": rec_id(15, 10, 100),
            "policy": "device pi-temp 30 d",
            "due_at": "2024-04-14T10:00:00Z",
            "device": "pi-temp",
            "dry_run": True,
        },
    ]
    assert found_in(site.root, needles(site, site.target)) == before
    assert agent_main(["--config", str(site.conf), "purge", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 recording(s) would be purged"


@pytest.mark.parametrize(
    "hold",
    [
        ["--recording", rec_id(14, 10, 99)],
        ["--caller", TARGET_NUMBER],
        ["--caller", "+1 (312) 555-0177"],  # the international form holds the call delivered in national form
    ],
)
def test_a_legal_hold_keeps_a_due_recording(site: Site, hold: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["--config", str(site.conf), "hold", "add", *hold, "--reason", "case 24-118"]) == 0
    assert agent_main(["--config", str(site.conf), "purge", "--json"]) == 0
    purged = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()[1:]]
    assert purged == [rec_id(15, 10, 100)]
    assert {n for _, n in found_in(site.root, needles(site, site.target))} == set(needles(site, site.target))
    assert agent_main(["--config", str(site.conf), "show", site.target, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["retention"].startswith("held: ")
    assert [h["reason"] for h in shown["holds"]] == ["case 24-118"]


def test_a_released_hold_no_longer_keeps_anything(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["--config", str(site.conf), "hold", "add", "--caller", TARGET_NUMBER, "--reason", "x"]) == 0
    assert agent_main(["--config", str(site.conf), "hold", "release", "1"]) == 0
    capsys.readouterr()
    assert agent_main(["--config", str(site.conf), "purge", "--json"]) == 0
    purged = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert purged == [site.target, rec_id(15, 10, 100)]


# --- the policy and the steps, with a settable clock ------------------------------------------


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Studio, Clock]]:
    clock = Clock(datetime(2024, 5, 1, tzinfo=UTC))
    with Archive(tmp_path / "archive", clock=clock) as archive:
        yield Studio(archive), clock


def test_tags_keep_longer_and_recent_calls_are_not_read(clocked: tuple[Studio, Clock]) -> None:
    studio, clock = clocked
    for day in (1, 2, 3):
        studio.store(rec_id(day, 8, day), number=f"555010{day}")
    annotate.change_tags(studio.archive, rec_id(2, 8, 2), add=["Litigation"])
    settings = RetentionSettings(default_days=30, tags={"litigation": 0})
    now = datetime.fromtimestamp(clock(), UTC)
    assert [(row.id[-1], d.policy) for row, d in plan(studio.archive, settings, now)] == [
        ("1", "default 30 d"),
        ("3", "default 30 d"),
    ]
    early = datetime(2024, 4, 1, 9, tzinfo=UTC)  # day 1 is due since 31 March; day 3 not until 2 April
    assert [row.id[-1] for row, _ in plan(studio.archive, settings, early)] == ["1"]


def test_a_hold_placed_after_the_plan_still_wins(clocked: tuple[Studio, Clock]) -> None:
    studio, clock = clocked
    studio.store(rec_id(1, 8, 1), number="5550101")
    settings = RetentionSettings(default_days=7)
    [(row, decision)] = list(plan(studio.archive, settings, datetime.fromtimestamp(clock(), UTC)))
    annotate.place_hold(studio.archive, kind="caller", value="555-0101", reason="subpoena", by="legal")
    assert purge_one(studio.archive, row, decision, actor="cron") is None
    assert studio.archive.has(row.id) and Path(row.path).exists()


def test_a_purge_cut_short_is_finished_by_the_next_one(clocked: tuple[Studio, Clock]) -> None:
    studio, clock = clocked
    row = studio.store(rec_id(1, 8, 1), number="5550101")
    Path(row.path).unlink()  # as if a crash came after the first file was shredded
    done = Purge(studio.archive, RetentionSettings(default_days=7), "cron").run(datetime.fromtimestamp(clock(), UTC))
    assert [(p.id, p.files) for p in done] == [(row.id, 1)]
    assert not studio.archive.has(row.id)
    assert not Path(row.manifest_path).exists()


def test_nothing_is_due_when_every_class_keeps_forever(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    conf = site.tmp / "forever.toml"
    identity = site.tmp / "identity.txt"
    conf.write_text(f'[agent]\nidentity = "{identity}"\narchive_dir = "{site.root}"\n[retention]\ndefault_days = 0\n')
    assert agent_main(["--config", str(conf), "purge"]) == 0
    assert capsys.readouterr().out == "0 recording(s) purged: nothing is due\n"
    with Archive(site.root) as archive:
        assert len(list(archive.calls())) == 14


def test_a_purged_recording_sent_again_is_answered_stored_and_not_archived_again(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its device never had the ack (offline since), so it sends the whole recording again after the purge.
    again = site.temp.seal(site.target, number=TARGET_NUMBER, name=TARGET_NAME, original=True, size=20_000)
    ciphertext = again.audio + again.original
    assert agent_main(["--config", str(site.conf), "purge"]) == 0
    capsys.readouterr()
    device, rid = site.temp.device, site.target
    messages = [
        (topics.manifest(device, rid), again.doc),
        *[
            (topics.chunk(device, rid, n), encode_chunk(offset, ciphertext[offset : offset + 8192]))
            for n, offset in enumerate(range(0, len(ciphertext), 8192))
        ],
        (topics.fin(device, rid), encode_fin(Fin(len(ciphertext), hashlib.sha256(ciphertext).hexdigest()))),
    ]
    with Archive(site.root) as archive:
        ingest = Ingest(archive=archive, identities=site.temp.identities, broker=config.load(site.conf).mqtt)
        acks = [decode_ack(body) for topic, payload in messages for _, body in ingest.handle(topic, payload)]
        assert [a.status for a in acks] == [AckStatus.STORED, AckStatus.STORED]  # the manifest's and the fin's
        assert not archive.has(rid) and archive.purged_from(rid) == device
        assert list(archive.incoming_dir.rglob("*")) == []
    assert found_in(site.root, needles(site, rid)) == []
