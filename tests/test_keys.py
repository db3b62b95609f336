"""Key rotation on a real archive: rotate, list, rewrap, retire, and verification after a rewrap.

The archive holds real recordings (the device's recorder, the agent's ingest),
the ``age`` tool checks the rewrapped files, and the archive's own verification
(:class:`agent.integrity.Verifier` with the rewrap check) checks them against
their signed manifests. Deployment to devices is in ``tests/test_deploy.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from agent.archive import Archive
from agent.config import AgentConfig, AgentSettings
from agent.errors import AgentError, NotFound
from agent.export import add_export_parser, cmd_export
from agent.integrity import Verifier
from agent.keyring import KeyPaths, Keyring, load_identities, signing_key
from agent.keys import add_keys_parser, cmd_keys
from agent.rewrap import files_of, headers, rewrap_check
from firmware.calls import Call, CallState, HangupCause
from firmware.config import ArchiveSettings
from firmware.config import parse as parse_device_config
from firmware.recorder import CallRecorder
from firmware.wire import age
from firmware.wire.errors import AgeError, ConfigError
from tests.support.broker import Mosquitto
from tests.support.device_calls import PLAIN, RATE, T0, Device, deliver, identity_file, noise, ramp

needs_age = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is installed by make test")
DEVICE = "pi-test"


@dataclass
class Station:
    """An agent with an archive of real calls made by one device, all to the first identity."""

    root: Path
    cfg: AgentConfig
    device: Device
    first: str  # the identity the archived calls were encrypted to
    ids: dict[str, str]

    @property
    def paths(self) -> KeyPaths:
        return KeyPaths.from_config(self.cfg)

    def archive(self) -> Archive:
        return Archive(self.cfg.agent.archive_dir)

    def run(self, *argv: str, actor: str = "tester") -> int:
        parser = argparse.ArgumentParser(prog="linerec-agent")
        sub = parser.add_subparsers(dest="command", required=True)
        add_keys_parser(sub)
        add_export_parser(sub)
        args = parser.parse_args(list(argv))
        handler = {"keys": cmd_keys, "export": cmd_export}[args.command]
        return handler(self.cfg, args, actor=actor)

    def verify(self) -> dict[str, list[str]]:
        """What the archive's verification, with the rewrap check, finds wrong with each call."""
        keys = load_identities(self.cfg)
        agent_key = signing_key(self.paths).public_key()
        with self.archive() as archive:
            verifier = Verifier(archive, keys, rewrapped=rewrap_check(archive, agent_key, keys))
            return {row.id: [p.message for p in verifier.check(row)] for row in verifier.rows()}

    def all_verify(self) -> bool:
        return all(not problems for problems in self.verify().values())

    def record_and_deliver(self, samples: NDArray[np.int16], t0: float) -> str:
        rec_id = self.device.record(samples, t0=t0)
        with self.archive() as archive:
            deliver(self.device, archive, load_identities(self.cfg))
        return rec_id


def make_station(root: Path, broker: Mosquitto | None = None) -> Station:
    first = identity_file(root / "identity.txt")
    settings = AgentSettings(identity=root / "identity.txt", archive_dir=root / "archive")
    cfg = AgentConfig(agent=settings) if broker is None else AgentConfig(agent=settings, mqtt=broker.settings)
    device = Device.make(root, (age.recipient_of(first),), device_id=DEVICE, keep_original=True, preroll_s=0.0)
    ids = {"kept": device.record(noise(3 * RATE))}
    ids["crashed"] = device.with_audio(**PLAIN).crash(ramp(3 * RATE, 99), t0=T0 + 100)
    missed = Call(CallState.ENDED, ring_count=4, first_ring_at=T0 + 300, ended_at=T0 + 330)
    recorder = CallRecorder(config=device.config, spool=device.spool, signing_key=device.key, sample_rate=RATE)
    ids["missed"] = recorder.finish(replace(missed, hangup_cause=HangupCause.UNANSWERED))
    with Archive(cfg.agent.archive_dir) as archive:
        deliver(device, archive, [age.parse_identity(first)])
    return Station(root, cfg, device, first, ids)


@pytest.fixture
def station(tmp_path: Path) -> Station:
    return make_station(tmp_path)


