"""The archive recipients this device encrypts to: the configured ones, or the latest the agent deployed.

The agent rotates its archive identity and publishes the new recipients,
signed, on ``linerec/<device>/recipients`` (:mod:`firmware.wire.recipients`
says what is checked). :class:`RecipientStore` takes such a message from the
uplink, checks it against the agent key pinned in ``[archive] agent_key`` and
the sequence number it already holds, and keeps the accepted document,
signature and all, in ``<state_dir>/recipients.json`` (written to a temporary
file, fsynced, renamed). The recorder asks the store for the recipients when a
recording starts, so a recording in progress keeps the recipients it started
with.

Without ``agent_key`` the device never takes deployed recipients: it encrypts
to ``[archive] recipients`` and says once that it ignored a deployment. The
stored document is verified again whenever it is read, so a file edited by
hand, or left from a different agent key, is reported and not used.

A message that fails a check is logged once with the reason (a retained
message comes again on every reconnect) and reported in the device status.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.wire.errors import WireError
from firmware.wire.recipients import RecipientList, read_recipients
from firmware.wire.signing import parse_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from firmware.config import DeviceConfig

log = logging.getLogger("linerec.recipients")

STORE_NAME = "recipients.json"
_REMEMBERED = 64  # distinct refused messages remembered, so each is logged once


def store_path(config: DeviceConfig) -> Path:
    """Where the accepted deployment is kept."""
    return config.device.state_dir / STORE_NAME


@dataclass(frozen=True, slots=True)
class _Held:
    payload: bytes
    listed: RecipientList


class RecipientStore:
    """The device's current archive recipients; thread-safe (the uplink offers, the recorder reads)."""

    def __init__(self, *, path: Path, device_id: str, fallback: tuple[str, ...], agent_key: str | None = None) -> None:
        if not fallback:
            msg = "the recipient store needs the configured archive recipients to fall back on"
            raise WireError(msg)
        self.path = Path(path)
        self._device_id = device_id
        self._fallback = tuple(fallback)
        self._agent_key: Ed25519PublicKey | None = parse_public_key(agent_key) if agent_key else None
        self._lock = threading.Lock()
        self._held: _Held | None = None
        self._seen_file: tuple[int, int, int] | None = None
        self._said: dict[str, None] = {}  # reasons already logged, oldest first
        self._told_no_key = False
        self.last_refusal: str | None = None

    @classmethod
    def for_config(cls, config: DeviceConfig) -> RecipientStore:
        """The store of the device ``config`` describes."""
        return cls(
            path=store_path(config),
            device_id=config.device.id,
            fallback=config.archive.recipients,
            agent_key=config.archive.agent_key,
        )

    @property
    def enabled(self) -> bool:
        """Whether deployed recipients are taken at all (``archive.agent_key`` is set)."""
        return self._agent_key is not None

    def current(self) -> tuple[str, ...]:
        """The recipients a recording started now is encrypted to."""
        with self._lock:
            held = self._load()
            return held.listed.recipients if held is not None else self._fallback

    def seq(self) -> int | None:
        """The sequence number of the deployment in use, or None while the configured recipients are."""
        with self._lock:
            held = self._load()
            return held.listed.seq if held is not None else None

    def facts(self) -> dict[str, object]:
        """What the device status says about its recipients (public keys only)."""
        with self._lock:
            held = self._load()
            return {
                "recipients_source": "deployed" if held is not None else "config",
                "recipients_seq": held.listed.seq if held is not None else None,
                "recipients": list(held.listed.recipients if held is not None else self._fallback),
                "recipients_refused": self.last_refusal,
            }

    def offer(self, payload: bytes) -> bool:
        """Take a message from the recipients topic; True if it replaced the recipients in use.

        Every refusal is logged once per distinct message and reason; the
        message is otherwise ignored. Never raises for what the broker delivers.
        """
        with self._lock:
            if self._agent_key is None:
                if not self._told_no_key:
                    self._told_no_key = True
                    log.warning(
                        "ignoring recipients deployed by the agent: archive.agent_key is not set,"
                        " so recordings stay encrypted to archive.recipients"
                    )
                return False
            if not payload:
                self._refuse(payload, "the retained recipients message was cleared; keeping the recipients in use")
                return False
            try:
                listed = read_recipients(payload, self._agent_key, self._device_id)
            except WireError as exc:
                self._refuse(payload, str(exc))
                return False
            held = self._load()
            if held is not None and listed.seq <= held.listed.seq:
                if payload == held.payload:
                    return False  # the retained copy of what is held, delivered again on reconnect
                reason = (
                    f"recipients message has sequence {listed.seq}, not newer than the {held.listed.seq} held"
                    " (an old message replayed?)"
                )
                self._refuse(payload, reason)
                return False
            try:
                self._write(payload)
            except OSError as exc:
                self._refuse(payload, f"cannot store the recipients in {self.path}: {exc.strerror or exc}")
                return False
            self._held = _Held(payload, listed)
            self.last_refusal = None
            log.info(
                "archive recipients %s (sequence %d, issued %s) take effect from the next recording",
                ", ".join(listed.recipients),
                listed.seq,
                listed.issued_at,
            )
            return True

    def _refuse(self, payload: bytes, reason: str) -> None:
        self.last_refusal = reason
        key = hashlib.sha256(payload).hexdigest() + reason
        if key in self._said:
            return
        self._said[key] = None
        while len(self._said) > _REMEMBERED:
            del self._said[next(iter(self._said))]
        log.warning("ignored a recipients message: %s", reason)

    def _load(self) -> _Held | None:
        """The held deployment, read again when the file changed; None means the configured recipients."""
        if self._agent_key is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._held, self._seen_file = None, None
            return None
        except OSError as exc:
            self._once(f"cannot read {self.path}: {exc.strerror}; using archive.recipients")
            return self._held
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._seen_file:
            return self._held
        self._seen_file = stamp
        try:
            payload = self.path.read_bytes()
            self._held = _Held(payload, read_recipients(payload, self._agent_key, self._device_id))
        except (OSError, WireError) as exc:
            self._held = None
            self._once(f"the stored recipients in {self.path} are not used: {exc}; using archive.recipients")
        return self._held

    def _once(self, text: str) -> None:
        if text not in self._said:
            self._said[text] = None
            log.error("%s", text)

    def _write(self, payload: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        st = self.path.stat()
        self._seen_file = (st.st_ino, st.st_size, st.st_mtime_ns)
