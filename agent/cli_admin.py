"""``linerec-agent`` verbs that look after the archive: devices, purge, verify, audit, contacts, notify."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import index
from agent.audit import ACTIONS, Action
from agent.cli_common import Context, Handler, UsageError, clean, count_arg, progress, seconds_arg
from firmware.wire import age


def add_parsers(sub: Any) -> None:
    """The verbs of this module, each with ``verb`` set to its key in ``HANDLERS``."""
    _archive_parsers(sub)
    _audit_parsers(sub)
    _contacts_parsers(sub)
    _notify_parsers(sub)


def _archive_parsers(sub: Any) -> None:
    devices = sub.add_parser("devices", help="enrolled devices")
    dev_sub = devices.add_subparsers(dest="devices_command", required=True)
    add = dev_sub.add_parser("add", help="enrol a device by its signing key (from `linerec keys show`)")
    add.add_argument("device_id")
    add.add_argument("public_key", help="ed25519:<base64>")
    add.add_argument("--replace", action="store_true", help="replace the key of an enrolled device")
    add.set_defaults(verb="devices add")
    listing = dev_sub.add_parser("list", help="enrolled devices, when each was last seen and its last status")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(verb="devices list")

    purge = sub.add_parser("purge", help="delete the recordings retention says are due (legal holds are kept)")
    purge.add_argument("--dry-run", action="store_true", help="list what would be deleted and why; delete nothing")
    purge.add_argument("--json", action="store_true", help="one JSON object per recording")
    purge.set_defaults(verb="purge")

    verify = sub.add_parser("verify", help="re-check every file's SHA-256 and signed manifest; report problems")
    verify.add_argument("--identity", type=Path, help="age identity file (default: from the config)")
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    verify.set_defaults(verb="verify")


def _audit_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log of who did what to which call")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check the hash chain, the keyed macs and the head")
    check.add_argument("--expected-head", metavar="SEQ:HASH", help="a head printed earlier by `audit head`")
    check.add_argument("--json", action="store_true", help="the report as one JSON object")
    check.set_defaults(verb="audit verify")
    audit_sub.add_parser("head", help="print SEQ:HASH of the last entry, to keep somewhere else").set_defaults(
        verb="audit head"
    )
    entries = audit_sub.add_parser("list", help="entries, oldest first")
    entries.add_argument("--actor")
    entries.add_argument("--action", choices=sorted(ACTIONS))
    entries.add_argument("--target", help="a recording id, or what else an entry names")
    entries.add_argument("--after", type=int, default=None, metavar="SEQ", help="entries after this one")
    entries.add_argument("--limit", type=count_arg)
    entries.add_argument("--json", action="store_true", help="one JSON object per line")
    entries.set_defaults(verb="audit list")
    audit_sub.add_parser(
        "reset-checkpoint", help="accept the log as it stands after a mismatch was looked into"
    ).set_defaults(verb="audit reset-checkpoint")


def _contacts_parsers(sub: Any) -> None:
    contacts = sub.add_parser("contacts", help="names for known numbers")
    con_sub = contacts.add_subparsers(dest="contacts_command", required=True)
    imp = con_sub.add_parser("import", help="add or update contacts from a vCard or CSV file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--region", help="country of numbers written without +country code (default: agent.region)")
    imp.add_argument("--json", action="store_true", help="the report as one JSON object")
    imp.set_defaults(verb="contacts import")
    con_list = con_sub.add_parser("list", help="every contact, by name")
    con_list.add_argument("--json", action="store_true", help="one JSON object per line")
    con_list.set_defaults(verb="contacts list")
    remove = con_sub.add_parser("remove", help="forget a contact")
    remove.add_argument("number", help="the number, in E.164 (+12125550143) or national form")
    remove.add_argument("--region", help="country of a national number (default: agent.region)")
    remove.set_defaults(verb="contacts remove")


def _notify_parsers(sub: Any) -> None:
    notify = sub.add_parser("notify", help="notices and webhooks")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    test = notify_sub.add_parser("test", help="send a made-up call to every target and report")
    test.add_argument("--timeout", type=seconds_arg, default=30.0, metavar="S", help="how long to wait (30 s)")
    test.set_defaults(verb="notify test")
    deliveries = notify_sub.add_parser("list", help="deliveries in the outbox, oldest first")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed"))
    deliveries.add_argument("--json", action="store_true", help="one JSON object per line")
    deliveries.set_defaults(verb="notify list")


# --- devices -------------------------------------------------------------------------------


def verb_devices_add(ctx: Context, args: argparse.Namespace) -> int:
    """``devices add ID KEY``: pin a device's signing key."""
    ctx.record(Action.ENROL, args.device_id, {"public_key": args.public_key, "replace": args.replace})
    ctx.archive.enrol(args.device_id, args.public_key, replace=args.replace)
    ctx.say(f"enrolled {args.device_id}")
    return 0


