"""The line-interface board as checked schematic-as-code.

``board.py`` describes the board with SKiDL from the parts in ``parts.toml``
and the pin map the firmware reads (``firmware/data/pins.toml``);
``checks.py`` holds the netlist to the line's numbers in ``line.toml``;
``build.py`` (``make schematics``) writes the KiCad netlist, the BOM and the
schematic picture into ``hardware/``.
"""
