"""Home Assistant MQTT discovery: the retained config messages that describe a linerec device.

Pure: it builds ``(topic, payload)`` pairs and the uplink publishes them. Every
entity reads the topics linerec already publishes (the retained status JSON and
the line events), so Home Assistant needs no topic of its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from firmware.wire import topics
from firmware.wire.errors import WireError

DEFAULT_PREFIX = "homeassistant"
MANUFACTURER = "linerec"

# The line states the status reports (CallState, with "ended" folded into "idle").
LINE_STATES = ("idle", "ringing", "answered")
# What DeviceService publishes on the event topic.
EVENT_TYPES = ("ringing", "answered", "ended", "missed")

# Home Assistant accepts only these characters in a discovery topic's node and object ids.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")

# Payloads without the fact (the last will carries only the state) make the entity unknown,
# not an error: Home Assistant reads a template that renders "None" as no value.
_STATUS_FACT = "{{{{ value_json.{0} | default(None) }}}}"
_AVAILABILITY = "{{ value_json.state }}"
_RINGING = "{{ 'ON' if value_json.line_state | default('') == 'ringing' else 'OFF' }}"
_EVENT_FIELDS = "'event_type': value_json.event, 'line': value_json.line, 'ring_count': value_json.ring_count"
_EVENT = "{{ {" + _EVENT_FIELDS + "} | tojson }}"
_EVENT_WITH_CALLER = (
    "{% set id = value_json.caller_id | default({}) %}"
    "{{ {" + _EVENT_FIELDS + ", 'caller_number': id.number | default(None),"
    " 'caller_name': id.name | default(None)} | tojson }}"
)


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can head a discovery topic, else raise WireError."""
    if not _PREFIX_RE.fullmatch(prefix):
        msg = (
            f"discovery prefix {prefix!r} is not valid: use topic levels of letters, digits,"
            " '_' or '-' separated by '/', e.g. 'homeassistant'"
        )
        raise WireError(msg)
    return prefix


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """How one device describes itself to Home Assistant."""

    device_id: str
    sw_version: str
    prefix: str = DEFAULT_PREFIX
    model: str = "call recorder"
    # Caller ID reaches Home Assistant only when the owner let it onto the event topic.
    include_caller_id: bool = False

    def __post_init__(self) -> None:
        topics.check_device_id(self.device_id)
        check_prefix(self.prefix)

    @property
    def node_id(self) -> str:
        """The discovery topic level that groups this device's entities."""
        return f"linerec_{self.device_id}"

    @property
    def birth_topic(self) -> str:
        """Where Home Assistant says ``online`` when it starts: discovery must then be sent again."""
        return f"{self.prefix}/status"

    def config_topic(self, component: str, object_id: str) -> str:
        """The retained config topic of one entity."""
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def messages(self) -> list[tuple[str, bytes]]:
        """Every entity's config topic and JSON payload, to publish retained."""
        status = topics.status(self.device_id)
        entities: list[tuple[str, str, dict[str, object]]] = [
            (
                "sensor",
                "line_state",
                {
                    "name": "Line state",
                    "state_topic": status,
                    "value_template": _STATUS_FACT.format("line_state"),
                    "device_class": "enum",
                    "options": list(LINE_STATES),
                    "icon": "mdi:phone-classic",
                },
            ),
            (
                "binary_sensor",
                "ringing",
                {
                    "name": "Ringing",
                    "state_topic": status,
                    "value_template": _RINGING,
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "icon": "mdi:phone-ring",
                },
            ),
            (
                "event",
                "incoming_call",
                {
                    "name": "Incoming call",
                    "state_topic": topics.event(self.device_id),
                    "value_template": _EVENT_WITH_CALLER if self.include_caller_id else _EVENT,
                    "event_types": list(EVENT_TYPES),
                    "icon": "mdi:phone-incoming",
                },
            ),
            (
                "sensor",
                "spool_depth",
                {
                    "name": "Spool depth",
                    "state_topic": status,
                    "value_template": _STATUS_FACT.format("spool_depth"),
                    "state_class": "measurement",
                    "unit_of_measurement": "recordings",
                    "icon": "mdi:tray-full",
                    "entity_category": "diagnostic",
                },
            ),
        ]
        return [
            (self.config_topic(component, object_id), _dump(self._common(component, object_id) | config))
            for component, object_id, config in entities
        ]

    def _common(self, component: str, object_id: str) -> dict[str, object]:
        unique_id = f"{self.node_id}_{object_id}"
        return {
            "unique_id": unique_id,
            # object_id is deprecated since Home Assistant 2025.10; entity ids allow no '-'.
            "default_entity_id": f"{component}.{unique_id.replace('-', '_')}",
            "device": {
                "identifiers": [self.node_id],
                "name": f"linerec {self.device_id}",
                "manufacturer": MANUFACTURER,
                "model": self.model,
                "sw_version": self.sw_version,
            },
            "availability": [
                {
                    "topic": topics.status(self.device_id),
                    "value_template": _AVAILABILITY,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                }
            ],
            "qos": 1,
        }


def _dump(config: dict[str, object]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
