"""The schematic tooling's one exception."""

from firmware.wire.errors import LinerecError

__all__ = ["SchematicError"]


class SchematicError(LinerecError, ValueError):
    """A part, a pin map or a netlist the board cannot be built or checked from; one sentence."""
