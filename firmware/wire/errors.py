"""The root of linerec's exceptions, shared by the device and the agent."""


class LinerecError(Exception):
    """Base of every error linerec raises on purpose; its text is one sentence for a person."""


class WireError(LinerecError, ValueError):
    """Bytes from the other side (or from disk) do not follow the wire contract."""


class AgeError(WireError):
    """An age file, identity or recipient is malformed, or cannot be opened with the keys given."""


class SignatureError(WireError):
    """A signed manifest does not verify against the pinned device key."""


class ConfigError(LinerecError, ValueError):
    """A configuration file is missing, unreadable, or has a setting that cannot work."""
