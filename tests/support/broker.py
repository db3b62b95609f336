"""A private mosquitto on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from firmware.wire.broker import BrokerSettings
from tests.support.process import stop_politely


@dataclass(frozen=True)
class Security:
    """What a locked-down broker enforces: a TLS listener, a password file and an ACL file.

    Clients must trust ``ca_file`` and log in with a user in ``password_file``;
    with ``require_certificate`` they must also show a certificate signed by it,
    whose common name becomes their user name.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    password_file: Path
    acl_file: Path
    require_certificate: bool = False

    def config(self) -> str:
        """The lines that follow the ``listener`` line in mosquitto.conf."""
        lines = [
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            # Run as root, mosquitto would drop to the mosquitto user, which cannot read the test's tmp dirs.
            "user root",
        ]
        if self.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        return "\n".join(lines) + "\n"


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file with ``mosquitto_passwd``, so the hashes are the broker's own format."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        msg = "mosquitto_passwd is not installed; it ships in the mosquitto package"
        raise RuntimeError(msg)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([tool, *create, "-b", str(path), user, password], check=True, capture_output=True)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mosquitto:
    """One mosquitto process with its own config, which can be killed and restarted."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    security: Security | None = None
    # A whole mosquitto.conf to run instead of the generated one, e.g. a shipped example with test paths put in.
    config: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> BrokerSettings:
        """Settings that reach this broker (over TLS, trusting its CA, but with no user, if it is secured)."""
        if self.security is None:
            return BrokerSettings(host="127.0.0.1", port=self.port)
        return BrokerSettings(host="127.0.0.1", port=self.port, tls=True, ca_file=self.security.ca_file)

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        access = "allow_anonymous true\n" if self.security is None else self.security.config()
        conf.write_text(
            self.config
            or (
                f"listener {self.port} 127.0.0.1\n"
                "set_tcp_nodelay true\n"
                f"{access}"
                "persistence false\n"
                "log_dest stderr\n"
                "log_type error\nlog_type warning\n"
                f"{self.extra_config}\n"
            )
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"mosquitto exited with {self.process.returncode}; see {self.workdir / 'mosquitto.log'}"
                raise RuntimeError(msg)
            try:
                # A TCP accept is enough for TLS too: mosquitto loads its certificates before it listens.
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        msg = f"mosquitto did not listen on port {self.port} within 10 s"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """Kill the broker abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the broker politely."""
        stop_politely(self.process)
