"""The systemd watchdog: notifications on a socket the test binds, fed only while every part is alive.

The protocol and the health rules are checked in-process with an injected clock;
the service itself runs as ``linerec run`` in a child process whose
``NOTIFY_SOCKET`` is a datagram socket this test listens on. Parts are made to
hang through real code paths: a line backend whose ``read_block`` stops
returning, a sound card whose source stops delivering, an uplink that was stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from firmware import watchdog
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.watchdog import Health, LineWatch, Notifier, Watchdog, watchdog_timeout
from firmware.wire import age
from tests.support.broker import Mosquitto, free_port
from tests.support.pulse import PulseServer

ROOT = Path(__file__).resolve().parents[1]
RECIPIENT = age.recipient_of(age.generate_identity())


class Listener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def next(self, timeout: float) -> str | None:
        """The next datagram within ``timeout`` seconds, or None."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536).decode()
        except TimeoutError:
            return None

    def wait_for(self, text: str, timeout: float) -> list[str]:
        """Every datagram up to and including the first that contains ``text``; fails after ``timeout``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                seen.append(message)
                if text in message:
                    return seen
        pytest.fail(f"no notification with {text!r} within {timeout} s; got {seen}")

    def collect(self, seconds: float) -> list[str]:
        """Every datagram that arrives within ``seconds``."""
        seen: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                seen.append(message)
        return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A socket path holds at most 107 bytes: pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="linerec-notify-"))
    sock = Listener(str(folder / "notify"))
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the notification protocol -----------------------------------------------------------------------


def test_ready_and_its_status_go_out_in_one_datagram(listener: Listener) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.address})
    assert notifier.ready("healthy (main loop)")
    assert listener.next(1.0) == "READY=1\nSTATUS=healthy (main loop)"
    assert notifier.ping()
    assert listener.next(1.0) == "WATCHDOG=1"
    assert notifier.stopping()
    assert listener.next(1.0) == "STOPPING=1\nSTATUS=stopping"


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"@linerec-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = Listener(name)
    try:
        assert Notifier(name).ping()
        assert listener.next(1.0) == "WATCHDOG=1"
    finally:
        listener.close()


def test_a_notify_socket_that_does_not_exist_is_one_log_line_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone" / "notify"))
    with caplog.at_level(logging.ERROR, logger="linerec.watchdog"):
        assert notifier.ready("healthy") is False
        assert notifier.ping() is False
        assert notifier.ping() is False
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot notify systemd through {tmp_path / 'gone' / 'notify'}: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("/tmp/" + "x" * 110, "is longer than the 107 bytes a socket address can hold"),
        ("run/notify", "is neither an absolute socket path nor an abstract name starting with '@'"),
        ("vsock:2:1234", "is an AF_VSOCK address, which linerec does not speak"),
    ],
)
def test_a_notify_socket_that_cannot_be_an_address_is_refused_with_one_line(
    address: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="linerec.watchdog"):
        notifier = Notifier(address)
        assert notifier.ping() is False
    assert not notifier.enabled
    assert [r.getMessage() for r in caplog.records] == [
        f"NOTIFY_SOCKET {address!r} {why}; systemd will not hear from linerec"
    ]


@pytest.mark.parametrize(
    ("env", "timeout"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"}, 3.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_taken_only_when_it_is_meant_for_this_process(
    env: dict[str, str], timeout: float | None
) -> None:
    assert watchdog_timeout(env, pid=4242) == timeout


# -- the health rules ----------------------------------------------------------------------------------


def line_health(clock: Clock, deadline_s: float = 60.0) -> tuple[Health, LineWatch]:
    health = Health(deadline_s=deadline_s, clock=clock)
    watch = LineWatch(ill_grace_s=300.0, clock=clock)
    health.watch("main loop", watch.main_loop_problem)
    health.watch("line", watch.line_problem)
    return health, watch


def test_a_silent_backend_is_blamed_on_the_line_and_a_stuck_block_on_the_main_loop() -> None:
    clock = Clock()
    health, watch = line_health(clock)
    watch.reading()
    clock.now += 59.0
    assert health.verdict().healthy
    clock.now += 2.0
    assert health.verdict().problems == (("line", "no block from the line for more than 60 s"),)
    watch.handling()
    assert health.verdict().healthy
    clock.now += 61.0
    assert health.verdict().problems == (("main loop", "stuck handling a block for more than 60 s"),)


def test_audio_a_half_duplex_modem_is_playing_extends_the_deadline() -> None:
    clock = Clock()
    health, watch = line_health(clock)
    watch.handling()
    watch.expect_busy(45.0)
    clock.now += 100.0
    assert health.verdict().healthy
    clock.now += 6.0
    assert not health.verdict().healthy
    watch.reading()  # the next block: the allowance was for that one step only
    clock.now += 61.0
    assert not health.verdict().healthy


def test_a_backend_broken_for_longer_than_the_grace_is_a_problem_until_it_recovers() -> None:
    clock = Clock()
    health, watch = line_health(clock)
    watch.backend_health(healthy=False, detail="the modem on /dev/ttyACM0 did not answer AT within 2 s")
    for _ in range(30):  # blocks keep coming while the backend tries to recover
        clock.now += 10.0
        watch.reading()
        watch.handling()
    assert health.verdict().healthy
    clock.now += 1.0
    assert health.verdict().problems == (
        ("line", "unhealthy for more than 300 s: the modem on /dev/ttyACM0 did not answer AT within 2 s"),
    )
    watch.backend_health(healthy=True, detail="ok")
    assert health.verdict().healthy


def test_a_line_that_finished_on_purpose_is_not_a_problem() -> None:
    clock = Clock()
    health, watch = line_health(clock)
    watch.reading()
    watch.finish()
    clock.now += 1000.0
    assert health.verdict().healthy


def test_a_check_that_raises_is_its_parts_problem_not_the_end_of_the_watchdog() -> None:
    def broken(_now: float, _deadline: float) -> str | None:
        raise OSError("the card vanished")

    health = Health(deadline_s=5.0)
    health.watch("capture", broken)
    assert health.verdict().problems == (("capture", "its health check failed: the card vanished"),)


def test_pings_go_out_only_while_every_part_is_healthy_and_each_change_is_reported_once(
    listener: Listener,
) -> None:
    clock = Clock()
    health, watch = line_health(clock, deadline_s=2.0)
    verdicts: list[bool] = []
    dog = Watchdog(health, Notifier(listener.address), timeout_s=2.0, on_verdict=lambda v: verdicts.append(v.healthy))
    watch.handling()
    dog.tick()
    assert listener.collect(0.2) == ["WATCHDOG=1", "STATUS=healthy (main loop, line)"]
    dog.tick()
    assert listener.collect(0.2) == ["WATCHDOG=1"]
    clock.now += 2.5
    dog.tick()
    dog.tick()
    assert listener.collect(0.2) == [
        "STATUS=unhealthy, watchdog not fed: main loop: stuck handling a block for more than 2 s"
    ]
    watch.reading()
    dog.tick()
    assert listener.collect(0.2) == ["WATCHDOG=1", "STATUS=healthy (main loop, line)"]
    assert verdicts == [True, False, True]
    assert dog.interval_s == 1.0


@pytest.mark.broker
def test_an_uplink_without_its_broker_is_healthy_and_a_stopped_one_is_not(tmp_path: Path, mosquitto: Mosquitto) -> None:
    uplink = Uplink(device_id="pi-w", spool=Spool(tmp_path / "spool"), broker=mosquitto.settings)
    health = Health(deadline_s=2.0)
    health.watch("uplink", watchdog.uplink_check(uplink))
    health.note("broker", watchdog.broker_note(uplink))
    uplink.start()
    try:
        deadline = time.monotonic() + 10
        while not uplink.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.verdict().line() == "healthy (uplink); broker connected"
        mosquitto.kill()
        while uplink.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.verdict().line() == ("healthy (uplink); broker not connected (recordings wait in the spool)")
    finally:
        uplink.stop(timeout=5)
    assert health.verdict().problems == (("uplink", "the delivery thread has stopped or is stuck"),)


# -- the service, as systemd runs it ---------------------------------------------------------------


def device_config(tmp_path: Path, *, port: int, line: str = "sim", extra: str = "") -> Path:
    """A device.toml for ``linerec run``: by default a quiet simulated line paced in real time."""
    conf = tmp_path / "device.toml"
    conf.write_text(
        f'[device]\nid = "pi-w"\nline = "{line}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[archive]\nrecipients = ["{RECIPIENT}"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        # One call, an hour away: the line stays idle, block after block, for as long as the test runs.
        "[sim]\ncalls = 1\nrealtime = true\nidle_before_s = 3600\n"
        f"{extra}"
    )
    return conf


def child_env(listener: Listener, watchdog_s: float, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_"))}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": str(round(watchdog_s * 1_000_000)),
        **extra,
    }


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)


def pings_after_last_status(messages: list[str]) -> list[str]:
    last = max((i for i, m in enumerate(messages) if "STATUS=" in m), default=-1)
    return [m for m in messages[last + 1 :] if m == "WATCHDOG=1"]


@pytest.mark.broker
def test_the_service_says_ready_feeds_the_watchdog_and_says_stopping_on_sigterm(
    tmp_path: Path, listener: Listener, mosquitto: Mosquitto
) -> None:
    conf = device_config(tmp_path, port=mosquitto.port)
    child = start(
        [sys.executable, "-m", "firmware", "run", "--config", str(conf)],
        child_env(listener, 2.0),
        tmp_path / "stderr.log",
    )
    try:
        first = listener.wait_for("READY=1", 30)[-1]
        assert first.startswith("READY=1\nSTATUS=healthy (main loop, line, uplink); broker ")
        if "broker connected" not in first:
            listener.wait_for("STATUS=healthy (main loop, line, uplink); broker connected", 15)
        # Every second (half of WATCHDOG_USEC) while the idle line is served.
        assert listener.collect(3.5).count("WATCHDOG=1") >= 3
        child.send_signal(signal.SIGTERM)
        assert listener.wait_for("STOPPING=1", 10)[-1] == "STOPPING=1\nSTATUS=stopping on signal 15"
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait()
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["stopped_at"] is not None
    assert status["line_state"] == "idle"
    err = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in err


# Runs `linerec run` with the configured line wrapped so that, after SIGUSR1, read_block never
# returns again: a modem or driver that stopped answering inside a read.
HANGING_LINE = """
import signal, sys, threading
import firmware.line
from firmware.cli import main
from firmware.line.base import LineBackend

