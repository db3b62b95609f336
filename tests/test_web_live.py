"""The devices page follows the broker itself: a device's retained status shows at once, the stored one without it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.wire import topics
from firmware.wire.messages import encode_status
from tests.support.broker import Mosquitto
from tests.support.studio import DEVICE
from tests.support.web import PASSWORD, Site, cookie_values, running_site


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Site]:
    with running_site(tmp_path, mosquitto.settings) as running:
        yield running


def devices(site: Site, jar: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer, body = site.request("GET", "/devices/status.json", cookies=jar)
    assert answer.status == 200
    return {d["id"]: d for d in json.loads(body)["devices"]}


def publish(mosquitto: Mosquitto, device: str, payload: bytes) -> None:
    client = mosquitto.settings.client("status-publisher")
    client.connect(mosquitto.settings.host, mosquitto.settings.port)
    client.loop_start()
    client.publish(topics.status(device), payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def wait_for(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_a_devices_retained_status_shows_live_and_the_stored_one_stays_when_the_broker_goes(
    site: Site, mosquitto: Mosquitto
) -> None:
    answer, jar = site.sign_in("ada", PASSWORD)
    assert answer.status == 303
    jar = {**jar, **cookie_values(answer)}
    before = devices(site, jar)[DEVICE]
    assert (before["source"], before["spool_depth"]) == ("stored", 2)  # what the index holds

    publish(mosquitto, DEVICE, encode_status("online", {"spool_depth": 7, "disk_free_bytes": 1_000}))
    publish(mosquitto, "pi-stranger", encode_status("online", {"spool_depth": 1}))  # not enrolled
    publish(mosquitto, DEVICE + "x", b"not json")
    live = wait_for(lambda: (d := devices(site, jar)[DEVICE])["source"] == "live" and d, "the live status")
    assert (live["state"], live["spool_depth"], live["disk_free_bytes"]) == ("online", 7, 1_000)
    assert "pi-stranger" not in devices(site, jar)

    mosquitto.kill()  # the page goes on with what it last heard
    assert devices(site, jar)[DEVICE]["spool_depth"] == 7
