"""``linerec-agent`` verbs about calls: list, search, show, tag, note, hold, stats and tombstones."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent import annotate, index
from agent.audit import Action
from agent.cli_common import DATE_HELP, Context, Handler, UsageError, clean, count_arg, seconds_arg, when_arg
from agent.retention import explain

if TYPE_CHECKING:
    from agent.archive import CallRow


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--caller", help="caller number, or its start (punctuation is ignored)")
    parser.add_argument("--name", help="part of the caller's name, as the line gave it or in the contacts")
    parser.add_argument("--since", type=when_arg("--since"), help=f"calls that started at or after this ({DATE_HELP})")
    parser.add_argument(
        "--until", type=when_arg("--until", end=True), help="calls that started before this (a date includes that day)"
    )
    parser.add_argument("--device", help="only this device's calls")
    parser.add_argument("--min-duration", type=seconds_arg, metavar="S", help="at least S seconds of audio")
    parser.add_argument("--max-duration", type=seconds_arg, metavar="S", help="at most S seconds of audio")
    parser.add_argument("--tag", action="append", default=[], help="calls with this tag (repeat: with all of them)")
    parser.add_argument("--note", help="calls with a note holding this text")
    answered = parser.add_mutually_exclusive_group()
    answered.add_argument("--answered", dest="answered", action="store_true", default=None, help="answered calls")
    answered.add_argument("--missed", dest="answered", action="store_false", help="calls nobody answered")
    parser.add_argument("--limit", type=count_arg, help="at most this many calls, newest first")


def add_parsers(sub: Any) -> None:
    """The verbs of this module, each with ``verb`` set to its key in ``HANDLERS``."""
    listing = sub.add_parser("list", help="archived calls, newest first (filters as for search)")
    _filters(listing)
    listing.set_defaults(verb="list")
    search = sub.add_parser("search", help="calls matching filters, newest first")
    _filters(search)
    search.set_defaults(verb="search")

    show = sub.add_parser("show", help="everything known about one call")
    show.add_argument("recording_id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(verb="show")

    tag = sub.add_parser("tag", help="add tags to a call (or remove them)")
    tag.add_argument("recording_id")
    tag.add_argument("tags", nargs="+", metavar="TAG")
    tag.add_argument("--remove", action="store_true", help="remove these tags instead")
    tag.set_defaults(verb="tag")

    note = sub.add_parser("note", help="write a note on a call")
    note.add_argument("recording_id")
    note.add_argument("text", nargs="+", help="the note (words are joined with spaces)")
    note.set_defaults(verb="note")

    hold = sub.add_parser("hold", help="legal holds: calls a purge must keep")
    hold_sub = hold.add_subparsers(dest="hold_command", required=True)
    add = hold_sub.add_parser("add", help="hold one recording, or every call from a number")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--recording", metavar="ID", help="the recording to hold")
    target.add_argument("--caller", metavar="NUMBER", help="hold every call from this number, past and future")
    add.add_argument("--reason", required=True, help="why (the case, the request): kept with the hold")
    add.set_defaults(verb="hold add")
    release = hold_sub.add_parser("release", help="release a hold (it stays in the list as released)")
    release.add_argument("hold_id", type=count_arg)
    release.set_defaults(verb="hold release")
    hold_list = hold_sub.add_parser("list", help="holds in force")
    hold_list.add_argument("--all", action="store_true", help="released holds too")
    hold_list.add_argument("--json", action="store_true", help="one JSON object per line")
    hold_list.set_defaults(verb="hold list")

    stats = sub.add_parser("stats", help="counts by device and day, answered and missed, duration and bytes")
    stats.add_argument("--since", type=when_arg("--since"), help=f"calls that started at or after this ({DATE_HELP})")
    stats.add_argument("--until", type=when_arg("--until", end=True), help="calls that started before this")
    stats.add_argument("--device", help="only this device's calls")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(verb="stats")

    graves = sub.add_parser("tombstones", help="recordings purge deleted: when, under which policy, by whom")
    graves.add_argument("--since", type=when_arg("--since"), help="purged at or after this")
    graves.add_argument("--until", type=when_arg("--until", end=True), help="purged before this")
    graves.add_argument("--json", action="store_true", help="one JSON object per line")
    graves.set_defaults(verb="tombstones")


def _query(args: argparse.Namespace) -> index.Query:
    return index.Query(
        caller=args.caller,
        name=args.name,
        since=args.since,
        until=args.until,
        device=args.device,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        tags=tuple(args.tag),
        note=args.note,
        answered=args.answered,
        limit=args.limit,
    )


class _Names:
    """Contact names for caller numbers, looked up once per number (none without phonenumbers or contacts)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._cache: dict[str, str | None] = {}
        self._lookup: Any = None
        if ctx.archive.read("SELECT 1 FROM contacts LIMIT 1"):
            try:
                from agent.contacts import lookup  # noqa: PLC0415  (phonenumbers loads only when there are contacts)
            except ImportError:
                return
            self._lookup = lookup

    def __call__(self, number: str | None) -> str | None:
        if self._lookup is None or not number:
            return None
        if number not in self._cache:
            with self._ctx.archive.connection() as db:
                self._cache[number] = self._lookup(db, number, region=self._ctx.cfg.agent.region)
        return self._cache[number]


