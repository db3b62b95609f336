"""Live device status for the devices page: the retained ``linerec/<device>/status`` messages, as they come.

The ingest daemon stores each device's last status in the index, but only while
it runs; the review app subscribes itself too, so the page shows what the
broker says now (online, offline by last will, spool depth, disk) even when the
daemon is stopped. A broker that is down or refuses the connection is logged
once and retried by paho in the background; the page then shows what the index
holds. Statuses of devices that are not enrolled are never shown.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from firmware.wire import topics
from firmware.wire.broker import BrokerSettings
from firmware.wire.errors import WireError
from firmware.wire.messages import decode_status

log = logging.getLogger("linerec.agent.web")

STATUS_FILTER = topics.status("+")


class LiveStatus:
    """The newest status each device published, with when it arrived (``time.time()``)."""

    def __init__(self, broker: BrokerSettings, client_id: str) -> None:
        self._broker = broker
        self._client = broker.client(client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._told_failure = False

    def start(self) -> None:
        """Connect in the background; statuses arrive once the broker answers."""
        self._client.connect_async(self._broker.host, self._broker.port, keepalive=self._broker.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def latest(self, device: str) -> tuple[float, dict[str, Any]] | None:
        """When the device's newest status arrived and what it says, or None if none came yet."""
        with self._lock:
            return self._latest.get(device)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            self._on_connect_fail(client, None)
            return
        self._told_failure = False
        client.subscribe(STATUS_FILTER, qos=1)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._told_failure:
            self._told_failure = True
            where = self._broker.address
            log.warning("cannot reach the broker %s for live device status; showing the stored one", where)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) != 3 or not message.payload:
            return
        device = parts[1]
        try:
            topics.check_device_id(device)
            status = decode_status(bytes(message.payload))
        except WireError as exc:
            log.info("ignoring a status on %s: %s", message.topic, exc)
            return
        with self._lock:
            self._latest[device] = (time.time(), status)
