"""The agent's keys: archive identities (the current one and those kept for older recordings) and its signing key.

On disk, beside the identity file the config names (``[agent] identity``)::

    identity.txt              the current archive identity: new recordings are encrypted to it
    identities/               identities rotated out, kept while recordings need them (one file each)
    identities/retired/       identities no recording needs any more; never loaded
    agent-signing.key         the agent's Ed25519 key (PEM, 0600): signs deployed recipients

Every identity file is an age identity file (``age -d -i FILE`` takes it as it
is) with comment lines saying when it was made and its recipient. Files are
written to a temporary name with mode 0600, fsynced and renamed, and their
folder fsynced, so a crash leaves either the old or the new file, never half
of one. Rotation keeps a copy of the outgoing identity before it replaces the
current one, so no moment exists at which it is on disk nowhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.errors import AgentError, NotFound
from agent.schema import MIGRATIONS
from firmware.wire import age, bech32
from firmware.wire.errors import AgeError, WireError
from firmware.wire.signing import load_or_create_signing_key, public_key_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.config import AgentConfig

KEPT_DIR = "identities"
RETIRED_DIR = "retired"
SIGNING_KEY = "agent-signing.key"
IDENTITY_SUFFIX = ".txt"

# Tables the key work keeps in the archive index: migration 4 of agent/schema.py, also run
# here when the tables are missing, for an index an older agent made (its IF NOT EXISTS allows both).
KEY_TABLES = MIGRATIONS[3]


class KeyringError(AgentError, ValueError):
    """An archive identity or the agent's signing key cannot be used as asked."""


def utc_now(clock: Callable[[], float] = time.time) -> str:
    """The time as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeyPaths:
    """Where the agent's keys live."""

    identity: Path
    kept_dir: Path
    signing_key: Path

    @property
    def retired_dir(self) -> Path:
        """Identities no recording needs any more."""
        return self.kept_dir / RETIRED_DIR

    @classmethod
    def beside(cls, identity: Path) -> KeyPaths:
        """The layout around the current identity file."""
        identity = Path(identity)
        return cls(identity, identity.parent / KEPT_DIR, identity.parent / SIGNING_KEY)

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> KeyPaths:
        """The layout around ``[agent] identity``."""
        return cls.beside(cfg.agent.identity)


@dataclass(frozen=True, slots=True)
class Held:
    """One archive identity the agent holds."""

    recipient: str
    path: Path
    current: bool
    created: str | None
    key: X25519PrivateKey


def _created(path: Path) -> str | None:
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# created:"):
                return line.removeprefix("# created:").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _held(path: Path, *, current: bool) -> list[Held]:
    try:
        keys = age.load_identities(path)
    except AgeError as exc:
        raise KeyringError(str(exc)) from None
    created = _created(path)
    return [Held(_recipient(key), path, current, created, key) for key in keys]


def _recipient(key: X25519PrivateKey) -> str:
    return bech32.encode("age", key.public_key().public_bytes_raw())


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with ``data``, mode 0600, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise KeyringError(msg) from None


