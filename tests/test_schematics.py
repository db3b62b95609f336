"""The line-interface board: ERC, isolation, voltage ratings, the shared pin map, and the files in hardware/.

Everything here builds the real board with SKiDL and checks the real KiCad
netlist it writes; the negative tests change one thing on a real board (a part
across the barrier, an under-rated part, an edited pin map) and expect the
check that guards it to say so.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest

from firmware.config import default_gpio
from schematics import checks
from schematics.board import Board, build
from schematics.bom import COLUMNS, bom_rows
from schematics.build import BOM, HARDWARE, NETLIST, PICTURE, Outputs, main, make_outputs
from schematics.catalogue import load_catalogue
from schematics.drawing import draw
from schematics.errors import SchematicError
from schematics.netlist import Netlist, parse, render
from schematics.pinmap import PIN_MAP_PATH, SIGNALS, load_pin_map

BARRIER_PARTS = {"K1", "T1", "U1", "U2", "U3"}
LINE_SIDE_PARTS = {
    "J1", "F1", "F2", "D1",                      # jack and protection
    "C1", "R1", "D2", "D3",                      # ring detector
    "R3", "R4", "C9", "D4", "D5", "D6",          # off-hook and polarity chain
    "D7", "Q3", "R10", "C4", "D8", "R11",        # bridge and holding path
    "C5",                                        # audio series capacitor
}  # fmt: skip


@pytest.fixture(scope="module")
def outputs() -> Outputs:
    return make_outputs()


@pytest.fixture(scope="module")
def line() -> checks.LineSpec:
    return checks.load_line_spec()


def netlist_of(board: Board) -> Netlist:
    return parse(render(board))


# ---- ERC ------------------------------------------------------------------------


def test_the_board_passes_erc_with_no_errors_and_no_warnings(outputs: Outputs) -> None:
    assert checks.erc(outputs.board) == ([], [])


def test_erc_reports_a_net_with_a_single_pin() -> None:
    board = build()
    board.place("R99", "MFR-25FBF52-10K", {"1": "3V3", "2": "FLOAT"})
    assert checks.erc(board) == ([], ["Only one pin (PASSIVE pin 2/2 of MFR-25FBF52-10K/R99) attached to net FLOAT."])


def test_erc_reports_a_gpio_output_tied_to_the_supply() -> None:
    board = build()
    board.net("3V3").connect(board.pin("J2", "16"))  # GPIO23, which the firmware drives (HOOK_RELAY)
    errors, _ = checks.erc(board)
    assert len(errors) == 1
    # SKiDL names the two pins in either order.
    assert errors[0].startswith("Pin conflict on net ")
    assert "OUTPUT pin 16/GPIO23 of PPPC202LFBN-RC/J2" in errors[0]
    assert "POWER-OUT pin 1/3V3 of PPPC202LFBN-RC/J2" in errors[0]


def test_a_pin_neither_wired_nor_marked_unconnected_is_refused() -> None:
    board = build()
    with pytest.raises(SchematicError) as caught:
        board.place("U9", "H11AA1", {"AC1": "TIP_F", "AC2": "RING_F", "E": "GND", "C": "RING"})
    assert str(caught.value) == "U9 (H11AA1): pins 3 (NC), 6 (B) are neither wired nor marked unconnected"


def test_a_pin_name_used_twice_must_be_given_by_number() -> None:
    board = build()
    with pytest.raises(SchematicError) as caught:
        board.pin("J2", "GND")
    assert str(caught.value) == "J2 (PPPC202LFBN-RC) has more than one pin 'GND'"
    assert board.pin("J2", "6").net.name == "GND"


# ---- isolation ----------------------------------------------------------------


def test_no_net_joins_the_line_side_to_the_pi_side(outputs: Outputs) -> None:
    side, findings = checks.sides(outputs.netlist)
    assert findings == []
    assert set(side.values()) == {"line", "pi"}
    assert {net for net, where in side.items() if where == "line"} >= {"TIP_IN", "RING_IN", "TIP_F", "RING_F", "LINE_P"}
    assert {"GND", "3V3", "AGND", "AUD_S", "RING", "OFFHOOK_SENSE"} <= {n for n, where in side.items() if where == "pi"}


def test_only_the_transformer_optocouplers_and_relay_have_pins_on_both_sides(outputs: Outputs) -> None:
    netlist = outputs.netlist
    side, _ = checks.sides(netlist)
    straddling = {
        ref for ref in netlist.components if {side[net] for net in netlist.pins_of(ref).values()} == {"line", "pi"}
    }
    assert straddling == BARRIER_PARTS
    for ref in straddling:
        fields = netlist.components[ref].fields
        assert fields["Barrier"] in {"transformer", "optocoupler", "relay"}
        pins = netlist.pins_of(ref)
        # Each part bridges only between its own pin groups: primary on the line, secondary on the Pi.
        assert {side[pins[p]] for p in fields["Line pins"].split(",") if p in pins} == {"line"}, ref
        assert {side[pins[p]] for p in fields["Pi pins"].split(",") if p in pins} == {"pi"}, ref


def test_barrier_parts_isolate_at_least_1500_vrms(outputs: Outputs, line: checks.LineSpec) -> None:
    assert checks.isolation(outputs.netlist, line) == []
    ratings = {ref: outputs.netlist.components[ref].fields["Isolation"] for ref in BARRIER_PARTS}
    assert ratings == {"K1": "3750 Vrms", "T1": "2120 Vrms", "U1": "5300 Vrms", "U2": "5300 Vrms", "U3": "5000 Vrms"}
    assert line.isolation_min_vrms == 1500


def test_a_resistor_joining_a_line_net_to_a_pi_net_is_caught(line: checks.LineSpec) -> None:
    board = build()
    board.place("R99", "MFR-25FBF52-10K", {"1": "HS_A", "2": "OH_B"})
    findings = checks.isolation(netlist_of(board), line)
    assert len(findings) == 1
    prefix = "the line side reaches the Pi side without crossing a barrier part: "
    assert findings[0].startswith(prefix)
    # The path runs from the jack, through R99, to a net on the Pi header.
    path = findings[0].removeprefix(prefix).split(", ")
    assert path[0] in {"TIP_IN", "RING_IN"}
    assert path[path.index("R99") - 1 : path.index("R99") + 2] == ["HS_A", "R99", "OH_B"]
    assert path[-1] in {"3V3", "GND"}


def test_an_optocoupler_fitted_the_wrong_way_round_is_caught(line: checks.LineSpec) -> None:
    board = build()
    board.place("U9", "LTV-817", {"A": "3V3", "K": "GND", "E": "HS_A", "C": "HS_B"})
    assert checks.isolation(netlist_of(board), line) == [
        "U9's line-side pins are on 3V3, GND, which is not the line side",
        "U9's pi-side pins are on HS_A, HS_B, which is not the pi side",
    ]


def test_a_barrier_part_below_the_isolation_minimum_is_caught(line: checks.LineSpec) -> None:
    board = build()
    board.parts["U3"].fields["Isolation"] = "1000 Vrms"
    assert checks.isolation(netlist_of(board), line) == [
        "U3 isolates 1000 Vrms; a barrier part needs at least 1500 Vrms"
    ]


# ---- voltage ratings --------------------------------------------------------------


def test_every_line_side_part_is_rated_for_the_line(outputs: Outputs, line: checks.LineSpec) -> None:
    netlist = outputs.netlist
    side, _ = checks.sides(netlist)
    assert checks.ratings(netlist, side, line) == []
    on_line = {ref for ref in netlist.components if "line" in {side[n] for n in netlist.pins_of(ref).values()}}
    assert on_line == LINE_SIDE_PARTS | BARRIER_PARTS


def test_the_line_numbers_come_from_the_reference(line: checks.LineSpec) -> None:
    # 90 Vrms ringing on 48 V; the protector's 275 V standoff must stay above it.
    assert line.working_peak == pytest.approx(90 * math.sqrt(2) + 48)
    assert line.power_cross_peak == pytest.approx(600 * math.sqrt(2))


def test_an_under_rated_resistor_in_the_hook_sense_is_caught(line: checks.LineSpec) -> None:
    board = build()
    # The same 2.2 MOhm in an ordinary 250 V quarter-watt part instead of the 1600 V VR25.
    board.parts["R3"].fields.update(board.catalogue["MFR-25FBF52-2M2"].fields())
    netlist = netlist_of(board)
    side, _ = checks.sides(netlist)
    assert checks.ratings(netlist, side, line) == [
        "R3 (MFR-25FBF52-2M2) is rated 250 V but can see 350 V between HS_A and TIP_F"
    ]


def test_a_protector_that_would_fire_on_ringing_is_caught(line: checks.LineSpec) -> None:
    board = build()
    board.parts["D1"].fields["Voltage"] = "150 V"
    netlist = netlist_of(board)
    side, _ = checks.sides(netlist)
    assert checks.ratings(netlist, side, line) == ["D1 (standoff 150 V) would fire on ringing: the line reaches 175 V"]


def test_without_a_surge_protector_the_400_v_capacitors_are_under_rated(line: checks.LineSpec) -> None:
    board = build()
    del board.parts["D1"].fields["Role"]
    netlist = netlist_of(board)
    side, _ = checks.sides(netlist)
    findings = checks.ratings(netlist, side, line)
    assert findings[0] == "no surge protector sits on the line side"
    assert "C1 (ECQ-E4474KF) is rated 400 V but can see 849 V between RD_C and TIP_F" in findings


def test_a_clamp_lets_a_low_voltage_part_sit_on_the_line(outputs: Outputs, line: checks.LineSpec) -> None:
    # C4 (25 V) sits across the holding transistor's base, which D8 (12 V zener) clamps.
    board = build()
    board.parts["C4"].fields["Voltage"] = "12 V"
    netlist = netlist_of(board)
    side, _ = checks.sides(netlist)
    assert checks.ratings(netlist, side, line) == [
        "C4 (EEU-FR1E220) is rated 12 V but can see 12.6 V between HOLD_B and LINE_N"
    ]


# ---- the pin map shared with the firmware ------------------------------------------


def test_the_netlist_gpio_assignments_equal_the_firmware_default_pin_map(outputs: Outputs) -> None:
    netlist, catalogue = outputs.netlist, outputs.board.catalogue
    names = {pin.number: pin.name for pin in catalogue[netlist.components["J2"].fields["MPN"]].pins}
    header = netlist.pins_of("J2")
    on_board = {}
    for signal in SIGNALS:
        (pin,) = [p for p, net in header.items() if net == signal.net]
        on_board[signal.setting] = int(names[pin].removeprefix("GPIO"))
    firmware = default_gpio()
    assert on_board == {signal.setting: getattr(firmware, signal.setting) for signal in SIGNALS}
    assert checks.gpio(netlist, catalogue, firmware) == []


def test_the_board_reads_the_firmware_pin_map_file() -> None:
    assert load_pin_map() == {"ring": 17, "offhook_sense": 27, "polarity": 22, "hook_relay": 23, "led": 24}
    assert PIN_MAP_PATH.name == "pins.toml"
    assert PIN_MAP_PATH.parent.name == "data"


def test_a_pin_map_edited_in_a_copy_is_caught_by_the_gpio_comparison(tmp_path: Path) -> None:
    copy = tmp_path / "pins.toml"
    copy.write_text(PIN_MAP_PATH.read_text(encoding="utf-8").replace("ring = 17", "ring = 5"), encoding="utf-8")
    outputs = make_outputs(copy)
    assert outputs.findings == ["RING is on J2 pin 29 (GPIO5) but the firmware's default ring_pin is GPIO17"]


def test_a_missing_pull_up_on_an_active_low_input_is_caught(outputs: Outputs) -> None:
    netlist = outputs.netlist
    without = Netlist(
        {ref: comp for ref, comp in netlist.components.items() if ref != "R2"},
        {net: tuple(n for n in nodes if n[0] != "R2") for net, nodes in netlist.nets.items()},
    )
    assert checks.gpio(without, outputs.board.catalogue, default_gpio()) == [
        "RING is read active-low by the firmware but has no pull-up resistor to 3V3"
    ]


# ---- the files in hardware/ --------------------------------------------------------


def test_the_committed_netlist_bom_and_picture_are_up_to_date(outputs: Outputs) -> None:
    assert outputs.findings == []
    for name, data in outputs.files.items():
        committed = (HARDWARE / name).read_bytes()
        assert committed == data, f"hardware/{name} is out of date: run `make schematics`"


def test_the_outputs_hold_no_dates_or_paths_so_builds_repeat(outputs: Outputs) -> None:
    again = make_outputs()
    assert again.files == outputs.files
    text = outputs.files[NETLIST].decode()
    assert '(date "")' in text
    assert '(source "schematics/board.py")' in text
    assert str(Path.cwd()) not in text


def test_the_picture_shows_every_part_with_its_reference_and_value(outputs: Outputs) -> None:
    lines = re.findall(r">([^<>]+)</tspan>", outputs.files[PICTURE].decode())
    for ref, comp in outputs.netlist.components.items():
        assert ref in lines, ref
        assert any(comp.value in line for line in lines), (ref, comp.value)


def test_the_picture_and_the_netlist_join_the_same_pins(outputs: Outputs) -> None:
    assert draw(outputs.netlist, outputs.board.catalogue).findings() == []


def test_a_picture_that_differs_from_the_netlist_is_caught(outputs: Outputs) -> None:
    # Move R2 (the ring pull-up) from 3V3 to GND in the netlist; the drawing still shows it on 3V3.
    nets = {net: tuple(n for n in nodes if n != ("R2", "1")) for net, nodes in outputs.netlist.nets.items()}
    nets["GND"] = (*nets["GND"], ("R2", "1"))
    findings = draw(Netlist(outputs.netlist.components, nets), outputs.board.catalogue).findings()
    assert "net 3V3 is joined in the drawing to R2.1" in findings


def test_the_bom_lists_every_part_once_with_its_ratings(outputs: Outputs) -> None:
    rows = list(csv.DictReader(io.StringIO(outputs.files[BOM].decode())))
    assert tuple(rows[0]) == COLUMNS
    refs = [ref for row in rows for ref in row["References"].split()]
    assert sorted(refs) == sorted(outputs.netlist.components)
    assert sum(int(row["Quantity"]) for row in rows) == len(refs)
    for row in rows:
        assert row["MPN"] and row["Voltage rating"] and row["Footprint"] and row["Manufacturer"], row
        assert int(row["Quantity"]) == len(row["References"].split())
    by_ref = {row["References"]: row for row in rows}
    assert by_ref["C1 C5"]["Voltage rating"] == "400 V"
    assert by_ref["U3"]["Voltage rating"] == "35 V; line side 6 V"
    assert by_ref["T1"]["Isolation"] == "2120 Vrms"
    assert bom_rows(outputs.netlist) == rows


# ---- the command ------------------------------------------------------------------


def test_make_schematics_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([BOM, NETLIST, PICTURE])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "schematics: ERC, isolation, ratings, pin map and drawing checks pass (51 parts, 37 nets)"
    assert out[1:] == [f"schematics: wrote {tmp_path / name}" for name in (NETLIST, BOM, PICTURE)]


def test_make_schematics_writes_nothing_when_a_check_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pins = tmp_path / "pins.toml"
    pins.write_text(PIN_MAP_PATH.read_text(encoding="utf-8").replace("led = 24", "led = 4"), encoding="utf-8")
    out = tmp_path / "out"
    assert main([str(out), "--pins", str(pins)]) == 1
    assert not out.exists()
    assert capsys.readouterr().err.splitlines() == [
        "schematics: check failed: LED is on J2 pin 7 (GPIO4) but the firmware's default led_pin is GPIO24",
        "schematics: 1 checks failed; nothing written",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[pins]\nring = 'x'\n", "pins.ring = 'x' in {path}; expected a BCM GPIO number from 0 to 27"),
        (
            "[pins\n",
            "the pin map {path} is not valid TOML: "
            "Expected ']' at the end of a table declaration (at line 1, column 6)",
        ),
        ("[levels]\n", "the pin map {path} has no [pins] table"),
        (
            "[pins]\nring = 17\noffhook_sense = 17\npolarity = 22\nhook_relay = 23\nled = 24\n",
            "the pin map {path} gives two signals the same GPIO: "
            "{{'ring': 17, 'offhook_sense': 17, 'polarity': 22, 'hook_relay': 23, 'led': 24}}",
        ),
    ],
)
def test_a_bad_pin_map_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    pins = tmp_path / "pins.toml"
    pins.write_text(text, encoding="utf-8")
    assert main([str(tmp_path / "out"), "--pins", str(pins)]) == 2
    assert capsys.readouterr().err == f"schematics: {error.format(path=pins)}\n"


def test_a_gpio_missing_from_the_header_is_refused() -> None:
    pins = load_pin_map() | {"led": 0, "ring": 1, "offhook_sense": 2, "polarity": 3, "hook_relay": 26}
    build(pins)  # GPIO0 to GPIO3 and GPIO26 are all on the header
    with pytest.raises(SchematicError, match=r"^pins.led = 28: GPIO28 is not on the 40-pin header$"):
        build(pins | {"led": 28})


def test_the_parts_catalogue_refuses_a_rating_it_cannot_read(tmp_path: Path) -> None:
    parts = tmp_path / "parts.toml"
    parts.write_text(
        '[X1]\nkind = "resistor"\nvalue = "1k"\nmanufacturer = "m"\ndescription = "d"\n'
        'footprint = "f"\nvoltage = "lots"\nsource = "s"\n',
        encoding="utf-8",
    )
    with pytest.raises(SchematicError) as caught:
        load_catalogue(parts)
    assert str(caught.value) == "parts.toml [X1]: voltage = 'lots'; expected a rating such as '400 V' or '600 Vrms'"


def test_a_damaged_netlist_is_a_clear_error() -> None:
    with pytest.raises(SchematicError, match=r"^the netlist is not one complete s-expression$"):
        parse('(export (components (comp (ref "R1"))')
    with pytest.raises(SchematicError, match=r"^net N names R9, which is not among the netlist's components$"):
        parse('(export (components) (nets (net (code 1) (name "N") (node (ref "R9") (pin "1")))))')


def test_building_leaves_no_skidl_files_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    board = build()
    checks.erc(board)
    render(board)
    assert list(tmp_path.iterdir()) == []
