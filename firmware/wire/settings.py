"""Reading TOML settings tables into typed values, with errors that name key, value and what is allowed.

Both the device and the agent read their files with these helpers, so every
message about a bad setting has the same shape.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from firmware.wire.broker import BrokerSettings, BrokerSettingsError
from firmware.wire.errors import ConfigError

T = TypeVar("T")

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list"}


def load_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file, or ConfigError naming the file and the problem."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        msg = f"{path}: the config file does not exist"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"{path}: the config file cannot be read: {exc.strerror}"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: the config file is not valid TOML: {exc}"
        raise ConfigError(msg) from None


class Table:
    """One ``[section]`` of a settings file; every key read is checked, leftovers are errors."""

    def __init__(self, data: dict[str, Any], name: str, source: Path | str) -> None:
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            msg = f"{source}: [{name}] must be a table, not {raw!r}"
            raise ConfigError(msg)
        self.name = name
        self.source = source
        self._data = dict(raw)
        self._seen: set[str] = set()

    def key(self, key: str) -> str:
        """The dotted name of a key, as it appears in messages and docs."""
        return f"{self.name}.{key}"

    def fail(self, key: str, value: object, allowed: str) -> ConfigError:
        """A ConfigError naming the key, the value found and what is allowed."""
        return ConfigError(f"{self.source}: {self.key(key)} is {value!r}; expected {allowed}")

    def _checked(self, key: str, kind: type[T]) -> T:
        value = self._data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, value, _TYPE_NAMES.get(kind, kind.__name__))
        return value

    def get(self, key: str, kind: type[T], default: T) -> T:
        """The value of ``key`` checked to be of ``kind``, or ``default`` when absent."""
        self._seen.add(key)
        return self._checked(key, kind) if key in self._data else default

    def optional(self, key: str, kind: type[T]) -> T | None:
        """The value of ``key`` checked to be of ``kind``, or None when absent."""
        self._seen.add(key)
        return self._checked(key, kind) if key in self._data else None

    def require(self, key: str, kind: type[T]) -> T:
        """The value of ``key``; its absence is an error."""
        self._seen.add(key)
        if key not in self._data:
            msg = f"{self.source}: {self.key(key)} is missing; it is required"
            raise ConfigError(msg)
        return self._checked(key, kind)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A text value that must be one of ``choices``."""
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, value, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        """A number within ``[low, high]``."""
        value = self.get(key, float, default)
        if not low <= value <= high:
            raise self.fail(key, self._data.get(key, value), f"a number from {low:g} to {high:g}")  # as written
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        """An integer within ``[low, high]``."""
        value = self.get(key, int, default)
        if not low <= value <= high:
            raise self.fail(key, value, f"an integer from {low} to {high}")
        return value

    def path(self, key: str, default: Path | None) -> Path | None:
        """A file system path; relative paths are taken from the config file's folder."""
        value = self.optional(key, str)
        if value is None:
            return default
        if not value:
            raise self.fail(key, value, "a non-empty path")
        return self.relative(value)

    def relative(self, value: str) -> Path:
        """A path written in the file: relative ones are taken from the config file's folder."""
        path = Path(value).expanduser()
        if not path.is_absolute() and isinstance(self.source, Path):
            path = self.source.parent / path
        return path

    def done(self) -> None:
        """Raise ConfigError for any key in the table that no code read (a typo, usually)."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen))
            msg = f"{self.source}: {self.key(unknown[0])} is not a known setting; [{self.name}] has {known}"
            raise ConfigError(msg)


def check_sections(data: dict[str, Any], known: tuple[str, ...], source: Path | str) -> None:
    """Raise ConfigError for a top-level table that is not one of ``known``."""
    for name in data:
        if name not in known:
            msg = f"{source}: [{name}] is not a known section; expected one of {', '.join(known)}"
            raise ConfigError(msg)


def broker_settings(data: dict[str, Any], source: Path | str) -> BrokerSettings:
    """The ``[mqtt]`` table as BrokerSettings."""
    t = Table(data, "mqtt", source)
    defaults = BrokerSettings()
    try:
        settings = BrokerSettings(
            host=t.get("host", str, defaults.host),
            port=t.get("port", int, defaults.port),
            username=t.optional("username", str),
            password=t.optional("password", str),
            tls=t.get("tls", bool, defaults.tls),
            ca_file=t.path("ca_file", None),
            cert_file=t.path("cert_file", None),
            key_file=t.path("key_file", None),
            protocol=t.choice("protocol", ("5", "3.1.1"), defaults.protocol),
            keepalive_s=t.get("keepalive_s", int, defaults.keepalive_s),
        )
    except BrokerSettingsError as exc:
        msg = f"{source}: {exc}"
        raise ConfigError(msg) from None
    t.done()
    return settings
