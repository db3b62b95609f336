"""The call-progress tone plans: ``firmware/data/tones.toml`` read and checked.

Each country's plan lists its tones with their frequencies, on/off cadence and
tolerances. The loader refuses plans a detector could not tell apart.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from firmware.line.base import TONES
from firmware.wire.errors import ConfigError

DATA = "tones.toml"
_SOURCE = f"firmware/data/{DATA}"


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """One tone: a frequency set per "on", its on/off cadence and how strictly to match it."""

    name: str
    # One frequency set per "on" of the cadence (the same set repeated for most tones).
    steps: tuple[tuple[float, ...], ...]
    # Alternating on/off seconds starting with on; empty for a continuous tone.
    cadence: tuple[float, ...]
    once: bool
    min_s: float
    tolerance: float
    tolerance_s: float
    guard_s: float
    # Amplitude modulation of every frequency, Hz (0: none): the tone also has energy this far
    # either side of each frequency, and its level swings at this rate.
    modulation_hz: float = 0.0

    def fits(self, measured: float, nominal: float) -> bool:
        """True if a measured on or off period matches a nominal one."""
        return abs(measured - nominal) <= self.tolerance * nominal + self.tolerance_s

    @property
    def ons(self) -> tuple[float, ...]:
        """The "on" periods of the cadence."""
        return self.cadence[0::2]


@dataclass(frozen=True)
class TonePlan:
    """The tones of one country's exchanges, as loaded from ``tones.toml``."""

    country: str
    name: str
    tones: tuple[ToneSpec, ...]
    frequency_tolerance: float
    min_dbfs: float
    max_dbfs: float
    # Distinct frequency sets, in a fixed order; a frame label is an index into this.
    groups: tuple[tuple[float, ...], ...] = field(init=False)
    # Per set, how far its tones' modulation spreads each frequency, Hz (the largest of them).
    spreads: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        groups = sorted({step for tone in self.tones for step in tone.steps})
        spreads = [max((t.modulation_hz for t in self.tones if g in t.steps), default=0.0) for g in groups]
        object.__setattr__(self, "groups", tuple(groups))
        object.__setattr__(self, "spreads", tuple(spreads))

    def tone(self, name: str) -> ToneSpec:
        """The named tone; ConfigError if this plan has none."""
        for spec in self.tones:
            if spec.name == name:
                return spec
        msg = f"country {self.country!r} has no {name!r} tone; it has: {', '.join(t.name for t in self.tones)}"
        raise ConfigError(msg)


def _fail(where: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{_SOURCE}: {where} is {value!r}; expected {allowed}")


def _number(row: dict[str, Any], key: str, default: float, where: str, *, low: float, high: float) -> float:
    value = row.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"{where}.{key}", value, f"a number from {low} to {high}")
    return float(value)


def _freq_set(value: object, where: str) -> tuple[float, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 4
        or not all(isinstance(f, int | float) and not isinstance(f, bool) and 100 <= f <= 3400 for f in value)
    ):
        raise _fail(where, value, "1 to 4 frequencies from 100 to 3400 Hz")
    return tuple(sorted(float(f) for f in value))


def _tone(name: str, row: object, defaults: dict[str, Any], where: str) -> ToneSpec:
    if name not in TONES:
        raise _fail(where, name, f"one of {', '.join(TONES)}")
    if not isinstance(row, dict):
        raise _fail(where, row, "a table")
    cadence = row.get("cadence", [])
    if not isinstance(cadence, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= 10 for x in cadence
    ):
        raise _fail(f"{where}.cadence", cadence, "on/off seconds from 0 to 10")
    once = row.get("once", False)
    if not isinstance(once, bool) or (cadence and len(cadence) % 2 and not once) or (once and not cadence):
        raise _fail(f"{where}.cadence", cadence, "on/off pairs, or an odd count only for a tone sent once")
    ons = len(cadence[0::2]) or 1
    steps = (
        tuple(_freq_set(s, f"{where}.steps") for s in row["steps"])
        if isinstance(row.get("steps"), list)
        else (_freq_set(row.get("freqs"), f"{where}.freqs"),) * ons
    )
    if len(steps) != ons:
        raise _fail(f"{where}.steps", row.get("steps"), f"one frequency set per on period ({ons})")
    return ToneSpec(
        name=name,
        steps=steps,
        cadence=tuple(float(x) for x in cadence),
        once=once,
        min_s=_number(row, "min_s", 0.0 if cadence else 1.0, where, low=0.0, high=10.0),
        tolerance=_number(row, "tolerance", defaults.get("tolerance", 0.1), where, low=0.0, high=0.5),
        tolerance_s=_number(row, "tolerance_s", defaults.get("tolerance_s", 0.04), where, low=0.0, high=0.5),
        guard_s=_number(row, "guard_s", defaults.get("guard_s", 0.7), where, low=0.0, high=10.0),
        modulation_hz=_number(row, "modulation_hz", 0.0, where, low=0.0, high=50.0),
    )


