"""``make install`` / ``make uninstall`` staged under DESTDIR: the tree they make, and what they keep.

Staging runs offline in a moment: ``BUILD_VENV=0`` leaves out the virtual
environment, which needs pip and the package index. The users and state
directories are made in the staged tree by the real ``systemd-sysusers`` and
``systemd-tmpfiles`` with ``--root``. Commands that would change this machine
(systemctl, useradd, apt-get, chown...) are shadowed on PATH by recorders, to
show that a staged install never calls them.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_CHANGERS = (
    "apt-get",
    "chown",
    "dpkg-query",
    "groupdel",
    "systemctl",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "useradd",
    "userdel",
)
BOTH = {
    "etc/linerec/agent.toml",
    "etc/linerec/device.toml",
    "opt/linerec/bin/linerec",
    "opt/linerec/bin/linerec-agent",
    "opt/linerec/share/doc/linerec/CHANGELOG.md",
    "opt/linerec/share/doc/linerec/README.md",
    "opt/linerec/share/linerec/examples/agent.toml",
    "opt/linerec/share/linerec/examples/device.toml",
    "opt/linerec/share/linerec/installed",
    "usr/local/bin/linerec",
    "usr/local/bin/linerec-agent",
    "usr/local/lib/systemd/system/linerec-agent-purge.service",
    "usr/local/lib/systemd/system/linerec-agent-purge.timer",
    "usr/local/lib/systemd/system/linerec-agent-web.service",
    "usr/local/lib/systemd/system/linerec-agent.service",
    "usr/local/lib/systemd/system/linerec.service",
    "usr/local/lib/sysusers.d/linerec-agent.conf",
    "usr/local/lib/sysusers.d/linerec.conf",
    "usr/local/lib/tmpfiles.d/linerec-agent.conf",
    "usr/local/lib/tmpfiles.d/linerec.conf",
}


@pytest.fixture
def spy(tmp_path: Path) -> Path:
    """A PATH directory whose system-changing commands only write their argv to ``calls.log``."""
    folder = tmp_path / "spy-bin"
    folder.mkdir()
    for name in SYSTEM_CHANGERS:
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >>"{tmp_path / "calls.log"}"\n')
        tool.chmod(0o755)
    return folder


def run_script(name: str, spy: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFIX", "SYSCONFDIR", "PARTS", "PURGE")}
    env.update(settings, PATH=f"{spy}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [str(ROOT / "scripts" / name)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def install(root: Path, spy: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    done = run_script("install.sh", spy, DESTDIR=str(root), BUILD_VENV="0", **settings)
    assert done.returncode == 0, done.stderr
    return done


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_staging_both_parts_makes_the_expected_tree_and_leaves_the_system_alone(tmp_path: Path, spy: Path) -> None:
    root = tmp_path / "stage with spaces"
    touched = [Path("/opt/linerec"), Path("/etc/linerec"), Path("/usr/local/lib/systemd/system/linerec.service")]
    before = [p.exists() for p in touched]
    done = install(root, spy, PARTS="device agent")
    assert tree(root) == BOTH
    assert not (tmp_path / "calls.log").exists()  # no systemctl, users, packages or chown
    assert [p.exists() for p in touched] == before
    assert done.stdout.splitlines()[-1] == f"install.sh: installed linerec 0.1.0 (device agent) in {root}/opt/linerec"

    for unit in (
        "linerec.service",
        "linerec-agent.service",
        "linerec-agent-web.service",
        "linerec-agent-purge.service",
        "linerec-agent-purge.timer",
    ):
        installed = root / "usr/local/lib/systemd/system" / unit
        assert installed.read_text() == (ROOT / "systemd" / unit).read_text()
        assert mode(installed) == 0o644
    for name in ("device.toml", "agent.toml"):
        assert (root / "etc/linerec" / name).read_text() == (ROOT / "examples" / name).read_text()
        assert mode(root / "etc/linerec" / name) == 0o640
    for name in ("linerec", "linerec-agent"):
        launcher = root / "opt/linerec/bin" / name
        assert mode(launcher) == 0o755
        assert launcher.read_text().splitlines()[-1] == f'exec /opt/linerec/venv/bin/{name} "$@"'
        assert (root / "usr/local/bin" / name).readlink() == Path(f"/opt/linerec/bin/{name}")
    record = (root / "opt/linerec/share/linerec/installed").read_text().splitlines()
    assert "VENV=skipped" in record
    assert "PARTS=device agent" in record
    assert not (root / "opt/linerec/venv").exists()


def test_the_device_part_alone_installs_no_agent(tmp_path: Path, spy: Path) -> None:
    install(tmp_path / "stage", spy)
    assert tree(tmp_path / "stage") == BOTH - {
        "etc/linerec/agent.toml",
        "opt/linerec/bin/linerec-agent",
        "usr/local/bin/linerec-agent",
        "usr/local/lib/systemd/system/linerec-agent-purge.service",
        "usr/local/lib/systemd/system/linerec-agent-purge.timer",
        "usr/local/lib/systemd/system/linerec-agent-web.service",
        "usr/local/lib/systemd/system/linerec-agent.service",
        "usr/local/lib/sysusers.d/linerec-agent.conf",
        "usr/local/lib/tmpfiles.d/linerec-agent.conf",
    }


def test_the_launcher_says_what_to_do_when_the_virtual_environment_is_missing(tmp_path: Path, spy: Path) -> None:
    prefix = f"/nonexistent-linerec-{os.getpid()}"
    install(tmp_path / "stage", spy, PREFIX=prefix)
    run = subprocess.run(
        [str(tmp_path / "stage" / prefix.lstrip("/") / "bin" / "linerec"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr == (
        f"linerec: {prefix}/venv is missing or incomplete; run 'sudo make install' in the linerec source\n"
    )


def test_prefix_and_sysconfdir_are_written_into_the_units(tmp_path: Path, spy: Path) -> None:
    install(tmp_path / "stage", spy, PREFIX="/srv/lr", SYSCONFDIR="/etc/lr", PARTS="device agent")
    device = (tmp_path / "stage/usr/local/lib/systemd/system/linerec.service").read_text()
    assert "ExecStart=/srv/lr/bin/linerec run --config /etc/lr/device.toml\n" in device
    assert "/opt/linerec" not in device
    web = (tmp_path / "stage/usr/local/lib/systemd/system/linerec-agent-web.service").read_text()
    assert "ExecStart=/srv/lr/bin/linerec-agent --config /etc/lr/agent.toml serve\n" in web
    assert (tmp_path / "stage/etc/lr/device.toml").is_file()


def test_an_existing_config_is_never_overwritten_and_installing_again_changes_nothing(
    tmp_path: Path, spy: Path
) -> None:
    root = tmp_path / "stage"
    (root / "etc/linerec").mkdir(parents=True)
    (root / "etc/linerec/device.toml").write_text("# mine\n")
    install(root, spy)
    first = {p: (root / p).read_bytes() for p in tree(root) if not (root / p).is_symlink()}
    again = install(root, spy)
    assert {p: (root / p).read_bytes() for p in tree(root) if not (root / p).is_symlink()} == first
    assert (root / "etc/linerec/device.toml").read_text() == "# mine\n"
    assert (
        "install.sh: kept /etc/linerec/device.toml; the current example is "
        "/opt/linerec/share/linerec/examples/device.toml"
    ) in again.stdout.splitlines()


def test_sysusers_and_tmpfiles_make_the_users_and_their_private_state_directories(tmp_path: Path, spy: Path) -> None:
    root = tmp_path / "stage"
    install(root, spy, PARTS="device agent")
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; it ships in the systemd package")
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create"], check=True, capture_output=True)
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    assert users["linerec"][5] == "/var/lib/linerec"
    assert users["linerec"][6].endswith("nologin")
    assert users["linerec-agent"][5] == "/var/lib/linerec-agent"
    for group in ("gpio", "audio", "dialout"):
        assert groups[group][3].split(",") == ["linerec"]
    for name in ("linerec", "linerec-agent"):
        state = (root / "var/lib" / name).stat()
        assert (stat.S_IMODE(state.st_mode), str(state.st_uid)) == (0o750, users[name][2])


def test_uninstall_removes_the_install_but_keeps_configs_and_recordings(tmp_path: Path, spy: Path) -> None:
    root = tmp_path / "stage with spaces"
    install(root, spy, PARTS="device agent")
    waiting = root / "var/lib/linerec/spool/outbox/20250101T000000000Z-0a1b2c3d/audio.age"
    waiting.parent.mkdir(parents=True)
    waiting.write_bytes(b"age-encryption.org/v1\n")
    done = run_script("uninstall.sh", spy, DESTDIR=str(root))
    assert done.returncode == 0, done.stderr
    assert tree(root) == {
        "etc/linerec/agent.toml",
        "etc/linerec/device.toml",
        "var/lib/linerec/spool/outbox/20250101T000000000Z-0a1b2c3d/audio.age",
    }
    assert done.stdout.splitlines()[-1] == (
        "uninstall.sh: kept /etc/linerec /var/lib/linerec (configs, keys and recordings); PURGE=1 removes them"
    )
    assert not (tmp_path / "calls.log").exists()

    purged = run_script("uninstall.sh", spy, DESTDIR=str(root), PURGE="1")
    assert purged.returncode == 0, purged.stderr
    assert tree(root) == set()


def test_uninstall_leaves_a_command_that_is_not_its_own(tmp_path: Path, spy: Path) -> None:
    root = tmp_path / "stage"
    install(root, spy)
    link = root / "usr/local/bin/linerec"
    link.unlink()
    link.symlink_to("/home/pi/.local/bin/linerec")
    assert run_script("uninstall.sh", spy, DESTDIR=str(root)).returncode == 0
    assert link.readlink() == Path("/home/pi/.local/bin/linerec")


@pytest.mark.parametrize(
    ("script", "settings", "message"),
    [
        ("install.sh", {"PREFIX": "opt/linerec"}, "install.sh: error: PREFIX 'opt/linerec' must be an absolute path"),
        (
            "install.sh",
            {"PREFIX": "/opt/line rec"},
            "install.sh: error: PREFIX '/opt/line rec' may hold only letters, digits and / . _ + -",
        ),
        ("install.sh", {"PARTS": "device web"}, "install.sh: error: PARTS 'device web' may name only device and agent"),
        ("install.sh", {"PARTS": " "}, "install.sh: error: PARTS is empty; name device, agent or both"),
        ("install.sh", {"BUILD_VENV": "maybe"}, "install.sh: error: BUILD_VENV 'maybe' must be 0 or 1"),
        (
            "uninstall.sh",
            {"PREFIX": "/usr"},
            "uninstall.sh: error: PREFIX '/usr' is not a directory linerec installs to",
        ),
        ("uninstall.sh", {"PURGE": "yes"}, "uninstall.sh: error: PURGE 'yes' must be 0 or 1"),
    ],
)
def test_a_bad_setting_is_one_line_and_nothing_is_installed(
    tmp_path: Path, spy: Path, script: str, settings: dict[str, str], message: str
) -> None:
    root = tmp_path / "stage"
    done = run_script(script, spy, DESTDIR=str(root), BUILD_VENV=settings.pop("BUILD_VENV", "0"), **settings)
    assert (done.returncode, done.stderr) == (1, message + "\n")
    assert not root.exists()


def test_make_install_and_uninstall_stage_under_destdir(tmp_path: Path, spy: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    if not re.search(r"^install:", makefile, re.MULTILINE) or not re.search(r"^uninstall:", makefile, re.MULTILINE):
        pytest.skip("the Makefile has no install and uninstall targets yet")
    root = tmp_path / "stage with spaces"
    env = {**os.environ, "PATH": f"{spy}{os.pathsep}{os.environ['PATH']}"}
    make = ["make", "--no-print-directory", "-C", str(ROOT)]
    subprocess.run(
        [*make, "install", f"DESTDIR={root}", "PARTS=device agent", "BUILD_VENV=0"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert tree(root) == BOTH
    subprocess.run([*make, "uninstall", f"DESTDIR={root}"], env=env, check=True, capture_output=True)
    assert tree(root) == {"etc/linerec/agent.toml", "etc/linerec/device.toml"}
    assert not (tmp_path / "calls.log").exists()
