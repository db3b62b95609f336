"""The shipped broker setup holds: TLS, passwords and the ACL in examples/mosquitto keep devices and the agent apart.

Every test runs against one private mosquitto with a TLS-only listener, a
password file made by ``mosquitto_passwd`` and the ACL file exactly as it ships,
and every client is built by ``BrokerSettings.client`` so the project's own TLS
and login code is what connects.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.reasoncodes import ReasonCode

from agent.archive import Archive
from agent.ingest import Ingest
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire import topics
from firmware.wire.age import encrypt_bytes, generate_identity, parse_identity, recipient_of
from firmware.wire.broker import BrokerSettings
from firmware.wire.manifest import sign_manifest
from firmware.wire.messages import Ack, AckStatus, decode_ack, encode_ack, encode_chunk, encode_status
from firmware.wire.signing import public_key_text
from tests.support.broker import Mosquitto, Security, write_password_file
from tests.support.certs import Pki, make_pki
from tests.test_archive import make_manifest

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed; `make test` installs it with apt-get",
    ),
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed"),
]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mosquitto"
SHIPPED_ACL = EXAMPLE / "acl"
SHIPPED_CONF = EXAMPLE / "mosquitto.conf"
AGENT = "linerec-agent"
DEVICE_A = "pi-a"
DEVICE_B = "pi-b"
PASSWORDS = {DEVICE_A: "a-secret", DEVICE_B: "b-secret", AGENT: "agent-secret"}
REC_ID = "20240305T233000123Z-0a1b2c3d"
# A message the broker let through arrives in milliseconds on loopback; this is the bound on waiting for one that
# must not come. Where the tests can, a control message sent after the forbidden one has arrived first, and MQTT
# keeps one publisher's messages in order, so the wait is a second line of proof.
QUIET_S = 1.0
WAIT_S = 10.0

# MQTT 5 "Not authorized", in a CONNACK and in a PUBACK. Mosquitto 2.0 answers a wrong password, an unknown user
# and a missing user name with it too, not with 0x86 "Bad user name or password".
NOT_AUTHORIZED = 0x87


@dataclass
class Secured:
    """The locked-down broker and what a client needs to reach it."""

    broker: Mosquitto
    pki: Pki
    rogue_ca: Path

    def settings(self, user: str | None = None, password: str | None = None) -> BrokerSettings:
        """TLS settings that trust the broker's CA, logged in as ``user`` (with its own password by default)."""
        if user is None:
            return self.broker.settings
        return dataclasses.replace(self.broker.settings, username=user, password=password or PASSWORDS[user])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    work = tmp_path_factory.mktemp("secure-mosquitto")
    pki = make_pki(work / "pki", (DEVICE_A,))
    rogue = make_pki(work / "rogue", ca_name="someone else's CA")
    acl = work / "acl"
    acl.write_text(SHIPPED_ACL.read_text(encoding="utf-8"), encoding="utf-8")
    security = Security(
        ca_file=pki.ca_file,
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        password_file=write_password_file(work / "passwd", PASSWORDS),
        acl_file=acl,
    )
    broker = Mosquitto(work, security=security)
    broker.start()
    try:
        yield Secured(broker, pki, rogue.ca_file)
    finally:
        broker.stop()


