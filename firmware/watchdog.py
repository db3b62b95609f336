"""Telling systemd the recorder is alive, and only while every part of it really is.

Three pieces:

* :class:`Notifier` speaks systemd's notification protocol (``sd_notify``): one
  Unix datagram of ``KEY=value`` lines to the socket named by ``NOTIFY_SOCKET``,
  an absolute path or, after ``@``, a name in the abstract namespace. It says
  ``READY=1`` once the line is served, ``STATUS=...`` whenever the health
  summary changes, ``WATCHDOG=1`` to keep the watchdog fed and ``STOPPING=1`` on
  the way out. A socket that is missing or unusable is one log line, never a
  crash: the recorder works without systemd.
* :class:`Health` is the registry of the parts that must stay alive: each one is
  a named check that says what is wrong with it, or nothing. The main loop and
  the line backend report through a :class:`LineWatch`; the capture thread and
  the uplink are read where they are (see :func:`capture_check`,
  :func:`uplink_check`). A check never blocks and never takes a lock a stuck
  part could hold.
* :class:`Watchdog` is a thread that asks the registry every half watchdog
  interval (``WATCHDOG_USEC``, when it is meant for this process) and sends
  ``WATCHDOG=1`` only when every check passes. A part that hangs silences it,
  ``STATUS`` says which part and why, and systemd restarts the service.

A broker that cannot be reached is not a hang: recordings wait in the spool and
a restart would not bring the broker back. Only a worker thread that stopped
making progress is.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("linerec.watchdog")

# The unit's WatchdogSec: how long a part may go without a sign of life when systemd gives no interval.
DEFAULT_TIMEOUT_S = 60.0
# A line backend that keeps saying it is broken for this long is no better than a hung one:
# a restart reopens the sound card, the modem's port and the GPIO from scratch.
ILL_GRACE_S = 300.0
# sun_path holds 108 bytes: a path needs its terminating NUL, an abstract name its leading one.
MAX_SOCKET_ADDRESS = 107

Check = Callable[[float, float], str | None]
"""A part's health: given the monotonic time and the deadline in seconds, what is wrong, or None.

The text names the limit that was passed, not the time that keeps growing, so
that the summary (and so ``STATUS=`` and the log) changes only when the verdict does.
"""


def _seconds(value: float) -> str:
    return f"{value:g} s"


# -- the notification protocol ------------------------------------------------------------------------


class Notifier:
    """Sends state to the service manager over ``NOTIFY_SOCKET``; does nothing when there is none.

    ``address`` is the variable's value: an absolute socket path, or ``@name``
    for the abstract namespace. A value that cannot be a socket address is
    logged once and disables the notifier; a send that fails is logged once per
    kind of failure and reported as False.
    """

    def __init__(self, address: str | None) -> None:
        # Re-entrant: a signal handler may send STOPPING=1 while the main thread is inside send().
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._target: str | None = None
        self._failures: set[str] = set()
        self.address = address or ""
        if not address:
            return
        problem = _address_problem(address)
        if problem is not None:
            log.error("NOTIFY_SOCKET %r %s; systemd will not hear from linerec", address, problem)
            return
        self._target = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through ``NOTIFY_SOCKET`` (none outside a notify service)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when there is a usable socket address to send to."""
        return self._target is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if the socket took it."""
        if self._target is None:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._target)
            except OSError as exc:
                kind = exc.strerror or type(exc).__name__
                if kind not in self._failures:
                    self._failures.add(kind)
                    log.error("cannot notify systemd through %s: %s", self.address, kind)
                return False
        return True

    def ready(self, status: str) -> bool:
        """The service is up: ``READY=1`` with its first status line."""
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """A new one-line status for ``systemctl status``."""
        return self.send(f"STATUS={status}")

    def ping(self) -> bool:
        """Feed the watchdog."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        """The service is shutting down."""
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        """Close the socket; later sends open it again."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _address_problem(address: str) -> str | None:
    """Why ``address`` cannot be a notification socket, or None if it can."""
    if address.startswith("vsock:"):
        return "is an AF_VSOCK address, which linerec does not speak"
    if not address.startswith(("/", "@")):
        return "is neither an absolute socket path nor an abstract name starting with '@'"
    if "\0" in address:
        return "contains a NUL byte"
    if len(address.encode("utf-8", "replace")) > MAX_SOCKET_ADDRESS:
        return f"is longer than the {MAX_SOCKET_ADDRESS} bytes a socket address can hold"
    return None


