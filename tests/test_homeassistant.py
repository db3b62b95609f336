"""Home Assistant sees the line: discovery configs, the status they read, and the last will.

The pure tests check every discovery payload field by field. The rest run a real
mosquitto: a device's uplink publishes the configs retained, publishes them again
when Home Assistant announces itself, and its status follows a simulated call.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware import __version__, config
from firmware.calls import CallState
from firmware.config import ArchiveSettings, DeviceConfig, DeviceSettings, UplinkSettings
from firmware.errors import ConfigError
from firmware.homeassistant import EVENT_TYPES, LINE_STATES, Discovery
from firmware.line.sim import SimLine
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.uplink import Uplink, UplinkError
from firmware.wire import age, topics
from firmware.wire.errors import WireError
from firmware.wire.messages import decode_status
from firmware.wire.signing import load_or_create_signing_key
from tests.support.broker import Mosquitto

DEVICE = "hall-pi"
REPO = Path(__file__).resolve().parent.parent
STATUS = topics.status(DEVICE)
EVENT = topics.event(DEVICE)
NUMBER = "02079460018"  # the caller in the gb-pre-ring-cid scenario

COMMON_KEYS = {"name", "unique_id", "default_entity_id", "device", "availability", "state_topic", "value_template"}
REQUIRED: dict[str, dict[str, object]] = {
    "sensor/line_state": {"device_class": "enum", "options": ["idle", "ringing", "answered"], "state_topic": STATUS},
    "binary_sensor/ringing": {"payload_on": "ON", "payload_off": "OFF", "state_topic": STATUS},
    "event/incoming_call": {"event_types": ["ringing", "answered", "ended", "missed"], "state_topic": EVENT},
    "sensor/spool_depth": {"state_class": "measurement", "unit_of_measurement": "recordings", "state_topic": STATUS},
}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def discovery(**options: Any) -> Discovery:
    return Discovery(device_id=DEVICE, sw_version=__version__, model="call recorder (sim line)", **options)


def configs(found: Discovery) -> dict[str, dict[str, Any]]:
    """The discovery payloads by ``component/object_id``, each checked to sit on its proper topic."""
    result: dict[str, dict[str, Any]] = {}
    for topic, payload in found.messages():
        prefix, component, node, object_id, last = topic.rsplit("/", 4)
        assert (prefix, node, last) == (found.prefix, f"linerec_{DEVICE}", "config")
        result[f"{component}/{object_id}"] = json.loads(payload)
    return result


def fields_read(template: str) -> set[str]:
    """The payload fields a value template reads."""
    return set(re.findall(r"value_json\.(\w+)", template))


# -- discovery payloads, pure --------------------------------------------------------


def test_every_discovery_payload_has_every_required_field() -> None:
    found = configs(discovery())

    assert set(found) == set(REQUIRED)
    for key, cfg in found.items():
        component, object_id = key.split("/")
        assert set(cfg) >= COMMON_KEYS, key
        for name, value in REQUIRED[key].items():
            assert cfg[name] == value, (key, name)
        assert cfg["unique_id"] == f"linerec_{DEVICE}_{object_id}"
        # Entity ids allow letters, digits and '_' only, so the device id's '-' is replaced.
        assert cfg["default_entity_id"] == f"{component}.linerec_hall_pi_{object_id}"
        assert cfg["device"] == {
            "identifiers": [f"linerec_{DEVICE}"],
            "name": f"linerec {DEVICE}",
            "manufacturer": "linerec",
            "model": "call recorder (sim line)",
            "sw_version": __version__,
        }
        assert cfg["availability"] == [
            {
                "topic": STATUS,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
        assert cfg["value_template"].startswith("{")
    assert len({cfg["unique_id"] for cfg in found.values()}) == len(found)
    assert fields_read(found["sensor/line_state"]["value_template"]) == {"line_state"}
    assert fields_read(found["binary_sensor/ringing"]["value_template"]) == {"line_state"}
    assert "'ringing'" in found["binary_sensor/ringing"]["value_template"]
    assert fields_read(found["sensor/spool_depth"]["value_template"]) == {"spool_depth"}
    assert "'event_type': value_json.event" in found["event/incoming_call"]["value_template"]


def test_the_line_state_options_are_every_state_the_status_can_report() -> None:
    # The call machine hands an ended call back as idle at once; the status never says "ended".
    assert set(LINE_STATES) == {s.value for s in CallState} - {"ended"}
    assert list(EVENT_TYPES) == REQUIRED["event/incoming_call"]["event_types"]


def test_caller_id_reaches_the_event_entity_only_when_the_owner_enables_it() -> None:
    without = configs(discovery())["event/incoming_call"]["value_template"]
    with_id = configs(discovery(include_caller_id=True))["event/incoming_call"]["value_template"]

    assert "caller" not in without
    assert fields_read(without) == {"event", "line", "ring_count"}
    assert fields_read(with_id) == {"event", "line", "ring_count", "caller_id"}
    assert "'caller_number': id.number" in with_id
    assert "'caller_name': id.name" in with_id


def test_the_discovery_prefix_is_configurable_and_checked(tmp_path: Path) -> None:
    assert {topic.split("/")[0] for topic, _ in discovery(prefix="ha").messages()} == {"ha"}
    assert discovery(prefix="ha").birth_topic == "ha/status"
    with pytest.raises(WireError, match=r"^discovery prefix 'home/#' is not valid: use topic levels"):
        discovery(prefix="home/#")
    path = tmp_path / "device.toml"
    recipient = age.recipient_of(age.generate_identity())
    path.write_text(
        f'[device]\nid = "pi-1"\n[archive]\nrecipients = ["{recipient}"]\n'
        '[uplink]\nhomeassistant = true\ndiscovery_prefix = "/ha"\n'
    )
    with pytest.raises(ConfigError, match=r"uplink\.discovery_prefix is '/ha'; expected MQTT topic levels"):
        config.load(path)


def test_an_uplink_refuses_discovery_for_another_device(tmp_path: Path) -> None:
    other = Discovery(device_id="other-pi", sw_version=__version__)
    with pytest.raises(UplinkError, match="uplink discovery is for device 'other-pi'; expected 'hall-pi'"):
        Uplink(device_id=DEVICE, spool=Spool(tmp_path / "spool"), broker=Mosquitto(tmp_path).settings, discovery=other)


# -- against a real broker -----------------------------------------------------------


@dataclass
class Watcher:
    """A client that keeps every message on the topics it was given, in arrival order."""

    mosquitto: Mosquitto
    subscriptions: tuple[str, ...]
    seen: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watcher-{id(self)}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in self.subscriptions])
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda _c, _u, m: self.seen.append((m.topic, bytes(m.payload), bool(m.retain)))
        self.client.connect(self.mosquitto.settings.host, self.mosquitto.port)
        self.client.loop_start()
        assert self.ready.wait(10), "watcher did not subscribe"

    def on(self, topic_start: str) -> list[tuple[str, bytes, bool]]:
        return [m for m in list(self.seen) if m[0].startswith(topic_start)]

    def statuses(self) -> list[dict[str, Any]]:
        return [decode_status(payload) for topic, payload, _ in list(self.seen) if topic == STATUS]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watch(mosquitto: Mosquitto) -> Iterator[Callable[..., Watcher]]:
    made: list[Watcher] = []

    def make(*subscriptions: str) -> Watcher:
        made.append(Watcher(mosquitto, subscriptions))
        return made[-1]

    try:
        yield make
    finally:
        for watcher in made:
            watcher.close()


@pytest.fixture
def make_uplink(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Callable[..., Uplink]]:
    made: list[Uplink] = []

    def make(**options: Any) -> Uplink:
        settings: dict[str, Any] = {"ack_timeout_s": 1.0, "retry_backoff_s": (0.05, 0.3), "discovery": discovery()}
        settings.update(options)
        uplink = Uplink(
            device_id=DEVICE, spool=Spool(tmp_path / "state" / "spool"), broker=mosquitto.settings, **settings
        )
        made.append(uplink)
        return uplink

    try:
        yield make
    finally:
        for uplink in made:
            uplink.stop(timeout=5)


def test_discovery_is_retained_on_connect_and_sent_again_when_home_assistant_comes_online(
    make_uplink: Callable[..., Uplink], watch: Callable[..., Watcher]
) -> None:
    expected = dict(discovery().messages())
    uplink = make_uplink()
    uplink.start()
    wait_until(lambda: uplink.connected, what="connection")

    # Home Assistant starting later still finds every config, retained.
    late = watch("homeassistant/#")
    wait_until(lambda: len(late.on("homeassistant/")) == len(expected), what="retained discovery configs")
    assert {topic: payload for topic, payload, _ in late.seen} == expected
    assert all(retained for _, _, retained in late.seen)

    home_assistant = watch("homeassistant/+/+/+/config")
    wait_until(lambda: len(home_assistant.seen) == len(expected), what="retained configs for the second watcher")
    home_assistant.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
    wait_until(lambda: len(home_assistant.seen) == 2 * len(expected), what="discovery sent again")
    assert {topic: payload for topic, payload, _ in home_assistant.seen[len(expected) :]} == expected


def test_the_status_carries_every_fact_and_follows_the_line_through_a_call(
    tmp_path: Path, make_uplink: Callable[..., Uplink], watch: Callable[..., Watcher]
) -> None:
    identity = age.generate_identity()
    cfg = DeviceConfig(
        device=DeviceSettings(id=DEVICE, state_dir=tmp_path / "state"),
        archive=ArchiveSettings(recipients=(age.recipient_of(identity),)),
        uplink=UplinkSettings(events_include_caller_id=True),
    )
    spool = Spool(cfg.device.spool_dir)
    services: list[DeviceService] = []
    uplink = make_uplink(status_facts=lambda: services[0].status_facts() if services else {})
    watcher = watch(STATUS, EVENT)
    uplink.start()
    wait_until(lambda: uplink.connected, what="connection")
    line = SimLine.from_scenario("gb-pre-ring-cid", start_time=1_790_000_000.0, seed=5)
    with line:
        key = load_or_create_signing_key(cfg.device.signing_key_path)
        services.append(DeviceService(config=cfg, backend=line, spool=spool, signing_key=key, uplink=uplink))
        [rec_id] = services[0].run()
    wait_until(lambda: any(s.get("last_call") for s in watcher.statuses()), what="status after the call")

    states = [s.get("line_state") for s in watcher.statuses()]
    changes = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert changes[-3:] == ["ringing", "answered", "idle"]
    final = next(s for s in reversed(watcher.statuses()) if s.get("last_call"))
    assert set(final) == {
        "v",
        "state",
        "firmware_version",
        "spool_depth",
        "spool_bytes",
        "disk_free_bytes",
        "line_state",
        "audio_overflows",
        "last_call",
        "disk_alert",
    }
    assert (final["state"], final["firmware_version"], final["line_state"]) == ("online", __version__, "idle")
    assert final["spool_depth"] == 1
    assert final["spool_bytes"] == spool.get(rec_id).size
    assert isinstance(final["disk_free_bytes"], int)
    assert final["disk_free_bytes"] > 0
    assert final["disk_alert"] is False
    last = final["last_call"]
    assert set(last) == {"started_at", "ended_at", "answered", "duration_s", "hangup_cause", "rings"}
    assert (last["answered"], last["hangup_cause"]) == (True, "local-onhook")
    assert last["started_at"].startswith("2026-")
    assert last["duration_s"] > 5.0
    # Caller ID may go to the event topic when the owner allows it; the retained status never carries it.
    status_bytes = b"".join(payload for topic, payload, _ in watcher.seen if topic == STATUS)
    events = [json.loads(payload) for topic, payload, _ in watcher.seen if topic == EVENT]
    assert NUMBER.encode() not in status_bytes
    assert any(e.get("caller_id", {}).get("number") == NUMBER for e in events)
    # Every event is one the event entity declares, and the templates read fields that exist.
    assert {e["event"] for e in events} == set(EVENT_TYPES) - {"missed"}
    for key, cfg_json in configs(discovery(include_caller_id=True)).items():
        payloads = [final] if cfg_json["state_topic"] == STATUS else [e for e in events if e["event"] == "ended"]
        for payload in payloads:
            assert fields_read(cfg_json["value_template"]) <= set(payload), key


UPLINK_PROCESS = """
import sys, time
from pathlib import Path
from firmware.homeassistant import Discovery
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire.broker import BrokerSettings

