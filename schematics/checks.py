"""The checks a board must pass: ERC, isolation, voltage ratings and the pin map.

All but the ERC read a :class:`~schematics.netlist.Netlist`, so they check the
netlist file itself, with the part facts it carries as fields. Each returns a
list of findings, one sentence each; an empty list is a pass.

* :func:`sides` and :func:`isolation`: every net belongs to the line side (the
  telephone network, TNV) or the Pi side (SELV). The sides are found, not
  declared: starting from the nets of the connectors that fix a side (the RJ11
  jack; the Pi header and the sound card jacks), a net reaches every net that a
  part joins it to. A transformer, optocoupler or relay joins only the pins in
  the same group (primary with primary, secondary with secondary); any other
  part joins all its pins. A path from the line side to the Pi side is a
  finding, and so is a barrier part whose groups sit on the wrong sides or
  whose isolation rating is below ``line.toml``'s minimum.
* :func:`ratings`: the largest voltage that can appear between any two
  line-side pins of a part, against the part's rating. Between two nets that
  voltage is the line's worst case (a power cross ahead of the protector, the
  protector's switching voltage behind it) unless clamps in between keep it
  lower: a zener, a diode's forward drop, an LED. A part's own clamp limits its
  own voltage and needs no rating in that direction.
* :func:`gpio`: the BCM GPIO each signal reaches through the header equals the
  firmware's default ``[gpio]`` setting, and the inputs the firmware reads
  active-low have a pull-up to 3V3.
"""

from __future__ import annotations

import heapq
import logging
import math
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.config import GpioSettings
from schematics.catalogue import BARRIER_KINDS, Catalogue, parse_clamps, peak_volts
from schematics.errors import SchematicError
from schematics.netlist import Netlist
from schematics.pinmap import SIGNALS
from schematics.skidl_quiet import collect

__all__ = ["LINE_PATH", "LineSpec", "erc", "gpio", "isolation", "load_line_spec", "ratings", "sides"]

LINE_PATH = Path(__file__).with_name("line.toml")
_SLACK = 1e-6  # volts: a rating equal to the stress passes


@dataclass(frozen=True, slots=True)
class LineSpec:
    """What the line does to the board (``line.toml``)."""

    ring_vrms: float
    battery_v: float
    power_cross_vrms: float
    isolation_min_vrms: float
    creepage_min_mm: float

    @property
    def working_peak(self) -> float:
        """Ringing peak on top of the battery: the most the line holds across tip and ring for long."""
        return self.ring_vrms * math.sqrt(2) + self.battery_v

    @property
    def power_cross_peak(self) -> float:
        """The peak of the power cross that parts ahead of the protector must stand."""
        return self.power_cross_vrms * math.sqrt(2)


def load_line_spec(path: Path = LINE_PATH) -> LineSpec:
    """``line.toml``, checked."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        values = {
            "ring_vrms": data["line"]["ring_vrms"],
            "battery_v": data["line"]["battery_v"],
            "power_cross_vrms": data["surge"]["power_cross_vrms"],
            "isolation_min_vrms": data["barrier"]["isolation_min_vrms"],
            "creepage_min_mm": data["barrier"]["creepage_min_mm"],
        }
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        msg = f"{path} cannot be read as the line's numbers: {exc}"
        raise SchematicError(msg) from None
    for key, value in values.items():
        if not isinstance(value, int | float) or value <= 0:
            msg = f"{path.name}: {key} = {value!r}; expected a positive number"
            raise SchematicError(msg)
    return LineSpec(**{key: float(value) for key, value in values.items()})


def erc(board: Any) -> tuple[list[str], list[str]]:
    """SKiDL's electrical rules check of the board: (errors, warnings)."""
    with collect() as messages:
        board.circuit.ERC()
    errors = [text for level, text in messages if level >= logging.ERROR]
    warnings = [text for level, text in messages if level < logging.ERROR]
    return errors, warnings


# ---- isolation ------------------------------------------------------------------


