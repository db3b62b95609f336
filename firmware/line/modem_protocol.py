"""What a voice modem says on its serial port, as values: AT lines, DLE-shielded voice data, line events.

No I/O here: :class:`ModemStream` splits the bytes a modem sends into
lines, DLE events and voice audio; :class:`ModemEvents` turns the unsolicited
ones (``RING``, caller ID reports, DLE events) into line events;
:class:`CallerIdReport` assembles one caller ID report block; :class:`ModemInbox` hands a reader thread's items to the
backend's thread. The serial port,
threads and clock live in :mod:`firmware.line.modem`.

Facts about modems used here, and how sure they are:

* ``RING`` comes once per ring cycle, at the start of the burst, with no end
  (ITU-T V.250 result codes; every modem). :class:`ModemEvents` therefore
  *estimates* each burst's end: :data:`RING_BURST_S` after the ``RING``, or at
  once if the next ``RING`` comes sooner.
* With ``AT+VCID=1`` a modem reports caller ID between the first and second
  ``RING`` (before the first on lines that send it before ringing) as lines
  ``DATE = MMDD``, ``TIME = HHMM``, ``NMBR = ...``, ``NAME = ...``, with ``O``
  (unavailable) or ``P`` (private) in place of a withheld value; a message it
  cannot format comes as ``MESG = <hex of the raw SDMF/MDMF bytes>``. Caller ID
  programs use these field names alike for USR and Conexant modems (Agere and
  others: unconfirmed); spacing around ``=`` varies, so it is optional here.
* In voice mode (``AT+FCLASS=8``) a byte 0x10 (DLE) shields what follows: DLE
  DLE is a data byte 0x10, DLE ETX ends the data, DLE + a letter is an event
  (ITU-T V.253). Mapped here: ``b`` busy, ``d`` dial tone, ``r`` ringback,
  ``R`` ring, ``l`` loop current interruption (far end gone), ``L`` loop
  polarity reversal; ``H``/``h`` handset and ``P``/``p`` extension off/on-hook
  only when the owner says the chipset reports them. ``s``/``q`` (silence and
  quiet) are only logged: Conexant chipsets are known to ignore silence
  detection settings, and linerec's own silence timeout decides. The letters
  ``b``, ``d``, ``s``, ``h``, ``H``, ``R`` are confirmed by several modem
  programs; ``l``, ``L``, ``P``, ``p``, ``r`` come from the V.253 event table
  as remembered, UNCONFIRMED on hardware.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.callerid import CallerIdError, parse_message
from firmware.line.base import (
    CallerId,
    CallerIdReceived,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    PolarityReversal,
    RingEnd,
    RingStart,
    ToneDetected,
)
from firmware.line.clock import Clock

__all__ = [
    "CID_QUIET_S",
    "DLE",
    "ETX",
    "FINAL_RESULTS",
    "MAX_LINE",
    "RING_BURST_S",
    "Audio",
    "CallerIdReport",
    "Discarded",
    "Dle",
    "Line",
    "ModemEvents",
    "ModemInbox",
    "ModemStream",
    "VoiceEnd",
    "int16_to_unsigned8",
    "is_unsolicited",
    "shield",
    "unsigned8_to_int16",
]

log = logging.getLogger(__name__)

DLE = 0x10
ETX = 0x03
# Longer than any AT reply or caller ID field; anything longer is noise.
MAX_LINE = 256
# Estimated length of a ring burst: shorter than the shortest ring cycle in
# firmware/data/cadences.toml (3 s), so the estimate always ends before the next RING.
RING_BURST_S = 1.0
# A caller ID report is complete when no field has come for this long.
CID_QUIET_S = 0.5
# Result codes that end an AT command (V.250 verbose form).
FINAL_RESULTS = frozenset({"OK", "ERROR", "CONNECT", "NO CARRIER", "BUSY", "NO DIALTONE", "NO ANSWER", "VCON"})

_CID_FIELD = re.compile(r"\s*([A-Z_]+)\s*=\s*(.*?)\s*")
_CID_KEYS = frozenset({"DATE", "TIME", "NMBR", "NAME", "MESG", "DDN_NMBR"})
_NUMBER = re.compile(r"[0-9*#+\- ]{1,32}")
_ABSENT = frozenset({"O", "P"})


# -- splitting the byte stream ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One line of text from the modem (a reply, a result code or an unsolicited report)."""

    text: str