hang = threading.Event()
signal.signal(signal.SIGUSR1, lambda *_: hang.set())
real_open = firmware.line.open_backend


class HangingLine(LineBackend):
    def __init__(self, inner):
        self.inner = inner
        self.name, self.sample_rate, self.block_frames = inner.name, inner.sample_rate, inner.block_frames

    def read_block(self):
        if hang.is_set():
            threading.Event().wait()
        return self.inner.read_block()

    def set_hook(self, off_hook):
        self.inner.set_hook(off_hook)

    def play(self, audio):
        self.inner.play(audio)

    def close(self):
        self.inner.close()


firmware.line.open_backend = lambda config: HangingLine(real_open(config))
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_pings_go_on_without_a_broker_and_stop_when_the_line_backend_hangs(tmp_path: Path, listener: Listener) -> None:
    conf = device_config(tmp_path, port=free_port())  # nothing listens there
    child = start([sys.executable, "-c", HANGING_LINE, str(conf)], child_env(listener, 2.0), tmp_path / "stderr.log")
    try:
        ready = listener.wait_for("READY=1", 30)[-1]
        assert ready.endswith("broker not connected (recordings wait in the spool)")
        # A broker that cannot be reached is not a hang: the watchdog is fed all along.
        assert listener.collect(3.5).count("WATCHDOG=1") >= 3
        child.send_signal(signal.SIGUSR1)
        seen = listener.wait_for("unhealthy", 10)
        assert seen[-1] == (
            "STATUS=unhealthy, watchdog not fed: line: no block from the line for more than 2 s; "
            "broker not connected (recordings wait in the spool)"
        )
        # No more pings: systemd would restart the service after WatchdogSec.
        assert pings_after_last_status([*seen, *listener.collect(3.0)]) == []
    finally:
        child.kill()
        child.wait()
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["health"]["problems"] == {"line": "no block from the line for more than 2 s"}


