"""The agent's exceptions: one root, each also the built-in error it resembles."""

from __future__ import annotations

from firmware.wire.errors import LinerecError


class AgentError(LinerecError):
    """Base of every error the agent raises on purpose; its text is one sentence for a person."""


class ArchiveError(AgentError, OSError):
    """The archive's files or index cannot be read or written."""


class NotFound(AgentError, LookupError):
    """A recording or device asked for is not in the archive."""


class EnrolmentError(AgentError, ValueError):
    """A device cannot be enrolled as asked: bad id, bad key, or a key clash."""
