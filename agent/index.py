"""Questions asked of the archive index: search with filters, one call in full, statistics, tombstones.

Every search is answered newest first and planned to stay fast on millions of
rows:

* a caller number prefix is a range over ``calls_by_caller`` (digits only,
  ``>= prefix AND < prefix with its last digit raised``), with the date range
  checked inside the same index;
* a date range, or none, walks ``calls_by_time`` from the newest end and stops
  at the limit; a device uses ``calls_by_device``;
* a tag goes through ``call_tags_by_tag``; note text is looked for in the notes
  (a small table) and joined by id;
* a name looks in each call's caller name and in the contacts: this one reads
  the calls in the date range, so give a range (or a limit) on a large archive.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.retention import stamp
from agent.schema import CALL_COLUMNS, digits, utc_text

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow

MAX_TAG_LENGTH = 64
MAX_TEXT_FILTER = 200
MAX_CONTACT_MATCHES = 500  # contacts a --name may stand for; more is too vague to be a search


class QueryError(AgentError, ValueError):
    """A search filter cannot be used as given."""


def check_tag(tag: str) -> str:
    """A tag as the index keeps it (case folded), or QueryError saying what a tag may be."""
    folded = tag.strip().casefold() if isinstance(tag, str) else ""
    if not folded or len(folded) > MAX_TAG_LENGTH or not folded.isprintable() or "," in folded:
        msg = f"tag {tag!r} is not valid; expected 1-{MAX_TAG_LENGTH} printable characters without commas"
        raise QueryError(msg)
    return folded


def _text_filter(flag: str, text: str | None) -> str | None:
    if text is None:
        return None
    folded = text.strip().casefold()
    if not folded or len(folded) > MAX_TEXT_FILTER:
        msg = f"{flag} {text!r} must be 1-{MAX_TEXT_FILTER} characters of text"
        raise QueryError(msg)
    return folded


def _upper(prefix: str) -> str:
    """The smallest text above every text that starts with ``prefix`` (digits only)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """Filters on archived calls; every one given must hold (they combine with AND)."""

    caller: str | None = None  # a number or its start; punctuation is ignored
    name: str | None = None  # part of the caller's name, on the line or in the contacts
    since: datetime | None = None  # calls that started at or after this (aware)
    until: datetime | None = None  # ... and before this
    device: str | None = None
    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    tags: tuple[str, ...] = ()  # every one of these tags
    note: str | None = None  # part of the text of a note
    answered: bool | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.caller is not None and digits(self.caller) is None:
            msg = f"--caller {self.caller!r} has no digits; give a number or the start of one"
            raise QueryError(msg)
        for when, what in ((self.since, "--since"), (self.until, "--until")):
            if when is not None and (when.tzinfo is None or when.utcoffset() is None):
                msg = f"{what} {when.isoformat()} has no time zone"
                raise QueryError(msg)
        if self.since is not None and self.until is not None and self.since >= self.until:
            msg = f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}"
            raise QueryError(msg)
        for value, what in ((self.min_duration, "--min-duration"), (self.max_duration, "--max-duration")):
            if value is not None and not 0 <= value < 1e9:
                msg = f"{what} {value!r} must be a number of seconds from 0"
                raise QueryError(msg)
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            msg = f"--min-duration {self.min_duration:g} is more than --max-duration {self.max_duration:g}"
            raise QueryError(msg)
        if self.limit is not None and self.limit < 1:
            msg = f"--limit {self.limit} must be 1 or more"
            raise QueryError(msg)
        object.__setattr__(self, "tags", tuple(dict.fromkeys(check_tag(t) for t in self.tags)))
        object.__setattr__(self, "name", _text_filter("--name", self.name))
        object.__setattr__(self, "note", _text_filter("--note", self.note))

    @property
    def caller_prefix(self) -> str | None:
        """The digits a caller number must start with, or None."""
        return digits(self.caller)

    @property
    def empty(self) -> bool:
        """Whether no filter is set (a limit is not a filter)."""
        return self.filters() == {}

    def filters(self) -> dict[str, Any]:
        """The filters that are set, JSON-ready: what the audit log records of a search."""
        out: dict[str, Any] = {}
        for name in ("caller", "name", "device", "min_duration", "max_duration", "note", "answered"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = utc_text(value)
        if self.tags:
            out["tags"] = list(self.tags)
        return out


def _contact_numbers(archive: Archive, name: str) -> list[str]:
    """The digit forms a caller ID may take for the contacts whose name holds ``name``."""
    rows = archive.read(
        "SELECT number, national FROM contacts WHERE instr(linerec_fold(name), ?) > 0 LIMIT ?",
        (name, MAX_CONTACT_MATCHES + 1),
    )
    if len(rows) > MAX_CONTACT_MATCHES:
        msg = f"--name {name!r} matches more than {MAX_CONTACT_MATCHES} contacts; give more of the name"
        raise QueryError(msg)
    forms: set[str] = set()
    for number, national in rows:
        forms.update(filter(None, (digits(number), national, "0" + national)))
    return sorted(forms)


def where(archive: Archive, query: Query) -> tuple[str, list[Any]]:
    """The FROM and WHERE of a query, with its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    source = "calls"
    prefix = query.caller_prefix
    if prefix is not None:
        # Forced: ordered by time, the planner would rather walk calls_by_time and read every row.
        source = "calls INDEXED BY calls_by_caller"
        clauses.append("caller_digits >= ? AND caller_digits < ?")
        params += [prefix, _upper(prefix)]
    if query.since is not None:
        clauses.append("started_utc >= ?")
        params.append(utc_text(query.since))
    if query.until is not None:
        clauses.append("started_utc < ?")
        params.append(utc_text(query.until))
    for column, value in (("device", query.device), ("answered", query.answered)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.min_duration is not None:
        clauses.append("duration_s >= ?")
        params.append(query.min_duration)
    if query.max_duration is not None:
        clauses.append("duration_s <= ?")
        params.append(query.max_duration)
    for tag in query.tags:
        clauses.append("id IN (SELECT call_id FROM call_tags WHERE tag = ?)")
        params.append(tag)
    if query.note is not None:
        clauses.append("id IN (SELECT call_id FROM notes WHERE instr(linerec_fold(text), ?) > 0)")
        params.append(query.note)
    if query.name is not None:
        # Caller ID names are ASCII (Bell 202, V.23): SQLite's lower() is enough, and quicker on every row.
        clauses.append("(instr(lower(caller_name), ?) > 0 OR caller_digits IN (SELECT value FROM json_each(?)))")
        params += [query.name, json.dumps(_contact_numbers(archive, query.name))]
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return f"FROM {source}{where}", params


def search_sql(archive: Archive, query: Query) -> tuple[str, tuple[Any, ...]]:
    """The SQL statement and parameters that answer ``query``, newest first."""
    source, params = where(archive, query)
    sql = f"SELECT {CALL_COLUMNS} {source} ORDER BY started_utc DESC, id DESC"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, tuple(params)


def search(archive: Archive, query: Query) -> Iterator[CallRow]:
    """The calls that match ``query``, newest first; streamed, so memory stays flat."""
    sql, params = search_sql(archive, query)
    for row in archive.stream(sql, params):
        yield archive.row(row)


def count(archive: Archive, query: Query) -> int:
    """How many calls match ``query`` (its limit aside)."""
    source, params = where(archive, query)
    return int(archive.read(f"SELECT count(*) {source}", tuple(params))[0][0])


# --- one call in full ----------------------------------------------------------------------


def tombstone(archive: Archive, rec_id: str) -> dict[str, Any] | None:
    """What purge left of ``rec_id`` (when, under which policy, by whom), or None."""
    rows = archive.read(
        "SELECT call_id AS id, device, purged_at, policy, actor FROM tombstones WHERE call_id = ?", (rec_id,)
    )
    return dict(rows[0]) if rows else None


def tombstones(
    archive: Archive, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Every tombstone, oldest purge first, optionally of purges in a time range."""
    clauses, params = [], []
    if since is not None:
        clauses.append("purged_at >= ?")
        params.append(stamp(since))
    if until is not None:
        clauses.append("purged_at < ?")
        params.append(stamp(until))
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    sql = f"SELECT call_id AS id, device, purged_at, policy, actor FROM tombstones{where} ORDER BY purged_at, call_id"  # noqa: S608
    for row in archive.stream(sql, tuple(params)):
        yield dict(row)


def consent_evidence(archive: Archive, rec_id: str) -> dict[str, Any] | None:
    """The consent evidence the device signed for a call, as it sent it, or None."""
    rows = archive.read("SELECT evidence FROM call_consent WHERE call_id = ?", (rec_id,))
    if not rows:
        return None
    try:
        value = json.loads(rows[0][0])
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- statistics ----------------------------------------------------------------------------


def _totals(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "calls": int(row["calls"]),
        "answered": int(row["answered"] or 0),
        "missed": int(row["calls"]) - int(row["answered"] or 0),
        "duration_s": round(float(row["duration"] or 0.0), 3),
        "bytes": int(row["bytes"] or 0),
    }


_SUMS = "count(*) AS calls, sum(answered) AS answered, sum(duration_s) AS duration, sum(size) AS bytes"


def stats(archive: Archive, query: Query) -> dict[str, Any]:
    """Counts of the calls ``query`` matches: in total, by device and by day (UTC), with duration and bytes."""
    source, params = where(archive, query)
    total = archive.read(f"SELECT {_SUMS} {source}", tuple(params))[0]
    by_device = archive.read(f"SELECT device, {_SUMS} {source} GROUP BY device ORDER BY device", tuple(params))
    by_day = archive.read(
        f"SELECT substr(started_utc, 1, 10) AS day, {_SUMS} {source} GROUP BY day ORDER BY day",
        tuple(params),
    )
    purged = archive.read("SELECT count(*) FROM tombstones")[0][0]
    return {
        "filters": query.filters(),
        **_totals(total),
        "purged": int(purged),
        "devices": {row["device"]: _totals(row) for row in by_device},
        "days_utc": {row["day"]: _totals(row) for row in by_day},
    }


def call_counts(archive: Archive) -> dict[str, tuple[int, str | None]]:
    """Per device: how many calls the archive holds and when the newest started (UTC)."""
    rows = archive.read("SELECT device, count(*), max(started_utc) FROM calls GROUP BY device")
    return {row[0]: (int(row[1]), row[2]) for row in rows}
