"""The parts the board is built from (``parts.toml``), loaded and checked.

A :class:`PartSpec` is one manufacturer part as its datasheet describes it:
pins with their electrical function, footprint, ratings, and for the parts that
matter to safety the facts the checks need (which pins sit on which side of the
isolation barrier, what voltage a clamp holds). :meth:`PartSpec.fields` turns
those facts into the netlist fields that travel with each placed part.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schematics.errors import SchematicError

__all__ = [
    "BARRIER_KINDS",
    "FUNCTIONS",
    "PARTS_PATH",
    "Catalogue",
    "PartSpec",
    "PinSpec",
    "format_clamps",
    "load_catalogue",
    "parse_clamps",
    "peak_volts",
]

PARTS_PATH = Path(__file__).with_name("parts.toml")

# Reference prefix of each kind of part.
PREFIXES = {
    "resistor": "R",
    "capacitor": "C",
    "capacitor_polarized": "C",
    "fuse": "F",
    "protector": "D",
    "diode": "D",
    "zener": "D",
    "led": "D",
    "bridge": "D",
    "transistor": "Q",
    "optocoupler": "U",
    "relay": "K",
    "transformer": "T",
    "connector": "J",
}
# Pins of the two-terminal kinds, numbered as KiCad's own symbols number them.
_TWO_TERMINALS = {
    "resistor": (("1", "1"), ("2", "2")),
    "capacitor": (("1", "1"), ("2", "2")),
    "fuse": (("1", "1"), ("2", "2")),
    "protector": (("1", "1"), ("2", "2")),
    "capacitor_polarized": (("1", "+"), ("2", "-")),
    "diode": (("1", "K"), ("2", "A")),
    "zener": (("1", "K"), ("2", "A")),
    "led": (("1", "K"), ("2", "A")),
}
FUNCTIONS = ("passive", "input", "output", "bidir", "power_out", "power_in", "open_collector", "no_connect")
BARRIER_KINDS = ("transformer", "optocoupler", "relay")
_SIDES = ("line", "pi")
_REQUIRED = ("kind", "value", "manufacturer", "description", "footprint", "voltage", "source")
_OPTIONAL = (
    "line_voltage",
    "isolation",
    "barrier",
    "line_pins",
    "pi_pins",
    "anchor",
    "role",
    "clamps",
    "pins",
    "pinout",
)
_VOLTS = re.compile(r"(\d+(?:\.\d+)?) (V|Vrms)")


def peak_volts(text: str) -> float:
    """The peak voltage a rating such as ``"400 V"`` or ``"600 Vrms"`` stands for."""
    match = _VOLTS.fullmatch(text.strip())
    if match is None:
        msg = f"voltage rating {text!r} is not a number followed by V or Vrms (such as '400 V' or '600 Vrms')"
        raise SchematicError(msg)
    volts = float(match.group(1))
    return volts * math.sqrt(2) if match.group(2) == "Vrms" else volts


def format_clamps(clamps: tuple[tuple[str, str, float], ...]) -> str:
    """The netlist field text of clamps: ``"1>2=350;2>1=350"`` (pin numbers)."""
    return ";".join(f"{a}>{b}={volts:g}" for a, b, volts in clamps)


def parse_clamps(text: str) -> tuple[tuple[str, str, float], ...]:
    """Clamps read back from a netlist field written by :func:`format_clamps`."""
    clamps = []
    for item in filter(None, text.split(";")):
        match = re.fullmatch(r"([^>=]+)>([^>=]+)=(\d+(?:\.\d+)?)", item.strip())
        if match is None:
            msg = f"clamp {item!r} is not written as PIN>PIN=VOLTS (such as '1>2=12.6')"
            raise SchematicError(msg)
        clamps.append((match.group(1), match.group(2), float(match.group(3))))
    return tuple(clamps)


@dataclass(frozen=True, slots=True)
class PinSpec:
    """One pin: its number on the footprint, its name and its electrical function."""

    number: str
    name: str
    function: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PartSpec:
    """One manufacturer part, as the board uses it."""

    mpn: str
    kind: str
    value: str
    manufacturer: str
    description: str
    footprint: str
    voltage: str
    pins: tuple[PinSpec, ...]
    source: str
    line_voltage: str | None = None
    isolation: str | None = None
    barrier: str | None = None
    line_pins: tuple[str, ...] = ()  # pin numbers
    pi_pins: tuple[str, ...] = ()
    anchor: str | None = None
    role: str | None = None
    clamps: tuple[tuple[str, str, float], ...] = ()  # (from pin number, to pin number, volts)
    pinout: str | None = None

    @property
    def prefix(self) -> str:
        """The reference prefix: R, C, D, U ..."""
        return PREFIXES[self.kind]

    def pin_number(self, name: str) -> str:
        """The number of the pin called ``name`` (a number is accepted as itself)."""
        for pin in self.pins:
            if name in (pin.name, pin.number):
                return pin.number
        names = ", ".join(pin.name for pin in self.pins)
        msg = f"{self.mpn} has no pin {name!r}; its pins are {names}"
        raise SchematicError(msg)

    def fields(self) -> dict[str, str]:
        """The netlist fields that carry this part's facts, in a fixed order."""
        fields = {"Manufacturer": self.manufacturer, "MPN": self.mpn, "Voltage": self.voltage}
        optional = {
            "Line voltage": self.line_voltage,
            "Isolation": self.isolation,
            "Barrier": self.barrier,
            "Line pins": ",".join(self.line_pins) or None,
            "Pi pins": ",".join(self.pi_pins) or None,
            "Anchor": self.anchor,
            "Role": self.role,
            "Clamps": format_clamps(self.clamps) or None,
            "Pinout": self.pinout,
        }
        fields.update({key: value for key, value in optional.items() if value is not None})
        return fields


