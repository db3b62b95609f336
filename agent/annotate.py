"""What people add to archived calls: tags, notes, bookmarks and legal holds.

Tags are case-folded labels (``complaint``, ``training``) that search filters on
and that ``[retention.tags]`` may keep longer. Notes are dated text with an
author. A bookmark is a moment of a call (seconds on its recording's timeline)
with a short label: "the good answer starts here". A legal hold names one
recording, or a caller's number (every call from it, past and future), with the
reason it was placed; while it is in force purge leaves the calls it covers
alone. Releasing a hold keeps it, with who released it and when, so the history
of holds stays readable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, NotFound
from agent.index import check_tag, tombstone
from agent.retention import CallFacts, Holds, RetentionError

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow

MAX_NOTE_CHARS = 10_000
MAX_REASON_CHARS = 500
MAX_LABEL_CHARS = 200
MAX_NUMBER_CHARS = 64
HOLD_KINDS = ("recording", "caller")


class AnnotationError(AgentError, ValueError):
    """A tag, note or hold cannot be made as asked."""


def _stamp(archive: Archive) -> str:
    return datetime.fromtimestamp(archive.now(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def require_call(archive: Archive, rec_id: str) -> CallRow:
    """The row of ``rec_id``; NotFound says so plainly, and says when purge took it."""
    if not archive.has(rec_id):
        gone = tombstone(archive, rec_id)
        if gone is not None:
            msg = (
                f"recording {rec_id!r} was purged at {gone['purged_at']} under {gone['policy']} by {gone['actor']};"
                " only its tombstone remains"
            )
            raise NotFound(msg)
    return archive.get(rec_id)


# --- tags ----------------------------------------------------------------------------------


def tags_of(archive: Archive, rec_id: str) -> list[str]:
    """The tags of a call, sorted."""
    return [row[0] for row in archive.read("SELECT tag FROM call_tags WHERE call_id = ? ORDER BY tag", (rec_id,))]


def change_tags(archive: Archive, rec_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """Add and remove tags of a call (adding one it has, or removing one it lacks, is no change); its tags after."""
    adding = [check_tag(t) for t in add]
    removing = [check_tag(t) for t in remove]
    require_call(archive, rec_id)
    with archive.transaction() as db:
        db.executemany("INSERT OR IGNORE INTO call_tags (call_id, tag) VALUES (?, ?)", [(rec_id, t) for t in adding])
        db.executemany("DELETE FROM call_tags WHERE call_id = ? AND tag = ?", [(rec_id, t) for t in removing])
    return tags_of(archive, rec_id)


# --- notes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Note:
    """A dated remark on a call."""

    id: int
    call_id: str
    at: str
    author: str
    text: str

    def to_json(self) -> dict[str, Any]:
        """The note as a JSON-ready object."""
        return asdict(self)


def _note_text(text: str) -> str:
    cleaned = text.strip() if isinstance(text, str) else ""
    if not cleaned or len(cleaned) > MAX_NOTE_CHARS:
        msg = f"a note must be 1-{MAX_NOTE_CHARS} characters of text, not {len(cleaned)}"
        raise AnnotationError(msg)
    if any(not (c.isprintable() or c in "\n\t") for c in cleaned):
        msg = "a note may hold line breaks and tabs but no other control characters"
        raise AnnotationError(msg)
    return cleaned


def add_note(archive: Archive, rec_id: str, author: str, text: str) -> Note:
    """Write a note on a call; the note as stored."""
    cleaned = _note_text(text)
    require_call(archive, rec_id)
    at = _stamp(archive)
    with archive.transaction() as db:
        cursor = db.execute(
            "INSERT INTO notes (call_id, at, author, text) VALUES (?, ?, ?, ?)", (rec_id, at, author, cleaned)
        )
        note_id = int(cursor.lastrowid or 0)
    return Note(note_id, rec_id, at, author, cleaned)


def notes_of(archive: Archive, rec_id: str) -> list[Note]:
    """The notes of a call, oldest first."""
    rows = archive.read("SELECT id, call_id, at, author, text FROM notes WHERE call_id = ? ORDER BY id", (rec_id,))
    return [Note(*row) for row in rows]


# --- bookmarks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bookmark:
    """A labelled moment of a call, in seconds from the start of its recording."""

    id: int
    call_id: str
    at_s: float
    label: str
    author: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The bookmark as a JSON-ready object."""
        return asdict(self)


def add_bookmark(archive: Archive, rec_id: str, author: str, at_s: float, label: str) -> Bookmark:
    """Mark a moment of a call; the bookmark as stored. The moment must lie within the call's audio."""
    cleaned = label.strip() if isinstance(label, str) else ""
    if not cleaned or len(cleaned) > MAX_LABEL_CHARS or not cleaned.isprintable():
        msg = f"a bookmark label must be 1-{MAX_LABEL_CHARS} printable characters, not {len(cleaned)}"
        raise AnnotationError(msg)
    row = require_call(archive, rec_id)
    if not isinstance(at_s, float | int) or not 0 <= at_s <= max(row.duration_s, 0.0):
        msg = f"a bookmark at {at_s!r} s is outside the call, which has {row.duration_s:.3f} s of audio"
        raise AnnotationError(msg)
    created = _stamp(archive)
    at = round(float(at_s), 3)
    with archive.transaction() as db:
        cursor = db.execute(
            "INSERT INTO bookmarks (call_id, at_s, label, author, created_at) VALUES (?, ?, ?, ?, ?)",
            (rec_id, at, cleaned, author, created),
        )
        mark_id = int(cursor.lastrowid or 0)
    return Bookmark(mark_id, rec_id, at, cleaned, author, created)


