"""Ring cadences as data, and telling which one a line rings with.

A cadence is one ring cycle as alternating on/off seconds (``[2.0, 4.0]`` in
North America, ``[0.4, 0.2, 0.4, 2.0]`` for the UK double ring). The table lives
in ``firmware/data/cadences.toml`` with its source and review date.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from firmware.wire.errors import ConfigError

DATA = "cadences.toml"


@dataclass(frozen=True, slots=True)
class Cadence:
    """One ring cycle: alternating on/off seconds, starting with on."""

    key: str
    name: str
    countries: tuple[str, ...]
    pattern: tuple[float, ...]
    tolerance: float

    @property
    def period_s(self) -> float:
        """Seconds of one whole cycle."""
        return sum(self.pattern)

    def matches(self, periods: Sequence[float]) -> bool:
        """True if measured on/off periods (first one "on") fit this cadence at some on-phase."""
        n = len(self.pattern)
        for offset in range(0, n, 2):
            if all(
                abs(p - self.pattern[(offset + i) % n]) <= self.tolerance * self.pattern[(offset + i) % n] + 0.05
                for i, p in enumerate(periods)
            ):
                return True
        return False


def _fail(source: str, key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{source}: {key} is {value!r}; expected {allowed}")


def parse_cadences(data: dict[str, Any], source: str) -> dict[str, Cadence]:
    """Check a parsed cadence table and build its Cadence values."""
    tolerance = data.get("defaults", {}).get("tolerance", 0.1)
    if not isinstance(tolerance, int | float) or not 0 < tolerance < 0.5:
        raise _fail(source, "defaults.tolerance", tolerance, "a fraction between 0 and 0.5")
    table = data.get("cadence")
    if not isinstance(table, dict) or not table:
        raise _fail(source, "cadence", table, "one [cadence.<KEY>] table per cadence")
    cadences: dict[str, Cadence] = {}
    for key, row in table.items():
        where = f"cadence.{key}"
        if not isinstance(row, dict):
            raise _fail(source, where, row, "a table")
        pattern = row.get("pattern")
        if (
            not isinstance(pattern, list)
            or not pattern
            or len(pattern) % 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 < x <= 10 for x in pattern)
        ):
            raise _fail(source, f"{where}.pattern", pattern, "pairs of on/off seconds between 0 and 10")
        countries = row.get("countries", [])
        if not isinstance(countries, list) or not all(isinstance(c, str) and len(c) == 2 for c in countries):
            raise _fail(source, f"{where}.countries", countries, "ISO 3166-1 alpha-2 country codes")
        cadences[key] = Cadence(
            key=key,
            name=str(row.get("name", key)),
            countries=tuple(countries),
            pattern=tuple(float(x) for x in pattern),
            tolerance=float(row.get("tolerance", tolerance)),
        )
    return cadences


def load_cadences(path: Path | None = None) -> dict[str, Cadence]:
    """The cadence table: the shipped one, or the owner's file at ``path``."""
    if path is None:
        return _shipped()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"{path}: cannot read the cadence table: {exc}"
        raise ConfigError(msg) from None
    return parse_cadences(data, str(path))


@cache
def _shipped() -> dict[str, Cadence]:
    text = resources.files("firmware.data").joinpath(DATA).read_text(encoding="utf-8")
    return parse_cadences(tomllib.loads(text), f"firmware/data/{DATA}")


def cadence_for_country(country: str, cadences: dict[str, Cadence] | None = None) -> Cadence:
    """The cadence a country's exchanges ring with; ConfigError if none is known."""
    table = cadences if cadences is not None else _shipped()
    for cadence in table.values():
        if country.upper() in cadence.countries or country.upper() == cadence.key:
            return cadence
    known = sorted({c for cad in table.values() for c in cad.countries})
    msg = f"no ring cadence is known for country {country!r}; known: {', '.join(known)}"
    raise ConfigError(msg)


def classify(periods: Sequence[float], cadences: dict[str, Cadence] | None = None) -> str | None:
    """The key of the one cadence that measured on/off ``periods`` fit, or None if none or several do.

    ``periods`` starts with an on period. Give at least one whole cycle for an
    answer; fewer periods usually fit several cadences and give None.
    """
    if not periods:
        return None
    table = cadences if cadences is not None else _shipped()
    fits = [c.key for c in table.values() if c.matches(periods)]
    return fits[0] if len(fits) == 1 else None