uplink = Uplink(device_id=sys.argv[3], spool=Spool(Path(sys.argv[1])),
                broker=BrokerSettings(host="127.0.0.1", port=int(sys.argv[2])), ack_timeout_s=1.0,
                discovery=Discovery(device_id=sys.argv[3], sw_version="0"))
uplink.start()
time.sleep(120)
"""


def test_a_killed_device_is_offline_by_its_last_will_and_its_entities_stay_discovered(
    tmp_path: Path, mosquitto: Mosquitto, watch: Callable[..., Watcher]
) -> None:
    watcher = watch(STATUS, "homeassistant/#")
    process = subprocess.Popen(
        [sys.executable, "-c", UPLINK_PROCESS, str(tmp_path / "spool"), str(mosquitto.port), DEVICE], cwd=REPO
    )
    try:
        wait_until(lambda: any(s["state"] == "online" for s in watcher.statuses()), what="online status")
        wait_until(lambda: len(watcher.on("homeassistant/")) == len(REQUIRED), what="discovery configs")
        process.kill()
        process.wait(10)
        wait_until(lambda: watcher.statuses()[-1]["state"] == "offline", what="offline status from the last will")
    finally:
        process.kill()
        process.wait(10)
    late = watch(STATUS, "homeassistant/#")
    wait_until(lambda: len(late.seen) == 1 + len(REQUIRED), what="retained status and configs")
    will = late.statuses()
    assert will == [{"v": 1, "state": "offline"}]
    # The availability template reads the will's state, which is the payload that means unavailable.
    for _topic, payload, _ in late.on("homeassistant/"):
        [availability] = json.loads(payload)["availability"]
        assert availability["payload_not_available"] == will[0]["state"]
