"""The two commands as a person runs them: one line on stderr and a non-zero exit for every mistake."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main as agent_main
from firmware.cli import main as device_main
from firmware.wire import age
from firmware.wire.signing import load_or_create_signing_key, public_key_text


def agent_conf(tmp_path: Path, identity: Path) -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\nidentity = "{identity}"\narchive_dir = "{tmp_path / "archive"}"\n')
    return conf


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_keygen_writes_a_private_identity_and_prints_its_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "identity.txt"
    assert agent_main(["keygen", "--out", str(out)]) == 0
    recipient = capsys.readouterr().out.strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    identities = age.load_identities(out)
    assert len(identities) == 1
    assert re.fullmatch(r"age1[02-9ac-hj-np-z]{58}", recipient)
    assert age.decrypt_bytes(age.encrypt_bytes(b"hello", [recipient]), identities) == b"hello"


def test_keygen_never_overwrites_an_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "identity.txt"
    out.write_text("precious\n")
    assert agent_main(["keygen", "--out", str(out)]) == 1
    assert one_error_line(capsys) == (
        f"linerec-agent: error: {out} already exists; an archive identity is never overwritten"
    )
    assert out.read_text() == "precious\n"


@pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is installed by make test")
def test_keygen_identity_works_with_the_age_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "identity.txt"
    agent_main(["keygen", "--out", str(out)])
    recipient = capsys.readouterr().out.strip()
    sealed = subprocess.run(["age", "-e", "-r", recipient], input=b"call", capture_output=True, check=True)
    opened = subprocess.run(["age", "-d", "-i", str(out)], input=sealed.stdout, capture_output=True, check=True)
    assert opened.stdout == b"call"


def test_devices_add_pins_the_key_and_refuses_a_different_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = agent_conf(tmp_path, tmp_path / "identity.txt")
    key = public_key_text(load_or_create_signing_key(tmp_path / "a.key"))
    other = public_key_text(load_or_create_signing_key(tmp_path / "b.key"))
    assert agent_main(["--config", str(conf), "devices", "add", "pi-1", key]) == 0
    assert agent_main(["--config", str(conf), "devices", "add", "pi-1", key]) == 0
    capsys.readouterr()
    assert agent_main(["--config", str(conf), "devices", "add", "pi-1", other]) == 1
    assert "pi-1" in one_error_line(capsys)
    assert agent_main(["--config", str(conf), "devices", "list", "--json"]) == 0
    devices = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["id"], d["public_key"]) for d in devices] == [("pi-1", key)]


def test_devices_add_rejects_a_malformed_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = agent_conf(tmp_path, tmp_path / "identity.txt")
    assert agent_main(["--config", str(conf), "devices", "add", "pi-1", "ed25519:AAAA"]) == 1
    assert one_error_line(capsys).startswith("linerec-agent: error: ")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "there is no archive identity at"),
        ("not an identity\n", "line 1"),
        ("", "holds no"),
    ],
)
def test_agent_run_with_a_bad_identity_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fragment: str
) -> None:
    identity = tmp_path / "identity.txt"
    if content is not None:
        identity.write_text(content)
    conf = agent_conf(tmp_path, identity)
    assert agent_main(["--config", str(conf), "run"]) == 1
    line = one_error_line(capsys)
    assert line.startswith("linerec-agent: error: ")
    assert str(identity) in line
    assert fragment in line
    assert not re.search(r"AGE-SECRET-KEY-1[0-9A-Z]{10}", line)


def test_export_of_an_unknown_recording_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text(age.generate_identity() + "\n")
    conf = agent_conf(tmp_path, identity)
    assert agent_main(["--config", str(conf), "export", "20261129T000000000Z-00000000", "x.wav"]) == 1
    assert "20261129T000000000Z-00000000" in one_error_line(capsys)


def test_device_keys_show_creates_a_private_key_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "device.toml"
    recipient = age.recipient_of(age.generate_identity())
    conf.write_text(f'[device]\nid = "pi-7"\nstate_dir = "state"\n[archive]\nrecipients = ["{recipient}"]\n')
    assert device_main(["keys", "show", "--config", str(conf)]) == 0
    first = capsys.readouterr().out.strip()
    assert device_main(["keys", "show", "--config", str(conf)]) == 0
    assert capsys.readouterr().out.strip() == first
    assert first.startswith("pi-7 ed25519:")
    assert stat.S_IMODE((tmp_path / "state" / "signing.key").stat().st_mode) == 0o600


def test_device_spool_lists_refused_recordings_and_sends_them_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware.spool import AUDIO_NAME, MANIFEST_NAME, Spool  # noqa: PLC0415

    conf = tmp_path / "device.toml"
    recipient = age.recipient_of(age.generate_identity())
    conf.write_text(f'[device]\nid = "pi-7"\nstate_dir = "state"\n[archive]\nrecipients = ["{recipient}"]\n')
    spool = Spool(tmp_path / "state" / "spool")
    ids = ["20240301T101500000Z-0000000a", "20240301T111500000Z-0000000b"]
    for rec_id in ids:
        folder = spool.begin(rec_id)
        (folder / MANIFEST_NAME).write_bytes(b"m")
        (folder / AUDIO_NAME).write_bytes(b"a")
        spool.seal(rec_id)
        spool.quarantine(rec_id, "device pi-7 is not enrolled")
    assert device_main(["spool", "rejected", "--json", "--config", str(conf)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"id": rec_id, "reason": "device pi-7 is not enrolled"} for rec_id in ids]
    assert device_main(["spool", "retry", "--config", str(conf)]) == 1
    assert (
        one_error_line(capsys) == "linerec: error: spool retry takes recording ids or --all, not both and not neither"
    )
    assert device_main(["spool", "retry", "--all", "--config", str(conf)]) == 0
    assert [r.rec_id for r in spool.pending()] == ids
    assert spool.rejected_recordings() == []
    assert device_main(["spool", "retry", ids[0], "--config", str(conf)]) == 1
    assert one_error_line(capsys).startswith(f"linerec: error: spool has no rejected recording {ids[0]} in ")


def test_device_refuses_a_line_it_cannot_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "device.toml"
    recipient = age.recipient_of(age.generate_identity())
    conf.write_text(f'[device]\nid = "pi-7"\nline = "gpio"\n[archive]\nrecipients = ["{recipient}"]\n')
    assert device_main(["run", "--config", str(conf)]) == 1
    line = one_error_line(capsys)
    assert line.startswith("linerec: error: GPIO is not available: ")
    assert line.endswith('(use device.line = "sim" to try linerec without hardware)')


@pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is installed by make test")
def test_demo_archives_three_calls_and_prints_a_working_age_command(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "firmware", "demo", "--calls", "3", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if re.match(r"\d{8}T\d{9}Z-", line)]
    assert len(rows) == 3
    assert sum(" yes " in r for r in rows) == 2
    assert any("(withheld)" in r for r in rows)
    assert any(" no " in r for r in rows)
    assert stat.S_IMODE((keep / "identity.txt").stat().st_mode) == 0o600
    assert (keep / "archive" / "index.sqlite").exists()
    ages = list((keep / "archive").rglob("*.age"))
    assert len(ages) == 6  # audio and manifest of each call
    command = next(line.strip() for line in run.stdout.splitlines() if line.strip().startswith("age -d"))
    argv = shlex.split(command)
    argv[argv.index("-o") + 1] = str(tmp_path / "call.flac")
    subprocess.run(argv, check=True)
    assert (tmp_path / "call.flac").read_bytes().startswith(b"fLaC")

    again = subprocess.run(
        [sys.executable, "-m", "firmware", "demo", "--calls", "1", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert len(list((keep / "archive").rglob("*.flac.age"))) == 1


def test_demo_refuses_to_clear_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    run = subprocess.run(
        [sys.executable, "-m", "firmware", "demo", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"linerec: error: --keep {tmp_path} is a folder with other files in it; name a new or empty folder"
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"