class Catalogue(Mapping[str, PartSpec]):
    """The parts by MPN."""

    def __init__(self, parts: Mapping[str, PartSpec]) -> None:
        self._parts = dict(parts)

    def __getitem__(self, mpn: str) -> PartSpec:
        try:
            return self._parts[mpn]
        except KeyError:
            msg = f"part {mpn!r} is not in {PARTS_PATH.name}"
            raise SchematicError(msg) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)


def load_catalogue(path: Path = PARTS_PATH) -> Catalogue:
    """Every part in ``path``, checked; a mistake is one :class:`SchematicError` naming the part and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read the parts file {path}: {exc.strerror or exc}"
        raise SchematicError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path.name} is not valid TOML: {exc}"
        raise SchematicError(msg) from None
    return Catalogue({mpn: _part(path.name, mpn, table) for mpn, table in data.items()})


def _part(where: str, mpn: str, table: Any) -> PartSpec:
    def fail(key: str, value: object, expected: str) -> SchematicError:
        return SchematicError(f"{where} [{mpn}]: {key} = {value!r}; expected {expected}")

    if not isinstance(table, dict):
        raise fail("table", table, "a table of the part's facts")
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise fail(unknown[0], table[unknown[0]], f"only the keys {', '.join(_REQUIRED + _OPTIONAL)}")
    for key in _REQUIRED:
        if not isinstance(table.get(key), str) or not table[key]:
            raise fail(key, table.get(key), "a non-empty string")
    if table["kind"] not in PREFIXES:
        raise fail("kind", table["kind"], f"one of {', '.join(PREFIXES)}")
    for key in ("voltage", "line_voltage", "isolation"):
        value = table.get(key)
        if value is not None and not (isinstance(value, str) and _VOLTS.fullmatch(value)):
            raise fail(key, value, "a rating such as '400 V' or '600 Vrms'")
    pins = _pins(table, table["kind"], fail)
    return PartSpec(
        mpn=mpn,
        kind=table["kind"],
        value=table["value"],
        manufacturer=table["manufacturer"],
        description=table["description"],
        footprint=table["footprint"],
        voltage=table["voltage"],
        pins=pins,
        source=table["source"],
        line_voltage=table.get("line_voltage"),
        isolation=table.get("isolation"),
        anchor=_choice(table, "anchor", _SIDES, fail),
        role=_choice(table, "role", ("protector",), fail),
        pinout=table.get("pinout"),
        clamps=_clamps(table, pins, fail),
        **_barrier(table, pins, fail),
    )


def _pins(table: dict[str, Any], kind: str, fail: Any) -> tuple[PinSpec, ...]:
    if kind in _TWO_TERMINALS:
        if "pins" in table:
            raise fail("pins", table["pins"], f"no pins list: a {kind} has pins {_TWO_TERMINALS[kind]}")
        return tuple(PinSpec(number, name, "passive") for number, name in _TWO_TERMINALS[kind])
    rows = table.get("pins")
    if not isinstance(rows, list) or not rows:
        raise fail("pins", rows, "a list of [number, name, function] rows")
    pins = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
            raise fail("pins", row, "a [number, name, function] row of strings")
        if row[2] not in FUNCTIONS:
            raise fail("pins", row, f"a function among {', '.join(FUNCTIONS)}")
        pins.append(PinSpec(*row))
    numbers = [pin.number for pin in pins]
    if len(set(numbers)) != len(numbers):
        raise fail("pins", numbers, "each pin number once")
    return tuple(pins)


def _choice(table: dict[str, Any], key: str, allowed: tuple[str, ...], fail: Any) -> str | None:
    value = table.get(key)
    if value is not None and value not in allowed:
        raise fail(key, value, f"one of {', '.join(allowed)}")
    return value


def _number(pins: tuple[PinSpec, ...], key: str, name: object, fail: Any) -> str:
    for pin in pins:
        if name in (pin.name, pin.number):
            return pin.number
    raise fail(key, name, f"a pin of the part ({', '.join(pin.name for pin in pins)})")


def _clamps(table: dict[str, Any], pins: tuple[PinSpec, ...], fail: Any) -> tuple[tuple[str, str, float], ...]:
    clamps = []
    for row in table.get("clamps", []):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[2], int | float) and row[2] > 0):
            raise fail("clamps", row, "[from pin, to pin, volts above zero] rows")
        clamps.append((_number(pins, "clamps", row[0], fail), _number(pins, "clamps", row[1], fail), float(row[2])))
    return tuple(clamps)


def _barrier(table: dict[str, Any], pins: tuple[PinSpec, ...], fail: Any) -> dict[str, Any]:
    barrier = _choice(table, "barrier", BARRIER_KINDS, fail)
    if barrier is None:
        for key in ("line_pins", "pi_pins", "isolation", "line_voltage"):
            if key in table:
                raise fail(key, table[key], "nothing: only a part with a barrier kind has barrier facts")
        return {}
    if "isolation" not in table:
        raise fail("isolation", None, "the isolation rating of a part that crosses the barrier")
    groups = {}
    for key in ("line_pins", "pi_pins"):
        names = table.get(key)
        if not isinstance(names, list) or not names:
            raise fail(key, names, "a list of pin names")
        groups[key] = tuple(_number(pins, key, name, fail) for name in names)
    shared = set(groups["line_pins"]) & set(groups["pi_pins"])
    if shared:
        raise fail("pi_pins", sorted(shared), "pins that are not also line pins")
    return {"barrier": barrier, **groups}
