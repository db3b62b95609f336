"""``linerec status`` and the status file the service keeps for it, after real calls on the simulated line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from firmware import status
from firmware.cli import main as device_main
from firmware.config import ArchiveSettings, DeviceConfig, DeviceSettings
from firmware.line.script import scenario
from firmware.line.sim import SimLine
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.status import StatusFile, describe_service, parse_show, service_state
from firmware.watchdog import Health, LineWatch, Verdict
from firmware.wire import age
from firmware.wire.signing import load_or_create_signing_key

RECIPIENT = age.recipient_of(age.generate_identity())
NO_SYSTEMD = {"systemd": False, "summary": "not running under systemd"}


def config_in(folder: Path) -> tuple[DeviceConfig, Path]:
    conf = folder / "device.toml"
    conf.write_text(
        f'[device]\nid = "pi-s"\nstate_dir = "{folder / "state"}"\n[archive]\nrecipients = ["{RECIPIENT}"]\n'
    )
    return DeviceConfig(
        device=DeviceSettings(id="pi-s", state_dir=folder / "state"),
        archive=ArchiveSettings(recipients=(RECIPIENT,)),
    ), conf


def serve(config: DeviceConfig, *names: str) -> StatusFile:
    """Run the real service over the named scenarios, one after another, with its status file wired up."""
    config.device.state_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool = Spool(config.device.spool_dir)
    file = StatusFile(status.status_path(config), device_id="pi-s", line="sim", line_name="line1")
    calls = [call for name in names for call in scenario(name)]
    line = SimLine(calls, start_time=1_790_000_000.0, seed=3)
    services: list[DeviceService] = []
    with line:
        services.append(
            DeviceService(
                config=config,
                backend=line,
                spool=spool,
                signing_key=key,
                watch=LineWatch(),
                on_status=lambda: file.update(facts=services[0].status_facts()),
            )
        )
        services[0].run()
    return file


def test_the_status_file_keeps_the_last_calls_newest_first_across_a_restart(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    serve(config, "us-basic", "missed")
    doc = json.loads(status.status_path(config).read_text())
    assert [(c["answered"], c["hangup_cause"]) for c in doc["last_calls"]] == [
        (False, "unanswered"),
        (True, "remote-loop-drop"),
    ]
    assert doc["line_state"] == "idle"
    # A new process starts from the calls the last one saw.
    again = StatusFile(status.status_path(config), device_id="pi-s", line="sim", line_name="line1")
    again.update(verdict=Verdict(("main loop",), ()))
    doc = json.loads(status.status_path(config).read_text())
    assert len(doc["last_calls"]) == 2
    assert doc["health"]["summary"] == "healthy (main loop)"
    again.stopped()
    doc = json.loads(status.status_path(config).read_text())
    assert doc["health"] is None
    assert doc["stopped_at"] is not None


def test_at_most_ten_calls_are_kept(tmp_path: Path) -> None:
    file = StatusFile(tmp_path / "status.json", device_id="pi-s", line="sim", line_name="line1")
    for n in range(12):
        file.update(facts={"line_state": "idle", "last_call": {"started_at": f"2025-01-01T00:00:{n:02d}.000Z"}})
    file.update(facts={"line_state": "ringing", "last_call": {"started_at": "2025-01-01T00:00:11.000Z"}})
    doc = json.loads((tmp_path / "status.json").read_text())
    assert [c["started_at"][-7:-5] for c in doc["last_calls"]] == [f"{n:02d}" for n in range(11, 1, -1)]
    assert doc["line_state"] == "ringing"


def test_a_status_file_that_cannot_be_written_is_one_log_line_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = StatusFile(tmp_path / "gone" / "status.json", device_id="pi-s", line="sim", line_name="line1")
    with caplog.at_level(logging.ERROR, logger="linerec.status"):
        file.update(facts={"line_state": "idle"})
        file.update(facts={"line_state": "ringing"})
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot write the status file {tmp_path / 'gone' / 'status.json'}: No such file or directory"
    ]


def test_status_reports_calls_spool_and_disk_after_real_calls(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    file = serve(config, "us-basic", "missed")
    file.update(verdict=Health().verdict())
    report = status.gather(config, service=lambda: NO_SYSTEMD)
    spool = Spool(config.device.spool_dir)
    assert report["spool"]["waiting"] == spool.depth() == 2
    on_disk = sum(f.stat().st_size for f in spool.outbox.rglob("*") if f.is_file())
    assert report["spool"]["waiting_bytes"] == on_disk > spool.bytes_pending()  # manifests take room too
    assert report["spool"]["oldest_waiting"] == spool.pending()[0].rec_id
    lines = status.render(report)
    assert lines[0] == "service:  not running under systemd"
    assert lines[1].startswith("health:   healthy (nothing watched) (as of ")
    assert lines[2] == "line:     line1 (sim): idle"
    assert lines[3] == "calls:    last first"
    assert lines[4].endswith("  missed, 4 rings; ended by unanswered")
    assert " answered, " in lines[5]
    assert lines[5].endswith("ended by remote-loop-drop")
    assert lines[6].startswith("spool:    2 recordings waiting (")
    assert lines[6].endswith("); 0 rejected; 0 being written")
    assert lines[7].startswith("disk:     ")
    assert lines[7].endswith(f" on {config.device.state_dir}")


def test_status_on_a_device_that_never_ran_says_what_is_missing(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    lines = status.render(status.gather(config, service=lambda: NO_SYSTEMD))
    path = config.device.state_dir / "status.json"
    assert lines[1:] == [
        f"line:     line1 (sim): state unknown; the service has not written {path} yet",
        "calls:    none yet",
        f"spool:    there is no spool at {config.device.spool_dir} yet",
        lines[-1],
    ]
    assert lines[-1].startswith("disk:     ") and lines[-1].endswith(f" on {tmp_path}")


def test_a_status_file_that_is_not_json_is_reported_not_raised(tmp_path: Path) -> None:
    config, _ = config_in(tmp_path)
    config.device.state_dir.mkdir()
    (config.device.state_dir / "status.json").write_text("{half")
    report = status.gather(config, service=lambda: NO_SYSTEMD)
    assert report["device"]["status_problem"] == (
        f"{config.device.state_dir / 'status.json'} is not a status file linerec wrote (not JSON)"
    )


def test_linerec_status_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, conf = config_in(tmp_path)
    serve(config, "us-basic")
    assert device_main(["status", "--config", str(conf), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"]["id"] == "pi-s"
    assert report["device"]["line_state"] == "idle"
    assert report["last_calls"][0]["answered"] is True
    assert report["spool"]["waiting"] == 1
    assert set(report) == {"service", "device", "health", "last_calls", "spool", "disk"}


def test_without_systemd_as_init_the_service_state_says_so(tmp_path: Path) -> None:
    assert service_state(runtime=tmp_path / "no-systemd") == NO_SYSTEMD


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl ships in the systemd package")
def test_a_systemctl_that_cannot_answer_is_reported_in_one_line(tmp_path: Path) -> None:
    # A directory where systemd's runtime directory would be, on a machine where systemd is not init.
    state = service_state(runtime=tmp_path)
    assert state["systemd"] is True
    if Path("/run/systemd/system").is_dir():
        assert state["LoadState"] in ("loaded", "not-found")
    else:
        assert str(state["summary"]).startswith("systemctl could not be asked: ")


SHOW = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
UnitFileState=enabled
MainPID=812
NRestarts=2
ExecMainStartTimestamp=Sat 2025-06-07 10:00:01 BST
StatusText=healthy (main loop, line, capture, uplink); broker connected
"""


def test_systemctl_show_is_summarised_in_one_line() -> None:
    props = parse_show(SHOW)
    assert props["StatusText"] == "healthy (main loop, line, capture, uplink); broker connected"
    assert describe_service(props) == "active (running) since Sat 2025-06-07 10:00:01 BST; 2 restarts; pid 812"
    failed = {**props, "ActiveState": "activating", "SubState": "auto-restart", "MainPID": "0", "Result": "watchdog"}
    assert describe_service(failed) == (
        "activating (auto-restart) since Sat 2025-06-07 10:00:01 BST; 2 restarts; last result watchdog"
    )
    assert describe_service({"LoadState": "not-found"}) == "not installed (no linerec.service unit)"
