"""Structured logging to journald, against a datagram socket the test binds in journald's place.

The entries are read back with a parser of journald's native protocol written
here from its description: ``NAME=value`` lines, or ``NAME``, a newline, a
64-bit little-endian length and the value, for values that hold newlines; an
entry too big for a datagram arrives as a sealed memfd passed with SCM_RIGHTS.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware import logs
from firmware.config import ArchiveSettings, DeviceConfig, DeviceSettings
from firmware.line.sim import SimLine
from firmware.logs import JournalHandler, encode_entry, stderr_is_journal
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.wire import age
from firmware.wire.signing import load_or_create_signing_key

ROOT = Path(__file__).resolve().parents[1]


def parse_entry(data: bytes) -> dict[str, list[str]]:
    """Fields of a native-protocol entry (a field may repeat)."""
    fields: dict[str, list[str]] = {}
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields.setdefault(name.decode(), []).append(value.decode())
    return fields


class Journal:
    """A datagram socket bound where journald's would be; gives back what arrives, memfds included."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(5)

    def receive(self) -> bytes:
        fds = array.array("i")
        data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, payload in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not fds:
            return data
        assert data == b""
        fd = fds[0]
        try:
            self.seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)

    def entry(self) -> dict[str, list[str]]:
        return parse_entry(self.receive())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journal() -> Iterator[Journal]:
    folder = Path(tempfile.mkdtemp(prefix="linerec-journal-"))  # short: a socket path holds 107 bytes
    sink = Journal(folder / "socket")
    yield sink
    sink.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def logger(journal: Journal) -> Iterator[logging.Logger]:
    handler = JournalHandler(address=journal.path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("linerec.test-journal")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.removeHandler(handler)
    handler.close()


def test_a_value_with_a_newline_takes_the_length_prefixed_form() -> None:
    data = encode_entry([("MESSAGE", "two\nlines"), ("PRIORITY", "6")])
    assert data == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\nPRIORITY=6\n"
    assert parse_entry(data) == {"MESSAGE": ["two\nlines"], "PRIORITY": ["6"]}


@pytest.mark.parametrize("name", ["message", "_PID", "1ST", "CALL-ID", ""])
def test_a_field_name_journald_would_refuse_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match=f"journal field name {name!r} must be upper-case letters"):
        encode_entry([(name, "x")])


def test_a_record_arrives_with_its_priority_source_and_logger(journal: Journal, logger: logging.Logger) -> None:
    logger.warning("the spool's disk has %d MB free", 42)
    line = sys._getframe().f_lineno - 1
    fields = journal.entry()
    assert fields["MESSAGE"] == ["the spool's disk has 42 MB free"]
    assert fields["PRIORITY"] == ["4"]
    assert fields["SYSLOG_IDENTIFIER"] == ["linerec"]
    assert fields["LOGGER"] == ["linerec.test-journal"]
    assert fields["CODE_FILE"] == [__file__]
    assert fields["CODE_LINE"] == [str(line)]
    assert fields["CODE_FUNC"] == ["test_a_record_arrives_with_its_priority_source_and_logger"]
    assert fields["THREAD_NAME"] == ["MainThread"]
    assert "LINEREC_CALL_ID" not in fields


def test_a_traceback_arrives_whole_in_one_entry(journal: Journal, logger: logging.Logger) -> None:
    try:
        raise OSError("the card vanished")
    except OSError:
        logger.exception("capture failed")
    [message] = journal.entry()["MESSAGE"]
    assert message.startswith("capture failed\nTraceback (most recent call last):\n")
    assert message.endswith("OSError: the card vanished")


def test_the_call_in_progress_tags_what_its_thread_logs(journal: Journal, logger: logging.Logger) -> None:
    logs.set_call_id("20250101T120000000Z-0a1b2c3d")
    try:
        logger.info("answered")
        logger.info("given explicitly", extra={"call_id": "20250101T130000000Z-ffffffff"})
    finally:
        logs.set_call_id(None)
    logger.info("idle again")
    assert journal.entry()["LINEREC_CALL_ID"] == ["20250101T120000000Z-0a1b2c3d"]
    assert journal.entry()["LINEREC_CALL_ID"] == ["20250101T130000000Z-ffffffff"]
    assert "LINEREC_CALL_ID" not in journal.entry()


