"""Retention policy: which class keeps a call, what a legal hold protects, and what bad settings say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.retention import (
    CallFacts,
    Decision,
    Holds,
    RetentionError,
    RetentionSettings,
    due,
    explain,
    oldest_possible_due,
    parse_retention,
)
from firmware.wire.errors import ConfigError

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NO_HOLDS = Holds()

POLICY = RetentionSettings(
    default_days=90,
    devices={"pi-kitchen": 30, "pi-office": 400},
    tags={"complaint": 365, "sales": 14, "litigation": 0},
    missed_days=7,
    min_days=7,
)


def call(
    age_days: float,
    *,
    rec_id: str = "rec-1",
    device: str = "pi-hall",
    tags: tuple[str, ...] = (),
    caller: str | None = None,
    has_audio: bool = True,
) -> CallFacts:
    return CallFacts(rec_id, device, NOW - timedelta(days=age_days), tags, caller, has_audio)


def verdict(facts: CallFacts, policy: RetentionSettings = POLICY, holds: Holds = NO_HOLDS) -> Decision | None:
    found = list(due([facts], NOW, policy, holds))
    assert len(found) <= 1
    return found[0] if found else None


def parse(table: dict[str, Any]) -> RetentionSettings:
    return parse_retention({"retention": table}, "agent.toml")


# --- settings ---------------------------------------------------------------------------


def test_a_full_table_parses_with_forever_in_both_spellings() -> None:
    parsed = parse(
        {
            "default_days": 90,
            "missed_days": 7,
            "min_days": 7,
            "devices": {"pi-kitchen": 30, "pi-garage": "forever"},
            "tags": {"Complaint": 365, "litigation": 0},
        }
    )
    assert parsed.default_days == 90
    assert parsed.missed_days == 7
    assert parsed.min_days == 7
    assert dict(parsed.devices) == {"pi-kitchen": 30, "pi-garage": 0}
    assert dict(parsed.tags) == {"complaint": 365, "litigation": 0}


def test_no_retention_table_keeps_everything_forever() -> None:
    parsed = parse_retention({}, "agent.toml")
    assert parsed == RetentionSettings()
    assert parsed.default_days == 0
    assert parsed.missed_days is None
    assert parsed.min_days == 1
    assert verdict(call(10_000), parsed) is None


def test_settings_cannot_be_changed_after_parsing() -> None:
    parsed = parse({"devices": {"pi-kitchen": 30}})
    with pytest.raises(TypeError):
        parsed.devices["pi-kitchen"] = 1  # type: ignore[index]


ALLOWED = 'expected a whole number of days from {} (retention.min_days) to 36500, or 0 or "forever" to keep forever'


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"default_days": -1}, "retention.default_days is -1; " + ALLOWED.format(1)),
        ({"default_days": 3, "min_days": 7}, "retention.default_days is 3; " + ALLOWED.format(7)),
        ({"default_days": True}, "retention.default_days is True; " + ALLOWED.format(1)),
        ({"default_days": "never"}, "retention.default_days is 'never'; " + ALLOWED.format(1)),
        ({"default_days": 1.5}, "retention.default_days is 1.5; " + ALLOWED.format(1)),
        ({"default_days": 36501}, "retention.default_days is 36501; " + ALLOWED.format(1)),
        ({"missed_days": -7}, "retention.missed_days is -7; " + ALLOWED.format(1)),
        ({"min_days": 0}, "retention.min_days is 0; expected an integer from 1 to 36500"),
        ({"min_days": "7"}, "retention.min_days is '7'; expected an integer"),
        ({"devices": 5}, "[retention.devices] must be a table, not 5"),
        ({"devices": {"pi-kitchen": 2}, "min_days": 3}, "retention.devices.pi-kitchen is 2; " + ALLOWED.format(3)),
        (
            {"devices": {"Pi Kitchen": 30}},
            'retention.devices."Pi Kitchen" is not a device id; expected 1-63 lowercase letters,'
            " digits, '-' or '_', starting with a letter or digit",
        ),
        ({"tags": ["sales"]}, "[retention.tags] must be a table, not ['sales']"),
        ({"tags": {"sales": 6}, "min_days": 7}, "retention.tags.sales is 6; " + ALLOWED.format(7)),
        (
            {"tags": {" sales": 30}},
            "retention.tags has the tag ' sales'; expected 1-64 printable characters without surrounding spaces",
        ),
        (
            {"tags": {"Sales": 30, "sales": 60}},
            "retention.tags has 'Sales' and 'sales'; expected each tag once (tags are compared without regard to case)",
        ),
        (
            {"default_day": 90},
            "retention.default_day is not a known setting; [retention] has default_days, devices, min_days,"
            " missed_days, tags",
        ),
    ],
)
def test_bad_settings_name_the_key_the_value_and_what_is_allowed(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(table)
    assert str(caught.value) == "agent.toml: " + message
    assert "\n" not in str(caught.value)


def test_a_retention_value_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^agent.toml: \[retention\] must be a table, not 5$"):
        parse_retention({"retention": 5}, "agent.toml")


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^retention.tags.sales is 3; expected a whole number of days from 7"):
        RetentionSettings(tags={"sales": 3}, min_days=7)
    with pytest.raises(ConfigError, match=r"^retention.min_days is 0; expected an integer from 1 to 36500$"):
        RetentionSettings(min_days=0)
    with pytest.raises(ConfigError, match=r"^retention.devices: device id 'Bad Id' is not valid"):
        RetentionSettings(devices={"Bad Id": 30})


# --- which class applies -----------------------------------------------------------------


def test_an_unlisted_device_follows_the_default() -> None:
    assert verdict(call(89.9)) is None
    decision = verdict(call(90))
    assert decision == Decision("rec-1", "default 90 d", NOW)


def test_a_listed_device_replaces_the_default_even_when_shorter() -> None:
    decision = verdict(call(31, device="pi-kitchen"))
    assert decision is not None
    assert decision.policy == "device pi-kitchen 30 d"
    assert decision.due_at == NOW - timedelta(days=1)


def test_a_listed_device_replaces_the_default_when_longer() -> None:
    assert verdict(call(399, device="pi-office")) is None
    decision = verdict(call(400, device="pi-office"))
    assert decision is not None
    assert decision.policy == "device pi-office 400 d"


def test_a_longer_tag_keeps_a_call_beyond_its_device_class() -> None:
    assert verdict(call(200, device="pi-kitchen", tags=("complaint",))) is None
    decision = verdict(call(365, device="pi-kitchen", tags=("complaint",)))
    assert decision is not None
    assert decision.policy == "tag complaint 365 d"


def test_a_shorter_tag_never_shortens_the_device_or_default_class() -> None:
    assert verdict(call(20, tags=("sales",))) is None
    decision = verdict(call(90, tags=("sales",)))
    assert decision is not None
    assert decision.policy == "default 90 d"


def test_the_longest_of_several_tags_wins() -> None:
    decision = verdict(call(365, tags=("sales", "complaint")))
    assert decision is not None
    assert decision.policy == "tag complaint 365 d"


def test_a_forever_tag_keeps_a_call_forever() -> None:
    assert verdict(call(36_000, tags=("complaint", "litigation"))) is None
    assert explain(call(36_000, tags=("litigation",)), NOW, POLICY, NO_HOLDS).startswith(
        "kept forever under tag litigation forever"
    )


def test_tags_are_matched_without_regard_to_case() -> None:
    assert verdict(call(200, tags=("COMPLAINT",))) is None


def test_a_tag_without_a_class_changes_nothing() -> None:
    decision = verdict(call(90, tags=("unrelated",)))
    assert decision is not None
    assert decision.policy == "default 90 d"


def test_missed_days_is_the_base_for_calls_without_audio_whatever_their_device() -> None:
    for device in ("pi-hall", "pi-kitchen", "pi-office"):
        decision = verdict(call(7, device=device, has_audio=False))
        assert decision is not None
        assert decision.policy == "missed 7 d"
    assert verdict(call(6.9, has_audio=False)) is None


def test_a_tag_still_keeps_a_missed_call_longer() -> None:
    assert verdict(call(30, has_audio=False, tags=("complaint",))) is None


def test_without_missed_days_a_call_without_audio_follows_its_device() -> None:
    policy = RetentionSettings(default_days=90, devices={"pi-kitchen": 30})
    decision = verdict(call(30, device="pi-kitchen", has_audio=False), policy)
    assert decision is not None
    assert decision.policy == "device pi-kitchen 30 d"


def test_a_tie_is_credited_to_the_base_class() -> None:
    policy = RetentionSettings(default_days=30, tags={"sales": 30})
    decision = verdict(call(30, tags=("sales",)), policy)
    assert decision is not None
    assert decision.policy == "default 30 d"


def test_a_forever_default_keeps_unlisted_devices_forever() -> None:
    policy = RetentionSettings(devices={"pi-kitchen": 30})
    assert verdict(call(10_000), policy) is None
    assert verdict(call(30, device="pi-kitchen"), policy) is not None


# --- min_days ----------------------------------------------------------------------------


def test_min_days_refuses_a_class_below_the_floor_instead_of_purging() -> None:
    with pytest.raises(ConfigError, match=r"^agent.toml: retention.default_days is 1; expected .* from 30 "):
        parse({"min_days": 30, "default_days": 1})
    with pytest.raises(ConfigError, match=r"^agent.toml: retention.missed_days is 29; expected .* from 30 "):
        parse({"min_days": 30, "missed_days": 29})


def test_the_default_floor_is_one_day() -> None:
    policy = parse({"default_days": 1})
    assert verdict(call(0.99), policy) is None
    assert verdict(call(1), policy) is not None
    with pytest.raises(ConfigError):
        parse({"default_days": -1})


def test_min_days_itself_may_be_kept_forever_with_zero_days_elsewhere() -> None:
    policy = parse({"min_days": 3650, "default_days": 0, "tags": {"keep": "forever"}})
    assert verdict(call(36_000), policy) is None


# --- boundaries and time zones ---------------------------------------------------------


def test_a_recording_exactly_at_the_boundary_is_due_and_a_microsecond_younger_is_not() -> None:
    ended = NOW - timedelta(days=90)
    assert verdict(CallFacts("a", "pi-hall", ended)) == Decision("a", "default 90 d", NOW)
    assert verdict(CallFacts("b", "pi-hall", ended + timedelta(microseconds=1))) is None


def test_end_times_in_other_zones_are_judged_as_instants_and_decided_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    ended = datetime(2024, 3, 3, 14, 0, tzinfo=plus_two)  # 12:00 UTC
    decision = verdict(CallFacts("a", "pi-hall", ended))
    assert decision is not None
    assert decision.due_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert decision.due_at.tzinfo is UTC
    assert decision.to_json() == {"id": "a", "policy": "default 90 d", "due_at": "2024-06-01T12:00:00Z"}


def test_a_naive_end_time_is_refused_with_the_recording_named() -> None:
    naive = CallFacts("rec-9", "pi-hall", datetime(2024, 1, 1))
    with pytest.raises(RetentionError) as caught:
        list(due([naive], NOW, POLICY, NO_HOLDS))
    assert str(caught.value) == (
        "the end time of recording rec-9 is datetime.datetime(2024, 1, 1, 0, 0); expected a timezone-aware UTC time"
    )
    with pytest.raises(RetentionError, match=r"^the end time of recording rec-9 is"):
        explain(naive, NOW, POLICY, NO_HOLDS)


def test_a_naive_clock_reading_is_refused() -> None:
    naive_now = datetime(2024, 6, 1)
    message = r"^the current time is datetime.datetime\(2024, 6, 1, 0, 0\); expected a timezone-aware UTC time$"
    with pytest.raises(RetentionError, match=message):
        list(due([call(100)], naive_now, POLICY, NO_HOLDS))
    with pytest.raises(RetentionError, match=message):
        oldest_possible_due(POLICY, naive_now)


# --- legal hold --------------------------------------------------------------------------


def test_a_hold_by_id_keeps_a_recording_of_any_age() -> None:
    holds = Holds.of(ids=["rec-1"])
    assert verdict(call(36_000), holds=holds) is None
    assert verdict(call(36_000, rec_id="rec-2"), holds=holds) is not None


@pytest.mark.parametrize(
    ("held", "caller"),
    [
        ("+12125550143", "2125550143"),  # NANP caller ID without the country code
        ("+12125550143", "12125550143"),
        ("2125550143", "+1 (212) 555-0143"),
        ("+442079460000", "02079460000"),  # UK national form with the trunk zero
        ("020 7946 0000", "+44 20 7946 0000"),
        ("00442079460000", "+442079460000"),
    ],
)
def test_a_hold_by_caller_matches_national_and_international_forms(held: str, caller: str) -> None:
    holds = Holds.of(numbers=[held])
    assert verdict(call(36_000, caller=caller), holds=holds) is None
    assert explain(call(36_000, caller=caller), NOW, POLICY, holds) == (
        f"held: calls from {held} are under legal hold (this call is from {caller}), so it is never due"
    )


def test_a_hold_by_caller_covers_a_call_that_arrives_after_the_hold() -> None:
    holds = Holds.of(numbers=["+12125550143"])
    later = CallFacts("rec-later", "pi-kitchen", NOW + timedelta(days=400), (), "2125550143")
    far_future = NOW + timedelta(days=5000)
    assert list(due([later], far_future, POLICY, holds)) == []
    unheld = CallFacts("rec-other", "pi-kitchen", NOW + timedelta(days=400), (), "2125550199")
    assert [d.id for d in due([later, unheld], far_future, POLICY, holds)] == ["rec-other"]


def test_a_hold_does_not_cover_other_numbers_or_withheld_callers() -> None:
    holds = Holds.of(numbers=["+12125550143", "999"])
    for caller in ("2125550144", "+44 20 7946 0143", None, "", "P", "9999"):
        assert verdict(call(100, caller=caller), holds=holds) is not None, caller
    assert verdict(call(100, caller="999"), holds=holds) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numbers": ["withheld"]}, "cannot hold calls from 'withheld'; expected a caller number with digits"),
        ({"numbers": ["+"]}, "cannot hold calls from '+'; expected a caller number with digits"),
        ({"numbers": ["000"]}, "cannot hold calls from '000'; expected a caller number with digits"),
        ({"ids": [""]}, "cannot hold the recording ''; expected a recording id"),
    ],
)
def test_bad_holds_are_refused(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(RetentionError) as caught:
        Holds.of(**kwargs)
    assert str(caught.value) == message


# --- explain and the SQL cut-off -------------------------------------------------------


def test_explain_says_why_a_call_is_kept_until_when_or_since_when_it_is_due() -> None:
    kept = call(40, device="pi-kitchen", tags=("complaint", "sales"))
    assert explain(kept, NOW, POLICY, NO_HOLDS) == (
        "kept until 2025-04-22T12:00:00Z under tag complaint 365 d (ended 2024-04-22T12:00:00Z);"
        " also applies: device pi-kitchen 30 d, tag sales 14 d"
    )
    overdue = call(31, device="pi-kitchen")
    assert explain(overdue, NOW, POLICY, NO_HOLDS) == (
        "due since 2024-05-31T12:00:00Z under device pi-kitchen 30 d (ended 2024-05-01T12:00:00Z)"
    )
    assert explain(call(5), NOW, RetentionSettings(), NO_HOLDS) == "kept forever under default forever"
    held = explain(call(5), NOW, POLICY, Holds.of(ids=["rec-1"]))
    assert held == "held: recording rec-1 is under legal hold, so it is never due"


def test_the_cut_off_is_the_shortest_base_class() -> None:
    assert oldest_possible_due(POLICY, NOW) == NOW - timedelta(days=7)
    no_missed = RetentionSettings(default_days=90, devices={"pi-kitchen": 30}, tags={"sales": 14})
    assert oldest_possible_due(no_missed, NOW) == NOW - timedelta(days=30)
    assert oldest_possible_due(RetentionSettings(tags={"sales": 14}), NOW) is None


# --- properties --------------------------------------------------------------------------

DEVICES = ("pi-hall", "pi-kitchen", "pi-office")
TAGS = ("complaint", "sales", "litigation", "vip")
NUMBERS = ("+12125550143", "2125550143", "02079460000", "+442079460000", "5550100", "911")


@st.composite
def policies(draw: st.DrawFn) -> RetentionSettings:
    floor = draw(st.integers(1, 30))
    days = st.one_of(st.just(0), st.integers(floor, 2000))
    return RetentionSettings(
        default_days=draw(days),
        devices=draw(st.dictionaries(st.sampled_from(DEVICES), days, max_size=3)),
        tags=draw(st.dictionaries(st.sampled_from(TAGS), days, max_size=4)),
        missed_days=draw(st.none() | days),
        min_days=floor,
    )


@st.composite
def calls(draw: st.DrawFn) -> CallFacts:
    return CallFacts(
        id=draw(st.sampled_from(("r1", "r2", "r3"))),
        device=draw(st.sampled_from(DEVICES)),
        ended_at=NOW - timedelta(seconds=draw(st.integers(-(10**8), 4 * 10**8))),
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=3))),
        caller_number=draw(st.none() | st.sampled_from(NUMBERS)),
        has_audio=draw(st.booleans()),
    )


moments = st.integers(0, 10**9).map(lambda s: NOW + timedelta(seconds=s))


@settings(max_examples=300, deadline=None)
@given(calls(), policies(), moments, st.sampled_from(NUMBERS))
def test_a_held_recording_is_never_due(facts: CallFacts, policy: RetentionSettings, now: datetime, num: str) -> None:
    assert list(due([facts], now, policy, Holds.of(ids=[facts.id]))) == []
    if facts.caller_number is not None:
        assert list(due([facts], now, policy, Holds.of(numbers=[facts.caller_number, num]))) == []
    assert explain(facts, now, policy, Holds.of(ids=[facts.id])).startswith("held: ")


@settings(max_examples=300, deadline=None)
@given(calls(), policies(), moments, st.sampled_from(TAGS))
def test_adding_a_tag_never_makes_a_recording_due_earlier(
    facts: CallFacts, policy: RetentionSettings, now: datetime, tag: str
) -> None:
    tagged = CallFacts(facts.id, facts.device, facts.ended_at, (*facts.tags, tag), None, facts.has_audio)
    untagged = CallFacts(facts.id, facts.device, facts.ended_at, facts.tags, None, facts.has_audio)
    with_tag = list(due([tagged], now, policy, NO_HOLDS))
    without = list(due([untagged], now, policy, NO_HOLDS))
    if with_tag:
        assert without
        assert with_tag[0].due_at >= without[0].due_at


@settings(max_examples=300, deadline=None)
@given(calls(), policies(), moments)
def test_no_call_after_the_cut_off_is_due(facts: CallFacts, policy: RetentionSettings, now: datetime) -> None:
    cut_off = oldest_possible_due(policy, now)
    decisions = list(due([facts], now, policy, NO_HOLDS))
    if cut_off is None or facts.ended_at > cut_off:
        assert decisions == []
    if decisions:
        assert decisions[0].due_at <= now
        assert explain(facts, now, policy, NO_HOLDS).startswith("due since ")


# --- streaming ---------------------------------------------------------------------------


def test_due_streams_a_million_calls_without_holding_them() -> None:
    total = 1_000_000
    start = NOW - timedelta(days=200)
    step = timedelta(seconds=15)  # 1e6 calls over about 174 days, oldest first
    policy = RetentionSettings(default_days=90, devices={"pi-kitchen": 30}, tags={"complaint": 365})
    holds = Holds.of(ids=["c0"], numbers=["+12125550143"])
    devices = ("pi-kitchen", "pi-hall")
    produced = 0

    def synthetic() -> Iterator[CallFacts]:
        nonlocal produced
        for i in range(total):
            produced += 1
            tags = ("complaint",) if i % 10 == 0 else ()
            caller = "2125550143" if i % 100 == 1 else None
            yield CallFacts(f"c{i}", devices[i % 2], start + step * i, tags, caller)

    stream = due(synthetic(), NOW, policy, holds)
    first = next(stream)
    assert produced < 10, "due() must judge calls as they come, not read them all first"
    count = 1 + sum(1 for _ in stream)
    assert produced == total

    def expected() -> int:
        # Counted the slow way from the same rules: kitchen calls older than 30 days, hall calls older than 90,
        # complaint-tagged calls never (all are younger than 365 days), held ones never.
        n = 0
        for i in range(total):
            age = NOW - (start + step * i)
            if i % 10 == 0 or i % 100 == 1:
                continue
            n += age >= timedelta(days=30 if i % 2 == 0 else 90)
        return n

    assert first.id == "c2"
    assert count == expected()