def _line(row: CallRow, contact: str | None) -> str:
    caller = row.caller_number or (f"({row.caller_absent})" if row.caller_absent else "-")
    answered = "answered" if row.answered else "missed"
    name = row.caller_name or contact or ""
    return (
        f"{row.id}  {row.device:<16} {row.started_at}  {row.duration_s:7.1f}s  {answered:<8}"
        f" {clean(caller)}  {clean(name, 40)}"
    ).rstrip()


def _calls(ctx: Context, args: argparse.Namespace, action: Action) -> int:
    query = _query(args)
    if action is Action.SEARCH and query.empty:
        msg = "search needs at least one filter (--caller, --name, --since, --tag...); list shows every call"
        raise UsageError(msg)
    ctx.record(action, None, {"filters": query.filters(), "limit": query.limit})
    names = _Names(ctx)
    for row in index.search(ctx.archive, query):
        contact = names(row.caller_number)
        if args.json:
            ctx.emit({**row.to_json(), "contact": contact})
        else:
            ctx.say(_line(row, contact))
    return 0


def verb_list(ctx: Context, args: argparse.Namespace) -> int:
    """``list``: calls, newest first."""
    return _calls(ctx, args, Action.LIST)


def verb_search(ctx: Context, args: argparse.Namespace) -> int:
    """``search``: calls matching at least one filter."""
    return _calls(ctx, args, Action.SEARCH)


def details(ctx: Context, row: CallRow) -> dict[str, Any]:
    """Everything ``show`` tells about a call."""
    archive = ctx.archive
    tags = annotate.tags_of(archive, row.id)
    facts = annotate.facts_of(row, tags)
    found = annotate.holds(archive)
    now = datetime.fromtimestamp(archive.now(), UTC)
    return {
        **row.to_json(),
        "contact": _Names(ctx)(row.caller_number),
        "consent": index.consent_evidence(archive, row.id),
        "tags": tags,
        "notes": [n.to_json() for n in annotate.notes_of(archive, row.id)],
        "holds": [h.to_json() for h in annotate.holds_covering(found, facts)],
        "retention": explain(facts, now, ctx.cfg.retention, annotate.policy_holds(found)),
    }


def verb_show(ctx: Context, args: argparse.Namespace) -> int:
    """``show ID``: the row, consent evidence, tags, notes, holds, contact and retention."""
    row = annotate.require_call(ctx.archive, args.recording_id)
    ctx.record(Action.SHOW, row.id)
    shown = details(ctx, row)
    if args.json:
        ctx.emit(shown)
        return 0
    for key, value in shown.items():
        if key in ("notes", "holds"):
            ctx.say(f"{key}:")
            for item in value:
                ctx.say("  " + clean(", ".join(f"{k}={v}" for k, v in item.items() if v is not None)))
        elif isinstance(value, dict):
            ctx.say(f"{key}:")
            for inner, item in value.items():
                ctx.say(f"  {inner}: {clean(item)}")
        else:
            ctx.say(f"{key}: {clean(', '.join(value) if isinstance(value, list) else value)}")
    return 0


def verb_tag(ctx: Context, args: argparse.Namespace) -> int:
    """``tag ID TAG...``: add (or with --remove, remove) tags."""
    tags = [index.check_tag(t) for t in args.tags]
    row = annotate.require_call(ctx.archive, args.recording_id)
    ctx.record(Action.TAG, row.id, {"remove" if args.remove else "add": tags})
    now = annotate.change_tags(ctx.archive, row.id, **{"remove" if args.remove else "add": tags})
    ctx.say(f"{row.id}: {', '.join(now) if now else '(no tags)'}")
    return 0


