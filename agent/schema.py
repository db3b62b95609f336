"""The archive index's schema: its migrations, and the SQL functions they use.

Each entry of ``MIGRATIONS`` moves the schema from version N to N+1 and is never
edited once released; a change is a new entry. A migration is SQL statements
separated by ``;`` (so no ``;`` inside a literal), run in one transaction.

Version 3 adds what search, review and retention need:

* ``calls.caller_digits``: the caller number as delivered, digits only, indexed
  with the start time so that a search by number prefix is a range scan;
* the consent facts as columns (rule, jurisdiction, whether it was recorded,
  whether a notice was played, the express answer) and the full evidence in
  ``call_consent``;
* ``call_tags``, ``notes``, ``holds`` (legal holds on a recording or on a
  caller's number), ``tombstones`` (what purge removed, when and why, without
  any caller data) and ``contacts`` (names for known numbers, see
  ``CONTACTS_SCHEMA``, used by ``agent/contacts.py``).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime

_NOT_DIGITS = re.compile(r"[^0-9]+")

# Names for known numbers (agent/contacts.py). national: the national significant number, for
# caller IDs without a country code. raw: the number as the source wrote it. kind: mobile, work,
# home, fax, pager or main when the source said. flagged: 1 when the name starts like a formula.
CONTACTS_SCHEMA = """
CREATE TABLE contacts (
    number TEXT PRIMARY KEY,
    national TEXT NOT NULL,
    raw TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT,
    source TEXT NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX contacts_by_national ON contacts (national);
"""

# Migration 3 but for the contacts table above.
_SEARCH_AND_REVIEW = """
    ALTER TABLE calls ADD COLUMN caller_digits TEXT;
    ALTER TABLE calls ADD COLUMN consent_rule TEXT;
    ALTER TABLE calls ADD COLUMN consent_jurisdiction TEXT;
    ALTER TABLE calls ADD COLUMN consent_recorded INTEGER;
    ALTER TABLE calls ADD COLUMN consent_notice INTEGER;
    ALTER TABLE calls ADD COLUMN consent_express TEXT;
    UPDATE calls SET caller_digits = linerec_digits(caller_number);
    CREATE INDEX calls_by_caller ON calls (caller_digits, started_utc, id);
    CREATE TABLE call_consent (
        call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE,
        evidence TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE call_tags (
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (call_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX call_tags_by_tag ON call_tags (tag, call_id);
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX notes_by_call ON notes (call_id, id);
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('recording', 'caller')),
        value TEXT NOT NULL,
        reason TEXT NOT NULL,
        by TEXT NOT NULL,
        at TEXT NOT NULL,
        released_at TEXT,
        released_by TEXT
    );
    CREATE TABLE tombstones (
        call_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        purged_at TEXT NOT NULL,
        policy TEXT NOT NULL,
        actor TEXT NOT NULL
    );
    CREATE INDEX tombstones_by_time ON tombstones (purged_at);
    """

MIGRATIONS = (
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        enrolled_at TEXT NOT NULL,
        last_seen TEXT,
        status TEXT
    );
    CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        device TEXT NOT NULL REFERENCES devices(id),
        line TEXT NOT NULL,
        started_at TEXT NOT NULL,
        started_utc TEXT NOT NULL,
        answered_at TEXT,
        ended_at TEXT NOT NULL,
        duration_s REAL NOT NULL,
        caller_number TEXT,
        caller_name TEXT,
        caller_absent TEXT,
        answered INTEGER NOT NULL,
        hangup_cause TEXT NOT NULL,
        ring_count INTEGER NOT NULL,
        path TEXT NOT NULL,
        manifest_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX calls_by_time ON calls (started_utc, id);
    CREATE INDEX calls_by_device ON calls (device, started_utc, id);
    CREATE TABLE rejections (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        device TEXT NOT NULL,
        rec_id TEXT,
        reason TEXT NOT NULL
    );
    """,
    # 2: the untrimmed original kept beside a trimmed recording (audio.keep_original on the device).
    "ALTER TABLE calls ADD COLUMN original_path TEXT;",
    # 3: search by number, consent facts, tags, notes, legal holds, tombstones, contacts.
    _SEARCH_AND_REVIEW + CONTACTS_SCHEMA,
    # 4: key rotation: payload digests recorded before a file's first rewrap, recipients deployed to devices.
    # IF NOT EXISTS: agent/keyring.py creates the same tables in an index that predates this migration.
    """
    CREATE TABLE IF NOT EXISTS payload_digests (
        rec_id TEXT NOT NULL,
        role TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (rec_id, role)
    );
    CREATE TABLE IF NOT EXISTS deployments (
        device TEXT NOT NULL,
        seq INTEGER NOT NULL,
        issued_at TEXT NOT NULL,
        recipients TEXT NOT NULL,
        actor TEXT NOT NULL,
        PRIMARY KEY (device, seq)
    );
    """,
    # 5: bookmarks: a moment of a call (seconds on its recording's timeline) with a label, for coaching.
    """
    CREATE TABLE bookmarks (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        at_s REAL NOT NULL,
        label TEXT NOT NULL,
        author TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX bookmarks_by_call ON bookmarks (call_id, at_s, id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

CALL_COLUMNS = (
    "id, device, line, started_at, answered_at, ended_at, duration_s, caller_number, caller_name,"
    " caller_absent, answered, hangup_cause, ring_count, path, manifest_path, size, sha256, stored_at,"
    " original_path, consent_rule, consent_jurisdiction, consent_recorded, consent_notice, consent_express"
)
# Stored beside those and never shown as such: the UTC start (for ordering) and the caller's digits (for search).
_INSERTED = f"{CALL_COLUMNS}, started_utc, caller_digits"
INSERT_CALL = f"INSERT INTO calls ({_INSERTED}) VALUES ({', '.join('?' * (_INSERTED.count(',') + 1))})"  # noqa: S608


def digits(number: str | None) -> str | None:
    """A caller number's digits only (``"(212) 555-0142"`` gives ``"2125550142"``); None when there are none."""
    if not isinstance(number, str):
        return None
    return _NOT_DIGITS.sub("", number) or None


def utc_text(when: datetime) -> str:
    """A time as ``started_utc`` holds it: UTC, milliseconds and ``+00:00``, so text order is time order."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def fold(text: object) -> str | None:
    """Text folded for a search that ignores case in any script (SQLite's ``lower`` knows only ASCII)."""
    return text.casefold() if isinstance(text, str) else None


def install_functions(db: sqlite3.Connection) -> None:
    """Give a connection the functions the migrations and searches call."""
    db.create_function("linerec_digits", 1, digits, deterministic=True)
    db.create_function("linerec_fold", 1, fold, deterministic=True)
