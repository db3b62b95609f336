"""Regenerate the numbering tables the Pi ships, from the ``phonenumbers`` package.

``phonenumbers`` is 48 MB installed and about 110 MB of RAM once loaded, too
much for a Pi that only needs to know where a caller is. This script distils
what linerec needs into two small committed files:

* ``firmware/data/nanp_area_codes.toml``: NANP area code -> ISO region. A code
  becomes a subdivision (``US-NY``, ``CA-ON``) when the geocoder places all of
  its numbers in one state or province; otherwise it stays the country that
  ``phonenumbers`` names (``JM`` for 876, ``US`` for toll-free 800, ``CA`` for
  902, which serves two provinces).
* ``firmware/data/calling_codes.toml``: calling code -> the main ISO country of
  that code, and each country's international prefix (a regular expression, as
  ``phonenumbers`` keeps it) and trunk prefix, to read national numbers.

Run ``.venv/bin/python scripts/make_area_codes.py`` after upgrading phonenumbers
(the tests compare the committed tables with it), or with ``--check`` to only
compare. Output is sorted, so the same phonenumbers gives the same tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tomllib
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "firmware" / "data"
AREA_CODES = DATA / "nanp_area_codes.toml"
CALLING_CODES = DATA / "calling_codes.toml"

US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA", "Colorado": "CO",
    "Connecticut": "CT", "Delaware": "DE", "District of Columbia": "DC", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD",
    "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA",
    "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
    # The geocoder's own spellings.
    "Washington State": "WA", "Washington D.C.": "DC",
}  # fmt: skip
CA_PROVINCES = {
    "Alberta": "AB", "British Columbia": "BC", "Manitoba": "MB", "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL", "Nova Scotia": "NS", "Northwest Territories": "NT", "Nunavut": "NU",
    "Ontario": "ON", "Prince Edward Island": "PE", "Quebec": "QC", "Saskatchewan": "SK", "Yukon": "YT",
    # The geocoder's own spellings, and a town it names without its territory.
    "British Colombia": "BC", "Watson Lake": "YT",
}  # fmt: skip
SUBDIVISIONS = {"US": US_STATES, "CA": CA_PROVINCES}


def phonenumbers_version() -> str:
    """The installed phonenumbers version, named in the tables' header."""
    import phonenumbers  # noqa: PLC0415  (a dev-only dependency, never shipped to the Pi)

    return str(phonenumbers.__version__)


def _nanp_country(area: int) -> str | None:
    """The country phonenumbers gives a valid number with this area code, or None if there is none."""
    import phonenumbers  # noqa: PLC0415

    # The first valid number decides: no area code is shared between NANP countries.
    for exchange in range(200, 1000):
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(f"{area}{exchange}0100"))
        if phonenumbers.is_valid_number(number):
            region = phonenumbers.region_code_for_number(number)
            return str(region) if region else None
    return None


def _place(country: str, text: str) -> set[str]:
    """The subdivisions a geocoder description names ('Ohio', 'Toronto, ON', 'Nova Scotia/Prince Edward Island')."""
    names = SUBDIVISIONS[country]
    codes = set(names.values())
    found = set()
    for part in text.split("/"):
        suffix = re.fullmatch(r".+, ([A-Z]{2})", part)
        if part in names:
            found.add(names[part])
        elif suffix and suffix.group(1) in codes:
            found.add(suffix.group(1))
        else:
            msg = f"the geocoder names {text!r} in {country}; add it to {country}'s names in this script"
            raise SystemExit(msg)
    return found


def derive_area_codes() -> dict[str, str]:
    """Area code -> ISO region for every NANP area code that phonenumbers knows."""
    from phonenumbers.geodata import GEOCODE_DATA  # noqa: PLC0415

    descriptions: dict[str, list[str]] = {}
    for prefix, texts in GEOCODE_DATA.items():
        if prefix.startswith("1") and len(prefix) >= 4 and "en" in texts:
            descriptions.setdefault(prefix[1:4], []).append(texts["en"])
    table: dict[str, str] = {}
    for area in range(200, 1000):
        country = _nanp_country(area)
        if country is None:
            continue
        region = country
        if country in SUBDIVISIONS:
            # The code's own entry speaks for the whole code (a stray exchange does not make it
            # two states); without one, all of its exchanges must name the same place.
            own = GEOCODE_DATA.get(f"1{area}", {}).get("en")
            texts = [own] if own else descriptions.get(str(area), [])
            places = set().union(*(_place(country, text) for text in texts))
            if len(places) == 1:
                region = f"{country}-{places.pop()}"
        table[str(area)] = region
    return table


