"""The ``linerec`` command: run the recorder, play the demo, show the device key and the status."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from firmware import __version__, config, logs
from firmware.errors import LinerecError
from firmware.homeassistant import Discovery
from firmware.wire.errors import ConfigError

log = logging.getLogger("linerec")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linerec", description="Phone line call recorder (device side).")
    parser.add_argument("--version", action="version", version=f"linerec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="record calls on the configured line and deliver them")
    run.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")

    demo = sub.add_parser("demo", help="scripted calls on a simulated line, archived by an in-process agent")
    demo.add_argument("--calls", type=int, default=3, help="how many scripted calls (default 3)")
    demo.add_argument("--keep", type=Path, help="keep the identity, archive and index in this folder")
    demo.add_argument("--broker", metavar="HOST:PORT", help="use this MQTT broker instead of an embedded one")
    demo.add_argument("--realtime", action="store_true", help="play the calls at their real pace")

    decode = sub.add_parser("decode", help="decode caller ID, DTMF or call-progress tones in an audio file")
    decode.add_argument("kind", choices=("callerid", "dtmf", "tones"))
    decode.add_argument("file", type=Path, help="WAV, FLAC or Ogg audio")
    decode.add_argument("--standard", default="auto", choices=("auto", "bell202", "v23", "dtmf"))
    decode.add_argument("--country", default="US", help="tone plan for `tones` (US, GB, DE, FR, NL, AU...)")
    decode.add_argument("--json", action="store_true", help="one JSON object per line")

    trim = sub.add_parser("trim", help="cut the long silences out of a recording, keeping all of its speech")
    trim.add_argument("input", type=Path, help="WAV, FLAC or Ogg audio")
    trim.add_argument("output", type=Path, help="the trimmed audio: .wav, .flac, or .opus/.ogg (Ogg Opus)")
    trim.add_argument("--json", action="store_true", help="print the trim map as one JSON object")
    # Numbers are checked by firmware.trim, so a bad one is one sentence like every other trim error.
    trim.add_argument("--aggressiveness", metavar="N", help="webrtcvad aggressiveness, 0 to 3 (default 2)")
    trim.add_argument("--frame-ms", metavar="N", help="VAD frame, 10, 20 or 30 ms (default 30)")
    trim.add_argument("--pad-before-ms", metavar="N", help="silence kept before speech (default 300)")
    trim.add_argument("--pad-after-ms", metavar="N", help="silence kept after speech (default 500)")
    trim.add_argument("--min-silence-ms", metavar="N", help="shorter silences are kept whole (default 2000)")
    trim.add_argument(
        "--clean", action=argparse.BooleanOptionalAction, default=True, help="remove DC and mains hum first"
    )

    selftest = sub.add_parser("selftest", help="check the line, sound card, broker, keys and spool")
    selftest.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")

    status = sub.add_parser("status", help="the service's state, the last calls, the spool and the disk")
    status.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")

    consent = sub.add_parser(
        "consent",
        help="the consent rule a call from NUMBER gets, and why; or 'consent prompt' to make a spoken notice",
    )
    consent.add_argument(
        "number", nargs="?", default="", help="as caller ID gives it; empty or 'withheld' if withheld; or 'prompt'"
    )
    consent.add_argument("--device-region", metavar="REGION", help="where the device is, e.g. US-NY, GB (default US)")
    consent.add_argument("--config", type=Path, help="take the region and number lists from this device.toml")
    consent.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    consent.add_argument("--text", help="prompt: what the notice says")
    consent.add_argument("--out", type=Path, help="prompt: the audio file to write (.wav, .flac or .opus)")
    consent.add_argument("--voice", default="en", help="prompt: the espeak-ng voice (default en)")
    consent.add_argument("--rate", type=int, default=8000, help="prompt: sample rate (default 8000)")

    _add_spool_parser(sub)

    keys = sub.add_parser("keys", help="the device's signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    show = keys_sub.add_parser("show", help="print the public key to enrol on the agent (creates the key)")
    show.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")
    return parser


def _add_spool_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spool = sub.add_parser("spool", help="recordings the agent refused: list them, or send them again")
    spool_sub = spool.add_subparsers(dest="spool_command", required=True)
    rejected = spool_sub.add_parser("rejected", help="the refused recordings, each with the agent's reason")
    rejected.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")
    rejected.add_argument("--json", action="store_true", help="one JSON object per recording")
    retry = spool_sub.add_parser("retry", help="put refused recordings back in the outbox (e.g. after enrolment)")
    retry.add_argument("recording_ids", nargs="*", metavar="ID", help="the recordings to send again")
    retry.add_argument("--all", action="store_true", help="every refused recording")
    retry.add_argument("--config", type=Path, default=config.DEFAULT_PATH, help="device.toml to use")


EXIT_CONFIG = 78  # sysexits' EX_CONFIG; linerec.service has RestartPreventExitStatus=78


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linerec``; returns the exit status."""
    args = _parser().parse_args(argv)
    logs.configure(verbose=args.verbose)  # structured entries when stderr is the journal, else lines
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "keys":
            return _keys_show(args.config)
        if args.command == "selftest":
            return _selftest(args.config)
        if args.command == "status":
            return _status(args)
        if args.command == "spool":
            return _spool(args)
        if args.command == "decode":
            return _decode(args)
        if args.command == "trim":
            return _trim(args)
        if args.command == "consent":
            return _consent(args)
        return _run(args.config)
    except LinerecError as exc:
        print(f"linerec: error: {exc}", file=sys.stderr)
        # The service's own status for a config it can only fail on again, so systemd does not restart it.
        return EXIT_CONFIG if args.command == "run" and isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _demo(args: argparse.Namespace) -> int:
    from firmware import demo  # noqa: PLC0415  (pulls in the agent and the embedded broker)

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    options = demo.DemoOptions(calls=args.calls, keep=args.keep, broker=args.broker, realtime=args.realtime)
    demo.run(options, sys.stdout)
    return 0