def verb_devices_list(ctx: Context, args: argparse.Namespace) -> int:
    """``devices list``: with calls held, last seen and last status."""
    counts = index.call_counts(ctx.archive)
    for device in ctx.archive.devices():
        calls, newest = counts.get(device["id"], (0, None))
        if args.json:
            ctx.emit({**device, "calls": calls, "newest_call": newest})
            continue
        status = device["status"] or {}
        state = clean(status.get("state", "-")) if isinstance(status, dict) else "-"
        seen = device["last_seen"] or "never"
        ctx.say(
            f"{device['id']:<24} {state:<8} last seen {seen:<24} {calls:>8} calls  {device['public_key']}"
            f"  enrolled {device['enrolled_at']}"
        )
    return 0


# --- purge ---------------------------------------------------------------------------------


def verb_purge(ctx: Context, args: argparse.Namespace) -> int:
    """``purge [--dry-run]``: delete what retention says is due, irrecoverably."""
    from agent.purge import Purge, Purged  # noqa: PLC0415

    now = datetime.fromtimestamp(ctx.archive.now(), UTC)
    outbox = ctx.cfg.notify.outbox_path(ctx.cfg.agent.archive_dir)

    def done(item: Purged) -> None:
        ctx.record(Action.PURGE, item.id, {"device": item.device, "policy": item.policy, "due_at": item.due_at})
        if args.json:
            ctx.emit(item.to_json())
        else:
            ctx.say(f"{item.id}  {item.device:<16} purged under {item.policy} (due since {item.due_at})")

    purge = Purge(ctx.archive, ctx.cfg.retention, ctx.actor, outbox=outbox, on_purged=done)
    ctx.record(Action.PURGE, None, {"dry_run": args.dry_run, "at": now.isoformat()})
    if args.dry_run:
        count = 0
        for row, decision in purge.due(now):
            count += 1
            if args.json:
                ctx.emit({**decision.to_json(), "device": row.device, "dry_run": True})
            else:
                due_at = decision.to_json()["due_at"]
                ctx.say(f"{row.id}  {row.device:<16} would be purged: due since {due_at} under {decision.policy}")
        if not args.json:
            ctx.say(f"{count} recording(s) would be purged")
        return 0
    total = sum(1 for _ in purge.due(now)) if sys.stderr.isatty() else None  # only a bar needs it
    with progress("purging", total) as bar:
        purged = purge.run(now, progress=lambda _item: bar.advance())
    if args.json:
        return 0
    if purged:
        size = sum(p.bytes for p in purged)
        ctx.say(f"{len(purged)} recording(s) purged, {size} bytes overwritten; the index was rebuilt")
    else:
        ctx.say("0 recording(s) purged: nothing is due")
    return 0


# --- verify --------------------------------------------------------------------------------