def derive_calling_codes() -> dict[str, str]:
    """Calling code -> the main ISO country of that code; non-geographic codes (+800, +881...) are left out."""
    import phonenumbers  # noqa: PLC0415

    table: dict[str, str] = {}
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        main = regions[0]
        if main != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
            table[str(code)] = main
    return dict(sorted(table.items(), key=lambda item: int(item[0])))


def derive_dialling() -> dict[str, dict[str, str]]:
    """Each country's calling code, international prefix (a regular expression) and trunk prefix."""
    import phonenumbers  # noqa: PLC0415

    table: dict[str, dict[str, str]] = {}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        row = {"code": str(meta.country_code)}
        if meta.international_prefix:
            row["idd"] = meta.international_prefix
        if meta.national_prefix:
            row["trunk"] = meta.national_prefix
        table[region] = row
    return table


def _header(what: str, version: str, today: dt.date) -> str:
    return (
        f"# {what}\n"
        f"# Generated by scripts/make_area_codes.py from phonenumbers {version} on {today.isoformat()}.\n"
        "# Do not edit by hand: upgrade phonenumbers and run the script again; the\n"
        "# tests compare this table with the installed phonenumbers.\n"
    )


def _quote(text: str) -> str:
    # TOML basic strings escape like JSON for the characters these tables hold (backslash, quote).
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_area_codes(table: dict[str, str], version: str, today: dt.date) -> str:
    """The text of nanp_area_codes.toml."""
    lines = [
        _header("NANP area code -> ISO 3166 region (a state or province where one is certain).", version, today),
        "# A subdivision (US-NY, CA-ON) when phonenumbers' geocoder places every number",
        "# of the code in one state or province; otherwise the country phonenumbers",
        "# names: JM for 876, CA for 902 (two provinces), US for toll-free 800.",
        "# An area code is a hint, not a location: numbers are ported and mobiles roam.",
        "",
        "[area_codes]",
        *(f"{code} = {_quote(region)}" for code, region in sorted(table.items())),
        "",
    ]
    return "\n".join(lines)


def render_calling_codes(
    codes: dict[str, str], dialling: dict[str, dict[str, str]], version: str, today: dt.date
) -> str:
    """The text of calling_codes.toml."""
    lines = [
        _header("Calling codes and dialling prefixes by ISO 3166-1 country.", version, today),
        "# [calling_codes]: the main country of each code (+44 is GB although GG, IM",
        "# and JE share it); NANP numbers (+1) are placed by nanp_area_codes.toml.",
        "# [dialling]: code, idd = the international prefix as a regular expression",
        "# (00, 011, 0011...), trunk = the national prefix (0 in GB, 1 in NANP).",
        "",
        "[calling_codes]",
        *(f"{code} = {_quote(region)}" for code, region in codes.items()),
        "",
        "[dialling]",
    ]
    for region, row in dialling.items():
        cells = ", ".join(f"{key} = {_quote(value)}" for key, value in row.items())
        lines.append(f"{region} = {{ {cells} }}")
    lines.append("")
    return "\n".join(lines)


def _undated(text: str) -> str:
    return re.sub(r" on \d{4}-\d{2}-\d{2}\.", ".", text, count=1)


def _same_data(path: Path, text: str) -> bool:
    """True if the committed table holds the same rows from the same phonenumbers version (whatever its date)."""
    try:
        current = path.read_text(encoding="utf-8")
        same_rows: bool = tomllib.loads(current) == tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return same_rows and _undated(current) == _undated(text)


def main(argv: list[str] | None = None) -> int:
    """Write the tables (or, with --check, say whether the committed ones are current); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the committed tables; write nothing")
    args = parser.parse_args(argv)
    try:
        version = phonenumbers_version()
    except ImportError:
        print("make_area_codes: phonenumbers is not installed; run .venv/bin/pip install -e '.[dev]'", file=sys.stderr)
        return 2
    today = dt.datetime.now(dt.UTC).date()
    outputs = {
        AREA_CODES: render_area_codes(derive_area_codes(), version, today),
        CALLING_CODES: render_calling_codes(derive_calling_codes(), derive_dialling(), version, today),
    }
    stale = [path for path, text in outputs.items() if not _same_data(path, text)]
    if args.check:
        for path in stale:
            print(f"{path.name} differs from phonenumbers {version}; run scripts/make_area_codes.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        if path in stale:  # an unchanged table keeps its header, so its date says when the data last changed
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(DATA.parent.parent)} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
