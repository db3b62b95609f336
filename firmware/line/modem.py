"""A USB voice modem (USR5637 / Conexant class) on a serial port, as a line backend.

:class:`ModemLine` opens the port with pyserial (``serial.serial_for_url``, so a
pty path or ``loop://`` works as well as ``/dev/ttyACM0``). A
``serial.threaded.ReaderThread`` hands every byte the modem sends to
:class:`_ModemProtocol`, which splits it (:class:`ModemStream`) into lines, DLE
events and voice audio and stamps each with the backend's clock. AT commands are
synchronous, on the caller's thread: a command waits up to
``command_timeout_s`` *real* seconds for OK or ERROR (this is serial I/O, not a
line cadence). Everything else (rings, caller ID, timeouts, the watchdog) runs
on the injected clock.

Modes: **idle** (``AT+FCLASS=0``): :meth:`ModemLine.read_block` waits one block
on the clock and returns silence plus the events of ``RING`` and caller ID
reports (see :mod:`firmware.line.modem_protocol` for how ring ends are
estimated). **Voice** (``set_hook(True)``): ``AT+FCLASS=8``, ``AT+VSM=128,8000``
(USR's number for 8-bit linear) or, if refused, ``AT+VSM=1,8000,0,0`` (Conexant's
8-bit unsigned PCM) -- both as other modem programs use them, UNCONFIRMED here on
hardware -- then ``AT+VLS=1`` (off-hook) and ``AT+VRX`` until ``CONNECT``. The
8-bit unsigned samples at 8000 Hz (0x80 is silence) come out as int16
``(sample - 128) << 8``: 8-bit resolution, the "noisy 8-bit audio" such modems
are known for. ``set_hook(False)`` sends ``<DLE>!``, ``ATH``, ``AT+FCLASS=0`` and
the whole init again. **play()** stops receiving, sends the audio with
``AT+VTX`` (DLE-shielded, ended by ``<DLE><ETX>``), waits until the modem has
played it and receives again: half duplex, so the line is not recorded during
the greeting and play() blocks for the audio's length; on-hook it drops the
audio with a warning.

Extension pickup (``[modem] extension_pickup = true``): the init ends with
``AT+FCLASS=8`` so that the modem sits on-hook in voice command mode, where
chipsets that sense another phone report it as DLE ``P`` (extension off-hook) /
``p`` (on-hook), or ``H``/``h`` for a phone on the modem's own phone jack. On an
off-hook report the backend emits :class:`OffHook` and starts receiving voice,
so the conversation is recorded; on the on-hook report it emits
:class:`OnHook` and hangs up. Which chipsets do it is UNCONFIRMED: Conexant
CX93010-class modems are said to report handset/extension changes as DLE events
in voice mode; most USR and Agere based modems are said not to. Without the
setting the reports are ignored and a modem can only record the calls it answers
itself (``[calls] answering_machine = true``).

Watchdog: when the modem has said nothing for ``watchdog_s`` (on the clock), the
backend sends ``AT``; no OK within ``command_timeout_s`` (or no voice data for
``watchdog_s`` while receiving, or a failed port) yields an unhealthy
:class:`BackendHealth` event, then the port is closed and reopened and the whole
init runs again (``AT+VCID=1`` included, since a reset modem forgets it); success
yields a healthy event. If the modem stays away, the backend retries every
``watchdog_s``. ``read_block`` itself never raises once started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import serial
import serial.threaded
from numpy.typing import NDArray

from firmware.config import ModemSettings
from firmware.line.base import (
    BackendHealth,
    LineBackend,
    LineBlock,
    LineError,
    LineEvent,
    OffHook,
    OnHook,
    frames_per_block,
)
from firmware.line.clock import Clock, RealtimeClock
from firmware.line.modem_protocol import (
    DLE,
    ETX,
    FINAL_RESULTS,
    Discarded,
    Dle,
    Item,
    Line,
    ModemEvents,
    ModemInbox,
    VoiceEnd,
    int16_to_unsigned8,
    is_unsolicited,
    shield,
    unsigned8_to_int16,
)
from firmware.wire.errors import ConfigError

__all__ = ["ModemLine"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
# The first pause between init attempts; it doubles after each failure.
INIT_PAUSE_S = 0.5
# How long a read in the reader thread may block, so that it notices being stopped.
_READ_TIMEOUT_S = 0.1
_VSM_CHOICES = ("AT+VSM=128,8000", "AT+VSM=1,8000,0,0")
_NO_PORT = (
    "serial port {port} cannot be opened: {detail}; check [modem] port "
    '(use device.line = "sim" to try linerec without hardware)'
)


class _ModemFailure(Exception):
    """The modem refused a command, did not answer, or its port failed."""


class _ModemProtocol(serial.threaded.Protocol):  # type: ignore[misc]  # pyserial has no type hints
    """The reader thread's end: hands the bytes on, and never lets a bad byte stop the thread."""

    def __init__(self, inbox: ModemInbox) -> None:
        self._inbox = inbox

    def data_received(self, data: bytes) -> None:
        try:
            self._inbox.feed(data)
        except Exception:  # a parsing bug must not silence the modem for good
            log.exception("modem: %d bytes could not be read", len(data))

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None:
            self._inbox.connection_lost(f"the serial port failed: {exc}")


