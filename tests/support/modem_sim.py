"""A voice modem behind a pseudo-terminal, for the modem backend's tests.

:class:`ModemSim` opens a pty (``os.openpty()``); the backend opens the slave
path (:attr:`ModemSim.path`) with pyserial like any serial device. A thread
reads the master end and answers AT commands as a USR5637 / Conexant class
modem does (``OK``, ``ERROR``, ``CONNECT``), remembers ``AT+VCID`` (forgotten on
``ATZ`` and on a power cycle), logs every command it receives
(:attr:`ModemSim.commands`), and in voice mode streams the test's 8-bit audio
DLE-shielded, ends it on ``<DLE>!``, and collects what ``AT+VTX`` plays.

The test scripts the line from its own thread: :meth:`ModemSim.ring` with an
optional caller ID report, :meth:`send_junk`, :meth:`send_partial`,
:meth:`send_dle`, :meth:`send_audio`, :meth:`hang` / :meth:`unhang`.

Opening the port counts as a power cycle (a USB modem re-enumerated): the
master is in packet mode (``TIOCPKT``), where the flush that pyserial does on
every open shows up as a ``TIOCPKT_FLUSHREAD`` control byte. A hung modem
recovers only then, or on :meth:`unhang`.

:class:`ModemDriver` runs a :class:`~firmware.line.modem.ModemLine` on a
:class:`SimClock`: before reading blocks it waits (in real time, a few
milliseconds) until the backend has received every byte the simulator sent, so
each line is stamped with the virtual time at which the test sent it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from firmware.line.base import LineBlock
from firmware.line.clock import SimClock
from firmware.line.modem import ModemLine

DLE, ETX = 0x10, 0x03
USR_VSM = "AT+VSM=128,8000"
CONEXANT_VSM = "AT+VSM=1,8000,0,0"


class ModemSim:
    """A scripted voice modem on a pty: see the module docstring.

    ``vsm`` lists the ``AT+VSM`` commands the modem accepts (USR's by default);
    ``refuse`` lists commands it answers with ERROR.
    """

    def __init__(self, *, vsm: tuple[str, ...] = (USR_VSM,), refuse: tuple[str, ...] = ()) -> None:
        self._master, self._slave = os.openpty()
        fcntl.ioctl(self._master, termios.TIOCPKT, struct.pack("i", 1))
        self.path = os.ttyname(self._slave)
        self.vsm = vsm
        self.refuse = set(refuse)
        self.commands: list[str] = []
        self.played = bytearray()
        self.bytes_sent = 0
        self.power_cycles = 0
        self.hung = False
        self._reset()
        self._cmd = bytearray()
        self._dle = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modem-sim", daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self.vcid = False
        self.echo = True
        self.fclass = 0
        self.country: str | None = None
        self.off_hook = False
        self.mode = "command"  # or "vrx" (streaming to the DTE), "vtx" (taking audio to play)

    # -- the pty ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._master], [], [], 0.02)[0]:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                time.sleep(0.005)
                continue
            if not chunk:
                continue
            if chunk[0] != 0:  # a packet-mode control byte, not data
                if chunk[0] & termios.TIOCPKT_FLUSHREAD:
                    self.power_cycle()
                continue
            self._received(chunk[1:])

    def _send(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._master, view)
                view = view[written:]
            self.bytes_sent += len(data)

    def _reply(self, *lines: str) -> None:
        self._send(b"".join(b"\r\n" + line.encode("latin-1") + b"\r\n" for line in lines))

    def close(self) -> None:
        """Stop the modem and close the pty."""
        self._stop.set()
        self._thread.join(2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what the DTE sends ---------------------------------------------------------

    def _received(self, data: bytes) -> None:
        for byte in data:
            if self.mode == "command":
                self._command_byte(byte)
            elif self._dle:
                self._dle = False
                self._voice_escape(byte)
            elif byte == DLE:
                self._dle = True
            elif self.mode == "vtx":
                self.played.append(byte)

    def _command_byte(self, byte: int) -> None:
        if byte == 0x0D:
            command = self._cmd.decode("latin-1").strip()
            self._cmd.clear()
            if command:
                self.commands.append(command)
                if not self.hung:
                    self._answer(command)
        elif byte != 0x0A:
            self._cmd.append(byte)

    def _voice_escape(self, byte: int) -> None:
        if self.hung:
            return
        if self.mode == "vtx":
            if byte == DLE:
                self.played.append(DLE)
            elif byte == ETX:
                self.mode = "command"
                self._reply("OK")
        elif byte in (ord("!"), ord("^")):
            self.mode = "command"
            self._send(bytes([DLE, ETX]))
            self._reply("OK")

    def _answer(self, command: str) -> None:
        if self.echo:
            self._send(command.encode("latin-1") + b"\r")
        cmd = command.upper()
        reply = "ERROR" if cmd in self.refuse else self._do(cmd)
        if reply:
            self._reply(reply)

    def _do(self, cmd: str) -> str | None:
        voice = self.fclass == 8
        if cmd in ("AT", "ATZ", "ATE0", "ATE1", "ATH", "ATH0"):
            if cmd == "ATZ":
                self._reset()
            elif cmd.startswith("ATE"):
                self.echo = cmd == "ATE1"
            elif cmd.startswith("ATH"):
                self.off_hook = False
            return "OK"
        if cmd.startswith("AT+VCID="):
            value = cmd.removeprefix("AT+VCID=")
            if value not in ("0", "1", "2"):
                return "ERROR"
            self.vcid = value != "0"
            return "OK"
        if cmd.startswith("AT+GCI="):
            code = cmd.removeprefix("AT+GCI=")
            if len(code) != 2 or any(c not in "0123456789ABCDEF" for c in code):
                return "ERROR"
            self.country = code
            return "OK"
        if cmd in ("AT+FCLASS=0", "AT+FCLASS=8"):
            self.fclass = int(cmd[-1])
            return "OK"
        if cmd.startswith("AT+VSM="):
            return "OK" if voice and cmd in self.vsm else "ERROR"
        if cmd in ("AT+VLS=0", "AT+VLS=1") and voice:
            self.off_hook = cmd.endswith("1")
            return "OK"
        if cmd in ("AT+VRX", "AT+VTX") and voice and self.off_hook:
            self.mode = "vrx" if cmd == "AT+VRX" else "vtx"
            return "CONNECT"
        return "ERROR"

    # -- scripting --------------------------------------------------------------------

    def ring(
        self,
        n: int = 1,
        *,
        cid: dict[str, str] | bytes | None = None,
        between: Callable[[], object] | None = None,
    ) -> None:
        """``n`` RINGs, with a caller ID report after the first one (if ``AT+VCID`` is on).

        ``cid`` is the formatted report's fields (``{"NMBR": "2125550142", "NAME":
        "ACME PLUMBING"}``; DATE and TIME are added) or the raw message bytes,
        reported unformatted as ``MESG = <hex>``. ``between`` runs before each
        RING after the first (the test advances the clock there).
        """
        for i in range(n):
            if i and between is not None:
                between()
            self._reply("RING")
            if i == 0 and cid is not None and self.vcid:
                self._send(caller_id_report(cid))

    def send_line(self, text: str) -> None:
        """One line as the modem would send it."""
        self._reply(text)

    def send_junk(self, data: bytes) -> None:
        """Raw bytes (line noise, a glitch after a power cycle)."""
        self._send(data)

    def send_partial(self, text: str, pieces: int = 3, pause_s: float = 0.01) -> None:
        """A line in ``pieces`` writes with real pauses, so the reader sees it arrive in parts."""
        data = b"\r\n" + text.encode("latin-1") + b"\r\n"
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            self._send(data[start : start + step])
            time.sleep(pause_s)

    def send_dle(self, code: str) -> None:
        """A DLE-shielded event (``"b"`` busy, ``"P"`` extension off-hook, ...)."""
        self._send(bytes([DLE, ord(code)]))

    def send_audio(self, samples: bytes) -> None:
        """8-bit unsigned voice samples, DLE-shielded; only while receiving (after ``AT+VRX``)."""
        if self.mode != "vrx":
            msg = f"the modem is in {self.mode} mode, not streaming voice (send AT+VRX first)"
            raise RuntimeError(msg)
        self._send(samples.replace(bytes([DLE]), bytes([DLE, DLE])))

    def hang(self) -> None:
        """Stop answering anything until :meth:`unhang` or the port is opened again."""
        self.hung = True

    def unhang(self) -> None:
        """Answer again (keeping every setting, as a modem that was only slow)."""
        self.hung = False

    def power_cycle(self) -> None:
        """What a USB power cycle does: settings lost (``+VCID`` too), hang cleared."""
        self.power_cycles += 1
        self.hung = False
        self._cmd.clear()
        self._dle = False
        self._reset()


def caller_id_report(cid: dict[str, str] | bytes) -> bytes:
    """A caller ID report block as a modem sends it between the first two RINGs."""
    if isinstance(cid, bytes):
        lines = [f"MESG = {cid.hex().upper()}"]
    else:
        fields = {"DATE": "1129", "TIME": "0930", **cid}
        lines = [f"{key} = {value}" for key, value in fields.items()]
    return b"\r\n" + b"".join(line.encode("latin-1") + b"\r\n" for line in lines) + b"\r\n"


class ModemDriver:
    """Reads a :class:`ModemLine` on a :class:`SimClock` in step with a :class:`ModemSim`."""

    def __init__(self, line: ModemLine, sim: ModemSim, clock: SimClock) -> None:
        self.line, self.sim, self.clock = line, sim, clock
        self.blocks: list[LineBlock] = []

    def settle(self, timeout_s: float = 3.0) -> None:
        """Wait in real time until the backend has every byte the simulator sent."""
        deadline = time.monotonic() + timeout_s
        while self.line.bytes_heard < self.sim.bytes_sent:
            if time.monotonic() > deadline:
                msg = f"the backend heard {self.line.bytes_heard} of {self.sim.bytes_sent} bytes"
                raise TimeoutError(msg)
            time.sleep(0.001)

    def run_for(self, seconds: float) -> list[LineBlock]:
        """Read ``seconds`` of virtual time in blocks (at least one); they are also kept in :attr:`blocks`."""
        self.settle()
        blocks = []
        # Counted, not compared with the clock: at epoch magnitudes a float step is 0.2 us.
        for _ in range(max(1, round(seconds * self.line.sample_rate / self.line.block_frames))):
            block = self.line.read_block()
            assert block is not None
            blocks.append(block)
        self.blocks += blocks
        return blocks
