"""Where linerec's log goes: structured entries to journald under systemd, plain lines to stderr otherwise.

Under systemd, stderr is connected to the journal and ``JOURNAL_STREAM`` names
it (``<device>:<inode>``). When it names the stderr this process has, records
are sent instead as journal entries through journald's native protocol: one
Unix datagram to ``/run/systemd/journal/socket`` holding the fields, each as
``NAME=value\\n``, or, for a value that contains a newline, as ``NAME\\n``, the
value's length as a 64-bit little-endian number, the value and ``\\n``. An entry
too big for one datagram goes in a sealed memfd whose descriptor is passed
alongside an empty datagram. Besides ``MESSAGE`` and ``PRIORITY`` each entry
carries ``SYSLOG_IDENTIFIER``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``,
``LOGGER``, ``THREAD_NAME`` and, while a call is on the line, ``LINEREC_CALL_ID``
(``journalctl LINEREC_CALL_ID=...`` shows one call's story).

Anywhere else the log stays as it was: one line per record on stderr.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "linerec"
STDERR_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

# syslog priorities (RFC 5424) for the logging levels.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

# The call the current thread is handling, for the entries it logs meanwhile.
_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("linerec_call_id", default=None)


def set_call_id(call_id: str | None) -> None:
    """Tag what this thread logs from now on with ``call_id`` (None: no call)."""
    _CALL_ID.set(call_id)


def priority(level: int) -> int:
    """The syslog priority of a logging level (debug and below are 7)."""
    return next((prio for floor, prio in _PRIORITIES if level >= floor), 7)


def encode_entry(fields: Iterable[tuple[str, str | bytes]]) -> bytes:
    """A journal entry in the native protocol; values with a newline take the length-prefixed form."""
    out = bytearray()
    for name, value in fields:
        if not _FIELD_NAME.fullmatch(name):
            msg = f"journal field name {name!r} must be upper-case letters, digits and '_', not starting with one"
            raise ValueError(msg)
        data = value.encode("utf-8", "replace") if isinstance(value, str) else value
        key = name.encode("ascii")
        if b"\n" in data:
            out += key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as a structured entry; falls back to a stderr line if it cannot."""

    def __init__(
        self,
        *,
        identifier: str = IDENTIFIER,
        address: Path = JOURNAL_SOCKET,
        fallback: TextIO | None = None,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.identifier = identifier
        self.address = str(address)
        self._fallback = fallback
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failed: str | None = None

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        """The journal fields of ``record``."""
        fields = [
            ("MESSAGE", self.format(record)),
            ("PRIORITY", str(priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
            ("THREAD_NAME", record.threadName or ""),
        ]
        call_id = getattr(record, "call_id", None) or _CALL_ID.get()
        if call_id:
            fields.append(("LINEREC_CALL_ID", str(call_id)))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record; if journald cannot take it, write it to the fallback stream instead."""
        try:
            entry = encode_entry(self.fields(record))
            self._send(entry)
        except OSError as exc:
            self._fall_back(record, exc)
        except Exception:  # logging must never take the program down
            self.handleError(record)

    def _send(self, entry: bytes) -> None:
        try:
            self._sock.sendto(entry, self.address)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_in_memfd(entry)
        self._failed = None

    def _send_in_memfd(self, entry: bytes) -> None:
        """An entry larger than a datagram: in a sealed memfd, its descriptor passed with SCM_RIGHTS."""
        fd = os.memfd_create("linerec-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([b""], rights, 0, self.address)
        finally:
            os.close(fd)

    def _fall_back(self, record: logging.LogRecord, exc: OSError) -> None:
        stream = self._fallback if self._fallback is not None else sys.stderr
        reason = exc.strerror or str(exc)
        if self._failed != reason:
            self._failed = reason
            stream.write(f"linerec: the journal at {self.address} is not taking entries ({reason}); logging here\n")
        stream.write(logging.Formatter(STDERR_FORMAT).format(record) + "\n")
        stream.flush()

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
        super().close()


def stderr_is_journal(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` names the stream stderr is (systemd connected it to the journal)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdecimal() and inode.isdecimal()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def configure(
    *,
    verbose: bool = False,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    journal: Path = JOURNAL_SOCKET,
) -> logging.Handler | None:
    """Send the log to the journal when stderr is the journal, else to stderr as lines.

    Like :func:`logging.basicConfig`, it leaves a log that is already set up (by
    a test harness, say) alone and returns None; otherwise it returns the handler.
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    stream = sys.stderr if stream is None else stream
    handler: logging.Handler
    if stderr_is_journal(env, stream) and _is_socket(journal):
        handler = JournalHandler(address=journal, fallback=stream)
        # The journal keeps its own time and the logger and level as fields: the message is enough.
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _is_socket(path: Path) -> bool:
    try:
        return path.is_socket()
    except OSError:
        return False