class Client:
    """A connected test client: what it receives, and the broker's answer to each of its publishes."""

    def __init__(self, settings: BrokerSettings, client_id: str) -> None:
        self.settings = settings
        self.paho = settings.client(client_id)
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self._pubacks: dict[int, ReasonCode] = {}
        self._cond = threading.Condition()
        self.paho.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.paho.on_message = lambda _c, _u, message: self.messages.put(message)
        self.paho.on_subscribe = lambda _c, _u, _m, reasons, _p: self._subacks.put(reasons)
        self.paho.on_publish = self._on_publish
        self.paho.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.put(reason)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._pubacks[mid] = reason
            self._cond.notify_all()

    def start(self) -> None:
        """Open the connection (TLS handshake included) and send CONNECT, without waiting for the answer."""
        self.paho.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.paho.loop_start()

    def connect(self) -> ReasonCode:
        """Connect and return the CONNACK reason code."""
        self.start()
        return self.connack.get(timeout=WAIT_S)

    def subscribe(self, *patterns: str) -> None:
        self.paho.subscribe([(p, 1) for p in patterns])
        reasons = self._subacks.get(timeout=WAIT_S)
        assert not any(r.is_failure for r in reasons), reasons

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK reason code, which MQTT 5 uses to say "not authorized"."""
        info = self.paho.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self._pubacks, WAIT_S), f"no PUBACK for {topic}"
            return self._pubacks.pop(info.mid)

    def drain(self) -> list[tuple[str, bytes]]:
        """Every message received and not yet taken."""
        got = []
        while not self.messages.empty():
            message = self.messages.get_nowait()
            got.append((message.topic, bytes(message.payload)))
        return got

    def next_message(self) -> tuple[str, bytes]:
        message = self.messages.get(timeout=WAIT_S)
        return message.topic, bytes(message.payload)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def quiet(*observers: Client) -> list[tuple[str, bytes]]:
    """What any of ``observers`` received in the next QUIET_S seconds, which should be nothing."""
    time.sleep(QUIET_S)
    return [message for observer in observers for message in observer.drain()]


@pytest.fixture
def clients(secured: Secured) -> Iterator[dict[str, Client]]:
    """Device A, device B and the agent, each logged in with its own account and connected."""
    made = {user: Client(secured.settings(user), f"test-{user}") for user in PASSWORDS}
    try:
        for client in made.values():
            assert client.connect() == "Success"
        yield made
    finally:
        for client in made.values():
            client.close()


# --- logging in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "password"), [(DEVICE_A, "wrong"), (DEVICE_A, PASSWORDS[DEVICE_B]), ("pi-x", "x")])
def test_a_wrong_password_or_unknown_user_is_refused(secured: Secured, user: str, password: str) -> None:
    client = Client(secured.settings(user, password), "test-bad-login")
    try:
        reason = client.connect()
    finally:
        client.close()
    assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized")


def test_a_client_without_a_user_is_refused(secured: Secured) -> None:
    client = Client(secured.settings(), "test-anonymous")
    try:
        reason = client.connect()
    finally:
        client.close()
    assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized")


def test_the_uplink_logs_the_brokers_refusal_of_a_wrong_password(
    secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = secured.settings(DEVICE_A, "wrong")
    uplink = Uplink(device_id=DEVICE_A, spool=Spool(tmp_path / "spool"), broker=settings)
    expected = f"broker {settings.address} refused the connection: Not authorized"
    with caplog.at_level(logging.WARNING, logger="linerec.uplink"):
        uplink.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while expected not in caplog.messages and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            uplink.stop(timeout=5)
    assert expected in caplog.messages


# --- TLS ----------------------------------------------------------------------------------------


def test_a_client_that_trusts_another_ca_refuses_the_broker(secured: Secured) -> None:
    settings = dataclasses.replace(secured.settings(DEVICE_A), ca_file=secured.rogue_ca)
    client = settings.client("test-wrong-ca")
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        client.connect(settings.host, settings.port)
    # OpenSSL on the broker sends its CA along with its certificate, and that CA is not the one trusted here.
    assert failure.value.verify_message == "self-signed certificate in certificate chain"


def test_an_uplink_that_trusts_another_ca_says_why_it_cannot_connect(
    secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(secured.settings(DEVICE_A), ca_file=secured.rogue_ca)
    uplink = Uplink(device_id=DEVICE_A, spool=Spool(tmp_path / "spool"), broker=settings)
    expected = f"cannot connect to the broker at {settings.address}: SSLCertVerificationError"
    with caplog.at_level(logging.WARNING, logger="linerec.mqtt"):
        uplink.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while not any(m.startswith(expected) for m in caplog.messages) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            uplink.stop(timeout=5)
    [said] = [m for m in caplog.messages if m.startswith(expected)]
    assert "self-signed certificate in certificate chain" in said


def test_a_client_that_trusts_the_brokers_ca_connects(secured: Secured) -> None:
    client = Client(secured.settings(DEVICE_A), "test-right-ca")
    try:
        assert client.connect() == "Success"
    finally:
        client.close()


# --- the shipped mosquitto.conf ----------------------------------------------------------------


def shipped_config(secured: Secured, workdir: Path, port: int, *, client_certificates: bool) -> str:
    """examples/mosquitto/mosquitto.conf with the test's port, files and log, and nothing else changed."""
    security = secured.broker.security
    assert security is not None
    text = SHIPPED_CONF.read_text(encoding="utf-8")
    swaps = {
        "listener 8883\n": f"listener {port} 127.0.0.1\n",
        "/etc/mosquitto/certs/ca.crt\n": f"{security.ca_file}\n",
        "/etc/mosquitto/certs/server.crt\n": f"{security.cert_file}\n",
        "/etc/mosquitto/certs/server.key\n": f"{security.key_file}\n",
        "/etc/mosquitto/linerec.passwd\n": f"{security.password_file}\n",
        "/etc/mosquitto/linerec.acl\n": f"{security.acl_file}\n",
        "/var/lib/mosquitto/\n": f"{workdir}/\n",
        "log_dest syslog\n": "log_dest stderr\n",
    }
    if client_certificates:
        swaps |= {"#require_certificate true\n": "require_certificate true\n"}
        swaps |= {"#use_identity_as_username true\n": "use_identity_as_username true\n"}
    for old, new in swaps.items():
        # If the example changes shape, this test must notice rather than quietly test something else.
        assert text.count(old) == 1, f"{SHIPPED_CONF} no longer has exactly one {old.strip()!r}"
        text = text.replace(old, new)
    # Run as root, mosquitto would drop to the mosquitto user, which cannot read the test's tmp dirs.
    return text + "user root\n"


