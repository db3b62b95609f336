"""The ``linerec-agent`` command: keys, enrolment, ingest, listing and export of recordings."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agent import __version__, config
from agent.errors import AgentError
from firmware.wire import age
from firmware.wire.errors import LinerecError

if TYPE_CHECKING:
    from agent.archive import Archive

log = logging.getLogger("linerec.agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linerec-agent", description="linerec host agent: archive of calls.")
    parser.add_argument("--version", action="version", version=f"linerec-agent {__version__}")
    parser.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="agent.toml to use")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="make the archive's age identity; prints its recipient")
    keygen.add_argument("--out", type=Path, required=True, help="identity file to create (mode 0600)")

    devices = sub.add_parser("devices", help="enrolled devices")
    dev_sub = devices.add_subparsers(dest="devices_command", required=True)
    add = dev_sub.add_parser("add", help="enrol a device by its signing key (from `linerec keys show`)")
    add.add_argument("device_id")
    add.add_argument("public_key", help="ed25519:<base64>")
    add.add_argument("--replace", action="store_true", help="replace the key of an enrolled device")
    listing = dev_sub.add_parser("list", help="list enrolled devices")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    sub.add_parser("run", help="receive, verify and archive recordings from the broker")

    calls = sub.add_parser("list", help="list archived calls, newest first")
    calls.add_argument("--json", action="store_true", help="one JSON object per line")
    calls.add_argument("--device", help="only this device's calls")
    calls.add_argument("--limit", type=int, help="at most this many calls")

    export = sub.add_parser("export", help="decrypt one recording to a WAV or FLAC file")
    export.add_argument("recording_id")
    export.add_argument("out", type=Path, help="output file: .wav or .flac")
    export.add_argument("--identity", type=Path, help="age identity file (default: from the config)")
    export.add_argument(
        "--original", action="store_true", help="the untrimmed original, when the device kept one (keep_original)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linerec-agent``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "keygen":
            return _keygen(args.out)
        cfg = config.load(args.config)
        if args.command == "devices":
            return _devices(cfg, args)
        if args.command == "run":
            return _run(cfg)
        if args.command == "list":
            return _list(cfg, args)
        return _export(cfg, args)
    except LinerecError as exc:
        print(f"linerec-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _keygen(out: Path) -> int:
    identity = age.generate_identity()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"{out} already exists; an archive identity is never overwritten"
        raise AgentError(msg) from None
    except OSError as exc:
        msg = f"cannot create {out}: {exc.strerror}"
        raise AgentError(msg) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"# linerec archive identity\n# public key: {age.recipient_of(identity)}\n{identity}\n")
        f.flush()
        os.fsync(f.fileno())
    print(age.recipient_of(identity))
    return 0


def _open_archive(cfg: config.AgentConfig) -> Archive:
    from agent.archive import Archive  # noqa: PLC0415

    return Archive(cfg.agent.archive_dir, cfg.agent.database_path)


def _devices(cfg: config.AgentConfig, args: argparse.Namespace) -> int:
    with _open_archive(cfg) as archive:
        if args.devices_command == "add":
            archive.enrol(args.device_id, args.public_key, replace=args.replace)
            print(f"enrolled {args.device_id}")
            return 0
        for device in archive.devices():
            if args.json:
                print(json.dumps(device, default=str))
            else:
                print(f"{device['id']:<24} {device['public_key']}  enrolled {device['enrolled_at']}")
    return 0


def _list(cfg: config.AgentConfig, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        msg = f"--limit {args.limit} must be 1 or more"
        raise AgentError(msg)
    with _open_archive(cfg) as archive:
        for row in archive.calls(device=args.device, limit=args.limit):
            if args.json:
                print(json.dumps(row.to_json()))
            else:
                caller = row.caller_number or (f"({row.caller_absent})" if row.caller_absent else "-")
                answered = "answered" if row.answered else "missed"
                print(f"{row.id}  {row.device:<16} {row.started_at}  {row.duration_s:7.1f}s  {answered:<8} {caller}")
    return 0


def _run(cfg: config.AgentConfig) -> int:
    from agent.ingest import Ingest  # noqa: PLC0415
    from agent.ratelimit import DeviceRateLimit  # noqa: PLC0415

    identities = age.load_identities(cfg.agent.identity)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with _open_archive(cfg) as archive:
        limit = DeviceRateLimit(rate=cfg.agent.rate_limit_kb_s * 1024, burst=cfg.agent.rate_burst_kb * 1024)
        ingest = Ingest(
            archive=archive, identities=identities, broker=cfg.mqtt, client_id=cfg.agent.client_id, rate_limit=limit
        )
        ingest.start()
        log.info("agent running: broker %s, archive %s", cfg.mqtt.address, cfg.agent.archive_dir)
        stop.wait()
        ingest.stop()
    return 0


def _export(cfg: config.AgentConfig, args: argparse.Namespace) -> int:
    from agent.export import export  # noqa: PLC0415

    identities = age.load_identities(args.identity or cfg.agent.identity)
    if args.out.suffix.lower() not in (".wav", ".flac"):
        msg = f"output {args.out} must end in .wav or .flac"
        raise AgentError(msg)
    with _open_archive(cfg) as archive:
        row = archive.get(args.recording_id)
    if not row.answered or row.duration_s == 0:
        msg = f"call {row.id} was not answered, so it has no audio to export"
        raise AgentError(msg)
    source = row.path
    if args.original:
        if row.original_path is None:
            msg = f"call {row.id} has no untrimmed original: its device did not keep one (audio.keep_original)"
            raise AgentError(msg)
        source = row.original_path
    export(Path(source), args.out, identities)
    print(f"exported {row.id} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
