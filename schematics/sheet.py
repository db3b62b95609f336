"""A schemdraw drawing that knows which part pin sits at which point, so it can be checked.

:class:`Sheet` places schemdraw elements for the parts of a netlist and
records, for every pin it draws, the point where the pin ends, every wire it
draws and every net label. :meth:`Sheet.connections` then works out from the
geometry alone which pins the picture joins: wire ends that meet, a wire end
or pin landing on a wire (a junction), and labels with the same net name. The
drawing checks compare that with the netlist, so the picture cannot drift from
the board.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import schemdraw
import schemdraw.elements as elm

from schematics.catalogue import Catalogue, PartSpec
from schematics.errors import SchematicError
from schematics.netlist import Netlist

__all__ = ["Point", "Sheet"]

Point = tuple[float, float]
_DIRECTIONS = ("right", "left", "up", "down")
# schemdraw symbols for the two-terminal kinds; the symbol's start is its anode (or +).
_SYMBOLS: dict[str, Callable[[], Any]] = {
    "resistor": elm.Resistor,
    "capacitor": elm.Capacitor,
    "capacitor_polarized": lambda: elm.Capacitor(polar=True),
    "fuse": elm.Fuse,
    "protector": elm.Diac,
    "diode": elm.Diode,
    "zener": elm.Zener,
    "led": elm.LED,
}
_ANODE_FIRST = {"diode": "A", "zener": "A", "led": "A", "capacitor_polarized": "+"}
# schemdraw places a label relative to the element's own direction; these give the screen side.
_LABEL_LOC = {
    "right": {"above": "top", "below": "bottom"},
    "left": {"above": "bottom", "below": "top"},
    "up": {"left": "top", "right": "bottom"},
    "down": {"left": "top", "right": "bottom"},
}


def _key(point: Point) -> tuple[float, float]:
    return (round(point[0], 3), round(point[1], 3))


class Sheet:
    """A drawing of netlist parts with the geometry needed to check its connections."""

    def __init__(self, netlist: Netlist, catalogue: Catalogue) -> None:
        schemdraw.use("svg")
        self.netlist = netlist
        self.catalogue = catalogue
        self.drawing = schemdraw.Drawing(show=False)
        self.drawing.config(unit=2.5, fontsize=11, lw=1.2)
        self.pins: list[tuple[Point, str, str]] = []  # (point, ref, pin number)
        self.wires: list[tuple[Point, Point]] = []
        self.labels: list[tuple[Point, str]] = []
        self.drawn: set[str] = set()

    # ---- drawing --------------------------------------------------------------

    def spec(self, ref: str) -> PartSpec:
        """The catalogue entry of a netlist part."""
        if ref not in self.netlist.components:
            msg = f"the drawing places {ref}, which is not in the netlist"
            raise SchematicError(msg)
        return self.catalogue[self.netlist.components[ref].fields["MPN"]]

    def caption(self, ref: str) -> str:
        """The text beside a part: its reference and value."""
        return f"{ref}\n{self.netlist.components[ref].value}"

    def add(self, element: Any) -> Any:
        """Add any schemdraw element; returns it placed."""
        # schemdraw turns each element the way the previous one went; here every element
        # says where it goes, and the rest are drawn upright.
        self.drawing.theta = 0
        return self.drawing.add(element)

    def measure(self, make: Callable[[], Any]) -> dict[str, Point]:
        """The anchors of the element ``make()`` builds, relative to where it is placed."""
        scratch = schemdraw.Drawing(show=False)
        scratch.config(unit=2.5, fontsize=11, lw=1.2)
        placed = scratch.add(make().at((0.0, 0.0)))
        return {name: (float(x), float(y)) for name, (x, y) in placed.absanchors.items()}

    def two(self, ref: str, at: Point, direction: str, first: str, *, length: float = 2.5, side: str = "") -> Point:
        """A two-terminal part from ``at`` towards ``direction``, pin ``first`` at ``at``; returns its far end.

        ``side`` puts the caption above or below a horizontal part, left or right of a
        vertical one (above and right by default).
        """
        spec = self.spec(ref)
        if direction not in _DIRECTIONS:
            msg = f"direction {direction!r} is not one of {', '.join(_DIRECTIONS)}"
            raise SchematicError(msg)
        sides = _LABEL_LOC[direction]
        side = side or ("above" if direction in ("right", "left") else "right")
        if side not in sides:
            msg = f"a caption cannot go {side!r} of a part drawn {direction}; use {' or '.join(sides)}"
            raise SchematicError(msg)
        element = _SYMBOLS[spec.kind]()
        first_number = spec.pin_number(first)
        (other_number,) = [p.number for p in spec.pins if p.number != first_number]
        anode = _ANODE_FIRST.get(spec.kind)
        if anode is not None and spec.pin_number(anode) != first_number:
            element = element.reverse()
        element = getattr(element.at(at), direction)().length(length).label(self.caption(ref), loc=sides[side])
        placed = self.add(element)
        self._pin(placed.absanchors["start"], ref, first_number)
        self._pin(placed.absanchors["end"], ref, other_number)
        self.drawn.add(ref)
        return (placed.absanchors["end"][0], placed.absanchors["end"][1])

    def chain(self, at: Point, direction: str, links: Sequence[tuple[str, str]]) -> Point:
        """Two-terminal parts end to end: each link is (reference, the pin that faces ``at``)."""
        for ref, first in links:
            at = self.two(ref, at, direction, first)
        return at

    def multi(self, ref: str, element: Any, anchors: dict[str, str], caption_at: Point | None = None) -> Any:
        """A multi-pin part drawn by ``element``; ``anchors`` maps schemdraw anchor names to pin names."""
        spec = self.spec(ref)
        placed = self.add(element)
        for anchor, pin in anchors.items():
            self._pin(placed.absanchors[anchor], ref, spec.pin_number(pin))
        if caption_at is not None:
            self.text(caption_at, self.caption(ref))
        self.drawn.add(ref)
        return placed

    def wire(self, *points: Point) -> Point:
        """Straight wires through ``points`` in turn; returns the last point."""
        for start, end in itertools.pairwise(points):
            self.add(elm.Line().at(start).to(end))
            self.wires.append((start, end))
        return points[-1]

    def dot(self, at: Point) -> None:
        """A junction dot (drawing only: junctions join by geometry)."""
        self.add(elm.Dot(radius=0.08).at(at))

    def label(self, at: Point, net: str, loc: str = "right") -> None:
        """A net label: an open dot with the net name; equal names are one net."""
        self.add(elm.Dot(open=True, radius=0.1).at(at).label(net, loc=loc, fontsize=10))
        self.labels.append((at, net))

    def ground(self, at: Point, net: str = "GND") -> None:
        """A ground symbol for ``net`` (GND, or AGND drawn as a signal ground)."""
        symbol = elm.Ground() if net == "GND" else elm.GroundSignal().label(net, loc="right", fontsize=9)
        self.add(symbol.at(at))
        self.labels.append((at, net))

    def supply(self, at: Point, net: str = "3V3") -> None:
        """A supply symbol for ``net``."""
        self.add(elm.Vdd().at(at).label(net, fontsize=9))  # type: ignore[no-untyped-call]
        self.labels.append((at, net))

    def text(self, at: Point, text: str, size: float = 10, **kwargs: Any) -> None:
        """Free text (titles, captions)."""
        self.add(elm.Label().at(at).label(text, fontsize=size, **kwargs))

    def _pin(self, point: Any, ref: str, pin: str) -> None:
        self.pins.append(((float(point[0]), float(point[1])), ref, pin))

    # ---- checking ------------------------------------------------------------

    def connections(self) -> tuple[list[frozenset[tuple[str, str]]], dict[frozenset[tuple[str, str]], set[str]]]:
        """The pin groups the picture joins, and the net labels on each group."""
        parent: dict[tuple[float, float], tuple[float, float]] = {}

        def find(key: tuple[float, float]) -> tuple[float, float]:
            parent.setdefault(key, key)
            while parent[key] != key:
                parent[key] = parent[parent[key]]
                key = parent[key]
            return key

        def union(a: tuple[float, float], b: tuple[float, float]) -> None:
            parent[find(a)] = find(b)

        points = [_key(p) for p, _, _ in self.pins] + [_key(p) for p, _ in self.labels]
        points += [_key(p) for wire in self.wires for p in wire]
        for start, end in self.wires:
            union(_key(start), _key(end))
            for point in points:
                if _on_segment(point, _key(start), _key(end)):
                    union(point, _key(start))
        by_name: dict[str, tuple[float, float]] = {}
        for point, net in self.labels:
            union(_key(point), by_name.setdefault(net, _key(point)))
        groups: dict[tuple[float, float], set[tuple[str, str]]] = {}
        for point, ref, pin in self.pins:
            groups.setdefault(find(_key(point)), set()).add((ref, pin))
        names: dict[frozenset[tuple[str, str]], set[str]] = {}
        for root, members in groups.items():
            names[frozenset(members)] = {net for point, net in self.labels if find(_key(point)) == root}
        return [frozenset(members) for members in groups.values()], names

    def findings(self) -> list[str]:
        """Where the picture and the netlist disagree: missing parts, wrong joins, wrong labels."""
        findings = [
            f"{ref} is in the netlist but not in the drawing"
            for ref in sorted(set(self.netlist.components) - self.drawn)
        ]
        groups, names = self.connections()
        where = {member: group for group in groups for member in group}
        for net, nodes in sorted(self.netlist.nets.items()):
            finding = _compare(net, frozenset(nodes), where, names)
            if finding is not None:
                findings.append(finding)
        wired = {node for nodes in self.netlist.nets.values() for node in nodes}
        for _, ref, pin in self.pins:
            if (ref, pin) not in wired:
                findings.append(f"the drawing wires {ref}.{pin}, which is unconnected in the netlist")
        return findings

    def svg(self) -> bytes:
        """The picture as SVG."""
        return bytes(self.drawing.get_imagedata("svg"))


def _compare(
    net: str,
    wanted: frozenset[tuple[str, str]],
    where: dict[tuple[str, str], frozenset[tuple[str, str]]],
    names: dict[frozenset[tuple[str, str]], set[str]],
) -> str | None:
    """How the drawing's version of one netlist net differs from it, if it does."""
    missing = sorted(node for node in wanted if node not in where)
    if missing:
        return f"net {net}: the drawing has no pin {missing[0][0]}.{missing[0][1]}"
    found = {where[node] for node in wanted}
    if len(found) > 1:
        return f"net {net} is split into {len(found)} pieces in the drawing"
    (group,) = found
    extra = sorted(group - wanted)
    if extra:
        return f"net {net} is joined in the drawing to {extra[0][0]}.{extra[0][1]}"
    wrong = sorted(names[group] - {net})
    if wrong:
        return f"net {net} carries the label {wrong[0]} in the drawing"
    return None


def _on_segment(point: tuple[float, float], start: tuple[float, float], end: tuple[float, float]) -> bool:
    """Whether ``point`` lies on the straight wire from ``start`` to ``end`` (ends included)."""
    (x, y), (x1, y1), (x2, y2) = point, start, end
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    if abs(cross) > 1e-3:
        return False
    return min(x1, x2) - 1e-3 <= x <= max(x1, x2) + 1e-3 and min(y1, y2) - 1e-3 <= y <= max(y1, y2) + 1e-3
