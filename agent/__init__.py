"""linerec agent: the host side that receives, verifies, archives and serves recordings."""

__version__ = "0.1.0"
