"""A private mosquitto on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware.wire.broker import BrokerSettings
from tests.support.process import stop_politely


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
    process: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> BrokerSettings:
        """Settings that reach this broker."""
        return BrokerSettings(host="127.0.0.1", port=self.port)

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
            f"{self.extra_config}\n"
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"mosquitto exited with {self.process.returncode}; see {self.workdir / 'mosquitto.log'}"
                raise RuntimeError(msg)
            try:
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