class ModemLine(LineBackend):
    """A voice modem on a serial port: see the module docstring."""

    name = "modem"

    def __init__(
        self,
        *,
        settings: ModemSettings,
        clock: Clock | None = None,
        serial_factory: Callable[..., Any] | None = None,
        sample_rate: int = SAMPLE_RATE,
        block_ms: int = 20,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            msg = f"sample_rate {sample_rate!r} is not possible on a voice modem: use {SAMPLE_RATE}"
            raise ConfigError(msg)
        try:
            self.block_frames = frames_per_block(sample_rate, block_ms)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.sample_rate = sample_rate
        self._block_s = self.block_frames / sample_rate
        self._settings = settings
        self._clock: Clock = RealtimeClock() if clock is None else clock
        self._factory = serial.serial_for_url if serial_factory is None else serial_factory
        self._lock = threading.RLock()
        self._inbox = ModemInbox(self._clock)
        self._events = ModemEvents(extension_pickup=settings.extension_pickup)
        self._pending: list[tuple[float, Item]] = []
        self._port: Any = None
        self._reader: Any = None
        self._started = self._closed = False
        self._voice = self._voice_by_extension = False
        self._healthy, self._detail = True, "ok"
        self._stream_t = self._last_event_t = self._last_probe = self._clock.now()
        self._open()

    # -- the port -------------------------------------------------------------

    def _open(self) -> None:
        s = self._settings
        try:
            port = self._factory(s.port, s.baudrate, timeout=_READ_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineError(_NO_PORT.format(port=s.port, detail=exc)) from None
        self._inbox.reset()
        reader = serial.threaded.ReaderThread(port, lambda: _ModemProtocol(self._inbox))
        reader.daemon = True
        reader.start()
        reader.connect()
        self._port, self._reader = port, reader

    def _release(self) -> None:
        reader, self._reader, self._port = self._reader, None, None
        if reader is not None:
            try:
                reader.close()
            except (serial.SerialException, OSError) as exc:
                log.warning("modem: closing %s: %s", self._settings.port, exc)

    def _write(self, data: bytes) -> None:
        if self._port is None:
            msg = f"serial port {self._settings.port} is closed"
            raise _ModemFailure(msg)
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            msg = f"writing to {self._settings.port} failed: {exc}"
            raise _ModemFailure(msg) from None

    # -- AT commands ----------------------------------------------------------

    def _command(self, command: str | None, *, expect: str = "OK", timeout_s: float | None = None) -> list[str]:
        """Send ``command`` (None: only wait) and return the reply lines before ``expect``."""
        if command is not None:
            self._write(command.encode("ascii") + b"\r")
        wait = self._settings.command_timeout_s if timeout_s is None else timeout_s
        # Real seconds: this is how long serial I/O may take, not a time on the line.
        deadline = time.monotonic() + wait
        replies: list[str] = []
        what = command or "the modem"
        while (left := deadline - time.monotonic()) > 0:
            got = self._inbox.next_item(min(left, 0.05))
            if self._inbox.lost is not None:
                raise _ModemFailure(self._inbox.lost)
            if got is None:
                continue
            t, item = got
            if not isinstance(item, Line):
                if isinstance(item, Dle):
                    self._pending.append(got)
                continue
            text = item.text
            if text == command:
                continue  # the modem's echo, before ATE0
            if is_unsolicited(text):
                self._pending.append((t, item))
            elif text == expect or (expect == "CONNECT" and text.startswith("CONNECT")):
                return replies
            elif text in FINAL_RESULTS:
                msg = f"{what} answered {text}"
                raise _ModemFailure(msg)
            else:
                replies.append(text)
        msg = f"{what} got no {expect} within {wait:g} s"
        raise _ModemFailure(msg)

    def _init_sequence(self) -> list[str]:
        s = self._settings
        # AT+VCID=1 every time: a modem forgets it on reset.
        commands = ["ATZ", "ATE0", "AT+VCID=1"]
        if s.country_code:
            commands.append(f"AT+GCI={s.country_code}")
        if s.extension_pickup:
            commands.append("AT+FCLASS=8")
        return commands

    def _initialise(self) -> None:
        """The init sequence, retried with growing pauses; LineError once every attempt failed."""
        s = self._settings
        last = ""
        for attempt in range(s.init_retries):
            try:
                for command in self._init_sequence():
                    self._command(command)
            except _ModemFailure as exc:
                last = str(exc)
                log.warning("modem: init attempt %d of %d failed: %s", attempt + 1, s.init_retries, last)
                if attempt + 1 < s.init_retries:
                    self._clock.sleep_until(self._clock.now() + INIT_PAUSE_S * 2**attempt)
                continue
            self._healthy, self._detail = True, "ok"
            return
        self._healthy = False
        self._detail = f"the modem on {s.port} did not initialise after {s.init_retries} attempts: {last}"
        raise LineError(self._detail)

    # -- LineBackend -------------------------------------------------------------

    def start(self) -> None:
        """Initialise the modem (reset, no echo, caller ID on, country); LineError if it will not."""
        with self._lock:
            if self._closed:
                msg = f"the modem line on {self._settings.port} is closed"
                raise LineError(msg)
            if self._started:
                return
            self._initialise()
            self._started = True
            self._stream_t = self._last_probe = self._clock.now()

    def read_block(self) -> LineBlock | None:
        """One block: the voice audio while off-hook, silence while idle, and the events meanwhile.

        The first call starts the backend if :meth:`start` was not called.
        """
        with self._lock:
            if self._closed:
                return None
            self.start()
            t0 = self._stream_t
            now = self._clock.now()
            if now > t0 + 2 * self._block_s:
                t0 = now - self._block_s  # fell behind (a long command, a jump of the clock): skip ahead
            end = t0 + self._block_s
            audio = self._voice_audio() if self._voice else np.zeros(self.block_frames, dtype=np.int16)
            self._clock.sleep_until(end)
            end = max(end, self._clock.now())
            events = self._drain(end)
            events += self._watchdog(end)
            self._stream_t = t0 + self._block_s
            return LineBlock(t0, tuple(events), audio)

    def _voice_audio(self) -> NDArray[np.int16]:
        data = self._inbox.take_audio(self.block_frames, 2 * self._block_s)
        if len(data) < self.block_frames:
            data += bytes([0x80]) * (self.block_frames - len(data))  # late data: pad with silence
        return unsigned8_to_int16(data)

    def _drain(self, now: float) -> list[LineEvent]:
        items, self._pending = self._pending + self._inbox.take_items(), []
        events: list[LineEvent] = []
        for stamp, item in sorted(items, key=lambda i: i[0]):
            t = min(max(stamp, self._last_event_t), now)
            self._last_event_t = t
            if isinstance(item, Line):
                if is_unsolicited(item.text):
                    events += self._events.line(t, item.text)
                else:
                    log.debug("modem: unexpected line %r", item.text[:80])
            elif isinstance(item, Dle):
                found = self._events.dle(t, item.code)
                events += found
                self._follow_hook(found)
            elif isinstance(item, VoiceEnd):
                log.warning("modem: the modem ended its voice data by itself")
            elif isinstance(item, Discarded):
                log.warning("modem: discarded %d bytes: %s", item.length, item.reason)
        events += self._events.poll(now)
        return events

    def _follow_hook(self, events: list[LineEvent]) -> None:
        """Record what an extension picked up; hang up when it hangs up."""
        try:
            if any(isinstance(e, OffHook) for e in events) and not self._voice:
                self._voice_by_extension = True
                self._enter_voice()
            elif any(isinstance(e, OnHook) for e in events) and self._voice_by_extension:
                self._leave_voice()
        except _ModemFailure as exc:
            log.error("modem: following the extension's hook failed: %s", exc)

    def _watchdog(self, now: float) -> list[LineEvent]:
        s = self._settings
        lost = self._inbox.lost
        if lost is None and now - max(self._inbox.last_heard, self._last_probe) < s.watchdog_s:
            return []
        self._last_probe = now
        if lost is not None:
            reason = lost
        elif self._voice:
            reason = f"the modem on {s.port} sent no voice data for {s.watchdog_s:g} s"
        elif self._healthy:
            try:
                self._command("AT")
            except _ModemFailure:
                reason = f"the modem on {s.port} did not answer AT within {s.command_timeout_s:g} s"
            else:
                return []
        else:
            reason = self._detail
        return self._recover(now, reason)

    def _recover(self, now: float, reason: str) -> list[LineEvent]:
        events: list[LineEvent] = []
        if self._healthy:
            log.error("modem: %s; reopening the port and initialising it again", reason)
            self._healthy, self._detail = False, reason
            events.append(BackendHealth(now, healthy=False, detail=reason))
        self._release()
        self._voice = self._voice_by_extension = False
        try:
            self._open()
            self._initialise()
        except LineError as exc:
            self._healthy, self._detail = False, str(exc)
            log.error("modem: still unusable: %s", exc)
            return events
        self._last_probe = self._clock.now()
        log.info("modem: initialised again after: %s", reason)
        events.append(BackendHealth(self._clock.now(), healthy=True, detail="ok"))
        return events

    # -- voice mode -----------------------------------------------------------

    def set_hook(self, off_hook: bool) -> None:
        """Off-hook: voice mode receiving the line's audio. On-hook: hang up and initialise again."""
        with self._lock:
            if self._closed:
                msg = f"the modem line on {self._settings.port} is closed; the hook cannot be switched"
                raise LineError(msg)
            self.start()
            try:
                if off_hook and not self._voice:
                    self._enter_voice()
                elif not off_hook and self._voice:
                    self._leave_voice()
            except _ModemFailure as exc:
                side = "off-hook" if off_hook else "on-hook"
                msg = f"the modem on {self._settings.port} could not go {side}: {exc}"
                raise LineError(msg) from None

    def _enter_voice(self) -> None:
        self._command("AT+FCLASS=8")
        for i, choice in enumerate(_VSM_CHOICES):
            try:
                self._command(choice)
                break
            except _ModemFailure:
                if i + 1 == len(_VSM_CHOICES):
                    raise
        self._command("AT+VLS=1")
        self._receive()

    def _receive(self) -> None:
        self._inbox.expect_voice(True)
        try:
            self._command("AT+VRX", expect="CONNECT")
        except _ModemFailure:
            self._inbox.expect_voice(False)
            raise
        self._voice = True
        self._inbox.last_heard = self._clock.now()

    def _stop_receiving(self) -> None:
        self._write(bytes([DLE, ord("!")]))
        try:
            self._command(None)
        except _ModemFailure as exc:
            log.warning("modem: stopping voice receive: %s", exc)
        self._inbox.expect_voice(False)

    def _leave_voice(self) -> None:
        self._stop_receiving()
        self._voice = self._voice_by_extension = False
        self._command("ATH")
        self._command("AT+FCLASS=0")
        try:
            self._initialise()
        except LineError as exc:
            raise _ModemFailure(str(exc)) from None

    def play(self, audio: NDArray[np.int16]) -> None:
        """Send int16 mono audio down the line with ``AT+VTX``; blocks until the modem has played it."""
        if audio.dtype != np.int16 or audio.ndim != 1:
            msg = f"play() takes int16 mono audio, not {audio.dtype} with shape {audio.shape}"
            raise LineError(msg)
        with self._lock:
            if not self._voice:
                log.warning("modem: on-hook, so %.1f s of audio were not played", len(audio) / self.sample_rate)
                return
            try:
                self._stop_receiving()
                self._command("AT+VTX", expect="CONNECT")
                self._write(shield(int16_to_unsigned8(audio)) + bytes([DLE, ETX]))
                self._command(None, timeout_s=len(audio) / self.sample_rate + self._settings.command_timeout_s)
                self._receive()
            except _ModemFailure as exc:
                msg = f"the modem on {self._settings.port} could not play audio: {exc}"
                raise LineError(msg) from None

    # -- state --------------------------------------------------------------------

    def health(self) -> BackendHealth:
        """Healthy while the modem answers; the detail says why not."""
        now = self._clock.now()
        if self._closed:
            return BackendHealth(now, healthy=False, detail=f"the modem line on {self._settings.port} is closed")
        return BackendHealth(now, healthy=self._healthy, detail=self._detail)

    @property
    def off_hook(self) -> bool:
        """Whether the modem holds the line (voice mode)."""
        return self._voice

    @property
    def bytes_heard(self) -> int:
        """How many bytes the modem has sent since the backend was made (for diagnostics and tests)."""
        return self._inbox.heard

    def close(self) -> None:
        """Hang up if off-hook (best effort) and release the port; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._voice:
                try:
                    self._stop_receiving()
                    self._command("ATH")
                except _ModemFailure as exc:
                    log.warning("modem: hanging up on close: %s", exc)
                self._voice = False
            self._release()
