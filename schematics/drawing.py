"""The schematic picture of the board for the docs, drawn from the netlist's own parts.

The line side is on the left, the Pi side on the right, and the dashed line
between them is the isolation barrier: only the transformer, the optocouplers
and the relay sit across it. Each part is captioned with its reference and
value from the netlist, and :meth:`~schematics.sheet.Sheet.findings` checks
that the wires drawn here join exactly the pins the netlist joins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemdraw.elements as elm

from schematics.catalogue import Catalogue
from schematics.netlist import Netlist
from schematics.sheet import Point, Sheet

__all__ = ["draw"]

BARRIER_X = 0.0
_LEFT = -24.0  # where section titles start
_OPTO_PINS = {"anode": "anode", "cathode": "cathode", "collector": "collector", "emitter": "emitter"}


def _at(p: Point, dx: float = 0.0, dy: float = 0.0) -> Point:
    return (p[0] + dx, p[1] + dy)


def _across(
    s: Sheet, make: Callable[[], Any], *, left: str, right: str, anchor: str, y: float
) -> tuple[Point, dict[str, Point]]:
    """Where to place ``make()`` so that it straddles the barrier with ``anchor`` at height ``y``."""
    offsets = s.measure(make)
    x = BARRIER_X - (offsets[left][0] + offsets[right][0]) / 2
    y0 = y - offsets[anchor][1]
    return (x, y0), {name: (x + dx, y0 + dy) for name, (dx, dy) in offsets.items()}


def _placed(s: Sheet, make: Callable[[], Any], anchor: str, at: Point) -> tuple[Point, dict[str, Point]]:
    """Where to place ``make()`` so that ``anchor`` lands on ``at``."""
    offsets = s.measure(make)
    xy = (at[0] - offsets[anchor][0], at[1] - offsets[anchor][1])
    return xy, {name: (xy[0] + dx, xy[1] + dy) for name, (dx, dy) in offsets.items()}


def draw(netlist: Netlist, catalogue: Catalogue) -> Sheet:
    """The whole board on one sheet."""
    sheet = Sheet(netlist, catalogue)
    _frame(sheet)
    _protection(sheet, y=0.0)
    _ring_detector(sheet, y=-7.0)
    _sense(sheet, y=-14.0)
    _hook_relay(sheet, y=-28.0)
    _audio(sheet, y=-42.0)
    _header(sheet, y=-55.0)
    return sheet


def _frame(s: Sheet) -> None:
    s.add(elm.Line().at((BARRIER_X, 3.5)).to((BARRIER_X, -63.0)).linestyle("--").color("#b03030"))
    s.text((-12.0, 5.0), "LINE SIDE (TNV): phone-line potentials", size=13)
    s.text((12.0, 5.0), "PI SIDE (SELV): Raspberry Pi and sound card", size=13)
    s.text(
        (BARRIER_X, 4.1), "isolation barrier: at least 6 mm of bare board between the sides", size=10, color="#b03030"
    )


def _title(s: Sheet, y: float, text: str) -> None:
    s.text((_LEFT, y), text, size=12, halign="left")


def _protection(s: Sheet, y: float) -> None:
    _title(s, y + 2.0, "Line input and protection")

    def jack() -> Any:
        return elm.Ic(pins=[elm.IcPin(name="RING", pin="2", side="R"), elm.IcPin(name="TIP", pin="3", side="R")])

    xy, a = _placed(s, jack, "pin3", (-21.0, y))
    s.multi("J1", jack().at(xy).label(s.caption("J1"), loc="left"), {"pin3": "TIP", "pin2": "RING"})
    s.wire(a["pin3"], (-20.0, y))
    tip_f = s.two("F1", (-20.0, y), "right", "1")
    s.wire(a["pin2"], _at(a["pin2"], 0.6), (a["pin2"][0] + 0.6, y - 3.0), (-20.0, y - 3.0))
    ring_f = s.two("F2", (-20.0, y - 3.0), "right", "1", side="below")
    s.wire(tip_f, (-12.0, y))
    s.wire(ring_f, (-12.0, y - 3.0))
    s.dot((-15.0, y))
    s.dot((-15.0, y - 3.0))
    s.two("D1", (-15.0, y), "down", "1", length=3.0)
    s.label((-12.0, y), "TIP_F")
    s.label((-12.0, y - 3.0), "RING_F")


def _ring_detector(s: Sheet, y: float) -> None:
    _title(s, y + 2.0, "Ring detector")
    xy, a = _across(s, elm.Optocoupler, left="anode", right="collector", anchor="anode", y=y)
    s.multi(
        "U1",
        elm.Optocoupler().at(xy),
        {"anode": "AC1", "cathode": "AC2", "collector": "C", "emitter": "E"},
        caption_at=_at(a["anode"], 3.6, 0.9),
    )
    start = _at(a["anode"], -11.0)
    s.label(start, "TIP_F", loc="left")
    s.wire(s.chain(start, "right", [("C1", "1"), ("R1", "1"), ("D2", "K"), ("D3", "A")]), a["anode"])
    s.wire(a["cathode"], _at(a["cathode"], -2.0))
    s.label(_at(a["cathode"], -2.0), "RING_F", loc="left")
    node, out = _at(a["collector"], 3.0), _at(a["collector"], 6.0)
    s.wire(a["collector"], node, out)
    s.dot(node)
    s.supply(s.two("R2", node, "up", "2", length=2.0))
    s.label(out, "RING")
    s.wire(a["emitter"], _at(a["emitter"], 0.0, -0.8))
    s.ground(_at(a["emitter"], 0.0, -0.8))


def _sense(s: Sheet, y: float) -> None:
    _title(s, y + 2.0, "Off-hook and polarity sense (about 8 uA from the line on-hook)")
    xy, a = _across(s, elm.Optocoupler, left="anode", right="collector", anchor="anode", y=y)
    s.multi(
        "U2",
        elm.Optocoupler().at(xy),
        {"anode": "AC1", "cathode": "AC2", "collector": "C", "emitter": "E"},
        caption_at=_at(a["anode"], 3.6, 0.9),
    )
    start = _at(a["anode"], -11.0)
    s.label(start, "TIP_F", loc="left")
    s.wire(s.chain(start, "right", [("R3", "1"), ("R4", "1"), ("D4", "K"), ("D5", "A")]), a["anode"])
    hs_a = _at(start, 2.5)
    s.dot(hs_a)
    s.label(s.two("C9", hs_a, "down", "1", length=2.5), "RING_F", loc="bottom")

    # U3 is drawn flipped: cathode on top (joined to U2's cathode, net HS_D), anode below (RING_F).
    def flipped() -> Any:
        return elm.Optocoupler().flip()

    xy3, b = _across(s, flipped, left="anode", right="collector", anchor="cathode", y=y - 4.5)
    s.multi(
        "U3",
        flipped().at(xy3),
        {"anode": "A", "cathode": "K", "collector": "C", "emitter": "E"},
        caption_at=_at(b["anode"], 1.2, -0.9),
    )
    s.wire(a["cathode"], b["cathode"])
    branch = _at(a["cathode"], 0.0, -1.5)
    s.dot(branch)
    s.wire(branch, _at(branch, -3.0))
    d6 = s.two("D6", _at(branch, -3.0), "down", "A", length=branch[1] - b["anode"][1], side="left")
    s.wire(b["anode"], d6, _at(d6, -2.0))
    s.dot(d6)
    s.label(_at(d6, -2.0), "RING_F", loc="left")
    _offhook_stage(s, a["collector"], a["emitter"])
    _polarity_stage(s, b["emitter"], b["collector"])


def _offhook_stage(s: Sheet, collector: Point, emitter: Point) -> None:
    s.wire(emitter, _at(emitter, 0.0, -0.6))
    s.ground(_at(emitter, 0.0, -0.6))
    node, cap, base = _at(collector, 2.0), _at(collector, 4.0), _at(collector, 6.0)
    s.wire(collector, node, cap, base)
    s.dot(node)
    s.dot(cap)
    s.supply(s.two("R5", node, "up", "2", length=2.0))
    s.ground(s.two("C2", cap, "down", "1", length=1.6))
    _output_transistor(s, "Q1", "R6", base, "OFFHOOK_SENSE")


def _polarity_stage(s: Sheet, emitter: Point, collector: Point) -> None:
    s.wire(collector, _at(collector, 1.2))
    s.label(_at(collector, 1.2), "3V3", loc="bottom")
    node, cap, base = _at(emitter, 2.6), _at(emitter, 4.6), _at(emitter, 10.0)
    s.wire(emitter, node, cap, base)
    s.dot(node)
    s.dot(cap)
    s.ground(s.two("R7", node, "down", "1", length=2.0))
    s.ground(s.two("C3", cap, "down", "1", length=2.0))
    _output_transistor(s, "Q2", "R8", base, "POLARITY")


def _output_transistor(s: Sheet, ref: str, pullup: str, base: Point, net: str) -> None:
    xy, q = _placed(s, elm.BjtNpn, "base", base)
    s.multi(
        ref,
        elm.BjtNpn().at(xy),
        {"base": "B", "collector": "C", "emitter": "E"},
        caption_at=_at(q["emitter"], 1.0, 0.3),
    )
    s.ground(q["emitter"])
    top = _at(q["collector"], 0.0, 0.8)
    s.wire(q["collector"], top, _at(top, 3.0))
    s.dot(top)
    s.supply(s.two(pullup, top, "up", "2", length=2.0, side="left"))
    s.label(_at(top, 3.0), net)


def _hook_relay(s: Sheet, y: float) -> None:
    _title(s, y + 2.0, "Hook relay with holding path")
    xy, k = _across(s, lambda: elm.Relay().reverse(), left="a", right="in1", anchor="a", y=y)
    s.multi(
        "K1",
        elm.Relay().reverse().at(xy),
        {"a": "LOAD2", "b": "LOAD1", "in1": "CTL+", "in2": "CTL-"},
        caption_at=_at(k["in1"], 1.4, 1.0),
    )

    # The bridge: AC in at top and bottom, DC- at the left corner, DC+ at the right.
    def bridge() -> Any:
        return elm.Rectifier()  # type: ignore[no-untyped-call]

    xy, d = _placed(s, bridge, "E", (-14.0, y - 3.5))
    s.multi("D7", bridge().at(xy), {"N": "~A", "S": "~B", "W": "-", "E": "+"}, caption_at=_at(d["S"], 1.8, -0.2))
    s.wire(d["N"], _at(d["N"], 0.0, 0.8))
    s.label(_at(d["N"], 0.0, 0.8), "TIP_F", loc="left")
    s.wire(d["S"], _at(d["S"], 0.0, -0.8))
    s.label(_at(d["S"], 0.0, -0.8), "RING_F", loc="left")
    corner = (-12.5, y)
    s.wire(d["E"], (corner[0], d["E"][1]), corner, k["a"])
    s.text(_at(corner, 1.4, 0.35), "LINE_P", size=8)
    # The electronic inductor: Q3 carries the loop current, R10/C4 set its base, D8 guards C4.
    hold = (-5.0, k["b"][1])
    s.wire(k["b"], hold)
    s.dot(hold)
    base_y = hold[1] - 2.5
    xy, q = _placed(s, elm.BjtNpn, "collector", (hold[0], base_y + 0.7))
    s.multi(
        "Q3",
        elm.BjtNpn().at(xy),
        {"base": "B", "collector": "C", "emitter": "E"},
        caption_at=_at(q["emitter"], 1.0, 0.3),
    )
    s.wire(hold, q["collector"])
    r10 = s.two("R10", hold, "left", "1", length=2.5)
    bnode = (r10[0], q["base"][1])
    s.wire(r10, bnode, q["base"])
    s.dot(bnode)
    rail = bnode[1] - 3.0
    s.two("C4", bnode, "down", "+", length=3.0)
    s.wire(bnode, _at(bnode, -2.0))
    s.two("D8", _at(bnode, -2.0), "down", "K", length=3.0, side="left")
    s.two("R11", q["emitter"], "down", "1", length=q["emitter"][1] - rail)
    west = d["W"]
    s.wire(west, _at(west, -1.0), (west[0] - 1.0, rail), (q["emitter"][0], rail))
    for x in (bnode[0] - 2.0, bnode[0]):
        s.dot((x, rail))
    s.text((west[0] + 1.0, rail - 0.4), "LINE_N", size=8)
    # The relay's LED, driven from HOOK_RELAY on the Pi side.
    s.wire(k["in1"], _at(k["in1"], 2.0))
    s.label(s.two("R9", _at(k["in1"], 2.0), "right", "2"), "HOOK_RELAY")
    s.wire(k["in2"], _at(k["in2"], 0.0, -0.6))
    s.ground(_at(k["in2"], 0.0, -0.6))


def _audio(s: Sheet, y: float) -> None:
    _title(s, y + 3.5, "Audio: transformer, clamps, line-in divider, line-out attenuator")
    xy, t = _across(s, lambda: elm.Transformer(t1=4, t2=4), left="p1", right="s1", anchor="p1", y=y)
    s.multi(
        "T1",
        elm.Transformer(t1=4, t2=4).at(xy),
        {"p1": "P1", "p2": "P2", "s1": "S1", "s2": "S2"},
        caption_at=_at(t["p1"], 2.3, 1.0),
    )
    start = _at(t["p1"], -6.5)
    s.label(start, "TIP_F", loc="left")
    s.wire(s.two("C5", start, "right", "1", length=3.0), t["p1"])
    s.wire(t["p2"], _at(t["p2"], -6.5))
    s.label(_at(t["p2"], -6.5), "RING_F", loc="left")
    # Secondary: AUD_S along the top, AGND along the bottom rail.
    aud = _at(t["s1"], 2.0)
    rail = y - 5.5
    s.wire(t["s1"], aud)
    s.dot(aud)
    s.two("D10", s.two("D9", aud, "down", "K", length=1.8), "down", "A", length=1.8)
    s.wire((aud[0], y - 3.6), (aud[0], rail))
    lin = _at(aud, 5.0)
    s.wire(aud, _at(aud, 1.0))
    s.wire(s.two("R12", _at(aud, 1.0), "right", "1"), lin)
    s.dot(lin)
    taps = [(lin, "R13", "1"), (_at(lin, 2.5), "D11", "A"), (_at(lin, 5.0), "D12", "K")]
    s.wire(lin, taps[-1][0])
    for point, ref, first in taps:
        s.wire(s.two(ref, point, "down", first, length=3.6), (point[0], rail))
    s.dot(taps[1][0])
    s.dot(taps[2][0])
    s.wire(t["s2"], (t["s2"][0], rail), (taps[-1][0][0], rail))
    for point, _, _ in taps:
        s.dot((point[0], rail))
    s.dot((aud[0], rail))
    s.ground((taps[1][0][0], rail), "AGND")
    line_in = s.two("C6", taps[-1][0], "right", "1")
    _jack(s, "J3", line_in, "to the sound card input")
    # Line out: J4 -> C7 -> R14 -> AUD_S.
    out = _at(aud, 0.0, 3.0)
    s.wire(aud, out)
    _jack(s, "J4", s.two("C7", s.two("R14", out, "right", "2"), "right", "2"), "from the sound card output")


def _jack(s: Sheet, ref: str, at: Point, caption: str) -> None:
    tip = _at(at, 1.0)

    def jack() -> Any:
        return elm.AudioJack().reverse()

    xy, j = _placed(s, jack, "tip", tip)
    s.multi(ref, jack().at(xy), {"tip": "T", "sleeve": "S"})
    s.text(_at(tip, 1.0, 1.2), f"{s.caption(ref)} ({caption})", size=9, halign="left")
    s.wire(at, tip)
    s.wire(j["sleeve"], _at(j["sleeve"], 0.0, -0.8))
    s.ground(_at(j["sleeve"], 0.0, -0.8), "AGND")


def _header(s: Sheet, y: float) -> None:
    _title(s, y + 3.0, "Raspberry Pi header (only the pins the board uses), status LED, decoupling")
    spec = s.spec("J2")
    used = s.netlist.pins_of("J2")
    names = {p.number: p.name for p in spec.pins}
    order = sorted(used, key=int, reverse=True)  # schemdraw lists right-side pins from the bottom up

    def header() -> Any:
        return elm.Ic(pins=[elm.IcPin(name=names[n], pin=n, side="R") for n in order], pinspacing=1.0)

    xy, h = _placed(s, header, f"pin{order[-1]}", (6.0, y))
    s.multi("J2", header().at(xy).label(s.caption("J2"), loc="left"), {f"pin{n}": n for n in order})
    for n in order:
        end = _at(h[f"pin{n}"], 2.5)
        s.wire(h[f"pin{n}"], end)
        s.label(end, used[n])
    led = (15.0, y)
    s.label(led, "LED", loc="left")
    s.ground(s.two("D13", s.two("R15", led, "right", "1"), "down", "A", length=2.0))
    c8 = (21.0, y - 1.0)
    s.supply(c8)
    s.ground(s.two("C8", c8, "down", "1", length=2.0))
