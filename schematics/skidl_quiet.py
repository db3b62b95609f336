"""SKiDL, imported so that it writes no log files and prints nothing; its messages are collected.

On import SKiDL opens ``<script>.log`` and ``<script>.erc`` in the current
folder and warns on the console about KiCad libraries this tool does not use
(the board's parts are SKiDL's own, defined from ``parts.toml``). Here the
import happens inside a throwaway folder, the log files are closed and deleted
before leaving it, and SKiDL's console handlers are replaced by one that keeps
warnings and errors for :func:`collect`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from functools import cache
from types import ModuleType

__all__ = ["collect", "skidl"]


class _Collector(logging.Handler):
    """Keeps SKiDL's warnings and errors for whoever is collecting them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.sinks: list[list[tuple[int, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        for sink in self.sinks:
            sink.append((record.levelno, record.getMessage()))


_COLLECTOR = _Collector()


@cache
def skidl() -> ModuleType:
    """The ``skidl`` module, imported quietly once."""
    # SKiDL makes its own logger class the default for every logger created after it;
    # the rest of the process keeps the standard one.
    logger_class = logging.getLoggerClass()
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder), contextlib.redirect_stderr(io.StringIO()):
        import skidl as module  # type: ignore[import-untyped]  # noqa: PLC0415 - imported here, on purpose
        from skidl.logger import erc_logger, rt_logger, stop_log_file_output  # type: ignore[import-untyped]  # noqa: PLC0415

        # Deletes the log files by their relative names, so it must run inside the folder.
        stop_log_file_output()
    logging.setLoggerClass(logger_class)
    for logger in (rt_logger, erc_logger):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                logger.removeHandler(handler)
        logger.addHandler(_COLLECTOR)
    loaded: ModuleType = module
    return loaded


@contextlib.contextmanager
def collect() -> Iterator[list[tuple[int, str]]]:
    """The warnings and errors SKiDL logs inside the ``with`` block, as (level, message)."""
    skidl()
    sink: list[tuple[int, str]] = []
    _COLLECTOR.sinks.append(sink)
    try:
        yield sink
    finally:
        _COLLECTOR.sinks.remove(sink)