def _check_dial_like(plan: TonePlan) -> None:
    """A continuous tone must outlast every "on" of other tones at the same frequencies."""
    for tone in (t for t in plan.tones if not t.cadence):
        for other in (t for t in plan.tones if t.cadence):
            for step, on in zip(other.steps, other.ons, strict=True):
                if step == tone.steps[0] and on + other.tolerance * on + other.tolerance_s >= tone.min_s:
                    raise _fail(
                        f"country.{plan.country}.{tone.name}.min_s",
                        tone.min_s,
                        f"more than the {on} s on period of {other.name}",
                    )


def _check_modulation(plan: TonePlan) -> None:
    """A modulated tone's sidebands must not reach another tone's frequency, or one is heard as the other."""
    tolerance = plan.frequency_tolerance
    for tone in (t for t in plan.tones if t.modulation_hz):
        for step in tone.steps:
            for other in sorted({f for g in plan.groups for f in g} - set(step)):
                for f in step:
                    room = max(0.0, abs(other - f) - tolerance * (f + other))
                    if tone.modulation_hz >= room:
                        raise _fail(
                            f"country.{plan.country}.{tone.name}.modulation_hz",
                            tone.modulation_hz,
                            f"less than {room:g}, or {f:g} Hz with its sidebands takes in {other:g} Hz of another tone",
                        )


def parse_tone_plans(data: dict[str, Any]) -> dict[str, TonePlan]:
    """Check a parsed tone table and build one TonePlan per country key."""
    defaults = data.get("defaults", {})
    common = data.get("common", {})
    countries = data.get("country")
    if not isinstance(countries, dict) or not countries:
        raise _fail("country", countries, "one [country.<CC>] table per country")
    plans: dict[str, TonePlan] = {}
    for key, row in countries.items():
        source = countries.get(row.get("same_as"), row) if isinstance(row, dict) else row
        if not isinstance(source, dict):
            raise _fail(f"country.{key}", row, "a table")
        tables = {**common, **{k: v for k, v in source.items() if k not in ("name", "same_as")}}
        tones = tuple(_tone(name, t, defaults, f"country.{key}.{name}") for name, t in tables.items())
        plan = TonePlan(
            country=key,
            name=str(source.get("name", key)),
            tones=tones,
            frequency_tolerance=_number(defaults, "frequency_tolerance", 0.02, "defaults", low=0.0, high=0.05),
            min_dbfs=_number(defaults, "min_dbfs", -40.0, "defaults", low=-90.0, high=0.0),
            max_dbfs=_number(defaults, "max_dbfs", 0.0, "defaults", low=-90.0, high=6.0),
        )
        _check_dial_like(plan)
        _check_modulation(plan)
        plans[key] = plan
    return plans


@cache
def _shipped() -> dict[str, TonePlan]:
    text = resources.files("firmware.data").joinpath(DATA).read_text(encoding="utf-8")
    return parse_tone_plans(tomllib.loads(text))


def load_tone_plan(country: str) -> TonePlan:
    """The tone plan of ``country`` (ISO code, or "default"); ConfigError naming the known ones."""
    plans = _shipped()
    plan = plans.get(country if country == "default" else country.upper())
    if plan is None:
        msg = f"no call-progress tones are known for country {country!r}; known: {', '.join(sorted(plans))}"
        raise ConfigError(msg)
    return plan
