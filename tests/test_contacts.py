"""Contacts: vCard and CSV imports into a real SQLite index, number normalisation, lookup and hostile files."""

from __future__ import annotations

import io
import random
import shutil
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.contacts import (
    CONTACTS_SCHEMA,
    Contact,
    ContactsError,
    contacts,
    export_csv,
    import_contacts,
    lookup,
    remove,
)

DATA = Path(__file__).resolve().parent / "data" / "contacts"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An archive-style index file (autocommit, as the archive opens it) with the contacts table."""
    db = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    db.executescript(CONTACTS_SCHEMA)
    yield db
    db.close()


def table(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None]]:
    return {c.number: (c.name, c.kind) for c in contacts(conn)}


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def refused(conn: sqlite3.Connection, path: Path, region: str = "US", **kwargs: int) -> str:
    with pytest.raises(ContactsError) as caught:
        import_contacts(conn, path, region=region, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- vCard ---------------------------------------------------------------------------------


def test_vcard_3_reads_several_numbers_types_folded_lines_and_names_from_n(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "family-3.0.vcf", region="US")
    assert table(conn) == {
        "+12125550143": ("Alice Example", "mobile"),
        "+12125550144": ("Alice Example", "home"),
        "+12125550150": ("Dr. Robert J. Sample Jr.", "work"),  # no FN: built from N; TEL folded mid-number
        "+12125550161": ("Smith, Carol", "work"),  # an escaped comma in FN
    }
    assert (report.cards, report.added, report.unreadable) == (3, 4, 0)
    # A TEL inside a folded NOTE is text, not a number of the card.
    assert lookup(conn, "9999999999", region="US") is None


def test_vcard_4_reads_tel_uris_quoted_types_and_skips_photos(conn: sqlite3.Connection) -> None:
    import_contacts(conn, DATA / "office-4.0.vcf", region="GB")
    assert table(conn) == {
        "+442079460123": ("Dévora Müller", "work"),  # tel: URI with an extension parameter
        "+447700900123": ("Dévora Müller", "mobile"),
        "+441614960000": ("Example Plumbing Ltd", "work"),  # a card with only ORG
    }
    raw = {c.number: c.raw for c in contacts(conn)}
    assert raw["+442079460123"] == "+44-20-7946-0123"


def test_vcard_2_1_decodes_quoted_printable_names_with_soft_line_breaks(conn: sqlite3.Connection) -> None:
    import_contacts(conn, DATA / "android-2.1.vcf", region="GB")
    assert table(conn) == {
        "+447700900456": ("Élodie Dupont-François de la Ferté", "mobile"),
        "+442079460456": ("Élodie Dupont-François de la Ferté", "home"),
        "+441614960789": ("Joe Bloggs", "work"),
        "+442079460800": ("Outer Card", None),  # the card nested in AGENT is not a contact of its own
    }
    # The quoted-printable NOTE runs on over a line starting "TEL:"; that line is part of the note.
    assert lookup(conn, "01614960999", region="GB") is None


# --- CSV ---------------------------------------------------------------------------------


def test_csv_name_and_phone_columns(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "plain.csv", region="US")
    assert table(conn) == {"+12125550143": ("Alice Example", None), "+12125550161": ("Smith, Carol", None)}
    assert (report.cards, report.without_number, report.without_name) == (4, 1, 1)
    assert (
        report.summary() == "2 added, 0 updated, 0 unchanged from plain.csv; 1 without a phone number; 1 without a name"
    )


def test_csv_google_export_with_labels_and_several_numbers_in_a_cell(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "google.csv", region="US")
    assert table(conn) == {
        "+12125550143": ("Alice Example", "mobile"),
        "+12125550145": ("Alice Example", "mobile"),
        "+12125550146": ("Alice Example", "work"),
        "+442079460222": ("Robert Sample", "home"),
    }
    assert report.unreadable == 0  # "Phonetic First Name" is not a phone column


def test_csv_outlook_export_in_the_windows_code_page(conn: sqlite3.Connection) -> None:
    import_contacts(conn, DATA / "outlook.csv", region="GB")
    assert table(conn) == {
        "+442079460333": ("Renée Lefebvre", "work"),
        "+447700900333": ("Renée Lefebvre", "mobile"),
        "+442079460334": ("Renée Lefebvre", "fax"),
        "+442125550188": ("Acme Widgets", "work"),  # no person's name: the company names the number
    }


def test_csv_with_semicolons_as_used_by_european_spreadsheets(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "eu.csv", "Name;Telephone\nJean Exemple;+33 1 99 00 12 34\n")
    import_contacts(conn, path, region="FR")
    assert table(conn) == {"+33199001234": ("Jean Exemple", None)}


# --- normalisation and lookup ------------------------------------------------------------


@pytest.mark.parametrize("caller", ["2125550143", "12125550143", "+1 (212) 555-0143", "212.555.0143"])
def test_us_caller_ids_find_the_contact_in_any_form(conn: sqlite3.Connection, caller: str) -> None:
    import_contacts(conn, DATA / "family-3.0.vcf", region="US")
    assert lookup(conn, caller, region="US") == "Alice Example"


@pytest.mark.parametrize("caller", ["02079460123", "020 7946 0123", "+442079460123", "00442079460123"])
def test_gb_caller_ids_find_the_contact_in_any_form(conn: sqlite3.Connection, caller: str) -> None:
    import_contacts(conn, DATA / "office-4.0.vcf", region="GB")
    assert lookup(conn, caller, region="GB") == "Dévora Müller"
    assert lookup(conn, "07700900123", region="GB") == "Dévora Müller"


def test_a_foreign_number_without_its_plus_is_still_found(conn: sqlite3.Connection) -> None:
    import_contacts(conn, DATA / "office-4.0.vcf", region="GB")
    # A US device hears a UK caller as digits without "+": not a US number, but the digits are the contact's.
    assert lookup(conn, "442079460123", region="US") == "Dévora Müller"
    assert lookup(conn, "011 44 20 7946 0123", region="US") == "Dévora Müller"


def test_lookup_does_not_guess(conn: sqlite3.Connection, tmp_path: Path) -> None:
    import_contacts(conn, DATA / "family-3.0.vcf", region="US")
    assert lookup(conn, "2125550199", region="US") is None
    assert lookup(conn, "", region="US") is None
    assert lookup(conn, None, region="US") is None
    assert lookup(conn, "P", region="US") is None
    # The same national digits in two countries: a caller ID without a country code is ambiguous.
    path = write(tmp_path, "twins.csv", "Name,Phone\nUS Twin,+1 212 555 0100\nUK Twin,+44 2125550100\n")
    import_contacts(conn, path, region="US")
    assert lookup(conn, "2125550100", region="DE") is None
    assert lookup(conn, "2125550100", region="US") == "US Twin"


def test_an_unknown_region_is_refused(conn: sqlite3.Connection) -> None:
    message = "region 'XX' is not known; expected a two-letter country code such as US or GB"
    with pytest.raises(ContactsError, match=f"^{message}$"):
        import_contacts(conn, DATA / "plain.csv", region="XX")
    with pytest.raises(ContactsError, match=f"^{message}$"):
        lookup(conn, "2125550143", region="XX")


def test_unreadable_numbers_are_counted_and_quoted(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "unreadable.vcf", region="US")
    assert table(conn) == {"+12125550101": ("Good Number", None)}
    assert report.unreadable == 3
    assert report.unreadable_examples == ("'not a number'", "'12'", "'555-0102'")  # 555-0102 lacks its area code
    assert "3 unreadable numbers ('not a number', '12', '555-0102')" in report.summary()


def test_a_file_of_only_unreadable_numbers_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", "Name,Phone\nA,abc\nB,12\n")
    assert refused(conn, path) == (
        f"{path}: none of its 2 phone numbers can be read for region US (first: 'abc', '12'); nothing was imported"
    )


# --- re-import, duplicates, removal --------------------------------------------------------


def test_importing_the_same_file_twice_changes_nothing(conn: sqlite3.Connection, tmp_path: Path) -> None:
    first = import_contacts(conn, DATA / "android-2.1.vcf", region="GB")
    rows = conn.execute("SELECT * FROM contacts ORDER BY number").fetchall()
    changes = conn.total_changes
    again = import_contacts(conn, DATA / "android-2.1.vcf", region="GB")
    assert (first.added, first.updated, first.unchanged) == (4, 0, 0)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    assert conn.execute("SELECT * FROM contacts ORDER BY number").fetchall() == rows
    assert conn.total_changes == changes
    # Written by an autocommit connection: another connection sees the rows.
    other = sqlite3.connect(tmp_path / "index.sqlite")
    assert other.execute("SELECT count(*) FROM contacts").fetchone()[0] == 4
    other.close()


def test_a_changed_name_updates_the_contact(conn: sqlite3.Connection, tmp_path: Path) -> None:
    import_contacts(conn, DATA / "plain.csv", region="US")
    edited = write(tmp_path, "plain.csv", (DATA / "plain.csv").read_text().replace("Alice Example", "Alice Renamed"))
    report = import_contacts(conn, edited, region="US")
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    assert lookup(conn, "2125550143", region="US") == "Alice Renamed"


def test_duplicate_numbers_with_different_names_keep_the_last_and_are_reported(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "duplicates.vcf", region="US")
    assert table(conn) == {"+12125550177": ("Second Owner", None), "+12125550178": ("Second Owner", None)}
    assert report.duplicates == 1  # 0178 twice under the same name is no clash
    assert report.duplicate_examples == ("+12125550177: 'First Owner' then 'Second Owner'",)


def test_remove_forgets_a_number(conn: sqlite3.Connection) -> None:
    import_contacts(conn, DATA / "family-3.0.vcf", region="US")
    assert remove(conn, "+1 212 555 0143") is True
    assert remove(conn, "+12125550143") is False
    assert remove(conn, "2125550144", region="US") is True
    assert sorted(table(conn)) == ["+12125550150", "+12125550161"]
    with pytest.raises(ContactsError, match=r"^'2125550150' is not a phone number; give it in E.164 form"):
        remove(conn, "2125550150")


def test_an_import_inside_the_callers_transaction_follows_its_rollback(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "legacy.sqlite")  # Python's default: implicit transactions
    db.executescript(CONTACTS_SCHEMA)
    db.execute("CREATE TABLE other (x)")
    db.execute("INSERT INTO other VALUES (1)")  # opens the caller's transaction
    import_contacts(db, DATA / "plain.csv", region="US")
    db.rollback()
    assert contacts(db) == []
    import_contacts(db, DATA / "plain.csv", region="US")  # on its own, it commits
    db.close()
    db = sqlite3.connect(tmp_path / "legacy.sqlite")
    assert len(contacts(db)) == 2
    db.close()


def test_an_index_without_the_contacts_table_is_a_clear_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.sqlite")
    with pytest.raises(ContactsError, match=r"^the archive index cannot store or read contacts: no such table"):
        import_contacts(db, DATA / "plain.csv", region="US")
    with pytest.raises(ContactsError, match=r"^the archive index cannot store or read contacts: no such table"):
        lookup(db, "2125550143", region="US")
    db.close()


# --- hostile input -----------------------------------------------------------------------------


def test_formula_like_names_are_stored_as_text_flagged_and_defused_on_export(conn: sqlite3.Connection) -> None:
    report = import_contacts(conn, DATA / "injection.csv", region="US")
    assert report.flagged == 4
    stored = {c.name: c.flagged for c in contacts(conn)}
    assert stored == {
        "=cmd|' /C calc'!A0": True,
        "@SUM(1+1)*cmd|' /C calc'!A0": True,
        "+Plus Sign": True,
        '=HYPERLINK("http://example.invalid")': True,  # the leading tab is gone, the formula is flagged
        "Ordinary Name": False,
        "Esc [31mRed": False,  # a terminal escape sequence loses its ESC
    }
    assert lookup(conn, "2125550191", region="US") == "=cmd|' /C calc'!A0"
    out = io.StringIO()
    assert export_csv(conn, out) == 6
    lines = out.getvalue().splitlines()
    assert lines[0] == "Name,Phone,Type"
    names = [line.rsplit(",", 2)[0].strip('"') for line in lines[1:]]
    assert all(not name.startswith(("=", "+", "-", "@")) for name in names), names
    assert "'=cmd|' /C calc'!A0,+12125550191," in lines
    assert "Ordinary Name,+12125550195," in lines


def test_binary_garbage_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    noise = random.Random(7).randbytes(4096)
    path = write(tmp_path, "photo.vcf", noise)
    assert refused(conn, path) == f"{path} is not a contacts file: it holds binary data, not vCard or CSV text"
    with_nul = write(tmp_path, "nul.csv", b"Name,Phone\nA\x00B,2125550143\n")
    assert refused(conn, with_nul) == f"{with_nul} is not a contacts file: it holds binary data, not vCard or CSV text"


def test_an_empty_file_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    for name, data in (("empty.vcf", b""), ("blank.csv", b"\xef\xbb\xbf \r\n\r\n")):
        path = write(tmp_path, name, data)
        assert refused(conn, path) == f"{path} is empty; expected a vCard (.vcf) or CSV export of contacts"


def test_a_vcard_without_tel_is_refused(conn: sqlite3.Connection) -> None:
    path = DATA / "no-tel.vcf"
    assert refused(conn, path) == f"{path} has 2 contacts but no phone numbers; nothing was imported"
    assert contacts(conn) == []


def test_a_file_with_no_cards_or_rows_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    header_only = write(tmp_path, "header.csv", "Name,Phone\n")
    assert refused(conn, header_only) == (
        f"{header_only} holds no contacts; expected vCards or CSV rows after a header"
    )


def test_a_file_over_the_size_cap_is_refused_before_reading(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", "Name,Phone\n" + "Alice,2125550143\n" * 1000)
    size = path.stat().st_size
    assert refused(conn, path, max_bytes=4096) == (
        f"{path} is {size} bytes; contacts files of up to 4096 bytes are accepted"
    )


def test_a_large_photo_is_streamed_past_not_kept(conn: sqlite3.Connection, tmp_path: Path) -> None:
    photo_lines = "".join(" " + "QUJD" * 18 + "\r\n" for _ in range(80_000))  # about 6 MB of folded base64
    text = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Has Photo\r\nPHOTO;ENCODING=b;TYPE=JPEG:QUJD\r\n{photo_lines}"
    path = write(tmp_path, "photo.vcf", text + "TEL:212 555 0120\r\nEND:VCARD\r\n")
    assert path.stat().st_size > 6_000_000
    tracemalloc.start()
    try:
        import_contacts(conn, path, region="US")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"the photo was held in memory ({peak} bytes at peak)"
    assert table(conn) == {"+12125550120": ("Has Photo", None)}


def test_an_overlong_name_or_number_line_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    folded = "".join(" " + "x" * 70 + "\r\n" for _ in range(1000))
    path = write(tmp_path, "long.vcf", f"BEGIN:VCARD\r\nFN:Long\r\n{folded}TEL:2125550143\r\nEND:VCARD\r\n")
    assert refused(conn, path) == f"{path} line 939: a FN value is longer than 65536 characters"


def test_a_csv_field_beyond_the_csv_limit_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "wide.csv", 'Name,Phone\n"' + "A" * 200_000 + '",2125550143\n')
    assert refused(conn, path).startswith(f"{path} line 2: not a readable CSV row (field larger than field limit")


def test_a_csv_without_recognisable_columns_names_the_headers_found(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "mail.csv", "E-mail Address,Birthday\nalice@example.org,1990-01-01\n")
    assert refused(conn, path) == (
        f"{path} has no name or phone number column (headers found: 'e-mail address', 'birthday');"
        " expected a header row such as Name,Phone or Google's Name,Phone 1 - Value"
        " or Outlook's First Name,Last Name,Mobile Phone"
    )
    no_phone = write(tmp_path, "names.csv", "First Name,Last Name\nAlice,Example\n")
    assert refused(conn, no_phone).startswith(
        f"{no_phone} has no phone column (headers found: 'first name', 'last name');"
    )
    no_name = write(tmp_path, "numbers.csv", "Mobile Phone\n2125550143\n")
    assert refused(conn, no_name).startswith(f"{no_name} has no name column (headers found: 'mobile phone');")


def test_text_that_stops_being_utf8_later_in_the_file_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    rows = "".join(f"Person {i},212555{i % 10000:04d}\n" for i in range(5000))  # past the first 64 KiB
    path = write(tmp_path, "mixed.csv", ("Name,Phone\n" + rows).encode() + b"Bad \xff\xfe name,2125550100\n")
    message = refused(conn, path)
    assert message.startswith(f"{path} is not UTF-8 text near line ")
    assert message.endswith("; save the file as UTF-8")
    assert contacts(conn) == []


def test_paths_that_are_not_files_are_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    missing = tmp_path / "missing.vcf"
    assert refused(conn, missing) == f"{missing} does not exist"
    assert refused(conn, tmp_path) == (
        f"{tmp_path} is not a regular file; expected a vCard (.vcf) or CSV export of contacts"
    )


def test_utf16_exports_are_read(conn: sqlite3.Connection, tmp_path: Path) -> None:
    path = write(tmp_path, "utf16.csv", "Name,Mobile\r\nZoë Example,+44 7700 900777\r\n".encode("utf-16"))
    import_contacts(conn, path, region="GB")
    assert table(conn) == {"+447700900777": ("Zoë Example", "mobile")}


def test_the_format_is_judged_by_content_not_by_file_name(tmp_path: Path) -> None:
    shutil.copy(DATA / "office-4.0.vcf", tmp_path / "export.txt")
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.executescript(CONTACTS_SCHEMA)
    report = import_contacts(db, tmp_path / "export.txt", region="GB", source="office")
    assert report.source == "office"
    assert {c.source for c in contacts(db)} == {"office"}
    assert isinstance(contacts(db)[0], Contact)
    db.close()