@pytest.fixture
def shipped_broker(secured: Secured, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path, security=secured.broker.security)
    broker.config = shipped_config(secured, tmp_path, broker.port, client_certificates=request.param)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("shipped_broker", [False], indirect=True)
def test_the_shipped_conf_admits_only_logged_in_clients(shipped_broker: Mosquitto) -> None:
    settings = shipped_broker.settings
    anonymous = Client(settings, "test-anonymous")
    agent = Client(dataclasses.replace(settings, username=AGENT, password=PASSWORDS[AGENT]), "test-agent")
    try:
        reason = anonymous.connect()
        assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized")
        assert agent.connect() == "Success"
        reason = agent.publish(topics.status(DEVICE_A), encode_status("online"))
        assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized")
    finally:
        anonymous.close()
        agent.close()


@pytest.mark.parametrize("shipped_broker", [True], indirect=True)
def test_in_client_certificate_mode_the_certificate_names_the_device(
    secured: Secured, shipped_broker: Mosquitto
) -> None:
    pair = secured.pki.clients[DEVICE_A]
    settings = dataclasses.replace(shipped_broker.settings, cert_file=pair.cert_file, key_file=pair.key_file)
    device_a = Client(settings, "test-certificate")
    try:
        assert device_a.connect() == "Success"
        device_a.subscribe(f"{topics.ROOT}/{DEVICE_A}/#")
        reason = device_a.publish(topics.status(DEVICE_B), encode_status("online"))
        assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized")
        own = (topics.status(DEVICE_A), encode_status("online"))
        assert device_a.publish(*own) == "Success"
        assert device_a.next_message() == own
    finally:
        device_a.close()


@pytest.mark.parametrize("shipped_broker", [True], indirect=True)
def test_in_client_certificate_mode_a_password_alone_is_not_enough(shipped_broker: Mosquitto) -> None:
    settings = dataclasses.replace(shipped_broker.settings, username=AGENT, password=PASSWORDS[AGENT])
    agent = Client(settings, "test-no-certificate")
    try:
        # Under TLS 1.3 the client's side of the handshake completes before the broker checks for a certificate,
        # so the refusal shows as the connection dropping before any CONNACK.
        agent.start()
        reason = agent.disconnects.get(timeout=WAIT_S)
        assert reason.is_failure
        assert agent.connack.empty()
    finally:
        agent.close()


# --- topic rights -------------------------------------------------------------------------------


