"""Contacts: names for known numbers, imported from vCard or CSV exports into the archive index.

A contact is one phone number in E.164 form with the name it belongs to. Imports
read vCard 2.1, 3.0 and 4.0 (folded lines, several TEL lines per card, TYPE
parameters, quoted-printable names from old phone exports) and CSV exports with
a header row (``Name,Phone``; Google's ``Name,Phone 1 - Value``; Outlook's
``First Name,Last Name,Business Phone,Mobile Phone``...). Files are read as a
stream, line by line, up to a size cap; ``agent.contact_files`` does the reading,
and this module normalises, stores, looks up and exports what it gives.

Numbers are normalised with ``phonenumbers`` for the device's region (``US``,
``GB``...), so that a caller ID delivered in national form (``2125550143``,
``02079460000``) finds the contact saved as ``+1 212-555-0143``. Numbers that
cannot be read are counted and reported, never dropped in silence.

A name that a spreadsheet would run as a formula (``=cmd|...``) is stored as
text and flagged; exports put a ``'`` before it.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import phonenumbers

from agent.contact_files import MAX_FILE_BYTES, MAX_PROPERTY_CHARS, Card, ContactsError, read_cards
from agent.schema import CONTACTS_SCHEMA

__all__ = [
    "CONTACTS_SCHEMA",
    "EXAMPLES",
    "FORMULA_STARTS",
    "MAX_FILE_BYTES",
    "MAX_NUMBER_CHARS",
    "MAX_PROPERTY_CHARS",
    "Contact",
    "ContactsError",
    "ImportReport",
    "check_region",
    "contacts",
    "export_csv",
    "import_contacts",
    "lookup",
    "normalise",
    "remove",
    "safe_cell",
]


MAX_NUMBER_CHARS = 64
EXAMPLES = 5  # how many unreadable numbers or clashing names a report quotes
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Contact:
    """One known number and the name that goes with it."""

    number: str  # E.164
    raw: str
    name: str
    kind: str | None
    source: str
    flagged: bool  # the name starts like a spreadsheet formula

    @property
    def export_name(self) -> str:
        """The name as an export writes it: a formula-like name gets a leading ``'``."""
        return safe_cell(self.name)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: contacts added, updated, left as they were, and what it could not use."""

    source: str
    cards: int  # vCards or CSV rows read
    added: int
    updated: int
    unchanged: int
    unreadable: int  # numbers phonenumbers could not read for the region
    unreadable_examples: tuple[str, ...]
    without_number: int
    without_name: int
    duplicates: int  # numbers given again with another name in the same file; the last name won
    duplicate_examples: tuple[str, ...]
    flagged: int

    def summary(self) -> str:
        """One line for a person."""
        parts = [f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged from {self.source}"]
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable numbers ({', '.join(self.unreadable_examples)})")
        if self.without_number:
            parts.append(f"{self.without_number} without a phone number")
        if self.without_name:
            parts.append(f"{self.without_name} without a name")
        if self.duplicates:
            parts.append(
                f"{self.duplicates} numbers given twice, last name kept ({'; '.join(self.duplicate_examples)})"
            )
        if self.flagged:
            parts.append(f"{self.flagged} names that look like spreadsheet formulas, flagged")
        return "; ".join(parts)


def safe_cell(text: str) -> str:
    """``text`` made safe for a CSV cell: a leading formula character is defused with ``'``."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def check_region(region: str) -> str:
    """The region in upper case, or ContactsError when phonenumbers does not know it."""
    if isinstance(region, str) and region.upper() in phonenumbers.SUPPORTED_REGIONS:
        return region.upper()
    msg = f"region {region!r} is not known; expected a two-letter country code such as US or GB"
    raise ContactsError(msg)