def fsync_dir(path: Path) -> None:
    """Make a folder's entries durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def identity_text(identity: str, created: str) -> bytes:
    """An identity file: comments for people, the key for age."""
    return (
        f"# linerec archive identity\n# created: {created}\n# public key: {age.recipient_of(identity)}\n{identity}\n"
    ).encode()


class Keyring:
    """The archive identities on disk: the current one first, then the kept ones by name."""

    def __init__(self, paths: KeyPaths, *, clock: Callable[[], float] = time.time) -> None:
        self.paths = paths
        self._clock = clock

    def held(self) -> list[Held]:
        """Every identity that is loaded: the current one, then those kept in ``identities/``."""
        if not self.paths.identity.is_file():
            msg = f"there is no archive identity at {self.paths.identity}; make one with `linerec-agent keygen --out`"
            raise KeyringError(msg)
        found = _held(self.paths.identity, current=True)
        seen = {h.recipient for h in found}
        for path in self.kept_files():
            for item in _held(path, current=False):
                if item.recipient not in seen:
                    seen.add(item.recipient)
                    found.append(item)
        return found

    def kept_files(self) -> list[Path]:
        """The identity files in ``identities/``, by name."""
        folder = self.paths.kept_dir
        if not folder.is_dir():
            return []
        names = (p for p in folder.iterdir() if p.name.endswith(IDENTITY_SUFFIX) and not p.name.startswith("."))
        return sorted(p for p in names if p.is_file())

    def identities(self) -> list[X25519PrivateKey]:
        """The keys to open archived files with, current first."""
        return [h.key for h in self.held()]

    def current(self) -> Held:
        """The identity new recordings are encrypted to (the first key of the identity file)."""
        return self.held()[0]

    def find(self, which: str) -> Held:
        """An identity named by its recipient (``age1...``) or its file (name or path)."""
        held = self.held()
        for item in held:
            if which.strip() in (item.recipient, item.path.name, str(item.path)):
                return item
        known = ", ".join(h.recipient for h in held)
        msg = f"no archive identity {which!r} is held; the agent holds {known}"
        raise NotFound(msg)

    def rotate(self) -> Held:
        """Make a new current identity; the outgoing one is kept in ``identities/`` first."""
        outgoing = self.current()
        kept = self.paths.kept_dir
        try:
            kept.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create {kept}: {exc.strerror}"
            raise KeyringError(msg) from None
        if not any(h.recipient == outgoing.recipient for f in self.kept_files() for h in _held(f, current=False)):
            stamp = re.sub(r"[^0-9TZ]", "", outgoing.created or utc_now(self._clock))
            name = f"{stamp}-{outgoing.recipient[4:14]}{IDENTITY_SUFFIX}"
            write_private(kept / name, self.paths.identity.read_bytes())
        identity = age.generate_identity()
        write_private(self.paths.identity, identity_text(identity, utc_now(self._clock)))
        return self.current()

    def retire(self, item: Held, *, delete: bool = False) -> Path | None:
        """Stop loading ``item``'s file: move it to ``identities/retired/`` (or delete it); where it went."""
        if item.current:
            msg = f"{item.recipient} is the current archive identity; rotate to a new one before retiring it"
            raise KeyringError(msg)
        others = [h.recipient for h in _held(item.path, current=False) if h.recipient != item.recipient]
        if others:
            msg = f"{item.path} also holds {', '.join(others)}; split it into one file per identity first"
            raise KeyringError(msg)
        try:
            if delete:
                item.path.unlink()
                fsync_dir(item.path.parent)
                return None
            retired = self.paths.retired_dir
            retired.mkdir(mode=0o700, exist_ok=True)
            target = retired / item.path.name
            item.path.replace(target)
            fsync_dir(retired)
            fsync_dir(item.path.parent)
        except OSError as exc:
            msg = f"cannot retire {item.path}: {exc.strerror}"
            raise KeyringError(msg) from None
        return target


def load_identities(cfg: AgentConfig) -> list[X25519PrivateKey]:
    """Every archive identity the agent holds, current first: what ingest and export open files with."""
    return Keyring(KeyPaths.from_config(cfg)).identities()


def signing_key(paths: KeyPaths) -> Ed25519PrivateKey:
    """The agent's Ed25519 key, created (mode 0600) on first use."""
    try:
        return load_or_create_signing_key(paths.signing_key)
    except WireError as exc:
        raise KeyringError(str(exc).replace("signing key", "agent signing key", 1)) from None
    except OSError as exc:
        msg = f"cannot create the agent signing key {paths.signing_key}: {exc.strerror}"
        raise KeyringError(msg) from None


def agent_key_text(paths: KeyPaths) -> str:
    """The agent's public key as a device pins it: ``ed25519:<base64>``."""
    return public_key_text(signing_key(paths))


def ensure_key_tables(db: sqlite3.Connection) -> None:
    """Create the key work's tables in the archive index if they are missing."""
    try:
        for statement in KEY_TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
    except sqlite3.Error as exc:
        msg = f"the archive index cannot hold the key tables: {exc}"
        raise KeyringError(msg) from None
