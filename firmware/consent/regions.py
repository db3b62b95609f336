"""Where a caller is: the number caller ID gave, read into an ISO 3166 region.

The Pi does not carry ``phonenumbers`` (48 MB, about 110 MB of RAM); it carries
two small tables that ``scripts/make_area_codes.py`` distils from it:
``nanp_area_codes.toml`` (NANP area code -> ``US-NY``, ``CA-ON``, ``JM``...) and
``calling_codes.toml`` (calling code -> country, and each country's
international and trunk prefixes).

A number may be international (``+1 312 555 0142``, ``00 44 20 7946 0018``,
``011 44...``) or national (``(312) 555-0142``, ``020 7946 0018``); a national
number is read in the device's country. An area code is a hint, not a location:
numbers are ported and mobiles roam. Anything that does not read as a number
gives no region, never an exception: caller ID comes from the line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

from firmware.wire.errors import ConfigError

WITHHELD_WORDS = frozenset({"", "withheld"})
# Longer than any number written with spaces and an international prefix; a guard against garbage on the line.
MAX_TEXT = 64
E164_DIGITS = 15
_PUNCTUATION = frozenset(" -.()/")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Dialling:
    """How numbers are dialled from one country: its calling code, international and trunk prefixes."""

    code: str
    idd: re.Pattern[str] | None
    trunk: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    """Where a number puts its caller, and how that was told (for a decision's basis)."""

    number: str | None  # E.164 ("+13125550142"); None when withheld or unreadable
    region: str | None  # "US-IL", "JM", "GB"; None when it cannot be told
    why: str  # "area code 312", "number withheld", "not a phone number"...
    withheld: bool = False  # the caller withheld the number, or the line gave none


def is_withheld(number: str | None) -> bool:
    """True for no number, an empty one or the word ``withheld``."""
    return number is None or number.strip().lower() in WITHHELD_WORDS


def international(text: str, country: str, *, prefix: bool = False) -> str | None:
    """The digits of ``text`` in international form (calling code first, no ``+``), or None if it is not a number.

    A national number is read in ``country`` (its trunk prefix dropped, its
    calling code added). With ``prefix``, ``text`` may be the start of a number
    (``+1900``, ``0800``), as in the never-record and always-announce lists.
    """
    text = text.strip()
    if len(text) > MAX_TEXT:
        return None
    plus = text.startswith("+")
    body = text[1:] if plus else text
    if not body or any(c not in _DIGITS and c not in _PUNCTUATION for c in body):
        return None
    digits = "".join(c for c in body if c in _DIGITS)
    if not plus:
        digits = _from_dialled(digits, country)
    if not digits or digits[0] == "0" or len(digits) > E164_DIGITS:
        return None
    if not prefix and len(digits) < 5:
        return None
    return digits


def _from_dialled(digits: str, country: str) -> str:
    plan = numbering().dialling.get(country)
    if plan is None:
        return ""  # no known way to read a national number there
    if plan.idd is not None:
        found = plan.idd.match(digits)
        # Calling codes never start with 0, which tells "00 44..." from a national "0044...".
        if found and found.end() < len(digits) and digits[found.end()] != "0":
            return digits[found.end() :]
    if plan.trunk and digits.startswith(plan.trunk):
        digits = digits[len(plan.trunk) :]
    return plan.code + digits if digits else ""


def locate(number: str | None, *, device_country: str) -> Place:
    """Where the caller of ``number`` is, as far as the number tells; never raises on any text."""
    if number is None or is_withheld(number):
        return Place(number=None, region=None, why="number withheld", withheld=True)
    digits = international(number, device_country)
    if digits is None:
        return Place(number=None, region=None, why="not a phone number")
    e164 = "+" + digits
    tables = numbering()
    code = next((digits[:n] for n in (3, 2, 1) if digits[:n] in tables.calling_codes), None)
    if code is None:
        return Place(number=e164, region=None, why="no country has its calling code")
    national = digits[len(code) :]
    if code != "1":
        if len(national) < 4:
            return Place(number=e164, region=None, why=f"too short for calling code +{code}")
        return Place(number=e164, region=tables.calling_codes[code], why=f"calling code +{code}")
    area = national[:3]
    if len(national) != 10 or national[3] in "01":
        return Place(number=e164, region=None, why="not a 10-digit NANP number")
    region = tables.area_codes.get(area)
    if region is None:
        return Place(number=e164, region=None, why=f"area code {area} is not in use")
    return Place(number=e164, region=region, why=f"area code {area}")


@dataclass(frozen=True, slots=True)
class Numbering:
    """The committed numbering tables: NANP area codes, calling codes, dialling prefixes."""

    area_codes: Mapping[str, str]
    calling_codes: Mapping[str, str]
    dialling: Mapping[str, Dialling]


@cache
def numbering() -> Numbering:
    """The tables in ``firmware/data``, checked (a broken one is a ConfigError naming the file and key)."""
    areas = _table("nanp_area_codes.toml", "area_codes")
    codes = _table("calling_codes.toml", "calling_codes")
    dialling: dict[str, Dialling] = {}
    for country, row in _table("calling_codes.toml", "dialling").items():
        where = f"calling_codes.toml: dialling.{country}"
        if not isinstance(row, Mapping) or not isinstance(row.get("code"), str) or not row["code"].isdigit():
            msg = f'{where}: expected {{ code = "44", idd = "00", trunk = "0" }}, not {row!r}'
            raise ConfigError(msg)
        try:
            idd = re.compile(row["idd"]) if "idd" in row else None
        except (re.error, TypeError) as exc:
            msg = f"{where}: idd {row['idd']!r} is not a regular expression: {exc}"
            raise ConfigError(msg) from None
        dialling[country] = Dialling(code=row["code"], idd=idd, trunk=str(row.get("trunk", "")))
    return Numbering(
        area_codes=MappingProxyType(_regions_by_digits("nanp_area_codes.toml: area_codes", areas)),
        calling_codes=MappingProxyType(_regions_by_digits("calling_codes.toml: calling_codes", codes)),
        dialling=MappingProxyType(dialling),
    )


def _regions_by_digits(where: str, table: dict[str, object]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in table.items():
        if not key.isdigit() or not isinstance(value, str):
            msg = f'{where}.{key}: expected digits = "REGION", not {value!r}'
            raise ConfigError(msg)
        checked[key] = value
    return checked


def _table(name: str, key: str) -> dict[str, object]:
    try:
        data = tomllib.loads(resources.files("firmware.data").joinpath(name).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        msg = f"{name}: cannot be read: {exc}"
        raise ConfigError(msg) from None
    table = data.get(key)
    if not isinstance(table, dict):
        msg = f"{name}: expected a [{key}] table; run scripts/make_area_codes.py"
        raise ConfigError(msg)
    return table
