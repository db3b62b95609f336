"""What the ``linerec-agent`` verbs share: the session (config, archive, audit log, actor), dates, output.

A verb is a function ``(ctx, args) -> exit status`` registered in the dispatch
table of ``agent/cli.py``. Every verb that reads or changes recordings records
an audit entry through ``ctx.record`` before it shows or does anything, so that
nothing is seen or changed without a trace; if the audit log cannot be written,
the verb stops with that error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.archive import Archive
    from agent.audit import AuditLog
    from agent.config import AgentConfig

Handler = Callable[["Context", argparse.Namespace], int]
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_HELP = "ISO date or time (2024-03-05, 2024-03-05T14:00); local time unless it ends in Z or an offset"


class UsageError(AgentError, ValueError):
    """A command line that cannot be carried out as written: a bad date, a missing filter."""


def default_actor() -> str:
    """Who the audit log says acted when ``--as`` is not given: ``cli:<login name>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def check_actor(name: str) -> str:
    """``--as NAME``: 1-64 printable characters, no surrounding space."""
    if not name or name != name.strip() or len(name) > 64 or not name.isprintable():
        msg = f"--as {name!r} must be 1-64 printable characters without surrounding spaces"
        raise UsageError(msg)
    return name


def parse_when(flag: str, text: str, *, end: bool = False) -> datetime:
    """A date or time from the command line, timezone-aware.

    A date alone is local midnight; with ``end`` it is the midnight that ends that
    day, so ``--until 2024-03-05`` includes the 5th. A time without ``Z`` or an
    offset is local time.
    """
    allowed = f"expected an {DATE_HELP}"
    try:
        if _DATE_ONLY.fullmatch(text):
            day = date.fromisoformat(text)
            when = datetime.combine(day + timedelta(days=1) if end else day, time())
        else:
            when = datetime.fromisoformat(text.replace("z", "Z"))
    except (ValueError, OverflowError):
        msg = f"{flag} {text!r} is not a date; {allowed}"
        raise UsageError(msg) from None
    return when.astimezone() if when.tzinfo is None else when


def when_arg(flag: str, *, end: bool = False) -> Callable[[str], datetime]:
    """An argparse ``type`` reading a date for ``flag``."""

    def read(text: str) -> datetime:
        try:
            return parse_when(flag, text, end=end)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None

    return read


def seconds_arg(text: str) -> float:
    """An argparse ``type`` for a number of seconds from 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        msg = f"{text!r} is not a number of seconds (0 or more)"
        raise argparse.ArgumentTypeError(msg)
    return value


def count_arg(text: str) -> int:
    """An argparse ``type`` for a whole number from 1."""
    if not text.isdigit() or int(text) < 1:
        msg = f"{text!r} is not a whole number from 1"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


@dataclass
class Context:
    """One run of a verb: the actor, and the settings, archive and audit log, each read or opened when first used."""

    config_path: Path
    actor: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _cfg: AgentConfig | None = None
    _archive: Archive | None = None
    _audit: AuditLog | None = None

    @property
    def cfg(self) -> AgentConfig:
        """The agent's settings, read on first use."""
        if self._cfg is None:
            from agent import config  # noqa: PLC0415

            self._cfg = config.load(self.config_path)
        return self._cfg

    @property
    def archive(self) -> Archive:
        """The archive, opened on first use."""
        if self._archive is None:
            from agent.archive import Archive  # noqa: PLC0415  (verbs that need no archive do not open one)

            self._archive = Archive(self.cfg.agent.archive_dir, self.cfg.agent.database_path)
        return self._archive

    @property
    def audit(self) -> AuditLog:
        """The audit log, opened (and created, with its key, on first use ever) on first use."""
        if self._audit is None:
            from agent.audit import AuditLog  # noqa: PLC0415

            self._audit = AuditLog(self.cfg.agent.audit_log_path, self.cfg.agent.audit_key_path)
        return self._audit

    def record(self, action: str, target: str | None = None, details: dict[str, Any] | None = None) -> None:
        """Append an audit entry for what this verb is about to show or do."""
        self.audit.record(self.actor, action, target, details)

    def close(self) -> None:
        """Close what was opened."""
        for item in (self._archive, self._audit):
            if item is not None:
                item.close()
        self._archive = self._audit = None

    # --- output --------------------------------------------------------------------------

    def emit(self, obj: dict[str, Any]) -> None:
        """One JSON object on a line of its own."""
        print(json.dumps(obj, ensure_ascii=False, default=str), file=self.out)

    def say(self, line: str = "") -> None:
        """One line for a person."""
        print(line, file=self.out)


def clean(text: object, width: int | None = None) -> str:
    """Text from the line or a file made safe to print: control characters (escape sequences) become ``?``."""
    shown = "".join(c if c.isprintable() else "?" for c in str(text))
    if width is not None and len(shown) > width:
        shown = shown[: width - 1] + "…"
    return shown


class _Quiet:
    def advance(self, steps: int = 1) -> None:
        """Nothing to show."""


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[_Quiet | _Bar]:
    """A progress bar on stderr while the block runs, when stderr is a terminal and rich is installed."""
    if not sys.stderr.isatty():
        yield _Quiet()
        return
    try:
        from rich.console import Console  # noqa: PLC0415  (rich is in the agent extra; bars are optional)
        from rich.progress import Progress  # noqa: PLC0415
    except ImportError:
        yield _Quiet()
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield _Bar(bar, bar.add_task(description, total=total))
