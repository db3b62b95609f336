"""Notices wired into the agent: ingest tells the notifier, ``run`` starts it, ``notify test`` and ``notify list``.

Deliveries go to a real local SMTP server (aiosmtpd) and a real local webhook
receiver that fails first, so a retry is part of every path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.archive import Archive, CallRow
from agent.cli import main as agent_main
from agent.ingest import Ingest
from agent.notify import Notifier, NotifySettings, RetryPolicy, WebhookSettings
from firmware.wire import topics
from firmware.wire.broker import BrokerSettings
from firmware.wire.messages import AckStatus, decode_ack
from tests.support.broker import Mosquitto
from tests.support.process import stop_politely
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.studio import Studio, rec_id

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"crm-shared-secret-0123456789abcdef"
FAST = RetryPolicy(max_attempts=5, backoff_s=0.05, backoff_max_s=0.2)


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def crm() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(script=[503])  # down for the first request: every path has a retry
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    with Archive(tmp_path / "archive") as archive:
        yield Studio(archive)


def settings(crm: WebhookReceiver, smtp: SmtpReceiver | None = None) -> NotifySettings:
    hook = WebhookSettings(url=crm.url, secret=SECRET, timeout_s=2.0, retry=FAST)
    return NotifySettings(urls=(smtp.url(),) if smtp else (), retry=FAST, webhooks=(hook,))


def send(ingest: Ingest, messages: list[tuple[str, bytes]]) -> list[AckStatus]:
    return [decode_ack(body).status for topic, payload in messages for _, body in ingest.handle(topic, payload)]


def signed_by_us(body: bytes, headers: dict[str, str]) -> bool:
    stamp = headers["x-linerec-timestamp"].encode()
    expected = "sha256=" + hmac.new(SECRET, stamp + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-linerec-signature"])


def test_a_stored_recording_reaches_the_crm_after_a_retry_and_the_mailbox(
    studio: Studio, crm: WebhookReceiver, smtp: SmtpReceiver, tmp_path: Path
) -> None:
    notifier = Notifier(settings(crm, smtp), tmp_path / "outbox.sqlite")
    ingest = Ingest(
        archive=studio.archive, identities=studio.identities, broker=BrokerSettings(), on_stored=notifier.notify_stored
    )
    notifier.start()
    try:
        sealed = studio.seal(rec_id(1, 9, 1), number="2125550142", name="ACME PLUMBING")
        assert send(ingest, sealed.messages())[-1] is AckStatus.STORED
        first, second = crm.wait(2)
        assert (first.answer, second.answer) == (503, 200)
        assert first.headers["x-linerec-delivery"] == second.headers["x-linerec-delivery"]
        assert signed_by_us(second.body, second.headers)
        doc = json.loads(second.body)
        assert (doc["event"], doc["id"], doc["call"]["caller"]["number"]) == (
            "recording",
            sealed.manifest.recording_id,
            "2125550142",
        )
        (mail,) = smtp.wait(1)
        assert mail["Subject"].startswith("Call recorded: 2125550142 (ACME PLUMBING)")
        missed = studio.seal(rec_id(1, 10, 2), answered=False)
        assert send(ingest, missed.messages())[-1] is AckStatus.STORED
        assert json.loads(crm.wait(3)[2].body)["event"] == "missed"
        assert notifier.drain(20)
    finally:
        notifier.stop()


def test_a_crash_between_commit_and_notice_is_made_good_by_the_device_asking_again(
    studio: Studio, crm: WebhookReceiver, tmp_path: Path
) -> None:
    # Stored, but the agent died before it told anyone: the device never got its ack either.
    sealed = studio.seal(rec_id(2, 9, 3))
    studio.store(rec_id(2, 9, 3))
    notifier = Notifier(settings(crm), tmp_path / "outbox.sqlite")
    ingest = Ingest(
        archive=studio.archive, identities=studio.identities, broker=BrokerSettings(), on_stored=notifier.notify_stored
    )
    fin = sealed.messages()[-1]
    assert send(ingest, [fin]) == [AckStatus.STORED]
    assert send(ingest, [fin]) == [AckStatus.STORED]  # asked twice: still one delivery
    assert [d.recording for d in notifier.deliveries()] == [rec_id(2, 9, 3)]
    notifier.start()
    try:
        assert notifier.drain(20)
    finally:
        notifier.stop()
    assert [hit.answer for hit in crm.wait(2)] == [503, 200]


def test_a_failing_notifier_does_not_cost_the_device_its_ack(studio: Studio, caplog: pytest.LogCaptureFixture) -> None:
    def broken(row: CallRow) -> None:
        msg = f"outbox is on a full disk ({row.id})"
        raise OSError(msg)

    ingest = Ingest(archive=studio.archive, identities=studio.identities, broker=BrokerSettings(), on_stored=broken)
    with caplog.at_level(logging.ERROR, logger="linerec.agent.ingest"):
        assert send(ingest, studio.seal(rec_id(3, 9, 4)).messages())[-1] is AckStatus.STORED
    assert f"recording {rec_id(3, 9, 4)} is archived, but telling about it failed" in caplog.messages
    assert studio.archive.has(rec_id(3, 9, 4))


# --- the verbs -------------------------------------------------------------------------------


def write_conf(tmp_path: Path, body: str) -> Path:
    secret = tmp_path / "webhook.key"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    conf = tmp_path / "agent.toml"
    conf.write_text(
        f'[agent]\nidentity = "{tmp_path / "identity.txt"}"\narchive_dir = "{tmp_path / "archive"}"\n{body}'
        f'[[webhook]]\nsecret_file = "{secret}"\nbackoff_s = 0.05\nbackoff_max_s = 0.2\nmax_attempts = 3\n'
    )
    return conf


def test_notify_test_reaches_every_target_and_notify_list_shows_it(
    tmp_path: Path, crm: WebhookReceiver, smtp: SmtpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_conf(tmp_path, f'[notify]\nurls = ["{smtp.url()}"]\nbackoff_s = 0.05\n')
    conf.write_text(conf.read_text() + f'url = "{crm.url}"\n')
    assert agent_main(["--config", str(conf), "notify", "test", "--timeout", "20"]) == 0
    lines = sorted(capsys.readouterr().out.splitlines())
    assert lines[0] == f"{crm.url}: delivered after 2 attempt(s)"
    assert lines[1].startswith("mailto://127.0.0.1:") and lines[1].endswith(": delivered after 1 attempt(s)")
    assert json.loads(crm.wait(2)[1].body)["event"] == "test"
    assert smtp.wait(1)[0]["Subject"] == "linerec test notice"
    assert agent_main(["--config", str(conf), "notify", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((d["event"], d["status"], d["attempts"]) for d in listed) == [
        ("test", "delivered", 1),
        ("test", "delivered", 2),
    ]
    assert agent_main(["--config", str(conf), "notify", "list", "--status", "failed"]) == 0
    assert capsys.readouterr().out == ""


def test_notify_test_fails_when_a_target_cannot_be_reached(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    down = WebhookReceiver()  # never started: nothing listens on its port
    conf = write_conf(tmp_path, "")
    conf.write_text(conf.read_text() + f'url = "{down.url}"\n')
    assert agent_main(["--config", str(conf), "notify", "test", "--timeout", "20"]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{down.url}: failed after 3 attempt(s): ")


def test_notify_without_targets_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text(f'[agent]\narchive_dir = "{tmp_path / "archive"}"\n')
    assert agent_main(["--config", str(conf), "notify", "test"]) == 1
    assert capsys.readouterr().err.strip() == (
        "linerec-agent: error: nothing is set to be told: add notify.urls or a [[webhook]] to the config"
    )


def test_run_stores_acks_and_notifies_through_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, crm: WebhookReceiver
) -> None:
    with Archive(tmp_path / "archive") as archive:
        studio = Studio(archive)
        (tmp_path / "identity.txt").write_text(studio.identity + "\n")
        sealed = studio.seal(rec_id(4, 9, 5), number="2125550101")
    conf = write_conf(tmp_path, f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n')
    conf.write_text(conf.read_text() + f'url = "{crm.url}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--config", str(conf), "run"],
        env=env,
        stderr=subprocess.PIPE,
    )
    acked = threading.Event()
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-device")
    device.on_message = lambda _c, _u, m: acked.set() if decode_ack(m.payload).status is AckStatus.STORED else None
    device.connect("127.0.0.1", mosquitto.port)
    device.subscribe(topics.ack(studio.device), qos=1)
    device.loop_start()
    try:
        deadline = time.monotonic() + 30
        while not acked.is_set():  # as a device does: send again until the agent answers
            assert time.monotonic() < deadline, "the agent never acknowledged the recording"
            for topic, payload in sealed.messages():
                device.publish(topic, payload, qos=1).wait_for_publish(5)
            acked.wait(1.0)
        hits = crm.wait(2, timeout=20)
        assert [hit.answer for hit in hits] == [503, 200]
        assert json.loads(hits[1].body)["call"]["caller"]["number"] == "2125550101"
    finally:
        device.loop_stop()
        device.disconnect()
        stop_politely(agent)
    assert agent.returncode == 0
    assert agent.stderr is not None
    assert b"Traceback" not in agent.stderr.read()
    with Archive(tmp_path / "archive") as archive:
        assert archive.has(rec_id(4, 9, 5))