def _groups(netlist: Netlist, ref: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The groups of pins ``ref`` joins conductively, as (label, nets); and stray pins."""
    fields = netlist.components[ref].fields
    pins = netlist.pins_of(ref)
    if "Barrier" not in fields:
        return [("", sorted(set(pins.values())))], []
    line = fields.get("Line pins", "").split(",")
    pi = fields.get("Pi pins", "").split(",")
    groups = [
        ("line", sorted({net for pin, net in pins.items() if pin in line})),
        ("pi", sorted({net for pin, net in pins.items() if pin in pi})),
    ]
    stray = sorted(pin for pin in pins if pin not in line and pin not in pi)
    return groups, stray


def _walk(netlist: Netlist, starts: Iterable[str]) -> dict[str, tuple[str, str] | None]:
    """Every net reachable from ``starts``, with the (part, previous net) it was reached through."""
    joins: dict[str, list[tuple[str, list[str]]]] = {}
    for ref in netlist.components:
        for _, nets in _groups(netlist, ref)[0]:
            for net in nets:
                joins.setdefault(net, []).append((ref, nets))
    reached: dict[str, tuple[str, str] | None] = dict.fromkeys(starts)
    queue = deque(reached)
    while queue:
        net = queue.popleft()
        for ref, nets in joins.get(net, []):
            for other in nets:
                if other not in reached:
                    reached[other] = (ref, net)
                    queue.append(other)
    return reached


def _anchor_nets(netlist: Netlist, side: str) -> list[str]:
    refs = sorted(ref for ref, comp in netlist.components.items() if comp.fields.get("Anchor") == side)
    return sorted({net for ref in refs for net in netlist.pins_of(ref).values()})


def sides(netlist: Netlist) -> tuple[dict[str, str], list[str]]:
    """The side of every net ("line", "pi" or "both") and the isolation findings about joins."""
    findings = []
    line_anchors, pi_anchors = _anchor_nets(netlist, "line"), _anchor_nets(netlist, "pi")
    if not line_anchors or not pi_anchors:
        findings.append("the netlist needs a connector anchored to the line and one anchored to the Pi")
    from_line, from_pi = _walk(netlist, line_anchors), _walk(netlist, pi_anchors)
    side = {}
    for net in netlist.nets:
        side[net] = {(True, False): "line", (False, True): "pi", (True, True): "both"}.get(
            (net in from_line, net in from_pi), "none"
        )
        if side[net] == "none":
            findings.append(f"net {net} is on neither side: no part joins it to a connector")
    crossing = [net for net in pi_anchors if net in from_line]
    if crossing:
        path = [crossing[0]]
        step = from_line[crossing[0]]
        while step is not None:
            ref, previous = step
            path += [ref, previous]
            step = from_line[previous]
        findings.append(
            "the line side reaches the Pi side without crossing a barrier part: " + ", ".join(reversed(path))
        )
    for ref in sorted(netlist.components):
        stray = _groups(netlist, ref)[1]
        if stray:
            findings.append(f"{ref} has pins {','.join(stray)} on nets but in neither of its barrier pin groups")
    return side, findings


def isolation(netlist: Netlist, line: LineSpec) -> list[str]:
    """Every isolation finding: joins across the barrier, barrier parts and their ratings."""
    side, findings = sides(netlist)
    for ref in sorted(netlist.components):
        fields = netlist.components[ref].fields
        kind = fields.get("Barrier")
        if kind is None:
            continue
        if kind not in BARRIER_KINDS:
            findings.append(f"{ref} is marked as a barrier part of kind {kind!r}; only {', '.join(BARRIER_KINDS)}")
        for label, nets in _groups(netlist, ref)[0]:
            # A net on both sides is already a finding of its own.
            wrong = [net for net in nets if side.get(net) not in (label, "both")]
            if wrong:
                findings.append(f"{ref}'s {label}-side pins are on {', '.join(wrong)}, which is not the {label} side")
        rating = fields.get("Isolation")
        needed = line.isolation_min_vrms
        if rating is None or peak_volts(rating) < needed * math.sqrt(2) - _SLACK:
            findings.append(
                f"{ref} isolates {rating or 'nothing stated'}; a barrier part needs at least {needed:g} Vrms"
            )
    return findings


# ---- voltage ratings -----------------------------------------------------------


def _line_pins(netlist: Netlist, ref: str, side: Mapping[str, str]) -> dict[str, str]:
    """The pins of ``ref`` on line-side nets (pin number to net)."""
    fields = netlist.components[ref].fields
    pins = netlist.pins_of(ref)
    if "Barrier" in fields:
        group = fields.get("Line pins", "").split(",")
        pins = {pin: net for pin, net in pins.items() if pin in group}
    return {pin: net for pin, net in pins.items() if side.get(net) == "line"}


def _shortest(graph: Mapping[str, list[tuple[str, float]]], source: str) -> dict[str, float]:
    distance = {source: 0.0}
    queue = [(0.0, source)]
    while queue:
        d, net = heapq.heappop(queue)
        if d > distance.get(net, math.inf):
            continue
        for other, weight in graph.get(net, []):
            if d + weight < distance.get(other, math.inf):
                distance[other] = d + weight
                heapq.heappush(queue, (d + weight, other))
    return distance


def _surge(netlist: Netlist, protectors: list[str], line: LineSpec) -> tuple[float, list[str]]:
    """The highest voltage behind the protectors, and findings about the protectors themselves."""
    if not protectors:
        return line.power_cross_peak, ["no surge protector sits on the line side"]
    findings = []
    for ref in protectors:
        standoff = netlist.components[ref].fields.get("Voltage", "0 V")
        if peak_volts(standoff) < line.working_peak - _SLACK:
            findings.append(
                f"{ref} (standoff {standoff}) would fire on ringing: the line reaches {line.working_peak:.3g} V"
            )
    clamps = [
        volts for ref in protectors for *_, volts in parse_clamps(netlist.components[ref].fields.get("Clamps", ""))
    ]
    return max(clamps, default=line.power_cross_peak), findings


def _bounds(netlist: Netlist, parts: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, float]]:
    """For each pair of line nets, the most V(x) - V(y) can be through clamps: ``bounds[y][x]``."""
    # A clamp "V(a) - V(b) <= v" is an edge b -> a of weight v: the shortest path from y to x bounds V(x) - V(y).
    graph: dict[str, list[tuple[str, float]]] = {}
    for ref, pins in parts.items():
        for a, b, volts in parse_clamps(netlist.components[ref].fields.get("Clamps", "")):
            if a in pins and b in pins and pins[a] != pins[b]:
                graph.setdefault(pins[b], []).append((pins[a], volts))
    return {net: _shortest(graph, net) for net in {net for pins in parts.values() for net in pins.values()}}


def ratings(netlist: Netlist, side: Mapping[str, str], line: LineSpec) -> list[str]:
    """Every line-side part whose voltage rating is below what the line can put across it."""
    parts = {ref: pins for ref in sorted(netlist.components) if (pins := _line_pins(netlist, ref, side))}
    unprotected = set(_anchor_nets(netlist, "line"))
    protectors = [ref for ref in parts if netlist.components[ref].fields.get("Role") == "protector"]
    surge, findings = _surge(netlist, protectors, line)
    bounds = _bounds(netlist, parts)
    for ref, pins in parts.items():
        comp = netlist.components[ref]
        own = {(a, b) for a, b, _ in parse_clamps(comp.fields.get("Clamps", ""))}
        stresses = [
            (min(line.power_cross_peak if unprotected & {x, y} else surge, bounds[y].get(x, math.inf)), x, y)
            for p, x in pins.items()
            for q, y in pins.items()
            if x != y and (p, q) not in own
        ]
        if not stresses:
            continue
        worst, x, y = max(stresses, key=lambda stress: stress[0])
        text = comp.fields.get("Line voltage" if "Barrier" in comp.fields else "Voltage")
        rated = peak_volts(text) if text else 0.0
        if rated < worst - _SLACK:
            findings.append(
                f"{ref} ({comp.fields.get('MPN', comp.value)}) is rated {text or 'for nothing'} but can see "
                f"{worst:.3g} V between {x} and {y}"
            )
    return findings


# ---- pin map -----------------------------------------------------------------


def gpio(netlist: Netlist, catalogue: Catalogue, settings: GpioSettings) -> list[str]:
    """Findings where the board's header wiring differs from the firmware's ``[gpio]`` settings."""
    headers = [c for c in netlist.components.values() if c.fields.get("Pinout") == "raspberry-pi-40"]
    if len(headers) != 1:
        return [f"the netlist has {len(headers)} Raspberry Pi headers; expected one"]
    header = headers[0]
    names = {pin.number: pin.name for pin in catalogue[header.fields["MPN"]].pins}
    pins = netlist.pins_of(header.ref)
    supply = {net for pin, net in pins.items() if names.get(pin) == "3V3"}
    findings = []
    for signal in SIGNALS:
        on_header = sorted(pin for pin, net in pins.items() if net == signal.net)
        wanted = getattr(settings, signal.setting)
        if len(on_header) != 1 or not names.get(on_header[0], "").startswith("GPIO"):
            findings.append(f"{signal.net} reaches {len(on_header)} GPIO pins of {header.ref}; expected one")
            continue
        found = int(names[on_header[0]].removeprefix("GPIO"))
        if found != wanted:
            findings.append(
                f"{signal.net} is on {header.ref} pin {on_header[0]} (GPIO{found}) "
                f"but the firmware's default {signal.setting} is GPIO{wanted}"
            )
    active_low = {
        "RING": not settings.ring_active_high,
        "OFFHOOK_SENSE": not settings.offhook_active_high,
        "POLARITY": True,  # the firmware always reads the polarity input with a pull-up
    }
    for net, low in active_low.items():
        pulled = any(
            ref.startswith("R")
            and set(netlist.pins_of(ref).values()) & {net}
            and set(netlist.pins_of(ref).values()) & supply
            for ref in netlist.components
        )
        if low and not pulled:
            findings.append(f"{net} is read active-low by the firmware but has no pull-up resistor to 3V3")
    return findings