def test_a_device_cannot_publish_under_another_devices_topics(clients: dict[str, Client]) -> None:
    device_a, device_b, agent = clients[DEVICE_A], clients[DEVICE_B], clients[AGENT]
    agent.subscribe(*topics.AGENT_SUBSCRIPTIONS)
    device_b.subscribe(f"{topics.ROOT}/{DEVICE_B}/#")
    forged = [
        (topics.status(DEVICE_B), encode_status("online")),
        (topics.event(DEVICE_B), b'{"event": "ringing"}'),
        (topics.chunk(DEVICE_B, REC_ID, 0), encode_chunk(0, b"forged bytes")),
    ]
    for topic, payload in forged:
        reason = device_a.publish(topic, payload)
        assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized"), topic
    own = (topics.chunk(DEVICE_A, REC_ID, 0), encode_chunk(0, b"genuine bytes"))
    assert device_a.publish(*own) == "Success"
    assert agent.next_message() == own
    assert quiet(agent, device_b) == []


def test_a_device_cannot_read_another_devices_acks(clients: dict[str, Client]) -> None:
    device_a, device_b, agent = clients[DEVICE_A], clients[DEVICE_B], clients[AGENT]
    # The wildcard subscription itself is allowed; the ACL filters each message as it is delivered.
    device_a.subscribe(topics.ack("+"))
    device_b.subscribe(topics.ack(DEVICE_B))
    for_b = (topics.ack(DEVICE_B), encode_ack(Ack(REC_ID, AckStatus.STORED)))
    for_a = (topics.ack(DEVICE_A), encode_ack(Ack(REC_ID, AckStatus.MISSING)))
    assert agent.publish(*for_b) == "Success"
    assert agent.publish(*for_a) == "Success"
    assert device_b.next_message() == for_b
    assert device_a.next_message() == for_a
    assert quiet(device_a) == []


def test_the_agent_account_cannot_publish_as_a_device(clients: dict[str, Client]) -> None:
    device_a, agent = clients[DEVICE_A], clients[AGENT]
    device_a.subscribe(f"{topics.ROOT}/{DEVICE_A}/#")
    agent.subscribe(topics.status(AGENT))
    as_device = [
        topics.status(DEVICE_A),
        topics.event(DEVICE_A),
        topics.manifest(DEVICE_A, REC_ID),
        topics.chunk(DEVICE_A, REC_ID, 0),
        topics.fin(DEVICE_A, REC_ID),
        # The device pattern covers every user name, the agent's too; the shipped ACL must deny it explicitly.
        topics.status(AGENT),
    ]
    for topic in as_device:
        reason = agent.publish(topic, b"forged by the agent account")
        assert (reason.value, str(reason)) == (NOT_AUTHORIZED, "Not authorized"), topic
    control = (topics.ack(DEVICE_A), encode_ack(Ack(REC_ID, AckStatus.STORED)))
    assert agent.publish(*control) == "Success"
    assert device_a.next_message() == control
    assert quiet(device_a, agent) == []


# --- end to end ---------------------------------------------------------------------------------


def test_a_forged_manifest_is_rejected_through_the_secured_broker(
    secured: Secured, clients: dict[str, Client], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device_a = clients[DEVICE_A]
    identity = generate_identity()
    archive = Archive(tmp_path / "archive")
    archive.enrol(DEVICE_A, public_key_text(Ed25519PrivateKey.generate()))
    ingest = Ingest(
        archive=archive,
        identities=[parse_identity(identity)],
        broker=secured.settings(AGENT),
        client_id="test-ingest",
    )
    to = [recipient_of(identity)]
    ciphertext = encrypt_bytes(b"audio", to)
    doc = sign_manifest(make_manifest(REC_ID, device=DEVICE_A, ciphertext=ciphertext), Ed25519PrivateKey.generate())
    reason = "manifest signature does not verify against the device's enrolled key"
    ingest.start()
    try:
        assert ingest.wait_ready(timeout=WAIT_S)
        device_a.subscribe(topics.ack(DEVICE_A))
        with caplog.at_level(logging.WARNING):
            assert device_a.publish(topics.manifest(DEVICE_A, REC_ID), encrypt_bytes(doc, to)) == "Success"
            topic, body = device_a.next_message()
    finally:
        ingest.stop()
    assert topic == topics.ack(DEVICE_A)
    assert decode_ack(body) == Ack(REC_ID, AckStatus.REJECTED, reason=reason)
    assert [(r["device"], r["rec_id"], r["reason"]) for r in archive.rejections()] == [(DEVICE_A, REC_ID, reason)]
    assert f"rejected {REC_ID} from device {DEVICE_A}: {reason}" in caplog.messages
    assert not archive.has(REC_ID)
    archive.close()