def watchdog_timeout(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog interval systemd set for this process (``WATCHDOG_USEC``), in seconds, or None.

    ``WATCHDOG_PID``, when present, names the process the interval is meant for;
    any other process (a child that inherited the variables) gets None. Values
    that are not whole positive numbers are logged and ignored.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        if not owner.isdecimal():
            log.error("WATCHDOG_PID %r is not a process id; the watchdog is not fed", owner)
            return None
        if int(owner) != (os.getpid() if pid is None else pid):
            return None
    if not usec.isdecimal() or int(usec) == 0:
        log.error("WATCHDOG_USEC %r is not a positive number of microseconds; the watchdog is not fed", usec)
        return None
    return int(usec) / 1_000_000


# -- what the parts report -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """One look at every part: the problems (part, what is wrong) and the notes (part, how it is)."""

    watched: tuple[str, ...]
    problems: tuple[tuple[str, str], ...]
    notes: tuple[tuple[str, str], ...] = ()

    @property
    def healthy(self) -> bool:
        """True when no part has a problem."""
        return not self.problems

    def line(self) -> str:
        """The one-line summary for ``STATUS=`` and the log."""
        notes = "".join(f"; {name} {text}" for name, text in self.notes)
        if self.problems:
            wrong = "; ".join(f"{name}: {text}" for name, text in self.problems)
            return f"unhealthy, watchdog not fed: {wrong}{notes}"
        return f"healthy ({', '.join(self.watched) or 'nothing watched'}){notes}"

    def to_json(self) -> dict[str, object]:
        """The verdict as the status file keeps it."""
        return {
            "healthy": self.healthy,
            "watched": list(self.watched),
            "problems": {name: text for name, text in self.problems},
            "notes": {name: text for name, text in self.notes},
            "summary": self.line(),
        }


class Health:
    """The parts that must stay alive, each a :data:`Check`, and notes that do not count against health.

    ``deadline_s`` is how long a part may go without a sign of life; it is the
    watchdog interval, so that a part that hangs is noticed within one interval.
    """

    def __init__(self, *, deadline_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        if not deadline_s > 0:
            msg = f"deadline_s {deadline_s!r} must be a positive number of seconds"
            raise ValueError(msg)
        self.deadline_s = deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._notes: dict[str, Callable[[], str]] = {}

    def watch(self, name: str, check: Check) -> None:
        """Count ``name`` as a part that must stay healthy (replacing an earlier check of that name)."""
        with self._lock:
            self._checks[name] = check

    def forget(self, name: str) -> None:
        """Stop watching ``name`` (a part that finished its work on purpose)."""
        with self._lock:
            self._checks.pop(name, None)

    def note(self, name: str, describe: Callable[[], str]) -> None:
        """Add ``name: describe()`` to every summary without making it a reason to stop the watchdog."""
        with self._lock:
            self._notes[name] = describe

    def verdict(self) -> Verdict:
        """Ask every check now; a check that raises counts as that part's problem."""
        with self._lock:
            checks, notes = list(self._checks.items()), list(self._notes.items())
        now = self._clock()
        problems = []
        for name, check in checks:
            try:
                problem = check(now, self.deadline_s)
            except Exception as exc:  # a broken check is ill health, not the end of the watchdog
                problem = f"its health check failed: {exc}"
            if problem is not None:
                problems.append((name, problem))
        described = []
        for name, describe in notes:
            try:
                described.append((name, describe()))
            except Exception as exc:  # a note is information only
                described.append((name, f"unknown ({exc})"))
        return Verdict(tuple(name for name, _ in checks), tuple(problems), tuple(described))


class LineWatch:
    """What the main loop tells the watchdog about itself and about the line backend.

    The loop calls :meth:`reading` before it waits for the next block and
    :meth:`handling` once the block is there, so a silence can be blamed on the
    right part: stuck waiting is the line backend, stuck handling is the loop.
    Health events from the backend arrive through :meth:`backend_health`.
    Every method is a few assignments, cheap enough for each block.
    """

    def __init__(self, *, ill_grace_s: float = ILL_GRACE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ill_grace_s = ill_grace_s
        self._at = clock()
        self._waiting = True
        self._allowance = 0.0
        self._ill_since: float | None = None
        self._ill_detail = ""
        self.finished = False

    def reading(self) -> None:
        """The loop is about to wait for the line's next block."""
        self._at, self._waiting, self._allowance = self._clock(), True, 0.0

    def handling(self) -> None:
        """A block has arrived; the loop is working on it."""
        self._at, self._waiting, self._allowance = self._clock(), False, 0.0

    def expect_busy(self, seconds: float) -> None:
        """The loop starts a step that may take ``seconds`` beyond the deadline (a half-duplex modem playing)."""
        self._allowance += max(0.0, seconds)

    def backend_health(self, *, healthy: bool, detail: str) -> None:
        """The backend said whether it can still hear and drive the line."""
        if healthy:
            self._ill_since = None
        elif self._ill_since is None:
            self._ill_since = self._clock()
        self._ill_detail = detail

    def finish(self) -> None:
        """The line is gone for good (a simulated script ended, or the service stops): nothing to watch."""
        self.finished = True

    def _silent(self, now: float, deadline_s: float) -> bool:
        return not self.finished and now - self._at > deadline_s + self._allowance

    def main_loop_problem(self, now: float, deadline_s: float) -> str | None:
        """The main loop's problem: stuck on a block for longer than the deadline."""
        if self._waiting or not self._silent(now, deadline_s):
            return None
        return f"stuck handling a block for more than {_seconds(deadline_s)}"

    def line_problem(self, now: float, deadline_s: float) -> str | None:
        """The backend's problem: no block for longer than the deadline, or broken for longer than the grace."""
        if self._waiting and self._silent(now, deadline_s):
            return f"no block from the line for more than {_seconds(deadline_s)}"
        ill_since = self._ill_since
        if ill_since is not None and not self.finished and now - ill_since > self._ill_grace_s:
            return f"unhealthy for more than {_seconds(self._ill_grace_s)}: {self._ill_detail}"
        return None


class CaptureSource(Protocol):
    """A line backend that may have a capture thread of its own."""

    def capture_age(self) -> float | None:
        """Seconds since its capture thread last delivered audio; None when it has no such thread."""
        ...


def capture_check(source: CaptureSource) -> Check:
    """The check of a backend's capture thread: audio must keep arriving within the deadline."""

    def check(_now: float, deadline_s: float) -> str | None:
        age = source.capture_age()
        if age is None or age <= deadline_s:
            return None
        return f"no audio from the sound card for more than {_seconds(deadline_s)}"

    return check


class UplinkLike(Protocol):
    """What the watchdog reads from the uplink: whether its worker progresses, whether the broker is there."""

    @property
    def healthy(self) -> bool:
        """True while the worker thread runs and shows progress."""
        ...

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        ...


def uplink_check(uplink: UplinkLike) -> Check:
    """The uplink's check: its worker thread must run and make progress; a missing broker is fine."""

    def check(_now: float, _deadline_s: float) -> str | None:
        return None if uplink.healthy else "the delivery thread has stopped or is stuck"

    return check


def broker_note(uplink: UplinkLike) -> Callable[[], str]:
    """The summary's note on the broker connection."""
    return lambda: "connected" if uplink.connected else "not connected (recordings wait in the spool)"


LINE_PARTS = ("main loop", "line", "capture")


def watch_recorder(health: Health, watch: LineWatch, line: CaptureSource, uplink: UplinkLike) -> None:
    """Watch the recorder's parts and note the broker.

    The main loop and the line backend report through ``watch``; the capture
    thread is watched when the backend has one; the uplink's worker always is.
    """
    health.watch("main loop", watch.main_loop_problem)
    health.watch("line", watch.line_problem)
    if line.capture_age() is not None:
        health.watch("capture", capture_check(line))
    health.watch("uplink", uplink_check(uplink))
    health.note("broker", broker_note(uplink))


# -- the watchdog thread ------------------------------------------------------------------------------


class Watchdog:
    """Feeds the systemd watchdog while :class:`Health` says every part is alive.

    ``timeout_s`` is the watchdog interval systemd enforces (None when it
    enforces none: the summary is still kept up to date every ``check_s``).
    ``on_verdict`` hears every verdict whose summary differs from the last one,
    from the watchdog's thread.
    """

    def __init__(
        self,
        health: Health,
        notifier: Notifier,
        *,
        timeout_s: float | None,
        check_s: float = 10.0,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> None:
        self.health = health
        self.notifier = notifier
        self.timeout_s = timeout_s
        # systemd's advice: ping at half the interval, so one late wake-up does not cost a restart.
        self.interval_s = timeout_s / 2 if timeout_s is not None else check_s
        self._on_verdict = on_verdict
        self._summary: str | None = None
        self._was_healthy = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_environment(
        cls,
        health: Health,
        *,
        env: Mapping[str, str] | None = None,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> Watchdog:
        """The watchdog systemd asked for through ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        notifier = Notifier.from_environment(env)
        return cls(health, notifier, timeout_s=watchdog_timeout(env), on_verdict=on_verdict)

    def tick(self) -> Verdict:
        """Look at every part once: feed the watchdog if all are alive, report a changed summary."""
        verdict = self.health.verdict()
        if verdict.healthy and self.timeout_s is not None:
            self.notifier.ping()
        if verdict.line() != self._summary:
            self.notifier.status(verdict.line())
            self._report(verdict)
        return verdict

    def ready(self) -> Verdict:
        """Tell systemd the service is up (``READY=1`` with the first summary), then start watching."""
        verdict = self.health.verdict()
        if self._stop.is_set():
            return verdict  # a signal came first: the service is already on its way out
        self.notifier.ready(verdict.line())
        self._report(verdict)
        self.start()
        return verdict

    def _report(self, verdict: Verdict) -> None:
        """Log a new summary and pass the verdict on."""
        summary = verdict.line()
        self._summary = summary
        if not verdict.healthy:
            log.error("%s", summary)
        elif not self._was_healthy:
            log.warning("every part is alive again: %s", summary)
        else:
            log.debug("%s", summary)
        self._was_healthy = verdict.healthy
        if self._on_verdict is not None:
            self._on_verdict(verdict)

    def start(self) -> None:
        """Start the thread that ticks every ``interval_s``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="linerec-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("the watchdog's check failed")
            if self._stop.wait(self.interval_s):
                return

    def stopping(self, status: str = "stopping") -> None:
        """Stop feeding the watchdog and tell systemd the service is on its way out (once); never waits."""
        if not self._stop.is_set():
            self._stop.set()
            self.notifier.stopping(status)

    def stop(self, status: str = "stopping") -> None:
        """:meth:`stopping`, then wait for the thread and close the socket; safe to call twice."""
        self.stopping(status)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self.notifier.close()
