"""Recording rules by jurisdiction: the shipped table, the owner's overrides, and their checks.

The table is ``firmware/data/consent.toml``: one row per region, keyed by an ISO
3166-1 country (``GB``) or ISO 3166-2 subdivision (``US-CA``), plus ``default``.
A row has a ``rule``, a ``source`` (the law it follows), a ``reviewed`` date and
optional ``disputed``, ``beep`` and ``note`` columns. The owner overrides rows or
adds them with ``[consent.rules.<REGION>]`` tables of the same columns in
``device.toml``; ``load_rules`` merges and checks both.

Rules from weakest to strictest, and why in that order:

* ``one-party``: a party to the call may record; nobody need be told.
* ``notice``: the other party must be told that the call is recorded.
* ``all-party``: everyone must consent. A notice that the caller stays on after
  is commonly taken as that consent, so it asks for the notice and more (a
  reminder tone every 15 s).
* ``express``: the caller must be asked and may refuse, which stops the
  recording; nothing else satisfies it, and it satisfies all the others.

The ``default`` row is the rule used when linerec cannot tell the caller's place
or that place's law: a withheld or unrecognised number, a place with no row,
and the floor under every row marked ``disputed``. The issue says such calls get
"the strictest rule configured"; read literally as the strictest row in the
table, that would make every withheld call in the US ask for express consent
because Germany is in the table. The ``default`` row (``all-party`` as shipped)
is the strictest rule the owner configures *for calls whose law is unknown*,
and the owner can raise it to ``express`` with ``[consent.rules.default]``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, cast

from firmware.wire.errors import ConfigError

Rule = Literal["one-party", "notice", "all-party", "express"]
# Weakest first: a rule's index is its strictness.
STRICTNESS: tuple[Rule, ...] = ("one-party", "notice", "all-party", "express")
DEFAULT = "default"
DATA = "consent.toml"
COLUMNS = ("rule", "source", "reviewed", "disputed", "beep", "note")

_RULE_NAMES = "one-party, all-party, notice, express"  # in the order the docs name them
_SUBDIVISION = re.compile(r"(?P<country>[A-Z]{2})-[A-Z0-9]{1,3}")
_EXAMPLES = "expected a country such as 'GB' or a subdivision in consent.toml such as 'US-CA'"


def strictness(rule: Rule) -> int:
    """How strict a rule is: 0 for one-party up to 3 for express."""
    return STRICTNESS.index(rule)


def stricter(a: Rule, b: Rule) -> Rule:
    """The stricter of two rules (``a`` when they are the same)."""
    return b if strictness(b) > strictness(a) else a


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One jurisdiction's rule, with the law it follows and when that was last checked."""

    region: str
    rule: Rule
    source: str
    reviewed: date | None
    disputed: bool = False
    beep: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleBook:
    """The rules in force: shipped rows merged with the owner's, and the region codes linerec knows."""

    rows: Mapping[str, Row]
    countries: frozenset[str]
    subdivisions: frozenset[str]
    _by_country: Mapping[str, tuple[Row, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", MappingProxyType(dict(self.rows)))
        grouped: dict[str, list[Row]] = {}
        for key, row in sorted(self.rows.items()):
            if "-" in key:
                grouped.setdefault(key.split("-", maxsplit=1)[0], []).append(row)
        object.__setattr__(self, "_by_country", MappingProxyType({k: tuple(v) for k, v in grouped.items()}))

    @property
    def default(self) -> Row:
        """The row for callers whose place, or whose place's law, cannot be told."""
        return self.rows[DEFAULT]

    def row(self, region: str) -> Row | None:
        """The row of exactly this region, if there is one."""
        return self.rows.get(region)

    def subdivision_rows(self, country: str) -> tuple[Row, ...]:
        """The rows of a country's subdivisions (``US-AK``...), sorted by region."""
        return self._by_country.get(country, ())

    def is_region(self, code: str) -> bool:
        """True for an ISO 3166-1 country or a subdivision in the shipped table."""
        return code in self.countries or code in self.subdivisions

    def check_region(self, code: str, where: str) -> str:
        """``code`` if it is a region linerec knows, else ConfigError naming ``where``."""
        if not self.is_region(code):
            raise _region_error(where, code, _EXAMPLES)
        return code


def _region_error(where: str, code: object, expected: str) -> ConfigError:
    return ConfigError(f"{where}: {code!r} is not an ISO 3166 region code that linerec knows; {expected}")


def load_rules(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RuleBook:
    """The rule book: the shipped table with the owner's ``[consent.rules.<REGION>]`` rows applied.

    ``overrides`` is the ``consent.rules`` table of the device config. A row that
    names ``rule`` replaces the shipped row whole (its source, review date and
    dispute described the shipped rule, not the owner's); a row without one
    changes only the columns it names. Errors name the row, the column, the
    value and what is allowed.
    """
    shipped = shipped_rows()
    countries = known_countries()
    subdivisions = frozenset(key for key in shipped if key != DEFAULT and key not in countries)
    rows = dict(shipped)
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            msg = f"consent.rules: must be a table of [consent.rules.<REGION>] rows, not {overrides!r}"
            raise ConfigError(msg)
        for region, cells in overrides.items():
            where = f"consent.rules.{region}"
            if region != DEFAULT and region not in countries and region not in subdivisions:
                raise _region_error(where, region, f"{_EXAMPLES}, or 'default'")
            rows[region] = _override(where, region, cells, shipped.get(region))
    return RuleBook(rows=rows, countries=countries, subdivisions=subdivisions)


@cache
def shipped_rows() -> Mapping[str, Row]:
    """The rows of ``firmware/data/consent.toml``, checked."""
    text = resources.files("firmware.data").joinpath(DATA).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{DATA}: not valid TOML: {exc}"
        raise ConfigError(msg) from None
    return MappingProxyType(parse_rules(data))


@cache
def known_countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes from ``firmware/data/countries.toml``."""
    data = tomllib.loads(resources.files("firmware.data").joinpath("countries.toml").read_text(encoding="utf-8"))
    codes = [*data.get("assigned", []), *data.get("also", [])]
    if not codes or not all(isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c) for c in codes):
        msg = "countries.toml: 'assigned' and 'also' must list two-letter ISO 3166-1 codes"
        raise ConfigError(msg)
    return frozenset(codes)


def parse_rules(data: Mapping[str, Any], source: str = DATA) -> dict[str, Row]:
    """Check a parsed rules table (the shape of consent.toml) and build its rows."""
    for name in data:
        if name != "rules":
            msg = f"{source}: unknown table [{name}]; expected only [rules]"
            raise ConfigError(msg)
    table = data.get("rules")
    if not isinstance(table, Mapping) or not table:
        msg = f"{source}: expected a [rules] table with one row per region"
        raise ConfigError(msg)
    countries = known_countries()
    rows: dict[str, Row] = {}
    for region, cells in table.items():
        where = f"{source}: row {region!r}"
        subdivision = _SUBDIVISION.fullmatch(region)
        if region != DEFAULT and region not in countries and not (subdivision and subdivision["country"] in countries):
            raise _region_error(
                where, region, "expected a country such as 'GB', a subdivision such as 'US-CA', or 'default'"
            )
        rows[region] = _row(where, region, _cells(where, cells), shipped=True)
    if DEFAULT not in rows:
        msg = f"{source}: there is no row 'default'; it gives the rule for callers whose place cannot be told"
        raise ConfigError(msg)
    return rows


def _cells(where: str, cells: object) -> Mapping[str, Any]:
    if not isinstance(cells, Mapping):
        msg = f"{where}: must be a table of columns ({', '.join(COLUMNS)}), not {cells!r}"
        raise ConfigError(msg)
    for name in cells:
        if name not in COLUMNS:
            msg = f"{where}: unknown column {name!r}; the columns are {', '.join(COLUMNS)}"
            raise ConfigError(msg)
    return cast("Mapping[str, Any]", cells)


def _override(where: str, region: str, cells: object, shipped: Row | None) -> Row:
    checked = _cells(where, cells)
    if shipped is not None and "rule" not in checked:
        base: dict[str, Any] = {
            "rule": shipped.rule,
            "source": shipped.source,
            "reviewed": shipped.reviewed,
            "disputed": shipped.disputed,
            "beep": shipped.beep,
            "note": shipped.note,
        }
        return _row(where, region, {**base, **checked}, shipped=False)
    return _row(where, region, {"source": f"the owner's [{where}]", **checked}, shipped=False)


def _row(where: str, region: str, cells: Mapping[str, Any], *, shipped: bool) -> Row:
    rule = cells.get("rule")
    if rule is None:
        msg = f"{where}: rule is missing; it must be one of {_RULE_NAMES}"
        raise ConfigError(msg)
    if rule not in STRICTNESS:
        msg = f"{where}: rule {rule!r} must be one of {_RULE_NAMES}"
        raise ConfigError(msg)
    source = cells.get("source")
    if source is None:
        msg = f"{where}: source is missing; name the law the row follows"
        raise ConfigError(msg)
    if not isinstance(source, str) or not source.strip():
        msg = f"{where}: source {source!r} must be text naming the law the row follows"
        raise ConfigError(msg)
    reviewed = cells.get("reviewed")
    if reviewed is None and shipped:
        msg = f"{where}: reviewed is missing; give the date the row was last checked, such as 2026-11-29"
        raise ConfigError(msg)
    if reviewed is not None and (not isinstance(reviewed, date) or isinstance(reviewed, datetime)):
        msg = f"{where}: reviewed {reviewed!r} must be a date such as 2026-11-29 (not in quotes)"
        raise ConfigError(msg)
    flags = {name: cells.get(name, False) for name in ("disputed", "beep")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            msg = f"{where}: {name} {value!r} must be true or false"
            raise ConfigError(msg)
    note = cells.get("note", "")
    if not isinstance(note, str):
        msg = f"{where}: note {note!r} must be text"
        raise ConfigError(msg)
    return Row(
        region=region,
        rule=cast("Rule", rule),
        source=source.strip(),
        reviewed=reviewed,
        disputed=flags["disputed"],
        beep=flags["beep"],
        note=note,
    )
