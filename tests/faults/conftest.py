"""Prints what the fault-injection runs injected and checked, whatever pytest's capture setting."""

from __future__ import annotations

import pytest

from tests.faults.report import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for title, lines in config.stash.get(SUMMARY, []):
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
