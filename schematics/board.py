"""The line-interface board, described with SKiDL.

Every part comes from ``parts.toml`` and every pin of it is named below: wired
to a net, or ``None`` for a pin left unconnected on purpose (SKiDL's
no-connect). The sections follow the signal from the phone jack inwards:

* line input and protection: RJ11 jack, PTC fuses on tip and ring, a SIDACtor
  across the protected pair;
* ring detector: 0.47 uF film capacitor, 15 kOhm, back-to-back 10 V zeners,
  H11AA1 optocoupler; its output pulls ``RING`` low at twice the ring frequency;
* off-hook and polarity sense: 2 x 2.2 MOhm with a 47 nF filter between them,
  back-to-back 12 V zeners and an H11AA1 in series with a polarity LTV-817 (a
  1N4148 carries the normal-polarity half). Below about 15 V neither lights: a
  phone is off-hook. Two BC547C stages on the Pi side make logic levels of the
  microamps the chain draws;
* hook relay with holding path: a DF06M bridge, the LCA110 OptoMOS relay and a
  KSP44 electronic inductor that carries the loop current while keeping a high
  impedance for speech;
* audio: 0.47 uF 400 V series capacitor (audio reaches the card on-hook, for
  caller ID) into the P5100 600:600 transformer; on the Pi side 4.7 V zener
  clamps, a divider and 1N4148 clamps to the sound card's input, and the
  4.7 kOhm line-out attenuator;
* the Raspberry Pi header, status LED and the two jacks to the USB sound card.

``AGND`` (the sound card's ground) is not joined to the header's ``GND`` on the
board: the USB cable already joins them, and a second join would make a hum loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schematics.catalogue import Catalogue, PartSpec, load_catalogue
from schematics.errors import SchematicError
from schematics.pinmap import SIGNALS, load_pin_map
from schematics.skidl_quiet import skidl

__all__ = ["Board", "build"]

_FUNCTIONS = {
    "passive": "PASSIVE",
    "input": "INPUT",
    "output": "OUTPUT",
    "bidir": "BIDIR",
    "power_out": "PWROUT",
    "power_in": "PWRIN",
    "open_collector": "OPENCOLL",
    "no_connect": "NOCONNECT",
}


@dataclass
class Board:
    """A SKiDL circuit of the board, with its parts by reference and its nets by name."""

    catalogue: Catalogue
    circuit: Any = None
    parts: dict[str, Any] = field(default_factory=dict)
    nets: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.circuit is None:
            self.circuit = skidl().Circuit()
            # Nothing on disk: the netlist comes back as text, ERC messages through skidl_quiet.
            self.circuit.no_files = True

    def spec(self, ref: str) -> PartSpec:
        """The catalogue entry of a placed part."""
        return self.catalogue[self.parts[ref].fields["MPN"]]

    def net(self, name: str) -> Any:
        """The net called ``name``, made on first use."""
        if name not in self.nets:
            self.nets[name] = skidl().Net(name, circuit=self.circuit)
        return self.nets[name]

    def pin(self, ref: str, name: str) -> Any:
        """A placed part's pin, by number or by a name the part uses once."""
        return self.parts[ref].p[_number(self.spec(ref), ref, name)]

    def place(self, ref: str, mpn: str, wiring: Mapping[str, str | None]) -> Any:
        """Put ``mpn`` on the board as ``ref`` and wire every one of its pins.

        ``wiring`` maps each pin (number or name) to a net name, or to None for a
        pin left open on purpose. A pin missing from it is a mistake.
        """
        sk = skidl()
        spec = self.catalogue[mpn]
        if ref in self.parts or not ref.startswith(spec.prefix) or not ref[len(spec.prefix) :].isdigit():
            msg = f"reference {ref!r} for {mpn} is taken or does not look like {spec.prefix}<number>"
            raise SchematicError(msg)
        nets = {_number(spec, ref, name): net for name, net in wiring.items()}
        missing = [
            p.name if p.name == p.number else f"{p.number} ({p.name})" for p in spec.pins if p.number not in nets
        ]
        if missing:
            msg = f"{ref} ({mpn}): pins {', '.join(missing)} are neither wired nor marked unconnected"
            raise SchematicError(msg)
        pins = [
            sk.Pin(num=p.number, name=p.name, func=getattr(sk.Pin.types, _FUNCTIONS[p.function])) for p in spec.pins
        ]
        part = sk.Part(
            tool=sk.SKIDL,
            name=mpn,
            ref_prefix=spec.prefix,
            ref=ref,
            tag=ref,
            circuit=self.circuit,
            pins=pins,
            value=spec.value,
            footprint=spec.footprint,
            description=spec.description,
        )
        part.fields.update(spec.fields())
        self.parts[ref] = part
        for number, net in nets.items():
            if net is None:
                self.circuit.NC += part.p[number]
            else:
                self.net(net).connect(part.p[number])
        return part


