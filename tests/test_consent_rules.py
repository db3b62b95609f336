"""Consent rules as data, the owner's overrides, and the decision for each kind of call."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.consent.decision import Decision, decide, law_of
from firmware.consent.rules import STRICTNESS, RuleBook, load_rules, parse_rules, strictness
from firmware.wire.errors import ConfigError

US_STATES = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC",
    "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
)  # fmt: skip
CA_PROVINCES = ("AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT")
AU_STATES = ("NSW", "VIC", "QLD", "WA", "SA", "TAS", "ACT", "NT")
EU = (
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
)  # fmt: skip
ALL_PARTY = {"CA", "FL", "IL", "MD", "MA", "MT", "NH", "PA", "WA"}
DISPUTED = {"NV": "all-party", "DE": "all-party", "CT": "all-party", "MI": "all-party", "VT": "one-party"}


@pytest.fixture(scope="module")
def book() -> RuleBook:
    return load_rules()


def shipped_row(**cells: Any) -> dict[str, Any]:
    return {"rule": "one-party", "source": "a statute", "reviewed": dt.date(2026, 11, 29), **cells}


def table(**rows: dict[str, Any]) -> dict[str, Any]:
    return {"rules": {"default": shipped_row(rule="all-party"), **rows}}


# --- the shipped table ---------------------------------------------------------------------------


def test_the_table_covers_every_place_the_issue_names(book: RuleBook) -> None:
    expected = {
        "default",
        "US",
        "CA",
        "GB",
        "AU",
        *EU,
        *(f"US-{s}" for s in US_STATES),
        *(f"CA-{p}" for p in CA_PROVINCES),
        *(f"AU-{s}" for s in AU_STATES),
    }
    assert set(book.rows) == expected
    assert len(US_STATES) == 51  # fifty states and DC


def test_every_row_names_its_law_and_was_reviewed_on_the_same_day(book: RuleBook) -> None:
    assert {row.reviewed for row in book.rows.values()} == {dt.date(2026, 11, 29)}
    assert all(row.source.strip() for row in book.rows.values())


def test_us_states_follow_the_reference_table(book: RuleBook) -> None:
    for state in US_STATES:
        row = book.rows[f"US-{state}"]
        expected = "all-party" if state in ALL_PARTY else DISPUTED.get(state, "one-party")
        assert (state, row.rule, row.disputed) == (state, expected, state in DISPUTED)
    assert book.rows["US"].source == "18 U.S.C. § 2511(2)(d)"
    assert book.rows["US-CA"].source == "Cal. Penal Code § 632"
    assert book.rows["US-CT"].beep is True  # its civil law is met by a tone about every 15 s


@pytest.mark.parametrize(
    ("region", "rule"),
    [
        ("GB", "notice"),
        ("FR", "notice"),
        ("IE", "notice"),
        ("DE", "express"),
        ("CA", "one-party"),
        ("CA-QC", "one-party"),
        ("AU", "notice"),
        ("AU-NSW", "all-party"),
        ("AU-VIC", "one-party"),
        ("default", "all-party"),
    ],
)
def test_rows_outside_the_us(book: RuleBook, region: str, rule: str) -> None:
    assert book.rows[region].rule == rule


def test_rules_run_from_one_party_to_express() -> None:
    assert STRICTNESS == ("one-party", "notice", "all-party", "express")
    assert [strictness(r) for r in STRICTNESS] == [0, 1, 2, 3]


# --- broken rule files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            table(**{"US-CA": shipped_row(rule="two-party")}),
            "consent.toml: row 'US-CA': rule 'two-party' must be one of one-party, all-party, notice, express",
        ),
        (
            table(**{"US-CA": {"source": "x", "reviewed": dt.date(2026, 1, 1)}}),
            "consent.toml: row 'US-CA': rule is missing; it must be one of one-party, all-party, notice, express",
        ),
        (
            table(**{"US-CA": {"rule": "notice", "reviewed": dt.date(2026, 1, 1)}}),
            "consent.toml: row 'US-CA': source is missing; name the law the row follows",
        ),
        (
            table(**{"US-CA": shipped_row(source=" ")}),
            "consent.toml: row 'US-CA': source ' ' must be text naming the law the row follows",
        ),
        (
            table(**{"US-CA": {"rule": "notice", "source": "x"}}),
            "consent.toml: row 'US-CA': reviewed is missing; "
            "give the date the row was last checked, such as 2026-11-29",
        ),
        (
            table(**{"US-CA": shipped_row(reviewed="2026-11-29")}),
            "consent.toml: row 'US-CA': reviewed '2026-11-29' must be a date such as 2026-11-29 (not in quotes)",
        ),
        (
            table(**{"US-CA": shipped_row(disputed="yes")}),
            "consent.toml: row 'US-CA': disputed 'yes' must be true or false",
        ),
        (
            table(**{"US-CA": shipped_row(beep=1)}),
            "consent.toml: row 'US-CA': beep 1 must be true or false",
        ),
        (
            table(**{"US-CA": shipped_row(rulez="all-party")}),
            "consent.toml: row 'US-CA': unknown column 'rulez'; the columns are rule, source, reviewed, disputed, "
            "beep, note",
        ),
        (
            table(**{"US-CA": "all-party"}),  # type: ignore[arg-type]
            "consent.toml: row 'US-CA': must be a table of columns (rule, source, reviewed, disputed, beep, note), "
            "not 'all-party'",
        ),
        (
            table(**{"XX-CA": shipped_row()}),
            "consent.toml: row 'XX-CA': 'XX-CA' is not an ISO 3166 region code that linerec knows; expected a "
            "country such as 'GB', a subdivision such as 'US-CA', or 'default'",
        ),
        (
            table(**{"Germany": shipped_row()}),
            "consent.toml: row 'Germany': 'Germany' is not an ISO 3166 region code that linerec knows; expected a "
            "country such as 'GB', a subdivision such as 'US-CA', or 'default'",
        ),
        (
            {"rules": {"GB": shipped_row(rule="notice")}},
            "consent.toml: there is no row 'default'; it gives the rule for callers whose place cannot be told",
        ),
        ({"rules": {}}, "consent.toml: expected a [rules] table with one row per region"),
        ({"rule": {}}, "consent.toml: unknown table [rule]; expected only [rules]"),
    ],
)
def test_a_broken_rule_file_names_the_row_the_column_and_what_is_allowed(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(data)
    assert str(caught.value) == message


# --- the owner's overrides -----------------------------------------------------------------------


def test_an_override_with_a_rule_replaces_the_shipped_row_whole() -> None:
    row = load_rules({"US-VT": {"rule": "one-party"}}).rows["US-VT"]
    assert (row.rule, row.disputed, row.source, row.reviewed) == (
        "one-party",
        False,
        "the owner's [consent.rules.US-VT]",
        None,
    )


def test_an_override_without_a_rule_changes_only_the_columns_it_names() -> None:
    row = load_rules({"US-VT": {"disputed": False, "reviewed": dt.date(2027, 1, 4)}}).rows["US-VT"]
    assert (row.rule, row.disputed, row.source, row.reviewed) == (
        "one-party",
        False,
        "no recording statute",
        dt.date(2027, 1, 4),
    )
    assert decide("+1 802 555 0142", device_region="US-VT", rules=load_rules({"US-VT": {"disputed": False}})).rule == (
        "one-party"
    )


def test_the_owner_can_add_a_country_and_raise_the_default() -> None:
    book = load_rules({"JP": {"rule": "notice", "source": "APPI"}, "default": {"rule": "express"}})
    assert decide("+81 3 1234 5678", device_region="US-NY", rules=book).rule == "notice"
    assert decide("withheld", device_region="US-NY", rules=book).rule == "express"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"US-XX": {"rule": "notice"}},
            "consent.rules.US-XX: 'US-XX' is not an ISO 3166 region code that linerec knows; expected a country "
            "such as 'GB' or a subdivision in consent.toml such as 'US-CA', or 'default'",
        ),
        (
            {"DE-BY": {"rule": "notice"}},
            "consent.rules.DE-BY: 'DE-BY' is not an ISO 3166 region code that linerec knows; expected a country "
            "such as 'GB' or a subdivision in consent.toml such as 'US-CA', or 'default'",
        ),
        (
            {"US-CA": {"rule": "two-party"}},
            "consent.rules.US-CA: rule 'two-party' must be one of one-party, all-party, notice, express",
        ),
        (
            {"JP": {"source": "APPI"}},
            "consent.rules.JP: rule is missing; it must be one of one-party, all-party, notice, express",
        ),
        (
            {"GB": {"rule": "notice", "beeps": True}},
            "consent.rules.GB: unknown column 'beeps'; the columns are rule, source, reviewed, disputed, beep, note",
        ),
        (
            {"GB": "notice"},
            "consent.rules.GB: must be a table of columns (rule, source, reviewed, disputed, beep, note), not 'notice'",
        ),
    ],
)
def test_a_bad_override_names_the_config_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules(overrides)
    assert str(caught.value) == message


def test_overrides_that_are_not_a_table_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_rules(["US-CA"])  # type: ignore[arg-type]
    assert str(caught.value) == "consent.rules: must be a table of [consent.rules.<REGION>] rows, not ['US-CA']"


# --- decisions: one per rule class ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "device", "expected"),
    [
        ("(212) 555-0142", "US-NY", ("one-party", True, False, None)),
        ("020 7946 0018", "GB", ("notice", True, True, None)),
        ("(213) 555-0142", "US-CA", ("all-party", True, True, 15.0)),
        ("030 1234567", "DE", ("express", True, True, None)),
    ],
)
def test_each_rule_class_says_whether_to_announce_and_beep(
    book: RuleBook, number: str, device: str, expected: tuple[str, bool, bool, float | None]
) -> None:
    d = decide(number, device_region=device, rules=book)
    assert (d.rule, d.record, d.announce, d.beep_interval_s) == expected
    assert d.jurisdiction == device


# --- decisions: the two ends ---------------------------------------------------------------------


def test_a_california_caller_to_a_new_york_device_gets_californias_rule(book: RuleBook) -> None:
    d = decide("(213) 555-0142", device_region="US-NY", rules=book)
    assert d == Decision(
        jurisdiction="US-CA",
        rule="all-party",
        record=True,
        announce=True,
        beep_interval_s=15.0,
        basis="caller US-CA (all-party, Cal. Penal Code § 632) is stricter than device US-NY (one-party)",
        disputed=False,
        caller_region="US-CA",
    )


def test_a_new_york_caller_to_a_california_device_gets_californias_rule(book: RuleBook) -> None:
    d = decide("+1 212 555 0142", device_region="US-CA", rules=book)
    assert (d.jurisdiction, d.rule, d.caller_region) == ("US-CA", "all-party", "US-NY")
    assert d.basis == "device US-CA (all-party, Cal. Penal Code § 632) is stricter than caller US-NY (one-party)"


@pytest.mark.parametrize("number", [None, "", "  ", "withheld", "WITHHELD"])
def test_a_withheld_number_gets_the_default_rule(book: RuleBook, number: str | None) -> None:
    d = decide(number, device_region="US-NY", rules=book)
    assert (d.jurisdiction, d.rule, d.caller_region, d.announce, d.beep_interval_s) == (
        "unknown",
        "all-party",
        None,
        True,
        15.0,
    )
    assert d.basis == (
        "caller unknown (number withheld: the default all-party) is stricter than device US-NY (one-party)"
    )


def test_a_withheld_number_never_weakens_the_devices_own_rule(book: RuleBook) -> None:
    d = decide("withheld", device_region="DE", rules=book)
    assert (d.jurisdiction, d.rule) == ("DE", "express")
    assert d.basis == "device DE (express, § 201 StGB) is stricter than caller unknown (number withheld: all-party)"


def test_a_disputed_one_party_state_gets_the_default_rule(book: RuleBook) -> None:
    d = decide("+1 802 555 0142", device_region="US-NY", rules=book)
    assert (d.jurisdiction, d.rule, d.disputed) == ("US-VT", "all-party", True)
    assert d.basis == (
        "caller US-VT (disputed one-party, so the default all-party) is stricter than device US-NY (one-party)"
    )


def test_a_disputed_caller_does_not_mark_a_decision_the_device_settles(book: RuleBook) -> None:
    d = decide("(702) 555-0142", device_region="US-CA", rules=book)
    assert (d.caller_region, d.jurisdiction, d.rule, d.disputed) == ("US-NV", "US-CA", "all-party", False)


def test_an_international_caller_to_a_us_device_gets_the_callers_stricter_rule(book: RuleBook) -> None:
    uk = decide("+44 20 7946 0018", device_region="US-NY", rules=book)
    assert (uk.jurisdiction, uk.rule, uk.announce, uk.beep_interval_s) == ("GB", "notice", True, None)
    german = decide("011 49 30 1234567", device_region="US-CA", rules=book)
    assert (german.jurisdiction, german.rule) == ("DE", "express")
    assert german.basis == "caller DE (express, § 201 StGB) is stricter than device US-CA (all-party)"


def test_a_caller_from_a_country_without_a_row_gets_the_default(book: RuleBook) -> None:
    d = decide("+81 3 1234 5678", device_region="GB", rules=book)
    assert (d.jurisdiction, d.rule, d.caller_region) == ("JP", "all-party", "JP")
    assert d.basis == "caller JP (no row of its own: the default all-party) is stricter than device GB (notice)"


def test_a_toll_free_number_could_be_in_any_state_so_it_gets_the_strictest(book: RuleBook) -> None:
    d = decide("1-800-555-0142", device_region="US-TX", rules=book)
    assert (d.caller_region, d.jurisdiction, d.rule) == ("US", "US", "all-party")
    assert d.basis == (
        "caller US (place within it unknown: the strictest is US-CA (all-party, Cal. Penal Code § 632)) "
        "is stricter than device US-TX (one-party)"
    )


def test_an_australian_state_is_never_weaker_than_the_federal_act(book: RuleBook) -> None:
    victoria = law_of("AU-VIC", book)
    assert (victoria.rule, victoria.row.region) == ("notice", "AU")
    assert victoria.label == (
        "AU-VIC (notice under AU law, Telecommunications (Interception and Access) Act 1979 (Cth) s. 7)"
    )
    # An Australian number does not say which state, and New South Wales needs everyone's consent.
    assert decide("03 9999 0000", device_region="AU-VIC", rules=book).rule == "all-party"


def test_a_canadian_number_with_two_provinces_takes_canadas_rule(book: RuleBook) -> None:
    d = decide("(902) 555-0142", device_region="CA-ON", rules=book)
    assert (d.caller_region, d.rule, d.announce) == ("CA", "one-party", False)


# --- the owner's number lists --------------------------------------------------------------------


def test_a_never_record_prefix_stops_the_recording(book: RuleBook) -> None:
    d = decide("(213) 555-0142", device_region="US-NY", rules=book, never_record=["+1900", "213 555"])
    assert (d.record, d.announce, d.beep_interval_s, d.rule) == (False, False, None, "all-party")
    assert d.basis.startswith("on the never-record list ('213 555'), so not recorded; otherwise caller US-CA")


def test_an_always_announce_number_is_announced_under_a_one_party_rule(book: RuleBook) -> None:
    d = decide("(212) 555-0142", device_region="US-NY", rules=book, always_announce=["+12125550142"])
    assert (d.rule, d.record, d.announce) == ("one-party", True, True)
    assert d.basis.endswith("; announced because '+12125550142' is on the always-announce list")
    other = decide("(212) 555-0199", device_region="US-NY", rules=book, always_announce=["+12125550142"])
    assert other.announce is False


def test_a_national_prefix_in_a_list_is_read_in_the_devices_country(book: RuleBook) -> None:
    d = decide("+44 800 123 4567", device_region="GB", rules=book, never_record=["0800"])
    assert d.record is False


def test_a_bad_list_entry_names_the_list(book: RuleBook) -> None:
    with pytest.raises(ConfigError) as caught:
        decide("withheld", device_region="US-NY", rules=book, never_record=["mum"])
    assert str(caught.value) == (
        "consent.never_record: 'mum' is not a phone number or prefix; "
        "expected digits with an optional leading +, such as '+1900' or '0800'"
    )


def test_an_unknown_device_region_is_a_config_error(book: RuleBook) -> None:
    with pytest.raises(ConfigError) as caught:
        decide("withheld", device_region="US-XX", rules=book)
    assert str(caught.value) == (
        "device region: 'US-XX' is not an ISO 3166 region code that linerec knows; "
        "expected a country such as 'GB' or a subdivision in consent.toml such as 'US-CA'"
    )


def test_a_decision_as_json_has_every_field(book: RuleBook) -> None:
    assert list(decide("", device_region="GB", rules=book).to_json()) == [
        "jurisdiction",
        "rule",
        "record",
        "announce",
        "beep_interval_s",
        "basis",
        "disputed",
        "caller_region",
    ]


# --- hostile numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["+", "++1 212 555 0142", "garbage", "1-800-FLOWERS", "+0 123 4567", "9" * 10_000, "+" + "1" * 40, "\x00\x07",
     "٣١٢٥٥٥٠١٤٢", "+1 555 555 0142", "+999 1234 5678", "0", "(212) 555-01", "tel:+12125550142"],
)  # fmt: skip
def test_a_number_that_cannot_be_read_is_an_unknown_caller(book: RuleBook, number: str) -> None:
    d = decide(number, device_region="US-NY", rules=book)
    assert (d.jurisdiction, d.rule, d.caller_region) == ("unknown", "all-party", None)


@settings(max_examples=300, deadline=None)
@given(
    number=st.one_of(st.text(max_size=80), st.from_regex(r"\+?[0-9 ()\-.]{0,24}", fullmatch=True)),
    device=st.sampled_from(["US", "US-NY", "US-CA", "US-VT", "CA-ON", "GB", "DE", "FR", "AU-VIC", "JP"]),
)
def test_decide_never_raises_and_never_weakens_the_devices_rule(number: str, device: str) -> None:
    book = load_rules()
    d = decide(number, device_region=device, rules=book)
    assert strictness(d.rule) >= strictness(law_of(device, book).rule)
    assert d.announce == (d.rule != "one-party")
    assert "\n" not in d.basis
