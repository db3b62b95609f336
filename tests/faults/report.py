"""Where fault tests leave their counts for the end-of-session summary."""

from __future__ import annotations

import pytest

# Each entry: a title and its lines; printed by tests/faults/conftest.py after the run.
SUMMARY = pytest.StashKey[list[tuple[str, list[str]]]]()


def add_summary(config: pytest.Config, title: str, lines: list[str]) -> None:
    """Keep ``lines`` for the summary that pytest prints at the end of the session."""
    config.stash.setdefault(SUMMARY, []).append((title, lines))