def _number(spec: PartSpec, ref: str, name: str) -> str:
    """The number of the pin of ``spec`` that ``name`` (a number, or a name used once) means."""
    numbers = [p.number for p in spec.pins if p.number == name] or [p.number for p in spec.pins if p.name == name]
    if len(numbers) != 1:
        msg = f"{ref} ({spec.mpn}) has {'no' if not numbers else 'more than one'} pin {name!r}"
        raise SchematicError(msg)
    return numbers[0]


def build(pins: Mapping[str, int] | None = None, catalogue: Catalogue | None = None) -> Board:
    """The whole board, its GPIO signals on the header pins that ``pins`` (the pin map) names."""
    board = Board(catalogue or load_catalogue())
    _line_input(board)
    _ring_detector(board)
    _hook_and_polarity_sense(board)
    _hook_relay(board)
    _audio(board)
    _pi_side(board, load_pin_map() if pins is None else pins)
    return board


def _line_input(b: Board) -> None:
    b.place("J1", "DS1133-S4", {"TIP": "TIP_IN", "RING": "RING_IN", "L2_A": None, "L2_B": None})
    b.place("F1", "TRF600-150", {"1": "TIP_IN", "2": "TIP_F"})
    b.place("F2", "TRF600-150", {"1": "RING_IN", "2": "RING_F"})
    b.place("D1", "P3100SB", {"1": "TIP_F", "2": "RING_F"})


def _ring_detector(b: Board) -> None:
    b.place("C1", "ECQ-E4474KF", {"1": "TIP_F", "2": "RD_C"})
    b.place("R1", "PR02000201502JR500", {"1": "RD_C", "2": "RD_R"})
    b.place("D2", "1N4740A", {"K": "RD_R", "A": "RD_Z"})
    b.place("D3", "1N4740A", {"A": "RD_Z", "K": "RD_L"})
    b.place("U1", "H11AA1", {"AC1": "RD_L", "AC2": "RING_F", "NC": None, "E": "GND", "C": "RING", "B": None})
    b.place("R2", "MFR-25FBF52-10K", {"1": "3V3", "2": "RING"})


def _hook_and_polarity_sense(b: Board) -> None:
    b.place("R3", "VR25000002204JA500", {"1": "TIP_F", "2": "HS_A"})
    # C9 averages out the ringing (about 50 ms with R3 and R4): the chain follows the battery,
    # so neither the off-hook nor the polarity input flickers while the line rings.
    b.place("C9", "ECQ-E4473KF", {"1": "HS_A", "2": "RING_F"})
    b.place("R4", "VR25000002204JA500", {"1": "HS_A", "2": "HS_B"})
    b.place("D4", "1N4742A", {"K": "HS_B", "A": "HS_Z"})
    b.place("D5", "1N4742A", {"A": "HS_Z", "K": "HS_C"})
    b.place("U2", "H11AA1", {"AC1": "HS_C", "AC2": "HS_D", "NC": None, "E": "GND", "C": "OH_B", "B": None})
    # Reversed polarity (ring above tip) lights U3; D6 carries the normal-polarity current.
    b.place("U3", "LTV-817", {"A": "RING_F", "K": "HS_D", "E": "PL_B", "C": "3V3"})
    b.place("D6", "1N4148", {"A": "HS_D", "K": "RING_F"})
    # Off-hook: U2 dark lets R5 turn Q1 on, pulling OFFHOOK_SENSE low. The 22 kOhm pull-ups
    # hold their inputs high even against the Pi's own pull-down (linerec selftest reads
    # POLARITY with it), and Q1/Q2 still sink them with a microamp of base current.
    b.place("R5", "MFR-25FBF52-2M2", {"1": "3V3", "2": "OH_B"})
    b.place("C2", "C320C103K5R5TA", {"1": "OH_B", "2": "GND"})
    b.place("Q1", "BC547C", {"B": "OH_B", "E": "GND", "C": "OFFHOOK_SENSE"})
    b.place("R6", "MFR-25FBF52-22K", {"1": "3V3", "2": "OFFHOOK_SENSE"})
    # Polarity: U3 lit turns Q2 on, pulling POLARITY low.
    b.place("R7", "MFR-25FBF52-2M2", {"1": "PL_B", "2": "GND"})
    b.place("C3", "C320C103K5R5TA", {"1": "PL_B", "2": "GND"})
    b.place("Q2", "BC547C", {"B": "PL_B", "E": "GND", "C": "POLARITY"})
    b.place("R8", "MFR-25FBF52-22K", {"1": "3V3", "2": "POLARITY"})