def test_an_entry_too_big_for_a_datagram_arrives_in_a_sealed_memfd(journal: Journal, logger: logging.Logger) -> None:
    big = "x" * 400_000 + "\nend"
    logger.error("%s", big)
    fields = journal.entry()
    assert fields["MESSAGE"] == [big]
    assert fields["PRIORITY"] == ["3"]
    assert journal.seals & fcntl.F_SEAL_WRITE


def test_a_journal_that_is_not_there_falls_back_to_stderr_lines(tmp_path: Path) -> None:
    stream = tmp_path / "stderr.txt"
    with stream.open("w") as out:
        handler = JournalHandler(address=tmp_path / "no-journal", fallback=out)
        log = logging.getLogger("linerec.test-fallback")
        log.addHandler(handler)
        log.propagate = False
        try:
            log.error("first")
            log.error("second")
        finally:
            log.removeHandler(handler)
            handler.close()
    lines = stream.read_text().splitlines()
    assert lines[0] == (
        f"linerec: the journal at {tmp_path / 'no-journal'} is not taking entries (No such file or directory); "
        "logging here"
    )
    assert [line.split(" ", 2)[2] for line in lines[1:]] == [
        "linerec.test-fallback ERROR first",
        "linerec.test-fallback ERROR second",
    ]


def test_journal_stream_must_name_the_stderr_this_process_has(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as err, (tmp_path / "other").open("w") as other:
        st = os.fstat(err.fileno())
        mine = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(mine, err)
        assert not stderr_is_journal(mine, other)
        assert not stderr_is_journal({"JOURNAL_STREAM": "journal"}, err)
        assert not stderr_is_journal({}, err)


# Sets up logging as `linerec` does, with stderr a file whose device and inode JOURNAL_STREAM names.
CHILD = """
import logging, os, sys
from pathlib import Path
from firmware import logs
st = os.fstat(2)
env = dict(os.environ)
if sys.argv[2] == "journal":
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
logs.configure(env=env, journal=Path(sys.argv[1]))
logging.getLogger("linerec.service").info("line %s: ringing", "line1")
"""


@pytest.mark.parametrize("where", ["journal", "stderr"])
def test_linerec_logs_to_the_journal_only_when_stderr_is_the_journal(
    journal: Journal, tmp_path: Path, where: str
) -> None:
    err = tmp_path / "stderr.txt"
    with err.open("wb") as out:
        subprocess.run(
            [sys.executable, "-c", CHILD, str(journal.path), where],
            stderr=out,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    if where == "journal":
        fields = journal.entry()
        assert (fields["MESSAGE"], fields["PRIORITY"], fields["LOGGER"]) == (
            ["line line1: ringing"],
            ["6"],
            ["linerec.service"],
        )
        assert err.read_text() == ""
    else:
        assert err.read_text().endswith(" linerec.service INFO line line1: ringing\n")
        journal.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            journal.receive()


def test_everything_the_service_logs_about_one_call_carries_that_calls_id(
    journal: Journal, logger: logging.Logger, tmp_path: Path
) -> None:
    handler = logger.handlers[0]
    service_log = logging.getLogger("linerec")
    service_log.addHandler(handler)
    level = service_log.level
    service_log.setLevel(logging.INFO)
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(age.generate_identity()),)),
    )
    try:
        line = SimLine.from_scenario("us-basic", start_time=1_790_000_000.0, seed=5)
        with line:
            DeviceService(
                config=config,
                backend=line,
                spool=Spool(config.device.spool_dir),
                signing_key=load_or_create_signing_key(config.device.signing_key_path),
            ).run()
    finally:
        service_log.removeHandler(handler)
        service_log.setLevel(level)
    journal.sock.settimeout(0.5)
    entries = []
    while True:
        try:
            entries.append(parse_entry(journal.receive()))
        except TimeoutError:
            break
    about_the_call = [e for e in entries if e["MESSAGE"][0].startswith("line line1: ")]
    assert [e["MESSAGE"][0].split()[2] for e in about_the_call] == ["ringing", "ringing", "answered", "ended"]
    ids = {e["LINEREC_CALL_ID"][0] for e in about_the_call}
    assert len(ids) == 1
    assert ids.pop().startswith("20260921T")  # the first ring, on the simulated line's clock
