"""The ``linerec-agent`` command: keys, enrolment, ingest, search, review, retention and audit of recordings.

Each verb is one function ``(ctx, args) -> exit status``; ``DISPATCH`` maps the
verb's name (``"list"``, ``"hold add"``) to it, and each verb's parser sets
``verb`` to that name. Verbs about calls are in ``agent/cli_calls.py``, those
that look after the archive in ``agent/cli_admin.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from agent import __version__, cli_admin, cli_calls
from agent import export as export_cli
from agent import keys as keys_cli
from agent.cli_common import Context, Handler, UsageError, check_actor, default_actor
from agent.config import DEFAULT_PATH
from agent.errors import AgentError
from agent.web import cli_users
from firmware.wire import age
from firmware.wire.errors import LinerecError

log = logging.getLogger("linerec.agent")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="linerec-agent", description="linerec host agent: archive of calls.")
    parser.add_argument("--version", action="version", version=f"linerec-agent {__version__}")
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help="agent.toml to use")
    parser.add_argument("--as", dest="actor", metavar="NAME", help="who the audit log says acted (cli:<login>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="make the archive's age identity; prints its recipient")
    keygen.add_argument("--out", type=Path, required=True, help="identity file to create (mode 0600)")
    keygen.set_defaults(verb="keygen")

    sub.add_parser("run", help="receive, verify and archive recordings from the broker").set_defaults(verb="run")
    sub.add_parser("serve", help="run the review web app on [web] listen:port").set_defaults(verb="serve")

    export_cli.add_export_parser(sub)
    keys_cli.add_keys_parser(sub)
    cli_calls.add_parsers(sub)
    cli_admin.add_parsers(sub)
    cli_users.add_users_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linerec-agent``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"linerec-agent: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    verbose = logging.DEBUG if args.verbose else None
    logging.basicConfig(
        level=verbose or (logging.INFO if args.verb in ("run", "serve") else logging.WARNING),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    ctx: Context | None = None
    try:
        ctx = Context(args.config, check_actor(args.actor) if args.actor is not None else default_actor())
        return DISPATCH[args.verb](ctx, args)
    except LinerecError as exc:
        print(f"linerec-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if ctx is not None:
            ctx.close()


def verb_keygen(_ctx: Context, args: argparse.Namespace) -> int:
    """``keygen --out FILE``: a new archive identity, never over an old one."""
    out: Path = args.out
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


def _notifier(ctx: Context, identities: list[Any]) -> Any:
    """The notifier the settings ask for (None when nothing is to be told), with audio attached if asked."""
    from agent.notify import Notifier, archive_attacher  # noqa: PLC0415

    settings = ctx.cfg.notify
    if not settings.enabled:
        return None
    attach = archive_attacher(ctx.archive, identities, settings.attach_format) if settings.attach_audio else None
    return Notifier(settings, settings.outbox_path(ctx.cfg.agent.archive_dir), attach=attach)


def verb_run(ctx: Context, _args: argparse.Namespace) -> int:
    """``run``: ingest from the broker (and send notices) until SIGTERM or SIGINT."""
    from agent.ingest import Ingest  # noqa: PLC0415
    from agent.ratelimit import DeviceRateLimit  # noqa: PLC0415

    cfg = ctx.cfg
    from agent.keyring import load_identities  # noqa: PLC0415

    identities = load_identities(cfg)  # the current identity and every one kept after a rotation
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = _notifier(ctx, identities)
    limit = DeviceRateLimit(rate=cfg.agent.rate_limit_kb_s * 1024, burst=cfg.agent.rate_burst_kb * 1024)
    ingest = Ingest(
        archive=ctx.archive,
        identities=identities,
        broker=cfg.mqtt,
        client_id=cfg.agent.client_id,
        rate_limit=limit,
        on_stored=notifier.notify_stored if notifier is not None else None,
    )
    if notifier is not None:
        notifier.start()
    try:
        ingest.start()
        log.info("agent running: broker %s, archive %s", cfg.mqtt.address, cfg.agent.archive_dir)
        stop.wait()
        ingest.stop()
    finally:
        if notifier is not None:
            notifier.stop()
    return 0


def verb_serve(ctx: Context, _args: argparse.Namespace) -> int:
    """``serve``: the review web app under uvicorn until SIGTERM or SIGINT (its libraries load only here)."""
    from agent.web.app import serve  # noqa: PLC0415  (starlette, uvicorn and jinja2 are for this verb alone)

    return serve(ctx.cfg, ctx.actor)


DISPATCH: dict[str, Handler] = {
    "keygen": verb_keygen,
    "run": verb_run,
    "serve": verb_serve,
    **export_cli.HANDLERS,
    **keys_cli.HANDLERS,
    **cli_calls.HANDLERS,
    **cli_admin.HANDLERS,
    **cli_users.HANDLERS,
}


if __name__ == "__main__":
    sys.exit(main())