def _hook_relay(b: Board) -> None:
    b.place("D7", "DF06M", {"~A": "TIP_F", "~B": "RING_F", "+": "LINE_P", "-": "LINE_N"})
    b.place("R9", "MFR-25FBF52-330R", {"1": "HOOK_RELAY", "2": "K1_LED"})
    b.place(
        "K1", "LCA110", {"CTL+": "K1_LED", "CTL-": "GND", "NC": None, "LOAD1": "HOLD_C", "DNU": None, "LOAD2": "LINE_P"}
    )
    # The holding path: an electronic inductor, DC through Q3, speech sees R10 and C4 instead.
    b.place("Q3", "KSP44", {"C": "HOLD_C", "B": "HOLD_B", "E": "HOLD_E"})
    b.place("R10", "PR02000203301JR500", {"1": "HOLD_C", "2": "HOLD_B"})
    b.place("C4", "EEU-FR1E220", {"+": "HOLD_B", "-": "LINE_N"})
    b.place("D8", "1N4742A", {"K": "HOLD_B", "A": "LINE_N"})
    b.place("R11", "PR02000202209JR500", {"1": "HOLD_E", "2": "LINE_N"})


def _audio(b: Board) -> None:
    b.place("C5", "ECQ-E4474KF", {"1": "TIP_F", "2": "AUD_P"})
    b.place("T1", "P5100", {"P1": "AUD_P", "P2": "RING_F", "S1": "AUD_S", "S2": "AGND"})
    b.place("D9", "BZX79-C4V7", {"K": "AUD_S", "A": "AUD_Z"})
    b.place("D10", "BZX79-C4V7", {"A": "AUD_Z", "K": "AGND"})
    b.place("R12", "MFR-25FBF52-10K", {"1": "AUD_S", "2": "LIN_D"})
    b.place("R13", "MFR-25FBF52-2K2", {"1": "LIN_D", "2": "AGND"})
    b.place("D11", "1N4148", {"A": "LIN_D", "K": "AGND"})
    b.place("D12", "1N4148", {"A": "AGND", "K": "LIN_D"})
    b.place("C6", "ECQ-E1105KF", {"1": "LIN_D", "2": "LINE_IN"})
    b.place("J3", "SJ1-3533NG", {"T": "LINE_IN", "R": None, "S": "AGND"})
    b.place("J4", "SJ1-3533NG", {"T": "LINE_OUT", "R": None, "S": "AGND"})
    b.place("C7", "ECQ-E1105KF", {"1": "LINE_OUT", "2": "LO_C"})
    b.place("R14", "MFR-25FBF52-4K7", {"1": "LO_C", "2": "AUD_S"})


def _pi_side(b: Board, pins: Mapping[str, int]) -> None:
    header = b.catalogue["PPPC202LFBN-RC"]
    by_gpio = {p.name: p.number for p in header.pins}
    wiring: dict[str, str | None] = {p.number: None for p in header.pins}
    wiring.update({"1": "3V3", "6": "GND"})
    directions = {}
    for signal in SIGNALS:
        gpio = f"GPIO{pins[signal.key]}"
        if gpio not in by_gpio:
            msg = f"pins.{signal.key} = {pins[signal.key]}: GPIO{pins[signal.key]} is not on the 40-pin header"
            raise SchematicError(msg)
        wiring[by_gpio[gpio]] = signal.net
        directions[by_gpio[gpio]] = signal.direction
    b.place("J2", "PPPC202LFBN-RC", wiring)
    sk = skidl()
    for number, direction in directions.items():
        # The firmware reads the inputs and drives the outputs: that is what the ERC checks against.
        b.parts["J2"].p[number].func = sk.Pin.types.INPUT if direction == "input" else sk.Pin.types.OUTPUT
    b.place("R15", "MFR-25FBF52-470R", {"1": "LED", "2": "LED_A"})
    b.place("D13", "WP7113GD", {"A": "LED_A", "K": "GND"})
    b.place("C8", "C320C104K5R5TA", {"1": "3V3", "2": "GND"})