def _parse(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    text = raw.strip()
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None  # too short, too long, or a local number without its area code
    return number


def normalise(raw: str, region: str) -> tuple[str, str] | None:
    """``raw`` as (E.164, national significant number) for ``region``, or None when it is not a full number.

    ``region`` ``ZZ`` accepts only numbers written with their country code (``+44 20 7946 0000``).
    """
    number = _parse(raw, region)
    if number is None:
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phonenumbers.national_significant_number(number)


# --- storing -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    cards: int = 0
    unreadable: int = 0
    unreadable_examples: list[str] = field(default_factory=list)
    without_number: int = 0
    without_name: int = 0
    duplicates: int = 0
    duplicate_examples: list[str] = field(default_factory=list)


def _collect(cards: Iterable[Card], region: str, source: str) -> tuple[dict[str, tuple[Contact, str]], _Tally]:
    """The contacts the cards give, with national numbers, by E.164 number (the last name given wins)."""
    found: dict[str, tuple[Contact, str]] = {}
    tally = _Tally()
    for card in cards:
        tally.cards += 1
        name = card.name or card.org
        if not card.numbers:
            tally.without_number += 1
            continue
        if not name:
            tally.without_name += 1
            continue
        for raw, kind in card.numbers:
            readable = normalise(raw, region)
            if readable is None:
                tally.unreadable += 1
                if len(tally.unreadable_examples) < EXAMPLES:
                    tally.unreadable_examples.append(repr(raw[:MAX_NUMBER_CHARS]))
                continue
            e164, national = readable
            before = found.get(e164)
            if before is not None and before[0].name != name:
                tally.duplicates += 1
                if len(tally.duplicate_examples) < EXAMPLES:
                    tally.duplicate_examples.append(f"{e164}: {before[0].name!r} then {name!r}")
            found[e164] = (Contact(e164, raw, name, kind, source, name.startswith(FORMULA_STARTS)), national)
    return found, tally


def _nothing_to_import(path: Path, tally: _Tally, region: str) -> ContactsError:
    if tally.cards == 0:
        return ContactsError(f"{path} holds no contacts; expected vCards or CSV rows after a header")
    if tally.unreadable:
        examples = ", ".join(tally.unreadable_examples)
        return ContactsError(
            f"{path}: none of its {tally.unreadable} phone numbers can be read for region {region}"
            f" (first: {examples}); nothing was imported"
        )
    if tally.without_number:
        return ContactsError(f"{path} has {tally.cards} contacts but no phone numbers; nothing was imported")
    return ContactsError(f"{path} has {tally.cards} contacts with numbers but no names; nothing was imported")


def _database(exc: sqlite3.Error) -> ContactsError:
    return ContactsError(f"the archive index cannot store or read contacts: {exc}")


def import_contacts(
    conn: sqlite3.Connection,
    path: Path | str,
    *,
    region: str,
    source: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> ImportReport:
    """Add or update the contacts of a vCard or CSV file; importing the same file again changes nothing."""
    path = Path(path)
    region = check_region(region)
    source = source or path.name
    with read_cards(path, max_bytes) as cards:
        found, tally = _collect(cards, region, source)
    if not found:
        raise _nothing_to_import(path, tally, region)
    added, updated, unchanged = _store(conn, found.values())
    return ImportReport(
        source=source,
        cards=tally.cards,
        added=added,
        updated=updated,
        unchanged=unchanged,
        unreadable=tally.unreadable,
        unreadable_examples=tuple(tally.unreadable_examples),
        without_number=tally.without_number,
        without_name=tally.without_name,
        duplicates=tally.duplicates,
        duplicate_examples=tuple(tally.duplicate_examples),
        flagged=sum(1 for c, _ in found.values() if c.flagged),
    )


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """All of the block's writes or none; commits unless the caller has a transaction of its own open."""
    try:
        conn.execute("SAVEPOINT contacts")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO contacts")
            conn.execute("RELEASE contacts")
            raise
        conn.execute("RELEASE contacts")
    except sqlite3.Error as exc:
        raise _database(exc) from None


def _store(conn: sqlite3.Connection, found: Iterable[tuple[Contact, str]]) -> tuple[int, int, int]:
    added = updated = unchanged = 0
    with _savepoint(conn):
        for c, national in found:
            row = (national, c.raw, c.name, c.kind, c.source, int(c.flagged))
            old = conn.execute(
                "SELECT national, raw, name, kind, source, flagged FROM contacts WHERE number = ?", (c.number,)
            ).fetchone()
            if old is None:
                conn.execute(
                    "INSERT INTO contacts (number, national, raw, name, kind, source, flagged)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (c.number, *row),
                )
                added += 1
            elif tuple(old) == row:
                unchanged += 1
            else:
                conn.execute(
                    "UPDATE contacts SET national = ?, raw = ?, name = ?, kind = ?, source = ?, flagged = ?"
                    " WHERE number = ?",
                    (*row, c.number),
                )
                updated += 1
    return added, updated, unchanged


def lookup(conn: sqlite3.Connection, number: str | None, *, region: str) -> str | None:
    """The name of the contact a caller ID number belongs to, or None when no one (or several) match.

    The number is read for ``region`` first, so a national caller ID finds the
    E.164 entry. When it is not a valid number of the region (a foreign number
    delivered without its ``+``, say), its digits are compared with each
    contact's national number, with and without up to three leading digits of
    country code, and the name is given when exactly one name matches.
    """
    region = check_region(region)
    if not number or len(number) > MAX_NUMBER_CHARS:
        return None
    parsed = _parse(number, region)
    try:
        if parsed is not None:
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            row = conn.execute("SELECT name FROM contacts WHERE number = ?", (e164,)).fetchone()
            if row is not None:
                return str(row[0])
            if phonenumbers.is_valid_number(parsed):
                return None  # a real number of the region that is not a contact: no guessing
        digits = re.sub(r"[^0-9]", "", number).lstrip("0")
        for skip in range(4):  # with a country code of up to three digits in front, or none
            national = digits[skip:]
            if len(national) < 7:
                break
            rows = conn.execute("SELECT DISTINCT name FROM contacts WHERE national = ?", (national,)).fetchall()
            if rows:
                return str(rows[0][0]) if len(rows) == 1 else None
    except sqlite3.Error as exc:
        raise _database(exc) from None
    return None


def contacts(conn: sqlite3.Connection) -> list[Contact]:
    """Every contact, by name then number."""
    try:
        rows = conn.execute(
            "SELECT number, raw, name, kind, source, flagged FROM contacts ORDER BY name COLLATE NOCASE, number"
        ).fetchall()
    except sqlite3.Error as exc:
        raise _database(exc) from None
    return [Contact(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


def remove(conn: sqlite3.Connection, number: str, *, region: str | None = None) -> bool:
    """Forget the contact with ``number`` (E.164, or national for ``region``); False when there was none."""
    readable = normalise(number, check_region(region)) if region else normalise(number, "ZZ")
    if readable is None:
        msg = f"{number!r} is not a phone number; give it in E.164 form such as +12125550143, or give a region"
        raise ContactsError(msg)
    with _savepoint(conn):
        cursor = conn.execute("DELETE FROM contacts WHERE number = ?", (readable[0],))
    return cursor.rowcount > 0


def export_csv(conn: sqlite3.Connection, out: TextIO) -> int:
    """Write every contact as ``Name,Phone,Type`` CSV with formula-like cells defused; the count written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Name", "Phone", "Type"])
    written = 0
    for contact in contacts(conn):
        writer.writerow([contact.export_name, contact.number, safe_cell(contact.kind or "")])
        written += 1
    return written