@dataclass(frozen=True, slots=True)
class Dle:
    """A DLE-shielded event: DLE followed by ``code``."""

    code: str


@dataclass(frozen=True, slots=True)
class Audio:
    """Voice data, already unshielded."""

    data: bytes


@dataclass(frozen=True, slots=True)
class VoiceEnd:
    """DLE ETX: the modem ended its voice data; lines follow."""


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes thrown away, and why (an overlong line)."""

    length: int
    reason: str


Item = Line | Dle | Audio | VoiceEnd | Discarded


@dataclass
class ModemStream:
    """Splits a modem's bytes into lines, DLE events and voice audio, however they are chunked.

    Lines end at CR or LF; empty lines are dropped; text is decoded as Latin-1
    so that no byte can fail to decode; a line longer than ``max_line`` is
    discarded up to its end. A DLE between lines is an event too (modems in voice
    command mode report events that way). After :meth:`expect_voice`, the next
    ``CONNECT`` switches the stream to voice data until DLE ETX.
    """

    max_line: int = MAX_LINE
    voice: bool = False
    _expect_voice: bool = False
    _line: bytearray = field(default_factory=bytearray)
    _overlong: int = 0
    _dle_pending: bool = False
    # CONNECT ends with CR LF; the LF is not the first sample.
    _skip_lf: bool = False

    def expect_voice(self, expect: bool = True) -> None:
        """Whether the next ``CONNECT`` starts voice data (set before sending ``AT+VRX``)."""
        self._expect_voice = expect

    def feed(self, data: bytes) -> list[Item]:
        """The items completed by ``data``; partial ones wait for the next call."""
        items: list[Item] = []
        pos = 0
        while pos < len(data):
            pos = self._voice(data, pos, items) if self.voice else self._lines(data, pos, items)
        return items

    def _lines(self, data: bytes, pos: int, items: list[Item]) -> int:
        while pos < len(data):
            byte = data[pos]
            pos += 1
            if self._dle_pending:
                self._dle_pending = False
                items.append(Dle(chr(byte)))
            elif byte == DLE:
                self._dle_pending = True
            elif byte in (0x0D, 0x0A):
                line = self._end_line(items)
                if line is not None and line.startswith("CONNECT") and self._expect_voice:
                    self._expect_voice = False
                    self.voice = self._skip_lf = True
                    return pos
            elif self._overlong:
                self._overlong += 1
            elif len(self._line) >= self.max_line:
                self._overlong = len(self._line) + 1
                self._line.clear()
            else:
                self._line.append(byte)
        return pos

    def _end_line(self, items: list[Item]) -> str | None:
        if self._overlong:
            items.append(Discarded(self._overlong, f"a line longer than {self.max_line} bytes"))
            self._overlong = 0
            return None
        text = self._line.decode("latin-1").strip()
        self._line.clear()
        if not text:
            return None
        items.append(Line(text))
        return text

    def _voice(self, data: bytes, pos: int, items: list[Item]) -> int:
        audio = bytearray()
        if self._skip_lf:
            self._skip_lf = False
            if data[pos] == 0x0A:
                pos += 1
        while pos < len(data):
            if self._dle_pending:
                self._dle_pending = False
                code = data[pos]
                pos += 1
                if code == DLE:
                    audio.append(DLE)
                    continue
                if audio:
                    items.append(Audio(bytes(audio)))
                    audio.clear()
                if code == ETX:
                    self.voice = False
                    items.append(VoiceEnd())
                    return pos
                items.append(Dle(chr(code)))
                continue
            nxt = data.find(DLE, pos)
            if nxt < 0:
                audio += data[pos:]
                pos = len(data)
            else:
                audio += data[pos:nxt]
                pos = nxt + 1
                self._dle_pending = True
        if audio:
            items.append(Audio(bytes(audio)))
        return pos


class ModemInbox:
    """Where the serial reader thread leaves what it heard for the backend's thread.

    The one stateful, thread-safe piece here (no I/O): :meth:`feed` runs in the
    reader thread, splits the bytes with a :class:`ModemStream` and stamps each
    item with the clock; voice audio collects in a buffer of its own.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._stream = ModemStream()
        self._items: deque[tuple[float, Item]] = deque()
        self._audio = bytearray()
        self.heard = 0
        self.last_heard = clock.now()
        self.lost: str | None = None

    def feed(self, data: bytes) -> None:
        """Take bytes from the port (reader thread)."""
        now = self._clock.now()
        with self._cond:
            self.heard += len(data)
            self.last_heard = now
            for item in self._stream.feed(data):
                if isinstance(item, Audio):
                    self._audio += item.data
                else:
                    self._items.append((now, item))
            self._cond.notify_all()

    def reset(self) -> None:
        """A freshly opened port: no half line, no voice data, no failure."""
        with self._cond:
            self._stream = ModemStream()
            self._audio.clear()
            self.lost = None
            self.last_heard = self._clock.now()

    def expect_voice(self, expect: bool) -> None:
        """Whether the next CONNECT starts voice data (a fresh audio buffer)."""
        with self._cond:
            self._stream.expect_voice(expect)
            if expect:
                self._audio.clear()

    def next_item(self, timeout_s: float) -> tuple[float, Item] | None:
        """The oldest item, waiting up to ``timeout_s`` real seconds (None: nothing, or the port failed)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) or self.lost is not None, timeout_s)
            return self._items.popleft() if self._items else None

    def take_items(self) -> list[tuple[float, Item]]:
        """Every item waiting, oldest first."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def take_audio(self, size: int, timeout_s: float) -> bytes:
        """Up to ``size`` bytes of voice data, waiting up to ``timeout_s`` real seconds for all of them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._audio) >= size, timeout_s)
            data = bytes(self._audio[:size])
            del self._audio[:size]
            return data

    def connection_lost(self, detail: str) -> None:
        """The reader thread ended on a port failure."""
        with self._cond:
            self.lost = detail
            self._cond.notify_all()


def shield(data: bytes) -> bytes:
    """Voice data as it goes to the modem: every 0x10 byte doubled."""
    return data.replace(bytes([DLE]), bytes([DLE, DLE]))


def unsigned8_to_int16(data: bytes) -> NDArray[np.int16]:
    """8-bit unsigned linear samples (0x80 is silence) as int16."""
    samples = np.frombuffer(data, dtype=np.uint8).astype(np.int16)
    return ((samples - 128) << 8).astype(np.int16)


def int16_to_unsigned8(audio: NDArray[np.int16]) -> bytes:
    """int16 samples as 8-bit unsigned linear, rounded to the nearest step."""
    scaled = np.clip(np.rint(audio.astype(np.float64) / 256.0) + 128, 0, 255)
    return bytes(scaled.astype(np.uint8))


# -- caller ID reports -----------------------------------------------------------


def cid_field(text: str) -> tuple[str, str] | None:
    """``("NMBR", "2125550142")`` for a caller ID report line, None for any other line."""
    match = _CID_FIELD.fullmatch(text)
    if match is None or match.group(1) not in _CID_KEYS:
        return None
    return match.group(1), match.group(2)


@dataclass
class CallerIdReport:
    """The fields of one caller ID report block, as they come in."""

    number: str | None = None
    number_absent: str | None = None
    name: str | None = None
    name_absent: str | None = None
    message: CallerId | None = None
    fields: int = 0

    def add(self, key: str, value: str) -> None:
        """Take one field; a malformed value raises ValueError and leaves the report as it was."""
        if key in ("NMBR", "DDN_NMBR"):
            if value in _ABSENT:
                self.number, self.number_absent = None, value
            elif _NUMBER.fullmatch(value):
                self.number, self.number_absent = value.replace(" ", ""), None
            else:
                msg = f"caller ID number {value!r} is neither digits nor O/P"
                raise ValueError(msg)
        elif key == "NAME":
            if not value or len(value) > 64:
                msg = f"caller ID name {value!r} is empty or longer than 64 characters"
                raise ValueError(msg)
            if value in _ABSENT:
                self.name, self.name_absent = None, value
            else:
                self.name, self.name_absent = value, None
        elif key == "MESG":
            self.message = _message(value)
        elif not re.fullmatch(r"\d{4}", value):
            msg = f"caller ID {key} {value!r} is not four digits"
            raise ValueError(msg)
        self.fields += 1

    def caller_id(self) -> CallerId | None:
        """The caller ID the report gives, or None when it named neither number nor name."""
        if self.number or self.number_absent or self.name or self.name_absent:
            return CallerId(
                number=self.number,
                name=self.name,
                number_absent=self.number_absent,
                name_absent=self.name_absent,
                standard="modem",
            )
        return self.message


def _message(value: str) -> CallerId:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        msg = f"caller ID message {value!r} is not hexadecimal"
        raise ValueError(msg) from None
    try:
        return parse_message(raw)
    except CallerIdError as exc:
        raise ValueError(str(exc)) from None


# -- unsolicited reports as line events ----------------------------------------------


def is_unsolicited(text: str) -> bool:
    """Whether a line is one the modem sends by itself (a ring or caller ID), not a command reply."""
    return text == "RING" or cid_field(text) is not None


_HOOK_CODES = frozenset("HPhp")
_TONES = {"b": "busy", "d": "dial", "r": "ringback"}
_LOGGED = {
    "s": "silence",
    "q": "quiet",
    "u": "transmit buffer underrun",
    "o": "receive buffer overrun",
    "c": "fax calling tone",
    "e": "data calling tone",
    "a": "answer tone",
}


class ModemEvents:
    """Turns a modem's unsolicited lines and DLE events into line events, in time order.

    Feed it with :meth:`line` and :meth:`dle` as items arrive and call
    :meth:`poll` with the current time: ring ends and quiet-completed caller ID
    reports come out of the poll. Nothing here raises on bad input: a malformed
    report is logged and skipped.
    """

    def __init__(self, *, extension_pickup: bool = False) -> None:
        self.extension_pickup = extension_pickup
        self._ring_at: float | None = None
        self._report: CallerIdReport | None = None
        self._report_at = 0.0

    def line(self, t: float, text: str) -> list[LineEvent]:
        """Events for one unsolicited line at ``t``."""
        if text == "RING":
            return self._ring(t)
        parsed = cid_field(text)
        if parsed is None:
            return []
        events = self.poll(t)
        report = self._report if self._report is not None else CallerIdReport()
        try:
            report.add(*parsed)
        except ValueError as exc:
            log.warning("modem: skipped a malformed caller ID field %r: %s", text[:80], exc)
            return events
        self._report, self._report_at = report, t
        return events

    def dle(self, t: float, code: str) -> list[LineEvent]:
        """Events for one DLE-shielded event code at ``t``."""
        if code in _TONES:
            return [ToneDetected(t, _TONES[code])]
        if code == "R":
            return self._ring(t)
        if code == "l":
            # The modem says the loop was broken, not for how long.
            return [LoopDrop(t, 0.0)]
        if code == "L":
            return [PolarityReversal(t)]
        if code in _HOOK_CODES:
            if not self.extension_pickup:
                log.info("modem: ignored a phone hook report (DLE %s); [modem] extension_pickup is off", code)
                return []
            return [OffHook(t)] if code in "HP" else [OnHook(t)]
        if code in _LOGGED:
            log.debug("modem: %s (DLE %s)", _LOGGED[code], code)
        else:
            log.debug("modem: unknown DLE event 0x%02x", ord(code))
        return []

    def poll(self, t: float) -> list[LineEvent]:
        """Events due by ``t``: an estimated ring end, a caller ID report gone quiet."""
        events: list[LineEvent] = []
        if self._ring_at is not None and t >= self._ring_at + RING_BURST_S:
            events.append(RingEnd(self._ring_at + RING_BURST_S, RING_BURST_S))
            self._ring_at = None
        if self._report is not None and t >= self._report_at + CID_QUIET_S:
            events += self._finish_report()
        return events

    def _ring(self, t: float) -> list[LineEvent]:
        events = self.poll(t)
        if self._ring_at is not None:
            events.append(RingEnd(t, t - self._ring_at))
        # A report in progress ends at the ring that follows it.
        events += self._finish_report()
        self._ring_at = t
        events.append(RingStart(t))
        return events

    def _finish_report(self) -> list[LineEvent]:
        report, self._report = self._report, None
        if report is None:
            return []
        caller_id = report.caller_id()
        if caller_id is None:
            log.warning("modem: a caller ID report named no number and no name; skipped")
            return []
        return [CallerIdReceived(self._report_at, caller_id)]
