"""``linerec-agent keys ...``: rotate, list, deploy, rewrap and retire the archive's identities.

A rotation, start to end::

    linerec-agent keys rotate        # a new current identity; the old one is kept
    linerec-agent keys deploy        # devices encrypt their next recordings to it
    linerec-agent keys rewrap        # archived files move to it, payloads untouched
    linerec-agent keys retire OLD    # refused while anything still needs OLD
    linerec-agent verify             # every call still checks out (see agent/rewrap.py)

Each ``cmd_keys_*`` takes the agent's config, the parsed arguments and who is
acting, prints its result and returns the exit status; bad input raises the
agent's errors, which the command line prints as one sentence. Who acted is
kept with each deployment. :data:`HANDLERS` wraps them as the command line's
verbs, each recording its audit entry first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.keyring import KeyPaths, Keyring, agent_key_text, signing_key

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow
    from agent.cli_common import Context
    from agent.config import AgentConfig

ROTATION_STEPS = """\
rotate     make a new current archive identity; earlier ones are kept in identities/ beside it
list       the identities held, which is current, and how many archived recordings each opens
deploy     publish the current recipient, signed, to the devices (retained on linerec/<device>/recipients)
rewrap     give every archived file a new age header for the current identity only (payloads untouched)
retire     stop loading an identity; refused while an archived file or a device still needs it
show-agent the agent's public key, as the line devices put under [archive] in device.toml
"""


def add_keys_parser(sub: Any) -> None:
    """Add ``keys`` and its verbs to the agent's subcommands (each sets ``verb`` to ``"keys <name>"``)."""
    keys = sub.add_parser(
        "keys",
        help="rotate, list, deploy, rewrap and retire the archive's identities",
        description=ROTATION_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    verbs.add_parser("rotate", help="make a new current archive identity and print its recipient")
    listing = verbs.add_parser("list", help="identities held, the current one, and the recordings each opens")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    rewrap = verbs.add_parser("rewrap", help="re-encrypt every archived file's header to the current identity")
    rewrap.add_argument("--progress", action="store_true", help="one line per call on stderr")
    retire = verbs.add_parser("retire", help="stop using an old identity once nothing needs it")
    retire.add_argument("identity", help="its recipient (age1...) or its file in identities/")
    retire.add_argument("--delete", action="store_true", help="delete the file instead of moving it to retired/")
    verbs.add_parser("show-agent", help='print the device config line: agent_key = "ed25519:..."')
    deploy = verbs.add_parser("deploy", help="publish the current recipient, signed, to the devices")
    deploy.add_argument("--device", help="only this enrolled device (default: every enrolled device)")
    deploy.add_argument(
        "--also", action="append", default=[], metavar="RECIPIENT", help="another age1... recipient to add (repeat)"
    )
    deploy.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default 10)")
    for name, parser in verbs.choices.items():
        parser.set_defaults(verb=f"keys {name}")


@contextlib.contextmanager
def _archive(cfg: AgentConfig) -> Iterator[Archive]:
    from agent.archive import Archive  # noqa: PLC0415

    with Archive(cfg.agent.archive_dir, cfg.agent.database_path) as archive:
        yield archive