def verb_note(ctx: Context, args: argparse.Namespace) -> int:
    """``note ID TEXT``: write a note on a call."""
    text = " ".join(args.text)
    row = annotate.require_call(ctx.archive, args.recording_id)
    ctx.record(Action.NOTE, row.id, {"chars": len(text)})
    note = annotate.add_note(ctx.archive, row.id, ctx.actor, text)
    ctx.say(f"note {note.id} on {row.id} by {note.author} at {note.at}")
    return 0


def verb_hold_add(ctx: Context, args: argparse.Namespace) -> int:
    """``hold add``: hold a recording or a caller."""
    kind, value = ("recording", args.recording) if args.recording is not None else ("caller", args.caller)
    if kind == "recording":
        annotate.require_call(ctx.archive, value)
    ctx.record(Action.HOLD, f"{kind}:{value}", {"reason": args.reason})
    hold = annotate.place_hold(ctx.archive, kind=kind, value=value, reason=args.reason, by=ctx.actor)
    ctx.say(f"hold {hold.id} placed on {hold.kind} {clean(hold.value)}")
    return 0


def verb_hold_release(ctx: Context, args: argparse.Namespace) -> int:
    """``hold release ID``."""
    found = {h.id: h for h in annotate.holds(ctx.archive, include_released=True)}
    target = found[args.hold_id].target if args.hold_id in found else f"hold:{args.hold_id}"
    ctx.record(Action.RELEASE, target, {"hold": args.hold_id})
    hold = annotate.release_hold(ctx.archive, args.hold_id, by=ctx.actor)
    ctx.say(f"hold {hold.id} on {hold.kind} {clean(hold.value)} released")
    return 0


def verb_hold_list(ctx: Context, args: argparse.Namespace) -> int:
    """``hold list``."""
    ctx.record(Action.LIST, None, {"view": "holds", "all": args.all})
    for hold in annotate.holds(ctx.archive, include_released=args.all):
        if args.json:
            ctx.emit(hold.to_json())
        else:
            state = "in force" if hold.active else f"released {hold.released_at} by {hold.released_by}"
            ctx.say(f"{hold.id:>4}  {hold.kind:<9} {clean(hold.value):<28} {hold.at} by {hold.by}  {state}")
            ctx.say(f"      reason: {clean(hold.reason)}")
    return 0


def verb_stats(ctx: Context, args: argparse.Namespace) -> int:
    """``stats``: counts of calls, by device and day."""
    query = index.Query(since=args.since, until=args.until, device=args.device)
    ctx.record(Action.LIST, None, {"view": "stats", "filters": query.filters()})
    found = index.stats(ctx.archive, query)
    if args.json:
        ctx.emit(found)
        return 0
    ctx.say(
        f"{found['calls']} calls: {found['answered']} answered, {found['missed']} missed;"
        f" {found['duration_s'] / 3600:.1f} h of audio, {found['bytes'] / 1e6:.1f} MB; {found['purged']} purged"
    )
    for title, key in (("by device", "devices"), ("by day (UTC)", "days_utc")):
        ctx.say(title + ":")
        for name, item in found[key].items():
            ctx.say(
                f"  {name:<24} {item['calls']:>7} calls  {item['answered']:>7} answered  {item['missed']:>7} missed"
                f"  {item['duration_s'] / 3600:8.1f} h  {item['bytes'] / 1e6:9.1f} MB"
            )
    return 0


def verb_tombstones(ctx: Context, args: argparse.Namespace) -> int:
    """``tombstones``: what purge deleted."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        msg = f"--since {args.since.isoformat()} is not before --until {args.until.isoformat()}"
        raise UsageError(msg)
    ctx.record(Action.LIST, None, {"view": "tombstones"})
    for item in index.tombstones(ctx.archive, since=args.since, until=args.until):
        if args.json:
            ctx.emit(item)
        else:
            when, policy, actor = item["purged_at"], item["policy"], item["actor"]
            ctx.say(f"{item['id']}  {item['device']:<16} purged {when} under {policy} by {actor}")
    return 0


HANDLERS: dict[str, Handler] = {
    "list": verb_list,
    "search": verb_search,
    "show": verb_show,
    "tag": verb_tag,
    "note": verb_note,
    "hold add": verb_hold_add,
    "hold release": verb_hold_release,
    "hold list": verb_hold_list,
    "stats": verb_stats,
    "tombstones": verb_tombstones,
}
