"""``linerec consent NUMBER``: the decision as one JSON object or one line, and one line of error otherwise."""

from __future__ import annotations

import json

import pytest

from firmware.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["consent", *argv])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err.splitlines()


def test_json_is_exactly_the_documented_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "(213) 555-0142", "--device-region", "US-NY", "--json")
    assert (code, err, len(out)) == (0, [], 1)
    assert json.loads(out[0]) == {
        "jurisdiction": "US-CA",
        "rule": "all-party",
        "announce": True,
        "beep_interval_s": 15.0,
        "basis": "caller US-CA (all-party, Cal. Penal Code § 632) is stricter than device US-NY (one-party)",
        "disputed": False,
    }


@pytest.mark.parametrize("number", ["", "withheld"])
def test_an_empty_number_or_the_word_withheld_is_withheld(capsys: pytest.CaptureFixture[str], number: str) -> None:
    code, out, _ = run(capsys, number, "--device-region", "GB", "--json")
    decision = json.loads(out[0])
    assert (code, decision["jurisdiction"], decision["rule"]) == (0, "unknown", "all-party")
    assert decision["basis"].startswith("caller unknown (number withheld")


def test_no_number_at_all_is_withheld(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--device-region", "DE", "--json")
    assert json.loads(out[0])["rule"] == "express"


def test_the_region_may_be_lower_case_and_defaults_to_the_us(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "+44 20 7946 0018", "--device-region", "gb", "--json")
    assert json.loads(out[0])["jurisdiction"] == "GB"
    _, out, _ = run(capsys, "(212) 555-0142", "--json")
    # "US" with no state could be any state, so it is as strict as the strictest state.
    assert json.loads(out[0])["rule"] == "all-party"


def test_without_json_the_decision_is_one_readable_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "+1 802 555 0142", "--device-region", "US-NY")
    assert (code, err) == (0, [])
    assert out == [
        "US-VT: all-party; record, announce, tone every 15 s, disputed; because caller US-VT "
        "(disputed one-party, so the default all-party) is stricter than device US-NY (one-party)"
    ]


def test_a_garbage_number_is_an_unknown_caller_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "call me maybe", "--device-region", "CA-ON", "--json")
    assert (code, err) == (0, [])
    assert json.loads(out[0])["basis"] == (
        "caller unknown (not a phone number: the default all-party) is stricter than device CA-ON (one-party)"
    )


def test_an_unknown_device_region_is_one_line_of_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "(212) 555-0142", "--device-region", "US-XX")
    assert (code, out) == (2, [])
    assert err == [
        "linerec: error: --device-region: 'US-XX' is not an ISO 3166 region code that linerec knows; "
        "expected a country such as 'GB' or a subdivision in consent.toml such as 'US-CA'"
    ]
