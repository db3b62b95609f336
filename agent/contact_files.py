"""Reading contacts files: vCard 2.1, 3.0 and 4.0 and the CSV exports of address books, as a stream.

A file is read line by line and never held whole: its size is capped before it is
opened, its encoding is judged from its first bytes (UTF-8, UTF-16 with a byte order
mark, or the Windows code page Outlook writes), and one vCard property may be at most
``MAX_PROPERTY_CHARS`` long once unfolded. What comes out is a stream of ``Card``: the
name and the numbers as the file wrote them, for ``agent.contacts`` to normalise and
store.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import itertools
import quopri
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent.errors import AgentError

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PROPERTY_CHARS = 64 * 1024  # one FN, N, ORG or TEL line, unfolded; photos and notes are skipped unread
_SNIFF_BYTES = 64 * 1024
_WANTED = frozenset({"BEGIN", "END", "FN", "N", "ORG", "TEL"})
_KINDS = (
    ("cell", "mobile"),
    ("mobile", "mobile"),
    ("iphone", "mobile"),
    ("fax", "fax"),
    ("pager", "pager"),
    ("work", "work"),
    ("business", "work"),
    ("home", "home"),
    ("main", "main"),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_PROPERTY = re.compile(r"(?:[A-Za-z0-9-]+\.)?([A-Za-z0-9-]+)")


class ContactsError(AgentError, ValueError):
    """A contacts file cannot be imported, or the contacts table cannot be used."""


@dataclass(slots=True)
class Card:
    """One contact as a file gave it: a name and numbers (raw text, kind)."""

    name: str = ""
    org: str = ""
    numbers: list[tuple[str, str | None]] = field(default_factory=list)


def _clean_name(text: str) -> str:
    """Control characters (escape sequences, NULs, line breaks) become spaces; runs of space become one."""
    return " ".join(_CONTROL.sub(" ", text).split())


@contextmanager
def read_cards(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Iterator[Iterator[Card]]:
    """The cards of a vCard or CSV file, read one by one while the block runs; the file is closed after it."""
    f, encoding = _open(path, max_bytes)
    with f:
        lines = _lines(f, path, encoding)
        head: list[str] = []
        for first in lines:
            if first.strip():
                break
            head.append(first)
        else:
            first = ""
        rest = itertools.chain(head, [first], lines)  # nothing is lost, so line numbers stay true
        vcard = first.lstrip("\ufeff").strip().upper().startswith("BEGIN:VCARD")
        yield _vcards(rest, path) if vcard else _csv_rows(rest, path, first)


# --- reading a file ------------------------------------------------------------------------


def _encoding(sample: bytes, path: Path) -> str:
    """The text encoding of a contacts file, judged from its first bytes; binary data is refused."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    binary = ContactsError(f"{path} is not a contacts file: it holds binary data, not vCard or CSV text")
    if b"\x00" in sample:
        raise binary
    text = None
    for encoding in ("utf-8-sig", "cp1252"):  # Outlook writes CSV in the Windows code page
        try:
            text = codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
            break
        except UnicodeDecodeError:
            continue
    if text is None or len(_CONTROL.findall(text.replace("\r", "").replace("\n", "").replace("\t", ""))) > 4:
        raise binary
    return encoding


def _open(path: Path, max_bytes: int) -> tuple[TextIO, str]:
    try:
        size = path.stat().st_size
        if not path.is_file():
            msg = f"{path} is not a regular file; expected a vCard (.vcf) or CSV export of contacts"
            raise ContactsError(msg)
        if size > max_bytes:
            msg = f"{path} is {size} bytes; contacts files of up to {max_bytes} bytes are accepted"
            raise ContactsError(msg)
        with path.open("rb") as f:
            sample = f.read(_SNIFF_BYTES)
        if size <= _SNIFF_BYTES and not sample.strip(b" \t\r\n" + codecs.BOM_UTF8):
            msg = f"{path} is empty; expected a vCard (.vcf) or CSV export of contacts"
            raise ContactsError(msg)
        encoding = _encoding(sample, path)
        return path.open(encoding=encoding, newline=""), encoding
    except FileNotFoundError:
        msg = f"{path} does not exist"
        raise ContactsError(msg) from None
    except OSError as exc:
        msg = f"{path} cannot be read: {exc.strerror or exc}"
        raise ContactsError(msg) from None