def cmd_keys(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """Dispatch ``keys <verb>``."""
    handlers = {
        "rotate": cmd_keys_rotate,
        "list": cmd_keys_list,
        "rewrap": cmd_keys_rewrap,
        "retire": cmd_keys_retire,
        "show-agent": cmd_keys_show_agent,
        "deploy": cmd_keys_deploy,
    }
    return handlers[args.keys_command](cfg, args, actor=actor)


def cmd_keys_rotate(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys rotate``: a new current identity; prints its recipient."""
    ring = Keyring(KeyPaths.from_config(cfg))
    outgoing = ring.current()
    new = ring.rotate()
    print(new.recipient)
    print(
        f"linerec-agent: the previous identity {outgoing.recipient} is kept in {ring.paths.kept_dir};"
        " next: `linerec-agent keys deploy`, then `linerec-agent keys rewrap`",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys list``: every identity held, the current one first, with the recordings each opens."""
    from agent.rewrap import count_opened  # noqa: PLC0415

    held = Keyring(KeyPaths.from_config(cfg)).held()
    with _archive(cfg) as archive:
        counts = count_opened(archive, [h.key for h in held])
    for item, count in zip(held, counts, strict=True):
        if args.json:
            fields = {"recipient": item.recipient, "current": item.current, "file": str(item.path)}
            print(json.dumps({**fields, "created": item.created, "recordings": count}))
        else:
            state = "current" if item.current else "kept"
            print(f"{item.recipient}  {state:<7}  opens {count:>6} recordings  {item.path}")
    return 0


def cmd_keys_show_agent(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys show-agent``: the device config line that pins the agent's key (made on first use)."""
    print(f'agent_key = "{agent_key_text(KeyPaths.from_config(cfg))}"')
    return 0


def cmd_keys_rewrap(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys rewrap``: every archived file to the current identity only; failures listed, exit 1."""
    from agent.rewrap import Rewrapper  # noqa: PLC0415

    paths = KeyPaths.from_config(cfg)
    ring = Keyring(paths)
    current = ring.current()

    def progress(number: int, total: int, row: CallRow) -> None:
        print(f"[{number}/{total}] {row.id}", file=sys.stderr)

    with _archive(cfg) as archive:
        rewrapper = Rewrapper(archive, ring.identities(), current.key, current.recipient, signing_key(paths))
        report = rewrapper.run(progress if args.progress else None)
    for failure in report.failed:
        print(f"linerec-agent: not rewrapped: {failure}", file=sys.stderr)
    print(
        f"rewrapped {report.files_rewrapped} files of {report.calls} calls to {current.recipient};"
        f" {report.files_current} were already for it; {len(report.failed)} calls failed"
    )
    return 1 if report.failed else 0


def cmd_keys_retire(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys retire OLD``: refused while an archived file or a device still needs OLD."""
    from agent.rewrap import needing  # noqa: PLC0415

    ring = Keyring(KeyPaths.from_config(cfg))
    item = ring.find(args.identity)
    if item.current:
        msg = f"{item.recipient} is the current archive identity; rotate to a new one before retiring it"
        raise AgentError(msg)
    held = ring.held()
    index = next(i for i, h in enumerate(held) if h.recipient == item.recipient)
    with _archive(cfg) as archive:
        files = needing(archive, [h.key for h in held], [index])[index]
        if files:
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            msg = (
                f"identity {item.recipient} is still the only one that opens {len(files)} archived files"
                f" ({shown}); run `linerec-agent keys rewrap` first"
            )
            raise AgentError(msg)
        devices = _devices_using(archive, item.recipient)
    if devices:
        msg = (
            f"identity {item.recipient} may still be in use by the devices {', '.join(devices)};"
            " run `linerec-agent keys deploy` and wait for their status to show the new recipients"
        )
        raise AgentError(msg)
    where = ring.retire(item, delete=args.delete)
    print(f"retired {item.recipient}: {'deleted' if where is None else f'moved to {where}'}")
    return 0


def _devices_using(archive: Archive, recipient: str) -> list[str]:
    """Enrolled devices last told to use ``recipient``, or whose last status says they use it."""
    from agent.deploy import last_deployment  # noqa: PLC0415

    found = []
    for device in archive.devices():
        with archive.connection() as db:
            last = last_deployment(db, device["id"])
        status = device["status"] if isinstance(device["status"], dict) else {}
        reported = status.get("recipients")
        told = last is not None and recipient in last.recipients
        if told or (isinstance(reported, list) and recipient in reported):
            found.append(device["id"])
    return found


def cmd_keys_deploy(cfg: AgentConfig, args: argparse.Namespace, *, actor: str) -> int:
    """``keys deploy``: the current recipient (and ``--also``), signed, to every enrolled device or one."""
    from agent.deploy import deploy  # noqa: PLC0415

    paths = KeyPaths.from_config(cfg)
    recipients = [Keyring(paths).current().recipient, *args.also]
    if not args.timeout > 0:
        msg = f"--timeout {args.timeout} must be a number of seconds above 0"
        raise AgentError(msg)
    with _archive(cfg) as archive:
        enrolled = [d["id"] for d in archive.devices()]
        if args.device is not None and args.device not in enrolled:
            msg = f"device {args.device!r} is not enrolled; enrolled: {', '.join(enrolled) or 'none'}"
            raise AgentError(msg)
        done = deploy(
            broker=cfg.mqtt,
            client_id=f"{cfg.agent.client_id}-keys",
            archive=archive,
            signing_key=signing_key(paths),
            devices=[args.device] if args.device is not None else enrolled,
            recipients=recipients,
            actor=actor,
            timeout=args.timeout,
        )
    for item in done:
        print(f"deployed {', '.join(item.recipients)} to {item.device} (sequence {item.seq})")
    return 0


# --- as the command line's verbs ---------------------------------------------------------------


def _verb(name: str, audited: bool) -> Callable[[Context, argparse.Namespace], int]:
    def verb(ctx: Context, args: argparse.Namespace) -> int:
        if audited:
            from agent.audit import Action  # noqa: PLC0415

            details = {k: v for k, v in vars(args).items() if k in ("identity", "device", "also", "delete")}
            ctx.record(Action.ROTATE_KEY, None, {"step": name, **details})
        return cmd_keys(ctx.cfg, args, actor=ctx.actor)

    verb.__doc__ = f"``keys {name}`` as a verb of the command line."
    return verb


HANDLERS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    f"keys {name}": _verb(name, audited=name in ("rotate", "rewrap", "retire", "deploy"))
    for name in ("rotate", "list", "rewrap", "retire", "show-agent", "deploy")
}
