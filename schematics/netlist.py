"""The board's KiCad netlist: written by SKiDL, read back by the checks.

:func:`render` asks SKiDL for a KiCad 8 netlist and removes what would change
from run to run or machine to machine (the date, the path of the script that
ran, SKiDL's version number), so that the netlist in ``hardware/`` changes
only when the board does. :func:`parse` reads
any KiCad netlist into a :class:`Netlist`: components with their fields, and
nets as lists of (reference, pin number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schematics.errors import SchematicError
from schematics.skidl_quiet import collect, skidl

__all__ = ["Component", "Netlist", "parse", "render"]

SOURCE = "schematics/board.py"
_TOKENS = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


@dataclass(frozen=True, slots=True)
class Component:
    """One placed part as the netlist lists it."""

    ref: str
    value: str
    footprint: str
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Netlist:
    """Components by reference and nets by name (each a tuple of (reference, pin number))."""

    components: Mapping[str, Component]
    nets: Mapping[str, tuple[tuple[str, str], ...]]

    def pins_of(self, ref: str) -> dict[str, str]:
        """The pins of ``ref`` that are on a net: pin number to net name."""
        return {pin: net for net, nodes in self.nets.items() for r, pin in nodes if r == ref}


def render(board: Any) -> str:
    """The KiCad netlist of a :class:`schematics.board.Board`, the same text for the same board."""
    with collect() as messages:
        text = board.circuit.generate_netlist(tool=skidl().KICAD8, do_backup=False, track_src=False)
    # SKiDL asks for a tag on every hierarchy level, the unnamed top one included; the
    # board is a single sheet, whose stamps do not depend on a tag.
    messages = [(level, text) for level, text in messages if not text.startswith("Missing tag on  instantiated")]
    if messages:
        msg = f"SKiDL reported while writing the netlist: {messages[0][1]}"
        raise SchematicError(msg)
    text = re.sub(r'\(source "[^"]*"\)', f'(source "{SOURCE}")', str(text))
    text = re.sub(r'\(tool "SKiDL \([^"]*\)"\)', '(tool "SKiDL")', text)
    return re.sub(r'\(date "[^"]*"\)', '(date "")', text).rstrip("\n") + "\n"


def _tree(text: str) -> list[Any]:
    """The s-expression ``text`` as nested lists of strings."""
    stack: list[list[Any]] = [[]]
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKENS.match(text, position)
        if match is None:
            msg = f"the netlist cannot be read at character {position}: {text[position : position + 20]!r}"
            raise SchematicError(msg)
        position = match.end()
        opening, closing, quoted, atom = match.groups()
        if opening:
            stack.append([])
        elif closing:
            if len(stack) == 1:
                msg = f"the netlist has an unmatched ')' at character {position}"
                raise SchematicError(msg)
            done = stack.pop()
            stack[-1].append(done)
        elif quoted is not None:
            stack[-1].append(re.sub(r"\\(.)", r"\1", quoted))
        else:
            stack[-1].append(atom)
    if len(stack) != 1 or len(stack[0]) != 1 or not isinstance(stack[0][0], list):
        msg = "the netlist is not one complete s-expression"
        raise SchematicError(msg)
    return stack[0][0]


def _children(node: list[Any], key: str) -> list[list[Any]]:
    return [child for child in node[1:] if isinstance(child, list) and child and child[0] == key]


def _value(node: list[Any], key: str, default: str = "") -> str:
    found = _children(node, key)
    if not found or len(found[0]) < 2 or not isinstance(found[0][1], str):
        return default
    return str(found[0][1])


def parse(text: str) -> Netlist:
    """A KiCad netlist (as KiCad or SKiDL write it) as a :class:`Netlist`."""
    root = _tree(text)
    if root[0] != "export":
        msg = f"the netlist starts with {root[0]!r}; expected a KiCad netlist starting with (export"
        raise SchematicError(msg)
    components = {}
    for section in _children(root, "components"):
        for comp in _children(section, "comp"):
            ref = _value(comp, "ref")
            fields = {}
            for group in _children(comp, "fields"):
                for item in _children(group, "field"):
                    name = _value(item, "name")
                    text_values = [x for x in item[2:] if isinstance(x, str)]
                    if text_values:
                        fields[name] = text_values[0]
            components[ref] = Component(ref, _value(comp, "value"), _value(comp, "footprint"), fields)
    nets = {}
    for section in _children(root, "nets"):
        for net in _children(section, "net"):
            nodes = tuple((_value(node, "ref"), _value(node, "pin")) for node in _children(net, "node"))
            unknown = [ref for ref, _ in nodes if ref not in components]
            if unknown:
                msg = f"net {_value(net, 'name')} names {unknown[0]}, which is not among the netlist's components"
                raise SchematicError(msg)
            nets[_value(net, "name")] = nodes
    return Netlist(components, nets)
