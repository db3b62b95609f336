"""``make schematics``: build the board, check it, and write its netlist, BOM and picture.

    python -m schematics.build [OUTDIR] [--pins PINS.toml]

OUTDIR defaults to ``hardware/``. Nothing is written unless every check passes:
SKiDL's ERC with no errors and no warnings, the isolation barrier, the voltage
ratings, the pin map against the firmware's defaults, and the picture against
the netlist. The outputs hold no dates or paths, so building twice gives the
same bytes and ``hardware/`` changes only when the board does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.config import default_gpio
from schematics import checks
from schematics.board import Board, build
from schematics.bom import bom_csv
from schematics.drawing import draw
from schematics.errors import SchematicError
from schematics.netlist import Netlist, parse, render
from schematics.pinmap import PIN_MAP_PATH, load_pin_map

__all__ = ["BOM", "HARDWARE", "NETLIST", "PICTURE", "Outputs", "main", "make_outputs"]

NETLIST = "linerec-board.net"
BOM = "bom.csv"
PICTURE = "schematic.svg"
HARDWARE = Path(__file__).resolve().parent.parent / "hardware"


@dataclass(frozen=True, slots=True)
class Outputs:
    """Everything one build produces, and what its checks found."""

    board: Board
    netlist: Netlist
    files: dict[str, bytes]
    findings: list[str]


def make_outputs(pins_path: Path = PIN_MAP_PATH) -> Outputs:
    """Build the board from the pin map at ``pins_path``, check it, and render the three files."""
    board = build(load_pin_map(pins_path))
    errors, warnings = checks.erc(board)
    findings = [f"ERC error: {text}" for text in errors] + [f"ERC warning: {text}" for text in warnings]
    text = render(board)
    netlist = parse(text)
    line = checks.load_line_spec()
    side, _ = checks.sides(netlist)
    findings += checks.isolation(netlist, line)
    findings += checks.ratings(netlist, side, line)
    findings += checks.gpio(netlist, board.catalogue, default_gpio())
    sheet = draw(netlist, board.catalogue)
    findings += [f"drawing: {text}" for text in sheet.findings()]
    files = {NETLIST: text.encode(), BOM: bom_csv(netlist).encode(), PICTURE: sheet.svg()}
    return Outputs(board, netlist, files, findings)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m schematics.build", description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=HARDWARE, help="where to write (default: hardware/)")
    parser.add_argument("--pins", type=Path, default=PIN_MAP_PATH, help="the pin map (default: the firmware's)")
    args = parser.parse_args(argv)
    try:
        outputs = make_outputs(args.pins)
    except SchematicError as exc:
        print(f"schematics: {exc}", file=sys.stderr)
        return 2
    if outputs.findings:
        for finding in outputs.findings:
            print(f"schematics: check failed: {finding}", file=sys.stderr)
        print(f"schematics: {len(outputs.findings)} checks failed; nothing written", file=sys.stderr)
        return 1
    try:
        args.outdir.mkdir(parents=True, exist_ok=True)
        for name, data in outputs.files.items():
            (args.outdir / name).write_bytes(data)
    except OSError as exc:
        print(f"schematics: cannot write to {args.outdir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    parts, nets = len(outputs.netlist.components), len(outputs.netlist.nets)
    print(f"schematics: ERC, isolation, ratings, pin map and drawing checks pass ({parts} parts, {nets} nets)")
    for name in outputs.files:
        print(f"schematics: wrote {args.outdir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