def verb_verify(ctx: Context, args: argparse.Namespace) -> int:
    """``verify``: every file against its signed manifest and its row; unreferenced files."""
    from agent.integrity import Verifier  # noqa: PLC0415
    from agent.keyring import KeyPaths, load_identities, signing_key  # noqa: PLC0415
    from agent.rewrap import rewrap_check  # noqa: PLC0415

    identities = age.load_identities(args.identity) if args.identity else load_identities(ctx.cfg)
    ctx.record(Action.VERIFY, None, {"what": "archive"})
    outbox = ctx.cfg.notify.outbox_path(ctx.cfg.agent.archive_dir)
    paths = KeyPaths.from_config(ctx.cfg)
    agent_key = signing_key(paths).public_key() if paths.signing_key.exists() else None
    rewrapped = rewrap_check(ctx.archive, agent_key, identities)
    verifier = Verifier(ctx.archive, identities, skip=[outbox], rewrapped=rewrapped)
    total = int(ctx.archive.read("SELECT count(*) FROM calls")[0][0])
    with progress("verifying", total) as bar:
        report = verifier.run(progress=lambda _row: bar.advance())
    if args.json:
        ctx.emit(report.to_json())
    else:
        for problem in report.problems:
            ctx.say(f"{problem.kind:<12} {problem.id or '-'}  {clean(problem.path or '-')}: {clean(problem.message)}")
        verdict = "ok" if report.ok else f"{report.problem_count} problem(s)"
        ctx.say(f"{report.recordings} recordings, {report.files} files, {report.bytes} bytes checked: {verdict}")
    return 0 if report.ok else 1


# --- audit ---------------------------------------------------------------------------------


def _head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        msg = f"--expected-head {text!r} must be SEQ:HASH as `linerec-agent audit head` prints it"
        raise UsageError(msg)
    return int(seq), digest


def verb_audit_verify(ctx: Context, args: argparse.Namespace) -> int:
    """``audit verify``: non-zero when any entry was edited, removed, inserted or reordered."""
    expected = _head(args.expected_head) if args.expected_head is not None else None
    report = ctx.audit.verify(expected_head=expected)
    if args.json:
        ctx.emit(report.to_json())
    else:
        for problem in report.problems:
            ctx.say(f"{problem.kind}: {problem.message}")
        verdict = "ok" if report.ok else f"{report.problem_count} problem(s)"
        ctx.say(f"{report.entries} entries, head {report.head.seq}:{report.head.hash}: {verdict}")
    if report.ok:
        ctx.record(Action.AUDIT, None, {"view": "verify", "entries": report.entries})
    return 0 if report.ok else 1


def verb_audit_head(ctx: Context, _args: argparse.Namespace) -> int:
    """``audit head``: SEQ:HASH of the last entry (this read included)."""
    ctx.record(Action.AUDIT, None, {"view": "head"})
    head = ctx.audit.head()
    ctx.say(f"{head.seq}:{head.hash}")
    return 0


def verb_audit_list(ctx: Context, args: argparse.Namespace) -> int:
    """``audit list``: entries with optional filters."""
    if args.after is not None and args.after < 0:
        msg = f"--after {args.after} must be a seq from 0"
        raise UsageError(msg)
    filters = {k: v for k, v in (("actor", args.actor), ("action", args.action), ("target", args.target)) if v}
    ctx.record(Action.AUDIT, None, {"view": "list", **filters})
    for entry in ctx.audit.entries(since=args.after, limit=args.limit, **filters):
        if args.json:
            ctx.emit(entry.to_json())
        else:
            what, who = clean(entry.target or "-"), clean(entry.actor)
            ctx.say(f"{entry.seq:>6}  {entry.at}  {who:<20} {entry.action:<16} {what}  {clean(entry.details)}")
    return 0


def verb_audit_reset(ctx: Context, _args: argparse.Namespace) -> int:
    """``audit reset-checkpoint``: accept the log as it stands; the entry made says what the checkpoint was."""
    entry = ctx.audit.reset_checkpoint(ctx.actor)
    ctx.say(f"checkpoint reset at entry {entry.seq}; it was {entry.details['checkpoint']}")
    return 0


# --- contacts ------------------------------------------------------------------------------