def _lines(f: TextIO, path: Path, encoding: str) -> Iterator[str]:
    """The file's lines with their endings, or ContactsError naming the line that is not text."""
    number = 0
    try:
        for number, line in enumerate(f, 1):  # noqa: B007 (the count names the bad line)
            yield line
    except UnicodeDecodeError:
        shown = {"utf-8-sig": "UTF-8", "cp1252": "Windows-1252", "utf-16": "UTF-16"}.get(encoding, encoding)
        msg = f"{path} is not {shown} text near line {number + 1}; save the file as UTF-8"
        raise ContactsError(msg) from None


# --- vCard -----------------------------------------------------------------------------------


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _content_line(line: str) -> tuple[str, dict[str, list[str]], str] | None:
    """A content line as (NAME, params with lower-case values, value); None when it is not one."""
    head_and_value = _split_outside_quotes(line, ":")
    if len(head_and_value) < 2:
        return None
    head, value = head_and_value[0], ":".join(head_and_value[1:])
    name, *raw_params = _split_outside_quotes(head, ";")
    found = _PROPERTY.fullmatch(name.strip())
    if found is None:
        return None
    params: dict[str, list[str]] = {}
    for param in raw_params:
        key, eq, values = param.partition("=")
        if not eq:  # vCard 2.1 writes bare types: TEL;WORK;VOICE:...
            key, values = "TYPE", key
        for item in _split_outside_quotes(values, ","):
            params.setdefault(key.strip().upper(), []).append(item.strip().strip('"').lower())
    return found.group(1).upper(), params, value


def _decoded(value: str, params: dict[str, list[str]]) -> str:
    """The value with its transfer encoding (quoted-printable or base64) and charset undone."""
    encoding = (params.get("ENCODING") or [""])[0]
    if "quoted-printable" in params.get("TYPE", ()) or encoding == "quoted-printable":
        data = quopri.decodestring(value.encode("utf-8"))
    elif encoding in ("b", "base64"):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return ""
    else:
        return value
    charset = (params.get("CHARSET") or ["utf-8"])[0]
    try:
        return data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: " " if m.group(1) in "nN" else m.group(1), text)


def _kind(types: Iterable[str]) -> str | None:
    present = {t for item in types for t in item.split(",")}
    return next((kind for key, kind in _KINDS if key in present), None)


def _logical_lines(lines: Iterable[str], path: Path) -> Iterator[str]:
    """Unfolded content lines of the properties a contact needs; the rest is skipped without being kept."""
    pieces: list[str] = []
    size, keep, qp, soft_break, name = 0, False, False, False, ""
    for number, physical in enumerate(lines, 1):
        line = physical.rstrip("\r\n")
        folded = line[:1] in (" ", "\t")
        if folded or soft_break:  # a folded line, or the next line of a quoted-printable soft break
            if pieces and soft_break:
                pieces[-1] = pieces[-1][:-1]
            piece = line[1:] if folded and not soft_break else line
            soft_break = qp and piece.endswith("=")
            if keep:
                size += len(piece)
                if size > MAX_PROPERTY_CHARS:
                    msg = f"{path} line {number}: a {name} value is longer than {MAX_PROPERTY_CHARS} characters"
                    raise ContactsError(msg)
                pieces.append(piece)
            continue
        if keep and pieces:
            yield "".join(pieces)
        found = _PROPERTY.match(line)
        name = found.group(1).upper() if found else ""
        head = line.split(":", 1)[0].upper()
        keep, qp = name in _WANTED, "QUOTED-PRINTABLE" in head
        soft_break = qp and line.endswith("=")
        pieces, size = ([line], len(line)) if keep else ([], 0)
        if size > MAX_PROPERTY_CHARS:
            msg = f"{path} line {number}: a {name} value is longer than {MAX_PROPERTY_CHARS} characters"
            raise ContactsError(msg)
    if keep and pieces:
        yield "".join(pieces)


def _vcards(lines: Iterable[str], path: Path) -> Iterator[Card]:
    depth, card = 0, Card()
    for line in _logical_lines(lines, path):
        parsed = _content_line(line)
        if parsed is None:
            continue
        name, params, value = parsed
        if name == "BEGIN" and value.strip().upper() == "VCARD":
            depth += 1
            if depth == 1:
                card = Card()
        elif name == "END" and value.strip().upper() == "VCARD" and depth:
            depth -= 1
            if depth == 0:
                yield card
        elif depth == 1:  # properties of a card nested in another (2.1 AGENT) are not this contact's
            _card_property(card, name, params, value)
    if depth:
        yield card  # a file cut short still gives the contacts it has