def feed_in_real_time(fifo: Path, stop: threading.Event, hold: threading.Event) -> None:
    """Line noise into the FIFO at 8 kHz, 20 ms at a time, until ``stop``; then hold the FIFO open, silent."""
    rng = np.random.default_rng(11)
    fd = os.open(fifo, os.O_WRONLY)
    try:
        start, sent = time.monotonic(), 0
        while not stop.is_set():
            os.write(fd, (rng.standard_normal(160) * 300).astype("<i2").tobytes())
            sent += 160
            time.sleep(max(0.0, start + sent / 8000 - time.monotonic()))
        hold.wait(30)  # a card that stalls, not one that was unplugged
    finally:
        os.close(fd)


@pytest.mark.skipif(
    shutil.which("pulseaudio") is None or not Path("/usr/share/alsa/alsa.conf").exists(),
    reason="pulseaudio and ALSA are installed by make test (scripts/bootstrap.sh)",
)
def test_a_sound_card_that_stops_delivering_stops_the_pings(tmp_path: Path, listener: Listener) -> None:
    conf = device_config(tmp_path, port=free_port(), line="gpio", extra='[gpio]\naudio_device = "pulse"\n')
    stop, hold = threading.Event(), threading.Event()
    with PulseServer(rate=8000) as pulse:
        feeder = threading.Thread(target=feed_in_real_time, args=(pulse.fifo, stop, hold), daemon=True)
        feeder.start()
        env = child_env(listener, 3.0, GPIOZERO_PIN_FACTORY="mock", PULSE_SERVER=pulse.env["PULSE_SERVER"])
        child = start([sys.executable, "-m", "firmware", "run", "--config", str(conf)], env, tmp_path / "stderr.log")
        try:
            ready = listener.wait_for("READY=1", 30)[-1]
            assert ready.startswith("READY=1\nSTATUS=healthy (main loop, line, capture, uplink)")
            assert listener.collect(3.5).count("WATCHDOG=1") >= 2
            stop.set()
            seen = listener.wait_for("unhealthy", 15)
            assert seen[-1].startswith(
                "STATUS=unhealthy, watchdog not fed: capture: no audio from the sound card for more than 3 s"
            )
            assert pings_after_last_status([*seen, *listener.collect(3.5)]) == []
        finally:
            hold.set()
            child.kill()
            child.wait()
            feeder.join(timeout=10)


def test_a_notify_socket_that_is_not_there_costs_one_log_line_and_the_service_still_runs(tmp_path: Path) -> None:
    conf = tmp_path / "device.toml"
    conf.write_text(
        f'[device]\nid = "pi-w"\nstate_dir = "{tmp_path / "state"}"\n[archive]\nrecipients = ["{RECIPIENT}"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n[sim]\ncalls = 0\n'
    )
    missing = tmp_path / "no-such-dir" / "notify"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "JOURNAL_"))}
    run = subprocess.run(
        [sys.executable, "-m", "firmware", "run", "--config", str(conf)],
        env={**env, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(missing), "WATCHDOG_USEC": "2000000"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if "notify" in line.lower()]
    assert len(notes) == 1, run.stderr
    assert notes[0].endswith(
        f"linerec.watchdog ERROR cannot notify systemd through {missing}: No such file or directory"
    )
    assert "Traceback" not in run.stderr