def rotate(s: Station, capsys: pytest.CaptureFixture[str]) -> str:
    """Rotate; the new identity (its recipient is what the command printed)."""
    capsys.readouterr()
    assert s.run("keys", "rotate") == 0
    recipient = capsys.readouterr().out.strip()
    assert Keyring(s.paths).current().recipient == recipient
    [identity] = [line for line in s.paths.identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1")]
    assert age.recipient_of(identity) == recipient
    return identity


def new_recordings_to(s: Station, identity: str) -> Device:
    device = replace(
        s.device, config=replace(s.device.config, archive=ArchiveSettings(recipients=(age.recipient_of(identity),)))
    )
    s.device = device
    return device


def plaintexts(s: Station) -> dict[str, bytes]:
    """Every archived file of every call, decrypted with every identity held (segment logs per segment)."""
    keys = load_identities(s.cfg)
    found = {}
    with s.archive() as archive:
        for row in archive.calls():
            for role, path in files_of(row):
                found[f"{row.id}/{role}"] = decrypt_any(path, keys)
    return found


def decrypt_any(path: Path, keys: Sequence[age.Identity]) -> bytes:
    if not path.name.endswith(".segments"):
        return age.decrypt_bytes(path.read_bytes(), keys)
    from firmware.wire import segments  # noqa: PLC0415

    with path.open("rb") as f:
        return b"".join(segments.plaintext(f, path.stat().st_size, keys))


# --- rotation and listing ------------------------------------------------------------------------


def test_rotation_keeps_the_old_identity_so_old_and_new_recordings_both_export(
    station: Station, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = station
    new = rotate(s, capsys)
    assert (s.root / "identity.txt").stat().st_mode & 0o777 == 0o600
    [kept] = Keyring(s.paths).kept_files()
    assert kept.parent == s.root / "identities"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert age.load_identities(kept)[0].private_bytes_raw() == age.parse_identity(s.first).private_bytes_raw()
    assert [h.current for h in Keyring(s.paths).held()] == [True, False]

    new_recordings_to(s, new)
    s.ids["new"] = s.record_and_deliver(ramp(2 * RATE, 5), T0 + 200)
    for name, rec_id in s.ids.items():
        if name == "missed":
            continue
        out = tmp_path / f"{name}.wav"
        assert s.run("export", rec_id, str(out)) == 0
        assert sf.info(str(out)).frames > 0

    capsys.readouterr()
    assert s.run("keys", "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(i["recipient"], i["current"], i["recordings"]) for i in listed] == [
        (age.recipient_of(new), True, 1),
        (age.recipient_of(s.first), False, 3),
    ]
    assert s.run("keys", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{age.recipient_of(new)}  current  opens      1 recordings  {s.root / 'identity.txt'}"
    assert lines[1] == f"{age.recipient_of(s.first)}  kept     opens      3 recordings  {kept}"

    third = rotate(s, capsys)
    held = Keyring(s.paths).held()
    assert held[0].recipient == age.recipient_of(third)
    assert {h.recipient for h in held[1:]} == {age.recipient_of(new), age.recipient_of(s.first)}
    assert len(Keyring(s.paths).kept_files()) == 2


def test_rotation_without_an_identity_is_one_clear_error(tmp_path: Path) -> None:
    cfg = AgentConfig(agent=AgentSettings(identity=tmp_path / "none.txt", archive_dir=tmp_path / "archive"))
    with pytest.raises(AgentError) as info:
        Keyring(KeyPaths.from_config(cfg)).rotate()
    assert str(info.value) == (
        f"there is no archive identity at {tmp_path / 'none.txt'}; make one with `linerec-agent keygen --out`"
    )


def test_the_agent_key_is_made_once_privately_and_printed_as_the_device_config_line(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    s = station
    assert s.run("keys", "show-agent") == 0
    line = capsys.readouterr().out
    assert s.paths.signing_key.stat().st_mode & 0o777 == 0o600
    assert s.run("keys", "show-agent") == 0
    assert capsys.readouterr().out == line
    recipient = age.recipient_of(s.first)
    text = f'[device]\nid = "{DEVICE}"\n[archive]\nrecipients = ["{recipient}"]\n{line}'
    config = parse_device_config(tomllib.loads(text))
    assert config.archive.agent_key == line.split('"')[1]


@pytest.mark.parametrize("value", ["ed25519:nope", "ssh-ed25519 AAAA", "", "ed25519:" + "A" * 44])
def test_a_device_config_with_a_bad_agent_key_says_what_is_expected(value: str) -> None:
    recipient = age.recipient_of(age.generate_identity())
    data = {"device": {"id": DEVICE}, "archive": {"recipients": [recipient], "agent_key": value}}
    with pytest.raises(ConfigError) as info:
        parse_device_config(data)
    assert str(info.value) == (
        f"<config>: archive.agent_key is {value!r}; expected ed25519:<base64 of 32 bytes>,"
        " as `linerec-agent keys show-agent` prints it"
    )


# --- rewrap, verify, retire ---------------------------------------------------------------------------


@needs_age
def test_rewrap_moves_every_file_to_the_new_identity_alone_and_keeps_what_it_holds(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    s = station
    before = plaintexts(s)
    new = rotate(s, capsys)
    assert s.run("keys", "rewrap", "--progress") == 0
    out, err = capsys.readouterr()
    assert out == f"rewrapped 8 files of 3 calls to {age.recipient_of(new)}; 0 were already for it; 0 calls failed\n"
    assert err.splitlines()[-1].startswith("[3/3] ")

    new_key, old_key = age.parse_identity(new), age.parse_identity(s.first)
    identity_files = {"new": s.root / "identity.txt", "old": next(iter(Keyring(s.paths).kept_files()))}
    with s.archive() as archive:
        for row in archive.calls():
            for role, path in files_of(row):
                found = headers(path)
                assert found and all(len(h.stanzas) == 1 and h.opens_with(new_key) for h in found)
                assert decrypt_any(path, [new_key]) == before[f"{row.id}/{role}"]
                with pytest.raises(AgeError, match="no identity matches any recipient"):
                    decrypt_any(path, [old_key])
                if path.name.endswith(".age"):
                    done = subprocess.run(
                        ["age", "-d", "-i", str(identity_files["new"]), str(path)], capture_output=True, check=False
                    )
                    assert done.returncode == 0, done.stderr
                    assert done.stdout == before[f"{row.id}/{role}"]
                    refused = subprocess.run(
                        ["age", "-d", "-i", str(identity_files["old"]), str(path)], capture_output=True, check=False
                    )
                    assert refused.returncode != 0
                    assert b"no identity matched any of the recipients" in refused.stderr

    assert s.verify() == {rec_id: [] for rec_id in s.ids.values()}
    assert s.run("keys", "rewrap") == 0
    assert capsys.readouterr().out == (
        f"rewrapped 0 files of 3 calls to {age.recipient_of(new)}; 8 were already for it; 0 calls failed\n"
    )
    crashed = s.root / "crashed.wav"
    assert s.run("export", s.ids["crashed"], str(crashed)) == 0
    assert np.array_equal(sf.read(crashed, dtype="int16")[0], ramp(3 * RATE, 99)[: sf.info(str(crashed)).frames])


def test_verification_after_a_rewrap_still_catches_a_changed_payload_or_record(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    s = station
    new = rotate(s, capsys)
    assert s.run("keys", "rewrap") == 0
    new_recordings_to(s, new)
    s.ids["new"] = s.record_and_deliver(ramp(2 * RATE, 5), T0 + 200)
    with s.archive() as archive:
        rows = {name: archive.get(rec_id) for name, rec_id in s.ids.items()}
    flip(Path(rows["kept"].path), -100)  # rewrapped: checked through its payload record
    flip(Path(rows["new"].path), -100)  # never rewrapped: checked against the manifest directly
    flip(Path(rows["crashed"].path), -50)  # a segment log, rewrapped
    altered = "recording file's payload was altered since it was checked against its signed manifest"
    assert s.verify() == {
        s.ids["kept"]: [altered],
        s.ids["crashed"]: [altered],
        s.ids["new"]: ["recording file does not match the SHA-256 in its signed manifest"],
        s.ids["missed"]: [],
    }
    flip(Path(rows["kept"].path), -100)  # back as it was
    with sqlite3.connect(s.cfg.agent.database_path) as db:
        db.execute(
            "UPDATE payload_digests SET payload_sha256 = ? WHERE rec_id = ? AND role = ?",
            ("0" * 64, s.ids["kept"], "recording"),
        )
    assert s.verify()[s.ids["kept"]] == [
        "recording file was rewrapped, but its payload record is not signed by this agent's key"
    ]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_rewrap_cut_short_by_a_crash_leaves_every_file_verifiable_and_can_be_run_again(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    s = station
    with s.archive() as archive:
        row = archive.get(s.ids["kept"])
    as_sent = Path(row.path).read_bytes()
    new = rotate(s, capsys)
    assert s.run("keys", "rewrap") == 0
    # The crash came after the payload was recorded but before the rename: the file is as the device sent it.
    Path(row.path).write_bytes(as_sent)
    Path(row.path).with_name(f".{Path(row.path).name}.rewrap").write_bytes(b"half a file")
    assert s.all_verify()
    capsys.readouterr()
    assert s.run("keys", "rewrap") == 0
    assert capsys.readouterr().out.startswith("rewrapped 1 files of 3 calls")
    assert s.all_verify()
    assert headers(Path(row.path))[0].opens_with(age.parse_identity(new))
    assert not Path(row.path).with_name(f".{Path(row.path).name}.rewrap").exists()


def test_a_file_that_does_not_match_its_manifest_is_not_rewrapped(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    s = station
    with s.archive() as archive:
        row = archive.get(s.ids["kept"])
    flip(Path(row.path), -10)
    tampered = Path(row.path).read_bytes()
    rotate(s, capsys)
    assert s.run("keys", "rewrap") == 1
    out, err = capsys.readouterr()
    assert out.endswith("; 1 calls failed\n")
    assert err == (
        f"linerec-agent: not rewrapped: {row.id}: the recording file {Path(row.path).name} does not match the"
        " SHA-256 in its signed manifest; left as it is\n"
    )
    assert Path(row.path).read_bytes() == tampered


def test_an_identity_is_retired_only_once_nothing_needs_it(
    station: Station, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = station
    old = age.recipient_of(s.first)
    with pytest.raises(AgentError) as info:
        s.run("keys", "retire", old)
    assert str(info.value) == f"{old} is the current archive identity; rotate to a new one before retiring it"
    rotate(s, capsys)
    with pytest.raises(AgentError) as info:
        s.run("keys", "retire", old)
    assert str(info.value).startswith(f"identity {old} is still the only one that opens 8 archived files (")
    assert str(info.value).endswith("); run `linerec-agent keys rewrap` first")
    with pytest.raises(NotFound, match=r"^no archive identity 'age1nothing' is held; the agent holds age1"):
        s.run("keys", "retire", "age1nothing")

    assert s.run("keys", "rewrap") == 0
    with s.archive() as archive:
        archive.note_status(DEVICE, {"state": "online", "recipients": [old]})
    with pytest.raises(AgentError) as info:
        s.run("keys", "retire", old)
    assert str(info.value) == (
        f"identity {old} may still be in use by the devices {DEVICE}; run `linerec-agent keys deploy`"
        " and wait for their status to show the new recipients"
    )
    with s.archive() as archive:
        archive.note_status(DEVICE, {"state": "online", "recipients": [Keyring(s.paths).current().recipient]})
    [kept] = Keyring(s.paths).kept_files()
    capsys.readouterr()
    assert s.run("keys", "retire", old) == 0
    assert capsys.readouterr().out == f"retired {old}: moved to {s.root / 'identities' / 'retired' / kept.name}\n"
    assert [h.recipient for h in Keyring(s.paths).held()] == [Keyring(s.paths).current().recipient]
    for name, rec_id in s.ids.items():
        if name == "missed":
            continue
        assert s.run("export", rec_id, str(tmp_path / f"{rec_id}.flac")) == 0
    assert s.all_verify()

    second = age.recipient_of(rotate(s, capsys))
    assert s.run("keys", "rewrap") == 0
    with s.archive() as archive:
        archive.note_status(DEVICE, {"state": "online", "recipients": [second]})
    [kept] = Keyring(s.paths).kept_files()
    capsys.readouterr()
    assert s.run("keys", "retire", kept.name, "--delete") == 0
    assert capsys.readouterr().out.endswith(": deleted\n")
    assert not kept.exists()
    assert [h.recipient for h in Keyring(s.paths).held()] == [second]