def _card_property(card: Card, name: str, params: dict[str, list[str]], value: str) -> None:
    text = _decoded(value, params)
    if name == "FN":
        card.name = _clean_name(_unescape(text)) or card.name
    elif name == "N" and not card.name:
        family, given, additional, prefix, suffix = ([*_split_unescaped(text), "", "", "", ""])[:5]
        card.name = _clean_name(" ".join((prefix, given, additional, family, suffix)))
    elif name == "ORG":
        card.org = _clean_name(_split_unescaped(text)[0])
    elif name == "TEL":
        raw = text.strip()
        if raw[:4].lower() == "tel:":
            raw = raw[4:].split(";", 1)[0]
        card.numbers.append((raw, _kind(params.get("TYPE", ()))))


def _split_unescaped(text: str) -> list[str]:
    return [_unescape(part) for part in re.split(r"(?<!\\);", text)]


# --- CSV ---------------------------------------------------------------------------------------

_FULL_NAME = frozenset({"name", "full name", "display name", "contact name", "contact", "fn", "formatted name"})
_GIVEN = frozenset({"first name", "given name", "firstname"})
_MIDDLE = frozenset({"middle name", "additional name"})
_FAMILY = frozenset({"last name", "family name", "surname", "lastname"})
_ORG = frozenset({"company", "organization", "organisation", "organization 1 - name", "organization name"})
_NUMBER_WORDS = frozenset({"phone", "mobile", "cell", "telephone", "tel", "fax", "pager", "callback", "isdn"})
_LABEL = re.compile(r"(phone \d+) - (?:type|label)")


def _header(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").lower().split())


def _is_number_column(header: str) -> bool:
    if _LABEL.fullmatch(header):
        return False
    return header in ("number", "phone number") or not _NUMBER_WORDS.isdisjoint(re.split(r"[^a-z]+", header))


def _csv_rows(lines: Iterable[str], path: Path, first: str) -> Iterator[Card]:
    """The rows of a CSV export with a header row; ``first`` is its first line that is not blank."""
    reader = csv.reader(lines, delimiter=max(",;\t", key=first.count))
    try:
        headers = [_header(h) for h in next((row for row in reader if row), [])]
        columns = _columns(headers, path)
        for row in reader:
            yield _csv_card(row, headers, columns)
    except csv.Error as exc:
        msg = f"{path} line {reader.line_num}: not a readable CSV row ({exc})"
        raise ContactsError(msg) from None


def _columns(headers: list[str], path: Path) -> dict[str, list[int]]:
    roles = {
        "full": [i for i, h in enumerate(headers) if h in _FULL_NAME],
        "given": [i for i, h in enumerate(headers) if h in _GIVEN],
        "middle": [i for i, h in enumerate(headers) if h in _MIDDLE],
        "family": [i for i, h in enumerate(headers) if h in _FAMILY],
        "org": [i for i, h in enumerate(headers) if h in _ORG],
        "number": [i for i, h in enumerate(headers) if _is_number_column(h)],
    }
    has_name = any(roles[r] for r in ("full", "given", "family", "org"))
    if has_name and roles["number"]:
        return roles
    missing = "name or phone number" if not has_name and not roles["number"] else "name" if not has_name else "phone"
    shown = ", ".join(repr(h[:40]) for h in headers[:12]) + (", ..." if len(headers) > 12 else "")
    msg = (
        f"{path} has no {missing} column (headers found: {shown or 'none'}); expected a header row such as"
        " Name,Phone or Google's Name,Phone 1 - Value or Outlook's First Name,Last Name,Mobile Phone"
    )
    raise ContactsError(msg)


def _csv_card(row: list[str], headers: list[str], columns: dict[str, list[int]]) -> Card:
    def cells(role: str) -> list[str]:
        return [row[i].strip() for i in columns[role] if i < len(row) and row[i].strip()]

    full = cells("full")
    parts = [*cells("given")[:1], *cells("middle")[:1], *cells("family")[:1]]
    card = Card(name=_clean_name(full[0] if full else " ".join(parts)), org=_clean_name(next(iter(cells("org")), "")))
    labels = {m.group(1): i for i, h in enumerate(headers) if (m := _LABEL.fullmatch(h))}
    for i in columns["number"]:
        if i >= len(row):
            continue
        label_at = labels.get(headers[i].split(" - ")[0])
        label = row[label_at] if label_at is not None and label_at < len(row) else headers[i]
        kind = _kind([label.replace("*", " ").strip().lower().replace(" ", ",")])
        for value in row[i].split(":::"):  # Google puts several numbers of one label in one cell
            if value.strip():
                card.numbers.append((value.strip(), kind))
    return card