def bookmarks_of(archive: Archive, rec_id: str) -> list[Bookmark]:
    """The bookmarks of a call, in the order of the moments they mark."""
    rows = archive.read(
        "SELECT id, call_id, at_s, label, author, created_at FROM bookmarks WHERE call_id = ? ORDER BY at_s, id",
        (rec_id,),
    )
    return [Bookmark(*row) for row in rows]


# --- legal holds ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold on one recording or on every call from a number."""

    id: int
    kind: str  # "recording" or "caller"
    value: str  # the recording id, or the number as it was given
    reason: str
    by: str
    at: str
    released_at: str | None
    released_by: str | None

    @property
    def active(self) -> bool:
        """Whether the hold is in force."""
        return self.released_at is None

    @property
    def target(self) -> str:
        """What the hold is on, as the audit log names it: ``recording:<id>`` or ``caller:<number>``."""
        return f"{self.kind}:{self.value}"

    def to_json(self) -> dict[str, Any]:
        """The hold as a JSON-ready object."""
        return {**asdict(self), "active": self.active}


_HOLD_COLUMNS = "id, kind, value, reason, by, at, released_at, released_by"


def _hold(archive: Archive, hold_id: int) -> Hold | None:
    rows = archive.read(f"SELECT {_HOLD_COLUMNS} FROM holds WHERE id = ?", (hold_id,))  # noqa: S608
    return Hold(*rows[0]) if rows else None


def place_hold(archive: Archive, *, kind: str, value: str, reason: str, by: str) -> Hold:
    """Hold a recording (by id) or every call from a number; the hold as stored."""
    if kind not in HOLD_KINDS:
        msg = f"a hold is on a {' or a '.join(HOLD_KINDS)}, not {kind!r}"
        raise AnnotationError(msg)
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        msg = f"a hold needs its reason: 1-{MAX_REASON_CHARS} printable characters (a case, a request, a matter)"
        raise AnnotationError(msg)
    value = value.strip()
    if kind == "recording":
        require_call(archive, value)
    else:
        if len(value) > MAX_NUMBER_CHARS:
            msg = f"cannot hold calls from {value[:20]!r}...; a number has at most {MAX_NUMBER_CHARS} characters"
            raise AnnotationError(msg)
        try:
            Holds.of(numbers=[value])
        except RetentionError as exc:
            raise AnnotationError(str(exc)) from None
    at = _stamp(archive)
    with archive.transaction() as db:
        cursor = db.execute(
            "INSERT INTO holds (kind, value, reason, by, at) VALUES (?, ?, ?, ?, ?)", (kind, value, reason, by, at)
        )
        hold_id = int(cursor.lastrowid or 0)
    return Hold(hold_id, kind, value, reason, by, at, None, None)


def release_hold(archive: Archive, hold_id: int, *, by: str) -> Hold:
    """Release a hold in force; the hold as it now stands."""
    found = _hold(archive, hold_id)
    if found is None:
        msg = f"there is no hold {hold_id}; `linerec-agent hold list --all` shows every hold"
        raise NotFound(msg)
    if not found.active:
        msg = f"hold {hold_id} was already released at {found.released_at} by {found.released_by}"
        raise AnnotationError(msg)
    at = _stamp(archive)
    with archive.transaction() as db:
        db.execute("UPDATE holds SET released_at = ?, released_by = ? WHERE id = ?", (at, by, hold_id))
    released = _hold(archive, hold_id)
    assert released is not None
    return released


def holds(archive: Archive, *, include_released: bool = False) -> list[Hold]:
    """The holds in force (or every hold ever placed), oldest first."""
    where = "" if include_released else " WHERE released_at IS NULL"
    return [Hold(*row) for row in archive.read(f"SELECT {_HOLD_COLUMNS} FROM holds{where} ORDER BY id")]  # noqa: S608


def policy_holds(found: Iterable[Hold]) -> Holds:
    """The retention policy's view of some holds (those in force)."""
    active = [h for h in found if h.active]
    return Holds.of(
        ids=[h.value for h in active if h.kind == "recording"],
        numbers=[h.value for h in active if h.kind == "caller"],
    )


def holds_covering(found: Iterable[Hold], call: CallFacts) -> list[Hold]:
    """The holds in force that keep ``call``."""
    return [h for h in found if h.active and policy_holds([h]).holding(call) is not None]


# --- what retention needs ------------------------------------------------------------------


def _aware(text: str | None) -> datetime | None:
    try:
        when = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def facts_of(row: CallRow, tags: Iterable[str]) -> CallFacts:
    """What the retention policy judges a call by; a garbled end time falls back to the start, then the id."""
    ended = _aware(row.ended_at) or _aware(row.started_at) or _aware(row.answered_at)
    if ended is None:
        ended = datetime.strptime(row.id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return CallFacts(
        id=row.id,
        device=row.device,
        ended_at=ended,
        tags=tuple(tags),
        caller_number=row.caller_number,
        has_audio=row.has_audio,
    )