def verb_contacts_import(ctx: Context, args: argparse.Namespace) -> int:
    """``contacts import FILE``."""
    from agent.contacts import import_contacts  # noqa: PLC0415  (phonenumbers is in the agent extra)

    region = args.region or ctx.cfg.agent.region
    with progress(f"importing {args.file.name}", None), ctx.archive.connection() as db:
        report = import_contacts(db, args.file, region=region)
    if args.json:
        ctx.emit({**asdict(report), "summary": report.summary()})
    else:
        ctx.say(report.summary())
    return 0


def verb_contacts_list(ctx: Context, args: argparse.Namespace) -> int:
    """``contacts list``."""
    from agent.contacts import contacts  # noqa: PLC0415

    with ctx.archive.connection() as db:
        found = contacts(db)
    for contact in found:
        if args.json:
            ctx.emit({"number": contact.number, "name": contact.name, "kind": contact.kind, "source": contact.source})
        else:
            ctx.say(
                f"{contact.number:<18} {clean(contact.name, 48):<48} {contact.kind or '-':<7} {clean(contact.source)}"
            )
    return 0


def verb_contacts_remove(ctx: Context, args: argparse.Namespace) -> int:
    """``contacts remove NUMBER``."""
    from agent.contacts import remove  # noqa: PLC0415

    with ctx.archive.connection() as db:
        removed = remove(db, args.number, region=args.region or ctx.cfg.agent.region)
    if not removed:
        msg = f"there is no contact with the number {args.number!r}"
        raise UsageError(msg)
    ctx.say(f"removed {args.number}")
    return 0


# --- notify --------------------------------------------------------------------------------


def _notifier(ctx: Context) -> Any:
    from agent.notify import Notifier  # noqa: PLC0415

    settings = ctx.cfg.notify
    if not settings.enabled:
        msg = "nothing is set to be told: add notify.urls or a [[webhook]] to the config"
        raise UsageError(msg)
    return Notifier(settings, settings.outbox_path(ctx.cfg.agent.archive_dir))


def verb_notify_test(ctx: Context, args: argparse.Namespace) -> int:
    """``notify test``: a made-up call to every target; non-zero unless every one took it."""
    from agent.notify import sample_call  # noqa: PLC0415

    notifier = _notifier(ctx)
    try:
        ids = set(notifier.enqueue("test", sample_call()))
        notifier.start()
        deadline = time.monotonic() + args.timeout
        while True:
            mine = [d for d in notifier.deliveries() if d.id in ids]
            if all(d.status != "pending" for d in mine) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        notifier.stop()
    for delivery in mine:
        error = f": {delivery.last_error}" if delivery.last_error else ""
        ctx.say(f"{delivery.target}: {delivery.status} after {delivery.attempts} attempt(s){error}")
    return 0 if all(d.status == "delivered" for d in mine) else 1


def verb_notify_list(ctx: Context, args: argparse.Namespace) -> int:
    """``notify list [--status]``."""
    notifier = _notifier(ctx)
    try:
        found = notifier.deliveries(args.status)
    finally:
        notifier.stop()
    for delivery in found:
        if args.json:
            ctx.emit(delivery.to_json())
        else:
            item = delivery.to_json()
            ctx.say(
                f"{item['created_at']}  {item['event']:<9} {item['recording'] or '-':<28} {item['status']:<9}"
                f" {item['attempts']:>2}x  {item['target']}"
                + (f"  ({item['last_error']})" if item["last_error"] else "")
            )
    return 0


HANDLERS: dict[str, Handler] = {
    "devices add": verb_devices_add,
    "devices list": verb_devices_list,
    "purge": verb_purge,
    "verify": verb_verify,
    "audit verify": verb_audit_verify,
    "audit head": verb_audit_head,
    "audit list": verb_audit_list,
    "audit reset-checkpoint": verb_audit_reset,
    "contacts import": verb_contacts_import,
    "contacts list": verb_contacts_list,
    "contacts remove": verb_contacts_remove,
    "notify test": verb_notify_test,
    "notify list": verb_notify_list,
}
