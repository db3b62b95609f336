"""The bill of materials, read from the netlist: one line per part number, with its quantity."""

from __future__ import annotations

import csv
import io
import re

from schematics.netlist import Netlist

__all__ = ["COLUMNS", "bom_csv", "bom_rows"]

COLUMNS = (
    "References",
    "Quantity",
    "Value",
    "Manufacturer",
    "MPN",
    "Voltage rating",
    "Isolation",
    "Footprint",
    "Description",
)


def _ref_key(ref: str) -> tuple[str, int]:
    match = re.fullmatch(r"([A-Z]+)(\d+)", ref)
    return (match.group(1), int(match.group(2))) if match else (ref, 0)


def bom_rows(netlist: Netlist) -> list[dict[str, str]]:
    """One row per manufacturer part, in reference order (C, D, F, J, K, Q, R, T, U)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for ref, comp in netlist.components.items():
        fields = comp.fields
        voltage = fields.get("Voltage", "")
        if fields.get("Line voltage", voltage) != voltage:
            voltage += f"; line side {fields['Line voltage']}"
        key: tuple[str, ...] = (
            comp.value,
            fields.get("Manufacturer", ""),
            fields.get("MPN", ""),
            voltage,
            fields.get("Isolation", ""),
            comp.footprint,
            fields.get("Description", ""),
        )
        groups.setdefault(key, []).append(ref)
    rows = []
    for key, refs in groups.items():
        refs.sort(key=_ref_key)
        rows.append(dict(zip(COLUMNS, (" ".join(refs), str(len(refs)), *key), strict=True)))
    rows.sort(key=lambda row: _ref_key(row["References"].split()[0]))
    return rows


def bom_csv(netlist: Netlist) -> str:
    """The BOM as CSV text with a header line and Unix line ends."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(bom_rows(netlist))
    return out.getvalue()
