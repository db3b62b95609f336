"""``linerec demo``: scripted calls on the simulated line, delivered to an in-process agent.

This is the one module of ``firmware`` that imports ``agent``: the demo plays
both sides on one machine. Nothing else on the device does.

Everything is real except the line: the recordings are FLAC, encrypted with
age to a throwaway archive identity, signed with a throwaway device key,
published over MQTT (an embedded broker unless one is given) and verified,
stored and indexed by the agent's own ingest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive, CallRow
from agent.ingest import Ingest
from firmware.config import ArchiveSettings, DeviceConfig, DeviceSettings, SimSettings, UplinkSettings
from firmware.errors import ConfigError, LinerecError
from firmware.line.sim import RealtimeClock, SimLine, demo_calls
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire import age
from firmware.wire.broker import BrokerSettings
from firmware.wire.signing import load_or_create_signing_key, public_key_text

log = logging.getLogger("linerec.demo")

DEVICE_ID = "demo-pi"
MARKER = ".linerec-demo"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``linerec demo`` was asked to do."""

    calls: int = 3
    keep: Path | None = None
    broker: str | None = None
    realtime: bool = False
    timeout_s: float = 120.0


class EmbeddedBroker:
    """An amqtt broker on a free loopback port, in a thread of its own."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-broker", daemon=True)
        self._broker: object | None = None

    def start(self) -> BrokerSettings:
        """Start the broker; returns settings to reach it."""
        from amqtt.broker import Broker  # noqa: PLC0415  (only the demo needs amqtt)

        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}}
        self._thread.start()

        async def start() -> object:
            broker = Broker(config, loop=self._loop)
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=15)
        return BrokerSettings(host="127.0.0.1", port=self.port, protocol="3.1.1")

    def stop(self) -> None:
        """Shut the broker down and end its thread."""
        if self._broker is not None:
            shutdown = self._broker.shutdown()  # type: ignore[attr-defined]
            try:
                asyncio.run_coroutine_threadsafe(shutdown, self._loop).result(timeout=10)
            except (TimeoutError, RuntimeError) as exc:
                log.warning("embedded broker did not stop cleanly: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def parse_broker(text: str) -> BrokerSettings:
    """``HOST:PORT`` as broker settings (MQTT 3.1.1, understood by every broker)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        msg = f"--broker {text!r} is not HOST:PORT, e.g. localhost:1883"
        raise ConfigError(msg)
    return BrokerSettings(host=host, port=int(port), protocol="3.1.1")


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="linerec-demo-") as tmp:
            yield Path(tmp)
        return
    if keep.exists() and any(keep.iterdir()):
        if not (keep / MARKER).exists():
            msg = f"--keep {keep} is a folder with other files in it; name a new or empty folder"
            raise ConfigError(msg)
        shutil.rmtree(keep)  # an earlier demo's throwaway keys and calls
    keep.mkdir(parents=True, exist_ok=True)
    (keep / MARKER).write_text("made by linerec demo; the next demo run with --keep here replaces it\n")
    yield keep


def run(options: DemoOptions, out: TextIO) -> list[CallRow]:
    """Run the demo and print the archived calls; returns their index rows."""
    if not 1 <= options.calls <= 100:
        msg = f"--calls {options.calls} is out of range; expected 1-100"
        raise ConfigError(msg)
    with _workdir(options.keep) as work:
        identity = age.generate_identity()
        identity_file = work / "identity.txt"
        identity_file.touch(mode=0o600)
        identity_file.write_text(f"# linerec demo archive identity\n{identity}\n")
        key = load_or_create_signing_key(work / "device" / "signing.key")

        broker = EmbeddedBroker() if options.broker is None else None
        settings = broker.start() if broker else parse_broker(options.broker or "")
        print(f"broker: {'embedded at ' if broker else ''}{settings.address}", file=out)
        try:
            rows = _play(options, work, identity=identity, key=key, settings=settings, out=out)
        finally:
            if broker:
                broker.stop()
        _report(rows, work, identity_file, options, out)
        return rows


def _play(
    options: DemoOptions, work: Path, *, identity: str, key: Ed25519PrivateKey, settings: BrokerSettings, out: TextIO
) -> list[CallRow]:
    config = DeviceConfig(
        device=DeviceSettings(id=DEVICE_ID, line="sim", state_dir=work / "device"),
        archive=ArchiveSettings(recipients=(age.recipient_of(identity),)),
        mqtt=settings,
        uplink=UplinkSettings(ack_timeout_s=15.0),
        sim=SimSettings(calls=options.calls, realtime=options.realtime),
    )
    with Archive(work / "archive") as archive:
        archive.enrol(DEVICE_ID, public_key_text(key))
        ingest = Ingest(archive=archive, identities=[age.parse_identity(identity)], broker=settings)
        ingest.start()
        spool = Spool(config.device.spool_dir)
        uplink = Uplink(device_id=DEVICE_ID, spool=spool, broker=settings, ack_timeout_s=15.0)
        uplink.start()
        try:
            # Caller ID goes down the line as FSK audio, and the device's own decoder reads it.
            script = [dataclasses.replace(demo_calls()[i % 3], caller_id_audio=True) for i in range(options.calls)]
            clock = RealtimeClock() if options.realtime else None
            print(f"playing {len(script)} scripted calls on the simulated line...", file=out)
            with SimLine(script, sample_rate=config.audio.sample_rate, clock=clock) as line:
                service = DeviceService.on_line(
                    config=config, backend=line, spool=spool, signing_key=key, uplink=uplink
                )
                recorded = service.run()
            print(f"recorded {len(recorded)} calls; delivering...", file=out)
            if not uplink.wait_delivered(options.timeout_s) or not ingest.wait_stored(len(recorded), options.timeout_s):
                msg = f"the agent did not confirm all {len(recorded)} recordings within {options.timeout_s:g} s"
                raise LinerecError(msg)
        finally:
            uplink.stop()
            ingest.stop()
        return list(archive.calls())


ABSENCE = {"P": "withheld", "O": "unavailable"}


def describe_caller(row: CallRow) -> str:
    """The caller as a person would read it: number and name, or why there is none."""
    if row.caller_number:
        return row.caller_number + (f"  {row.caller_name}" if row.caller_name else "")
    if row.caller_absent:
        return f"({ABSENCE.get(row.caller_absent, row.caller_absent)})"
    return "(no caller ID)"


def _report(rows: list[CallRow], work: Path, identity_file: Path, options: DemoOptions, out: TextIO) -> None:
    print(f"\narchived calls ({len(rows)}):", file=out)
    print(f"{'id':<29} {'started (UTC)':<20} {'dur s':>6}  {'answered':<8}  caller", file=out)
    for row in sorted(rows, key=lambda r: r.id):
        caller = describe_caller(row)
        started = row.started_at[:19].replace("T", " ")
        print(
            f"{row.id:<29} {started:<20} {row.duration_s:6.1f}  {'yes' if row.answered else 'no':<8}  {caller}",
            file=out,
        )
    answered = [r for r in rows if r.answered]
    if options.keep is not None and answered:
        print(f"\nkept in {work}: identity.txt, archive/ (index.sqlite and .age files)", file=out)
        print("decrypt a call with the stock age tool:", file=out)
        print(f"  age -d -i {identity_file} -o call.flac {answered[0].path}", file=out)
    elif answered:
        print("\nrun with --keep DIR to keep the identity and archive and decrypt a call with `age -d`", file=out)
