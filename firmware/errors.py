"""Device-side exceptions; all descend from ``LinerecError``."""

from firmware.wire.errors import AgeError, ConfigError, LinerecError, SignatureError, WireError

__all__ = ["AgeError", "ConfigError", "LinerecError", "RecordingError", "SignatureError", "WireError"]


class RecordingError(LinerecError, OSError):
    """A recording could not be written, encrypted or sealed into the spool."""
