"""Numbers to regions, and the committed numbering tables checked against ``phonenumbers``."""

from __future__ import annotations

import random
import tomllib
from functools import cache
from importlib import resources
from typing import Any

import pytest

from firmware.consent.regions import international, locate, numbering
from firmware.consent.rules import load_rules


def committed(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("firmware.data").joinpath(name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("number", "device", "e164", "region"),
    [
        ("(312) 555-0142", "US", "+13125550142", "US-IL"),
        ("312-555-0142", "US", "+13125550142", "US-IL"),
        ("312.555.0142", "US", "+13125550142", "US-IL"),
        ("1 (312) 555-0142", "US", "+13125550142", "US-IL"),
        ("3125550142", "CA", "+13125550142", "US-IL"),
        ("+1 312 555 0142", "GB", "+13125550142", "US-IL"),
        ("011 1 312 555 0142", "US", "+13125550142", "US-IL"),
        ("00 1 312 555 0142", "DE", "+13125550142", "US-IL"),
        ("0011 1 312 555 0142", "AU", "+13125550142", "US-IL"),
        ("020 7946 0018", "GB", "+442079460018", "GB"),
        ("+44 20 7946 0018", "US", "+442079460018", "GB"),
        ("011 44 20 7946 0018", "US", "+442079460018", "GB"),
        ("0044 20 7946 0018", "FR", "+442079460018", "GB"),
        ("030 1234567", "DE", "+49301234567", "DE"),
        ("+49 30 1234567", "US", "+49301234567", "DE"),
        ("06 1234 5678", "IT", "+390612345678", "IT"),  # Italy keeps the leading 0
        ("(02) 9876 5432", "AU", "+61298765432", "AU"),
        ("(416) 555-0142", "US", "+14165550142", "CA-ON"),
        ("876 555 0142", "US", "+18765550142", "JM"),
        ("1-800-555-0142", "US", "+18005550142", "US"),
        ("(902) 555-0142", "CA", "+19025550142", "CA"),
        ("+7 727 123 4567", "US", "+77271234567", "RU"),  # +7 is shared; its main country answers
    ],
)
def test_numbers_in_every_format_are_placed(number: str, device: str, e164: str, region: str) -> None:
    place = locate(number, device_country=device)
    assert (place.number, place.region, place.withheld) == (e164, region, False)


@pytest.mark.parametrize(
    ("number", "why"),
    [
        (None, "number withheld"),
        ("", "number withheld"),
        ("Withheld", "number withheld"),
        ("+", "not a phone number"),
        ("P", "not a phone number"),
        ("+44 20 7946 0018 ext 2", "not a phone number"),
        ("0" * 100, "not a phone number"),
        ("+1" + "2" * 20, "not a phone number"),
        ("+999 1234 5678", "no country has its calling code"),
        ("+44 123", "too short for calling code +44"),
        ("(312) 555-014", "not a 10-digit NANP number"),
        ("(312) 155-0142", "not a 10-digit NANP number"),
        ("(555) 555-0142", "area code 555 is not in use"),
    ],
)
def test_what_cannot_be_placed_says_why(number: str | None, why: str) -> None:
    place = locate(number, device_country="US")
    assert (place.region, place.why, place.withheld) == (None, why, why == "number withheld")


def test_a_national_number_needs_a_country_linerec_can_read_it_in() -> None:
    assert locate("020 7946 0018", device_country="AQ").region is None
    assert locate("+44 20 7946 0018", device_country="AQ").region == "GB"


def test_list_prefixes_may_be_short() -> None:
    assert international("+1900", "GB", prefix=True) == "1900"
    assert international("0800", "GB", prefix=True) == "44800"
    assert international("900", "US", prefix=True) == "1900"
    assert international("+1900", "GB") is None  # too short to be a caller's number


def test_the_tables_are_small_enough_for_the_pi() -> None:
    for name in ("nanp_area_codes.toml", "calling_codes.toml", "countries.toml"):
        size = len(resources.files("firmware.data").joinpath(name).read_bytes())
        assert size < 24_000, name


def test_every_region_in_the_tables_is_one_the_rules_know() -> None:
    book = load_rules()
    tables = numbering()
    regions = {*tables.area_codes.values(), *tables.calling_codes.values(), *tables.dialling}
    assert sorted(r for r in regions if not book.is_region(r)) == []
    assert {r for r in tables.area_codes.values() if "-" in r} <= set(book.rows)


# --- against phonenumbers -----------------------------------------------------------------------


@cache
def generator() -> Any:
    pytest.importorskip("phonenumbers", reason="phonenumbers is a dev extra; `make test` installs it")
    from scripts import make_area_codes  # noqa: PLC0415  (needs phonenumbers)

    return make_area_codes


def test_the_area_code_table_matches_phonenumbers() -> None:
    derived = generator().derive_area_codes()
    assert committed("nanp_area_codes.toml")["area_codes"] == derived, "run scripts/make_area_codes.py"


def test_the_calling_code_table_matches_phonenumbers() -> None:
    gen = generator()
    data = committed("calling_codes.toml")
    assert data["calling_codes"] == gen.derive_calling_codes(), "run scripts/make_area_codes.py"
    assert data["dialling"] == gen.derive_dialling(), "run scripts/make_area_codes.py"


def test_the_tables_name_the_phonenumbers_version_they_came_from() -> None:
    version = generator().phonenumbers_version()
    for name in ("nanp_area_codes.toml", "calling_codes.toml"):
        text = resources.files("firmware.data").joinpath(name).read_text(encoding="utf-8")
        assert f"from phonenumbers {version} on " in text.splitlines()[1], name


def test_well_known_area_codes_land_in_their_state_or_country() -> None:
    codes = numbering().area_codes
    expected = {"212": "US-NY", "213": "US-CA", "312": "US-IL", "202": "US-DC", "416": "CA-ON", "514": "CA-QC"}
    expected |= {"876": "JM", "787": "PR", "242": "BS", "800": "US", "888": "US", "867": "CA"}
    assert {code: codes.get(code) for code in expected} == expected


def test_nanp_numbers_land_in_the_country_phonenumbers_gives() -> None:
    generator()
    import phonenumbers  # noqa: PLC0415

    rng = random.Random(20261129)
    checked = 0
    for area in sorted(numbering().area_codes):
        for _ in range(400):
            national = f"{area}{rng.randrange(200, 1000)}{rng.randrange(10_000):04d}"
            number = phonenumbers.parse("+1" + national)
            if phonenumbers.is_valid_number(number):
                break
        else:
            continue
        region = locate(national, device_country="US").region
        assert region is not None
        assert (area, region.split("-")[0]) == (area, phonenumbers.region_code_for_number(number))
        checked += 1
    assert checked > 400


# AR mobiles are written with "15" after the area code and BY numbers with "8 0"; linerec drops only
# the plain trunk prefix, so their digits differ from phonenumbers' (their country does not).
NATIONAL_QUIRKS = {("AR", "MOBILE"), ("BY", "FIXED_LINE"), ("BY", "MOBILE")}


def test_example_numbers_of_every_country_read_like_phonenumbers_reads_them() -> None:
    generator()
    import phonenumbers  # noqa: PLC0415
    from phonenumbers import PhoneNumberFormat, PhoneNumberType  # noqa: PLC0415

    misread = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in ("FIXED_LINE", "MOBILE"):
            example = phonenumbers.example_number_for_type(region, getattr(PhoneNumberType, kind))
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
            code = example.country_code
            country = (
                phonenumbers.region_code_for_number(example) if code == 1 else numbering().calling_codes[str(code)]
            )
            ways = [
                (phonenumbers.format_number(example, PhoneNumberFormat.INTERNATIONAL), "US"),
                (phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL), region),
                *((phonenumbers.format_out_of_country_calling_number(example, d), d) for d in ("US", "GB", "AU", "DE")),
            ]
            for text, device in ways:
                place = locate(text, device_country=device)
                assert place.region is not None, (region, text)
                assert place.region.split("-")[0] == country, (region, text)
                if place.number != e164:
                    misread.add((region, kind))
    assert misread == NATIONAL_QUIRKS
