"""Telling devices which archive recipients to encrypt to: signed, retained, one message per device.

``linerec-agent keys deploy`` publishes, for each enrolled device (or one),
retained at QoS 1 on ``linerec/<device>/recipients``, a document signed with
the agent's key (:mod:`firmware.wire.recipients`). Its sequence number is the
time in milliseconds, or one more than the last one deployed to that device
if the clock says less, so every deployment is newer than the one before even
when the clock steps back. Each deployment is recorded in the index
(``deployments``): the next sequence number starts from it, and retiring an
identity checks that no device was last told to use it.

The broker's answer is awaited and checked (MQTT 5 reports an ACL refusal in
the PUBACK); a deployment the broker did not accept is an error and is not
recorded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import AgentError
from agent.keyring import ensure_key_tables, utc_now
from firmware.wire import topics
from firmware.wire.broker import BrokerSettings, BrokerSettingsError
from firmware.wire.errors import WireError
from firmware.wire.recipients import RecipientList, sign_recipients

if TYPE_CHECKING:
    from agent.archive import Archive


class DeployError(AgentError, OSError):
    """Recipients could not be deployed: the broker cannot be reached or refused the message."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment as recorded."""

    device: str
    seq: int
    issued_at: str
    recipients: tuple[str, ...]
    actor: str


def last_deployment(db: sqlite3.Connection, device: str) -> Deployment | None:
    """The newest deployment to ``device``, if any."""
    ensure_key_tables(db)
    row = db.execute(
        "SELECT device, seq, issued_at, recipients, actor FROM deployments WHERE device = ? ORDER BY seq DESC LIMIT 1",
        (device,),
    ).fetchone()
    if row is None:
        return None
    return Deployment(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4])


def next_seq(db: sqlite3.Connection, device: str, clock: Callable[[], float] = time.time) -> int:
    """A sequence number newer than every one deployed to ``device``."""
    last = last_deployment(db, device)
    return max(int(clock() * 1000), (last.seq + 1) if last is not None else 1)


class _Publisher:
    """One MQTT connection that publishes retained messages and waits for the broker's acceptance."""

    def __init__(self, broker: BrokerSettings, client_id: str, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout
        self._cond = threading.Condition()
        self._connected: bool | None = None
        self._refused: dict[int, str] = {}
        try:
            self._client = broker.client(client_id)
        except BrokerSettingsError as exc:
            raise DeployError(str(exc)) from None
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cond:
            self._connected = not reason.is_failure
            self._reason = str(reason)
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            if reason.is_failure:
                self._refused[mid] = str(reason)

    def __enter__(self) -> _Publisher:
        try:
            self._client.connect(self._broker.host, self._broker.port, self._broker.keepalive_s)
        except OSError as exc:
            msg = f"cannot connect to the broker at {self._broker.address}: {exc.strerror or exc}"
            raise DeployError(msg) from None
        self._client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connected is not None, self._timeout)
            if not self._connected:
                self._client.loop_stop()
                why = getattr(self, "_reason", f"no answer within {self._timeout:g} s")
                msg = f"the broker at {self._broker.address} did not accept the connection: {why}"
                raise DeployError(msg)
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(self._timeout)
        except (RuntimeError, ValueError) as exc:
            msg = f"publishing {topic} failed: {exc}"
            raise DeployError(msg) from None
        if not info.is_published():
            msg = f"the broker at {self._broker.address} did not acknowledge {topic} within {self._timeout:g} s"
            raise DeployError(msg)
        with self._cond:
            refused = self._refused.pop(info.mid, None)
        if refused is not None:
            msg = f"the broker at {self._broker.address} refused {topic}: {refused}"
            raise DeployError(msg)

    def __exit__(self, *_: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def deploy(
    *,
    broker: BrokerSettings,
    client_id: str,
    archive: Archive,
    signing_key: Ed25519PrivateKey,
    devices: Sequence[str],
    recipients: Sequence[str],
    actor: str,
    clock: Callable[[], float] = time.time,
    timeout: float = 10.0,
) -> list[Deployment]:
    """Publish ``recipients`` to each of ``devices``; the deployments made, in order.

    ``client_id`` must differ from the running agent's, or the broker would
    disconnect it.
    """
    if not devices:
        msg = "no device is enrolled, so there is nothing to deploy to"
        raise AgentError(msg)
    messages = []
    for device in devices:
        with archive.connection() as db:
            seq = next_seq(db, device, clock)
        listed = RecipientList(device_id=device, seq=seq, issued_at=utc_now(clock), recipients=tuple(recipients))
        try:
            messages.append((listed, sign_recipients(listed, signing_key)))
        except WireError as exc:
            raise AgentError(str(exc)) from None
    done = []
    with _Publisher(broker, client_id, timeout) as publisher:
        for listed, payload in messages:
            publisher.publish(topics.recipients(listed.device_id), payload)
            with archive.transaction() as db:
                db.execute(
                    "INSERT INTO deployments (device, seq, issued_at, recipients, actor) VALUES (?, ?, ?, ?, ?)",
                    (listed.device_id, listed.seq, listed.issued_at, json.dumps(list(listed.recipients)), actor),
                )
            done.append(Deployment(listed.device_id, listed.seq, listed.issued_at, listed.recipients, actor))
    return done
