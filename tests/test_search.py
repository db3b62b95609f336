"""Search over the archive index: every filter, their combinations, the order, the plan, and bad filters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import annotate, index
from agent.archive import Archive
from agent.contacts import import_contacts
from agent.index import Query, QueryError
from firmware.wire.signing import public_key_text
from tests.support.studio import Studio, rec_id


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=UTC)


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    with Archive(tmp_path / "archive") as archive:
        s = Studio(archive)
        s.store(rec_id(1, 10, 1), number="2125550142", name="ACME PLUMBING", duration_s=60)
        s.store(rec_id(2, 9, 2), number="(212) 555-0199", name="JANE ROE", duration_s=300)
        s.store(rec_id(3, 15, 3), number="02079460018", name="SMITH J", duration_s=20)
        s.store(rec_id(4, 11, 4), number=None, name=None, answered=False)
        shop = Studio(archive, device="pi-shop", key=Ed25519PrivateKey.generate(), identity=s.identity)
        shop.store(rec_id(5, 8, 5), number="2125550142", name="ACME PLUMBING", duration_s=120)
        annotate.change_tags(archive, rec_id(1, 10, 1), add=["Complaint"])
        annotate.change_tags(archive, rec_id(2, 9, 2), add=["complaint", "training"])
        annotate.add_note(archive, rec_id(3, 15, 3), "cli:ann", "Asked for a REFUND of the deposit")
        yield s


def ids(archive: Archive, **filters: object) -> list[int]:
    """The calls a query finds, by their sequence number (the last digit of the id)."""
    return [int(row.id[-1]) for row in index.search(archive, Query(**filters))]  # type: ignore[arg-type]


def test_every_call_newest_first_and_a_limit_keeps_the_newest(studio: Studio) -> None:
    assert ids(studio.archive) == [5, 4, 3, 2, 1]
    assert ids(studio.archive, limit=2) == [5, 4]
    assert index.count(studio.archive, Query(limit=2)) == 5


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("212", [5, 2, 1]),
        ("212-555-01", [5, 2, 1]),
        ("(212) 555-0142", [5, 1]),
        ("2125550142", [5, 1]),
        ("020 7946", [3]),
        ("2079", []),  # a prefix, not a part from the middle
        ("9", []),
    ],
)
def test_caller_matches_the_start_of_the_number_ignoring_punctuation(
    studio: Studio, caller: str, expected: list[int]
) -> None:
    assert ids(studio.archive, caller=caller) == expected


def test_dates_start_inclusive_end_exclusive(studio: Studio) -> None:
    assert ids(studio.archive, since=at(2, 9)) == [5, 4, 3, 2]
    assert ids(studio.archive, until=at(2, 9)) == [1]
    assert ids(studio.archive, since=at(2), until=at(4)) == [3, 2]
    # The same instant written in another zone is the same filter.
    new_york = datetime(2024, 3, 1, 23, tzinfo=timezone(timedelta(hours=-5)))
    assert ids(studio.archive, since=new_york) == ids(studio.archive, since=at(2, 4)) == [5, 4, 3, 2]


def test_caller_prefix_and_date_range_together(studio: Studio) -> None:
    assert ids(studio.archive, caller="212", since=at(2), until=at(5)) == [2]
    assert ids(studio.archive, caller="212555", since=at(1), until=at(6), limit=1) == [5]


def test_device_duration_and_answered(studio: Studio) -> None:
    assert ids(studio.archive, device="pi-shop") == [5]
    assert ids(studio.archive, device="pi-none") == []
    assert ids(studio.archive, min_duration=60) == [5, 2, 1]
    assert ids(studio.archive, max_duration=60) == [4, 3, 1]
    assert ids(studio.archive, min_duration=61, max_duration=299) == [5]
    assert ids(studio.archive, answered=False) == [4]
    assert ids(studio.archive, answered=True, device="pi-hall") == [3, 2, 1]


def test_tags_are_case_blind_and_several_must_all_be_there(studio: Studio) -> None:
    assert ids(studio.archive, tags=("COMPLAINT",)) == [2, 1]
    assert ids(studio.archive, tags=("complaint", "Training")) == [2]
    assert ids(studio.archive, tags=("unknown",)) == []


def test_note_text_is_found_in_any_case(studio: Studio) -> None:
    assert ids(studio.archive, note="refund") == [3]
    assert ids(studio.archive, note="DEPOSIT", since=at(3)) == [3]
    assert ids(studio.archive, note="invoice") == []


def test_name_is_found_on_the_line_and_through_the_contacts(studio: Studio, tmp_path: Path) -> None:
    assert ids(studio.archive, name="acme") == [5, 1]
    assert ids(studio.archive, name="builder") == []
    book = tmp_path / "contacts.csv"
    book.write_text("Name,Phone\nBob Builder,+44 20 7946 0018\n")
    with studio.archive.connection() as db:
        import_contacts(db, book, region="GB")
    # The caller ID came as 02079460018 (national form); the contact is saved as +442079460018.
    assert ids(studio.archive, name="builder") == [3]
    assert ids(studio.archive, name="bob", caller="020") == [3]


def test_filters_are_recorded_as_json_for_the_audit_log() -> None:
    query = Query(caller="212", since=at(1), tags=("A",), answered=False, limit=5)
    assert query.filters() == {
        "caller": "212",
        "answered": False,
        "since": "2024-03-01T00:00:00.000+00:00",
        "tags": ["a"],
    }
    assert Query(limit=3).empty
    assert not query.empty


def test_a_caller_search_is_a_range_over_the_caller_index(studio: Studio) -> None:
    sql, params = index.search_sql(studio.archive, Query(caller="212555", since=at(1), until=at(9)))
    plan = " ".join(row[3] for row in studio.archive.read("EXPLAIN QUERY PLAN " + sql, params))
    assert "USING INDEX calls_by_caller (caller_digits>? AND caller_digits<?)" in plan
    assert params[:2] == ("212555", "212556")
    newest, params = index.search_sql(studio.archive, Query(limit=50))
    plan = " ".join(row[3] for row in studio.archive.read("EXPLAIN QUERY PLAN " + newest, params))
    assert "calls_by_time" in plan
    assert "TEMP B-TREE" not in plan  # read newest first from the index, no sort of every row


def test_a_prefix_ending_in_nine_still_has_an_upper_bound(studio: Studio) -> None:
    studio.store(rec_id(6, 1, 6), number="2199999999")
    studio.store(rec_id(6, 2, 7), number="2200000000")
    assert ids(studio.archive, caller="219") == [6]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"caller": "+-() "}, "--caller '+-() ' has no digits; give a number or the start of one"),
        (
            {"since": at(3), "until": at(2)},
            "--since 2024-03-03T00:00:00+00:00 is not before --until 2024-03-02T00:00:00+00:00",
        ),
        ({"since": datetime(2024, 3, 1)}, "--since 2024-03-01T00:00:00 has no time zone"),
        ({"min_duration": -1.0}, "--min-duration -1.0 must be a number of seconds from 0"),
        ({"min_duration": 9.0, "max_duration": 3.0}, "--min-duration 9 is more than --max-duration 3"),
        ({"limit": 0}, "--limit 0 must be 1 or more"),
        ({"tags": ("a,b",)}, "tag 'a,b' is not valid; expected 1-64 printable characters without commas"),
        ({"tags": ("",)}, "tag '' is not valid; expected 1-64 printable characters without commas"),
        ({"note": " "}, "--note ' ' must be 1-200 characters of text"),
        ({"name": "x" * 201}, f"--name {'x' * 201!r} must be 1-200 characters of text"),
    ],
)
def test_bad_filters_are_refused_with_a_sentence(filters: dict[str, object], message: str) -> None:
    with pytest.raises(QueryError) as caught:
        Query(**filters)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_a_name_matching_too_many_contacts_is_refused(studio: Studio, tmp_path: Path) -> None:
    book = tmp_path / "many.csv"
    book.write_text("Name,Phone\n" + "".join(f"Smith {n},+1212555{n:04d}\n" for n in range(501)))
    with studio.archive.connection() as db:
        import_contacts(db, book, region="US")
    with pytest.raises(QueryError, match=r"^--name 'smith' matches more than 500 contacts; give more of the name$"):
        list(index.search(studio.archive, Query(name="Smith")))


def test_stats_count_by_device_and_day(studio: Studio) -> None:
    found = index.stats(studio.archive, Query())
    assert (found["calls"], found["answered"], found["missed"], found["purged"]) == (5, 4, 1, 0)
    assert found["duration_s"] == 500.0
    assert found["bytes"] == sum(row.size for row in studio.archive.calls()) > 0
    assert {d: v["calls"] for d, v in found["devices"].items()} == {"pi-hall": 4, "pi-shop": 1}
    assert list(found["days_utc"]) == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
    assert found["days_utc"]["2024-03-04"]["missed"] == 1
    narrow = index.stats(studio.archive, Query(since=at(2), until=at(3), device="pi-hall"))
    assert (narrow["calls"], narrow["duration_s"], list(narrow["days_utc"])) == (1, 300.0, ["2024-03-02"])


def test_search_streams_and_leaves_the_index_writable(studio: Studio) -> None:
    rows = index.search(studio.archive, Query())
    first = next(rows)
    # A write while a search is half read: the stream holds only a read snapshot.
    annotate.change_tags(studio.archive, first.id, add=["seen"])
    assert [r.id for r in rows] == [r.id for r in list(index.search(studio.archive, Query()))[1:]]
    assert ids(studio.archive, tags=("seen",)) == [5]


def test_call_counts_per_device(studio: Studio) -> None:
    counts = index.call_counts(studio.archive)
    assert counts["pi-hall"] == (4, "2024-03-04T11:00:00.000+00:00")
    assert counts["pi-shop"][0] == 1
    archive = studio.archive
    archive.enrol("pi-idle", public_key_text(Ed25519PrivateKey.generate()))
    assert "pi-idle" not in index.call_counts(archive)


def test_notes_and_contact_names_match_in_any_script(studio: Studio, tmp_path: Path) -> None:
    annotate.add_note(studio.archive, rec_id(1, 10, 1), "cli:ann", "Zoë from ÅRHUS called about the Straße job")
    assert ids(studio.archive, note="ZOË") == [1]
    assert ids(studio.archive, note="århus") == [1]
    assert ids(studio.archive, note="strasse") == [1]  # case folding, as a person would expect
    book = tmp_path / "contacts.csv"
    book.write_text("Name,Phone\nÉlodie Dupré,+44 20 7946 0018\n")
    with studio.archive.connection() as db:
        import_contacts(db, book, region="GB")
    assert ids(studio.archive, name="ÉLODIE") == [3]
