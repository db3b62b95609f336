"""A private PulseAudio whose capture is paced by whoever writes a FIFO.

The ALSA file devices (:mod:`tests.support.alsa`) deliver samples as fast as
PortAudio asks; a real card delivers them in real time. This server gives the
second kind: ``module-pipe-source`` reads s16le mono from a FIFO at the pace the
test writes it, and the ALSA ``pulse`` device (from ``libasound2-plugins``)
brings it to PortAudio as device ``"pulse"``. Played audio goes to a null sink.

The recipe, also as root (CI runs as root):

* ``pulseaudio -n -F <script> --daemonize=no --exit-idle-time=-1
  --use-pid-file=no --disable-shm=yes --log-target=stderr``: no default
  script, only ours; in the foreground, so the test owns the process and stops
  it with SIGTERM; never idle-exit; no pid file, so it ignores any other
  PulseAudio on the machine.
* ``HOME`` and ``XDG_RUNTIME_DIR`` point into a fresh directory (mode 0700), so
  no user's cookie, state or socket is touched.
* PulseAudio 16 runs per-user as root after a warning ("This program is not
  intended to be run as root (unless --system is specified)"); ``--system`` is
  not needed, and would want a ``pulse`` user and D-Bus. Its D-Bus warnings are
  harmless.
* The script loads ``module-null-sink`` and ``module-pipe-source`` (which makes
  the FIFO itself and fails if the path exists), makes them the defaults, and
  loads ``module-native-protocol-unix socket=<dir>/native auth-anonymous=1``
  LAST: once the socket accepts a connection, everything before it is in place.
* Clients get ``PULSE_SERVER=unix:<dir>/native``. The directory is short, under
  the system temporary directory, because a unix socket path has at most 107
  bytes and pytest's ``tmp_path`` can be longer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.alsa import ROOT
from tests.support.process import stop_politely


class PulseServer:
    """One ``pulseaudio`` process with a FIFO-fed source ``line_in`` and a null sink ``line_out``."""

    def __init__(self, *, rate: int = 8000) -> None:
        self.rate = rate
        self.folder = Path(tempfile.mkdtemp(prefix="linerec-pa-"))
        self.fifo = self.folder / "line_in.fifo"
        self.socket = self.folder / "native"
        self.log = self.folder / "pulseaudio.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment of a child process whose PortAudio device ``"pulse"`` is this server."""
        return {**os.environ, "PULSE_SERVER": f"unix:{self.socket}", "PYTHONPATH": str(ROOT)}

    def start(self) -> None:
        """Start the server and wait until it accepts clients; RuntimeError with its log if it does not."""
        binary = shutil.which("pulseaudio")
        if binary is None:
            msg = "pulseaudio is not installed; scripts/bootstrap.sh installs it"
            raise RuntimeError(msg)
        home, runtime = self.folder / "home", self.folder / "run"
        home.mkdir()
        runtime.mkdir(mode=0o700)
        spec = f"format=s16le rate={self.rate} channels=1"
        script = self.folder / "server.pa"
        script.write_text(
            f"load-module module-null-sink sink_name=line_out {spec}\n"
            f"load-module module-pipe-source source_name=line_in file={self.fifo} {spec}\n"
            "set-default-source line_in\n"
            "set-default-sink line_out\n"
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
        )
        argv = [
            binary,
            "-n",
            f"--file={script}",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disable-shm=yes",
            "--log-target=stderr",
        ]
        env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
        env.pop("PULSE_SERVER", None)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"pulseaudio exited with {self.process.returncode}: {self._log_tail()}"
                raise RuntimeError(msg)
            if self._accepts():
                return
            time.sleep(0.05)
        msg = f"pulseaudio did not open {self.socket} within 10 s: {self._log_tail()}"
        self.stop()
        raise RuntimeError(msg)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            try:
                client.connect(str(self.socket))
            except OSError:
                return False
        return True

    def _log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return " | ".join(lines[-5:]) or "(no log)"

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call more than once."""
        stop_politely(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PulseServer:
        self.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