def _decode(args: argparse.Namespace) -> int:
    from firmware import decode  # noqa: PLC0415

    found = decode.decode(args.kind, args.file, standard=args.standard, country=args.country.upper())
    decode.print_findings(found, sys.stdout, as_json=args.json)
    return 0


def _trim(args: argparse.Namespace) -> int:
    from firmware import trim  # noqa: PLC0415

    names = ("aggressiveness", "frame_ms", "pad_before_ms", "pad_after_ms", "min_silence_ms")
    try:
        settings = trim.settings_from_options({name: getattr(args, name) for name in names})
        report = trim.trim_file(args.input, args.output, settings, clean=args.clean)
    except LinerecError as exc:
        # Bad input to `trim` is a usage error: the status argparse gives for one.
        print(f"linerec: error: {exc}", file=sys.stderr)
        return 2
    trim.print_report(report, sys.stdout, as_json=args.json)
    return 0


def _consent(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from firmware.consent import decision, rules  # noqa: PLC0415

    if args.number == "prompt":
        return _consent_prompt(args)
    cfg = config.load(args.config) if args.config is not None else None
    book = rules.load_rules(cfg.consent.rule_overrides() if cfg is not None else None)
    region = (args.device_region or (cfg.consent_region if cfg is not None else "US")).upper()
    try:
        book.check_region(region, "--device-region")
    except LinerecError as exc:
        # A region linerec does not know is a usage error, like a bad option.
        print(f"linerec: error: {exc}", file=sys.stderr)
        return 2
    lists = cfg.consent if cfg is not None else None
    result = decision.decide(
        args.number,
        device_region=region,
        rules=book,
        never_record=lists.never_record if lists is not None else (),
        always_announce=lists.always_announce if lists is not None else (),
    )
    if args.json:
        data = result.to_json()
        print(json.dumps({name: data[name] for name in decision.CLI_FIELDS}))
    else:
        print(result.line())
    return 0


def _consent_prompt(args: argparse.Namespace) -> int:
    from firmware.consent.notices import speak  # noqa: PLC0415

    if not args.text or args.out is None:
        print("linerec: error: consent prompt needs --text and --out", file=sys.stderr)
        return 2
    speak(args.text, args.out, sample_rate=args.rate, voice=args.voice)
    print(f"wrote the prompt to {args.out}")
    return 0


def _selftest(path: Path) -> int:
    from firmware import selftest  # noqa: PLC0415

    checks = selftest.run(config.load(path))
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if c.ok is False]
    print(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0


def _status(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from firmware import status  # noqa: PLC0415

    report = status.gather(config.load(args.config))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("\n".join(status.render(report)))
    return 0


def _spool(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from firmware.spool import Spool  # noqa: PLC0415

    spool = Spool(config.load(args.config).device.spool_dir)
    refused = spool.rejected_recordings()
    if args.spool_command == "rejected":
        for rec_id, reason in refused:
            print(json.dumps({"id": rec_id, "reason": reason}) if args.json else f"{rec_id}  {reason}")
        return 0
    if args.all == bool(args.recording_ids):
        msg = "spool retry takes recording ids or --all, not both and not neither"
        raise LinerecError(msg)
    for rec_id in [rec_id for rec_id, _ in refused] if args.all else args.recording_ids:
        spool.requeue(rec_id)
        print(f"{rec_id} is back in the outbox; the running service sends it again")
    return 0


def _keys_show(path: Path) -> int:
    from firmware.wire.signing import load_or_create_signing_key, public_key_text  # noqa: PLC0415

    cfg = config.load(path)
    key = load_or_create_signing_key(cfg.device.signing_key_path)
    print(f"{cfg.device.id} {public_key_text(key)}")
    return 0


def _discovery(cfg: config.DeviceConfig) -> Discovery | None:
    """What the uplink tells Home Assistant about this device, if the owner asked for it."""
    from firmware.wire.manifest import firmware_version  # noqa: PLC0415

    if not cfg.uplink.homeassistant:
        return None
    return Discovery(
        device_id=cfg.device.id,
        sw_version=firmware_version(),
        prefix=cfg.uplink.discovery_prefix,
        model=f"call recorder ({cfg.device.line} line)",
        include_caller_id=cfg.uplink.events_include_caller_id,
    )


def _run(path: Path) -> int:
    cfg = config.load(path)
    if cfg.device.line == "sim" and os.environ.get("INVOCATION_ID"):
        # systemd sets INVOCATION_ID for every unit: the example config, installed but not yet edited.
        msg = f'{path}: device.line is "sim" (the simulated line); set it to "gpio" or "modem" for the service'
        raise ConfigError(msg)
    from firmware import watchdog  # noqa: PLC0415
    from firmware.line import open_backend  # noqa: PLC0415
    from firmware.recipients import RecipientStore  # noqa: PLC0415
    from firmware.recovery import recover  # noqa: PLC0415
    from firmware.service import DeviceService  # noqa: PLC0415
    from firmware.spool import Spool  # noqa: PLC0415
    from firmware.status import StatusFile, status_path  # noqa: PLC0415
    from firmware.uplink import Uplink  # noqa: PLC0415
    from firmware.wire.signing import load_or_create_signing_key  # noqa: PLC0415

    key = load_or_create_signing_key(cfg.device.signing_key_path)
    spool = Spool(cfg.device.spool_dir)
    recover(spool, config=cfg, signing_key=key)  # calls a crash interrupted go out like any other
    stop = threading.Event()
    recipients = RecipientStore.for_config(cfg)  # what the agent deployed, else device.toml's
    health = watchdog.Health(deadline_s=watchdog.watchdog_timeout() or watchdog.DEFAULT_TIMEOUT_S)
    status_file = StatusFile(
        status_path(cfg), device_id=cfg.device.id, line=cfg.device.line, line_name=cfg.device.line_name
    )
    dog = watchdog.Watchdog.for_environment(health, on_verdict=lambda verdict: status_file.update(verdict=verdict))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()
        dog.stopping(f"stopping on signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    line = open_backend(cfg)
    services: list[DeviceService] = []  # the status reads the service made after the uplink
    uplink = Uplink(
        device_id=cfg.device.id,
        spool=spool,
        broker=cfg.mqtt,
        chunk_size=cfg.uplink.chunk_size,
        ack_timeout_s=cfg.uplink.ack_timeout_s,
        pace_kb_s=cfg.uplink.pace_kb_s,
        status_facts=lambda: {**(services[0].status_facts() if services else {}), **recipients.facts()},
        on_recipients=recipients.offer,
        discovery=_discovery(cfg),
    )
    uplink.start()
    try:
        with line:
            watch = watchdog.LineWatch()
            watchdog.watch_recorder(health, watch, line, uplink)
            service = DeviceService.on_line(
                config=cfg,
                backend=line,
                spool=spool,
                signing_key=key,
                uplink=uplink,
                watch=watch,
                on_status=lambda: status_file.update(facts=services[0].status_facts()),
            )
            services.append(service)
            status_file.update(facts=service.status_facts())
            dog.ready()
            service.run(stop)
        for part in watchdog.LINE_PARTS:
            health.forget(part)  # the line is closed: only delivery is left to watch
        if cfg.device.line == "sim":
            log.info("simulated line finished; delivering what is left in the spool")
            while not stop.is_set() and not uplink.wait_delivered(1.0):
                pass
    finally:
        dog.stop()
        status_file.stopped()
        uplink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
