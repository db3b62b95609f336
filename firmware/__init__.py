"""linerec firmware: the part of linerec that runs on the Raspberry Pi by the phone line."""

__version__ = "0.1.0"
