"""How to reach the MQTT broker: the settings both the device and the agent use."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.wire.errors import LinerecError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


class BrokerSettingsError(LinerecError, ValueError):
    """A broker setting has a value that cannot work."""


PROTOCOLS = ("5", "3.1.1")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSettings:
    """Broker address, credentials and TLS files; checked when built."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: str = "5"
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        if not self.host:
            msg = "mqtt.host is empty; give the broker's host name or address"
            raise BrokerSettingsError(msg)
        if not 0 < self.port < 65536:
            msg = f"mqtt.port is {self.port}; expected 1-65535"
            raise BrokerSettingsError(msg)
        if self.protocol not in PROTOCOLS:
            msg = f"mqtt.protocol is {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}"
            raise BrokerSettingsError(msg)
        if self.password is not None and self.username is None:
            msg = "mqtt.password is set but mqtt.username is not; set both or neither"
            raise BrokerSettingsError(msg)
        if (self.cert_file is None) != (self.key_file is None):
            msg = "mqtt.cert_file and mqtt.key_file go together; set both or neither"
            raise BrokerSettingsError(msg)
        if not 5 <= self.keepalive_s <= 3600:
            msg = f"mqtt.keepalive_s is {self.keepalive_s}; expected 5-3600"
            raise BrokerSettingsError(msg)
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not self.tls:
                msg = f"mqtt.{name} is set but mqtt.tls is false; enable TLS or drop the file"
                raise BrokerSettingsError(msg)

    @property
    def address(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    def client(self, client_id: str) -> mqtt.Client:
        """A paho-mqtt client (callback API 2) set up with these settings, not yet connected.

        Sessions are clean: the device's spool and the agent's incoming folder are
        the durable copies, never the broker's queue.
        """
        # paho is imported here so that the wire contract itself stays standard library only.
        import paho.mqtt.client as mqtt  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415

        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            files = (self.ca_file, self.cert_file, self.key_file)
            ca, cert, key = (None if f is None else str(f) for f in files)
            try:
                client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                names = ", ".join(str(f) for f in files if f) or "the system CA store"
                msg = f"cannot load the TLS files for the broker at {self.address} ({names}): {exc}"
                raise BrokerSettingsError(msg) from None
        client.on_connect_fail = _connect_failed(self.address)
        client.on_socket_open = _no_delay
        return client


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Send small messages at once.

    A fin or an ack sent right after another small message would otherwise wait
    about 40 ms for the peer's delayed acknowledgement (Nagle's algorithm), and a
    transfer is a chain of such exchanges: this alone made deliveries 8 times slower.
    """
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (a unix socket, a test double)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _connect_failed(address: str) -> Callable[[Any, Any], None]:
    """A callback that says why a connection attempt failed, once per distinct reason.

    paho retries in its own thread and swallows the error (a certificate the CA
    does not sign, a refused port); it calls this while handling it, so the
    exception is still at hand.
    """
    said: list[str] = []

    def on_connect_fail(_client: Any, _userdata: Any) -> None:
        exc = sys.exc_info()[1]
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "no reason given"
        if said != [reason]:
            logging.getLogger("linerec.mqtt").warning("cannot connect to the broker at %s: %s", address, reason)
            said[:] = [reason]

    return on_connect_fail
