"""The one pin map the board and the firmware share (``firmware/data/pins.toml``).

The firmware's default ``[gpio]`` settings come from this file
(:func:`firmware.config.default_gpio`); the schematic wires each signal to the
header pin of the BCM GPIO the file names. :data:`SIGNALS` ties the file's keys
to the board's net names and to the firmware's setting names.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import firmware.data
from schematics.errors import SchematicError

__all__ = ["PIN_MAP_PATH", "SIGNALS", "Signal", "load_pin_map"]

PIN_MAP_PATH = Path(firmware.data.__file__).with_name("pins.toml")


@dataclass(frozen=True, slots=True)
class Signal:
    """One GPIO signal of the board."""

    key: str  # its key in pins.toml
    net: str  # its net in the schematic
    setting: str  # its field in firmware.config.GpioSettings
    direction: str  # "input" or "output", as the Pi sees it


SIGNALS = (
    Signal("ring", "RING", "ring_pin", "input"),
    Signal("offhook_sense", "OFFHOOK_SENSE", "offhook_pin", "input"),
    Signal("polarity", "POLARITY", "polarity_pin", "input"),
    Signal("hook_relay", "HOOK_RELAY", "hook_relay_pin", "output"),
    Signal("led", "LED", "led_pin", "output"),
)


def load_pin_map(path: Path = PIN_MAP_PATH) -> dict[str, int]:
    """The ``[pins]`` table of ``path``: signal key to BCM GPIO number, checked."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read the pin map {path}: {exc.strerror or exc}"
        raise SchematicError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"the pin map {path} is not valid TOML: {exc}"
        raise SchematicError(msg) from None
    table = data.get("pins")
    if not isinstance(table, dict):
        msg = f"the pin map {path} has no [pins] table"
        raise SchematicError(msg)
    pins: dict[str, int] = {}
    for signal in SIGNALS:
        value = table.get(signal.key)
        if type(value) is not int or not 0 <= value <= 27:
            msg = f"pins.{signal.key} = {value!r} in {path}; expected a BCM GPIO number from 0 to 27"
            raise SchematicError(msg)
        pins[signal.key] = value
    unknown = sorted(set(table) - set(pins))
    if unknown:
        msg = f"pins.{unknown[0]} in {path} is not a signal of the board ({', '.join(s.key for s in SIGNALS)})"
        raise SchematicError(msg)
    if len(set(pins.values())) != len(pins):
        msg = f"the pin map {path} gives two signals the same GPIO: {pins}"
        raise SchematicError(msg)
    return pins
