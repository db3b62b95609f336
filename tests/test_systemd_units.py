"""The units as installed: clean under ``systemd-analyze verify``, and hardened as ``security`` scores them.

``verify`` insists that ExecStart's program exists and loads the units the
checked one depends on, so the units are checked where ``scripts/install.sh``
stages them (``DESTDIR``, with the launchers), with this machine's own units
copied beside them, through ``--root``. ``verify`` only warns about unknown
keys, with exit status 0, so any output on stderr is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("linerec.service", "linerec-agent.service", "linerec-agent-web.service", "linerec-agent-purge.service")
UNITS = (*SERVICES, "linerec-agent-purge.timer")
UNIT_DIR = "usr/local/lib/systemd/system"
# systemd-analyze security: 0 is fully locked down, 10 fully exposed.
LIMITS = {
    "linerec.service": 4.0,
    "linerec-agent.service": 2.5,
    "linerec-agent-web.service": 2.5,
    "linerec-agent-purge.service": 2.5,
}


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed; it ships in the systemd package")
    return tool


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both parts installed under a DESTDIR (with a space in it), beside a copy of this machine's units."""
    root = tmp_path_factory.mktemp("units") / "stage root"
    env = {**os.environ, "DESTDIR": str(root), "PARTS": "device agent", "BUILD_VENV": "0"}
    subprocess.run([str(ROOT / "scripts" / "install.sh")], env=env, check=True, capture_output=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze(), "verify", f"--root={root}", unit], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("unit", UNITS)
def test_every_installed_unit_verifies_with_nothing_on_stderr(staged: Path, unit: str) -> None:
    done = verify(staged, unit)
    assert (done.returncode, done.stderr) == (0, "")
    # What was checked is what the repository ships.
    assert (staged / UNIT_DIR / unit).read_text() == (ROOT / "systemd" / unit).read_text()


def test_verify_does_catch_a_bad_key_and_a_missing_program(staged: Path) -> None:
    text = (staged / UNIT_DIR / "linerec.service").read_text()
    broken = staged / UNIT_DIR / "linerec-broken.service"
    broken.write_text(text.replace("WatchdogSec=", "WatchdogSecs=").replace("/bin/linerec ", "/bin/linerecd "))
    try:
        done = verify(staged, broken.name)
    finally:
        broken.unlink()
    assert "Unknown key 'WatchdogSecs' in section [Service], ignoring." in done.stderr
    assert "Command /opt/linerec/bin/linerecd is not executable: No such file or directory" in done.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_exposure_is_within_the_limit_for_its_kind_of_unit(unit: str) -> None:
    limit = LIMITS[unit]
    done = subprocess.run(
        # --threshold is in tenths: the exit status is not 0 above it.
        [analyze(), "security", "--offline=true", f"--threshold={round(limit * 10)}", str(ROOT / "systemd" / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= limit
    assert done.returncode == 0


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, a key's values in order (keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_device_unit_is_a_watched_notify_service_that_still_reaches_gpio_sound_and_serial() -> None:
    unit = settings("linerec.service")
    assert unit["Type"] == ["notify"]
    assert unit["WatchdogSec"] == ["60s"]
    assert unit["Restart"] == ["always"]
    assert unit["User"] == ["linerec"]
    assert unit["SupplementaryGroups"] == ["gpio audio dialout"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["linerec"]
    # Devices by allow list: PrivateDevices= would hide /dev/gpiochip*, /dev/snd and /dev/ttyACM*.
    assert "PrivateDevices" not in unit
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["DeviceAllow"] == [
        "char-gpiochip rw",
        "char-*gpiomem* rw",
        "char-alsa rw",
        "char-ttyACM rw",
        "char-ttyUSB rw",
    ]


@pytest.mark.parametrize(("unit", "verb"), [("linerec-agent.service", "run"), ("linerec-agent-web.service", "serve")])
def test_the_agent_units_start_the_agent_commands_with_no_devices(unit: str, verb: str) -> None:
    found = settings(unit)
    assert found["Type"] == ["exec"]
    assert found["ExecStart"] == [f"/opt/linerec/bin/linerec-agent --config /etc/linerec/agent.toml {verb}"]
    assert found["User"] == ["linerec-agent"]
    assert found["PrivateDevices"] == ["yes"]
    assert found["StateDirectory"] == ["linerec-agent"]


def test_the_purge_runs_once_a_day_as_the_agent_user_and_catches_up_after_downtime() -> None:
    timer, service = settings("linerec-agent-purge.timer"), settings("linerec-agent-purge.service")
    assert (timer["OnCalendar"], timer["Persistent"], timer["WantedBy"]) == (["daily"], ["true"], ["timers.target"])
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [
        "/opt/linerec/bin/linerec-agent --config /etc/linerec/agent.toml --as retention purge"
    ]
    assert (service["User"], service["StateDirectory"]) == (["linerec-agent"], ["linerec-agent"])
    assert "WantedBy" not in service  # started by its timer only, never at boot on its own
