"""Ingest: recordings sent as manifest, chunks and fin are verified, archived and acked."""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.archive import Archive
from agent.ingest import Ingest
from firmware.wire import topics
from firmware.wire.age import encrypt_bytes, generate_identity, parse_identity, recipient_of
from firmware.wire.broker import BrokerSettings
from firmware.wire.manifest import sign_manifest
from firmware.wire.messages import (
    CHUNK_HEADER_LEN,
    Ack,
    AckStatus,
    Fin,
    decode_ack,
    encode_chunk,
    encode_fin,
    encode_status,
)
from firmware.wire.signing import public_key_text
from tests.support.broker import Mosquitto
from tests.test_archive import make_manifest

DEVICE = "pi-hall"
REC_ID = "20240305T233000123Z-0a1b2c3d"
CHUNK = 1000


@dataclass
class Recording:
    """One recording as a device would send it."""

    device: str
    rec_id: str
    ciphertext: bytes
    manifest_payload: bytes

    def chunk(self, offset: int) -> tuple[str, bytes]:
        data = self.ciphertext[offset : offset + CHUNK]
        return topics.chunk(self.device, self.rec_id, offset // CHUNK), encode_chunk(offset, data)

    def chunks(self) -> list[tuple[str, bytes]]:
        return [self.chunk(offset) for offset in range(0, len(self.ciphertext), CHUNK)]

    def manifest(self) -> tuple[str, bytes]:
        return topics.manifest(self.device, self.rec_id), self.manifest_payload

    def fin(self, size: int | None = None, sha256: str | None = None) -> tuple[str, bytes]:
        fin = Fin(
            len(self.ciphertext) if size is None else size,
            sha256 or hashlib.sha256(self.ciphertext).hexdigest(),
        )
        return topics.fin(self.device, self.rec_id), encode_fin(fin)


@dataclass
class World:
    """An archive with one enrolled device, the keys around it, and an ingest on top."""

    root: Path
    device_key: Ed25519PrivateKey
    identity: str
    archive: Archive
    ingest: Ingest

    def recording(
        self,
        rec_id: str = REC_ID,
        *,
        device: str = DEVICE,
        topic_device: str | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        recipient: str | None = None,
        size: int = 4500,
    ) -> Recording:
        audio = random.Random(rec_id).randbytes(size)
        to = [recipient or recipient_of(self.identity)]
        ciphertext = encrypt_bytes(audio, to)
        manifest = make_manifest(rec_id, device=device, ciphertext=ciphertext)
        doc = sign_manifest(manifest, signing_key or self.device_key)
        return Recording(topic_device or device, rec_id, ciphertext, encrypt_bytes(doc, to))

    def restart(self) -> None:
        """Throw away the archive and ingest objects and make new ones on the same directories."""
        self.archive.close()
        self.archive = Archive(self.root)
        self.ingest = make_ingest(self.archive, self.identity)

    def send(self, *messages: tuple[str, bytes]) -> list[Ack]:
        """Hand messages to the ingest; return the acks it answers with, all for the device."""
        acks = []
        for topic, payload in messages:
            for ack_topic, body in self.ingest.handle(topic, payload):
                assert ack_topic == topics.ack(topic.split("/")[1])
                acks.append(decode_ack(body))
        return acks


def make_ingest(archive: Archive, identity: str, broker: BrokerSettings | None = None) -> Ingest:
    return Ingest(archive=archive, identities=[parse_identity(identity)], broker=broker or BrokerSettings())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    key = Ed25519PrivateKey.generate()
    identity = generate_identity()
    archive = Archive(tmp_path / "archive")
    archive.enrol(DEVICE, public_key_text(key))
    made = World(tmp_path / "archive", key, identity, archive, make_ingest(archive, identity))
    yield made
    made.archive.close()


def stored(rec_id: str = REC_ID) -> Ack:
    return Ack(rec_id, AckStatus.STORED)


def rejected(reason: str, rec_id: str = REC_ID) -> Ack:
    return Ack(rec_id, AckStatus.REJECTED, reason=reason)


def incoming_files(world: World) -> list[str]:
    return sorted(str(p.relative_to(world.archive.incoming_dir)) for p in world.archive.incoming_dir.rglob("*"))


# --- a recording arrives -------------------------------------------------------------


def test_recording_sent_out_of_order_with_duplicates_is_archived_byte_for_byte(world: World) -> None:
    rec = world.recording()
    chunks = rec.chunks()
    shuffled = chunks[::-1] + chunks[1:3]
    assert world.send(rec.manifest(), *shuffled, rec.manifest(), chunks[0]) == []
    assert world.send(rec.fin()) == [stored()]

    row = world.archive.get(REC_ID)
    assert Path(row.path).read_bytes() == rec.ciphertext
    assert Path(row.manifest_path).read_bytes() == rec.manifest_payload
    assert (row.device, row.size, row.sha256) == (
        DEVICE,
        len(rec.ciphertext),
        hashlib.sha256(rec.ciphertext).hexdigest(),
    )
    assert world.ingest.wait_stored(1, timeout=0)
    assert incoming_files(world) == [DEVICE]


def test_a_fin_after_the_recording_is_stored_is_answered_stored_again(world: World) -> None:
    rec = world.recording()
    world.send(rec.manifest(), *rec.chunks())
    assert world.send(rec.fin(), rec.fin(), rec.manifest(), rec.chunk(0)) == [stored(), stored(), stored()]
    assert [row.id for row in world.archive.calls()] == [REC_ID]
    assert world.ingest.stored_count == 1
    assert incoming_files(world) == [DEVICE]


def test_chunks_may_come_before_the_manifest(world: World) -> None:
    rec = world.recording()
    assert world.send(*rec.chunks(), rec.manifest(), rec.fin()) == [stored()]


# --- refusals ------------------------------------------------------------------------------


def test_a_device_that_is_not_enrolled_is_refused_and_nothing_is_kept(world: World) -> None:
    rec = world.recording(device="pi-rogue", signing_key=Ed25519PrivateKey.generate())
    reason = "device pi-rogue is not enrolled"
    assert world.send(rec.manifest(), *rec.chunks()) == [rejected(reason)]
    assert world.send(rec.fin()) == [rejected(reason)]
    assert not world.archive.has(REC_ID)
    assert incoming_files(world) == []
    assert [(r["device"], r["rec_id"], r["reason"]) for r in world.archive.rejections()] == [
        ("pi-rogue", REC_ID, reason)
    ]


def test_a_manifest_signed_by_another_key_is_refused(world: World) -> None:
    rec = world.recording(signing_key=Ed25519PrivateKey.generate())
    reason = "manifest signature does not verify against the device's enrolled key"
    assert world.send(rec.manifest()) == [rejected(reason)]
    assert world.send(*rec.chunks(), rec.fin()) == [Ack(REC_ID, AckStatus.MISSING, ((0, len(rec.ciphertext)),), True)]
    assert not world.archive.has(REC_ID)
    assert world.archive.rejections()[0]["reason"] == reason


def test_a_manifest_of_one_device_on_the_topic_of_another_is_refused(world: World) -> None:
    other_key = Ed25519PrivateKey.generate()
    world.archive.enrol("pi-shop", public_key_text(other_key))
    rec = world.recording(device="pi-shop", topic_device=DEVICE, signing_key=other_key)
    reason = "manifest names device pi-shop but came on the topic of device pi-hall"
    assert world.send(rec.manifest()) == [rejected(reason)]
    assert world.archive.rejections()[0]["reason"] == reason
    assert incoming_files(world) == []


def test_a_manifest_for_another_recording_id_is_refused(world: World) -> None:
    rec = world.recording()
    other = "20240305T233000123Z-ffffffff"
    reason = f"manifest is for recording {REC_ID} but came on the topic of {other}"
    assert world.send((topics.manifest(DEVICE, other), rec.manifest_payload)) == [rejected(reason, other)]


def test_a_manifest_the_agent_cannot_decrypt_is_refused(world: World) -> None:
    rec = world.recording(recipient=recipient_of(generate_identity()))
    (ack,) = world.send(rec.manifest())
    assert ack.status is AckStatus.REJECTED
    assert ack.reason.startswith("cannot decrypt manifest: no identity matches")
    assert world.archive.rejections()[0]["reason"] == ack.reason
    assert not world.archive.has(REC_ID)


# --- damaged and missing bytes ---------------------------------------------------------------


def test_a_corrupted_chunk_is_dropped_and_the_fin_asks_for_its_bytes(world: World) -> None:
    rec = world.recording()
    chunks = rec.chunks()
    topic, payload = chunks[2]
    damaged = bytearray(payload)
    damaged[CHUNK_HEADER_LEN + 5] ^= 0x01
    assert world.send(rec.manifest(), *chunks[:2], (topic, bytes(damaged)), *chunks[3:]) == []
    size = len(rec.ciphertext)
    missing = Ack(REC_ID, AckStatus.MISSING, ((0, 2 * CHUNK), (3 * CHUNK, size)))
    assert world.send(rec.fin(), rec.fin()) == [missing, missing]
    assert not world.archive.has(REC_ID)
    assert world.send(chunks[2], rec.fin()) == [stored()]
    assert Path(world.archive.get(REC_ID).path).read_bytes() == rec.ciphertext


def test_a_fin_before_all_chunks_lists_the_ranges_held(world: World) -> None:
    rec = world.recording()
    chunks = rec.chunks()
    world.send(rec.manifest(), chunks[0], chunks[1], chunks[4])
    assert world.send(rec.fin()) == [Ack(REC_ID, AckStatus.MISSING, ((0, 2000), (4000, len(rec.ciphertext))))]


def test_a_fin_before_the_manifest_asks_for_it(world: World) -> None:
    rec = world.recording()
    world.send(rec.chunk(0))
    assert world.send(rec.fin()) == [Ack(REC_ID, AckStatus.MISSING, ((0, CHUNK),), need_manifest=True)]


def test_bytes_that_do_not_hash_to_the_manifest_are_discarded_and_asked_for_again(world: World) -> None:
    rec = world.recording()
    wrong = Recording(DEVICE, REC_ID, bytes(len(rec.ciphertext)), rec.manifest_payload)
    world.send(rec.manifest(), *wrong.chunks())
    assert world.send(rec.fin()) == [Ack(REC_ID, AckStatus.MISSING)]
    assert incoming_files(world) == [DEVICE, f"{DEVICE}/{REC_ID}", f"{DEVICE}/{REC_ID}/manifest.age"]
    assert world.send(*rec.chunks(), rec.fin()) == [stored()]


def test_a_fin_that_disagrees_with_the_manifest_is_not_stored(world: World) -> None:
    rec = world.recording()
    world.send(rec.manifest(), *rec.chunks())
    assert world.send(rec.fin(sha256="0" * 64)) == [Ack(REC_ID, AckStatus.MISSING)]
    assert not world.archive.has(REC_ID)


def test_a_chunk_beyond_the_size_in_the_manifest_is_dropped(world: World) -> None:
    rec = world.recording()
    beyond = (topics.chunk(DEVICE, REC_ID, 99), encode_chunk(len(rec.ciphertext), b"extra"))
    world.send(rec.manifest(), beyond, *rec.chunks())
    assert world.send(rec.fin()) == [stored()]


# --- restarts --------------------------------------------------------------------------------


def test_an_agent_stopped_mid_transfer_carries_on_where_it_was(world: World) -> None:
    rec = world.recording()
    chunks = rec.chunks()
    world.send(rec.manifest(), *chunks[:3])
    world.ingest.stop()
    world.restart()
    assert world.send(rec.fin()) == [Ack(REC_ID, AckStatus.MISSING, ((0, 3 * CHUNK),))]
    world.restart()
    assert world.send(*chunks[3:], rec.fin()) == [stored()]
    assert Path(world.archive.get(REC_ID).path).read_bytes() == rec.ciphertext


def test_an_agent_killed_mid_transfer_claims_no_more_than_it_holds(world: World) -> None:
    rec = world.recording()
    chunks = rec.chunks()
    world.send(rec.manifest(), *chunks[:3])
    world.restart()  # no stop: the ranges saved last are all a restart finds
    [ack] = world.send(rec.fin())
    assert ack.status is AckStatus.MISSING
    assert ack.ranges and all(0 <= s < e <= 3 * CHUNK for s, e in ack.ranges)
    assert world.send(*chunks, rec.fin()) == [stored()]
    assert Path(world.archive.get(REC_ID).path).read_bytes() == rec.ciphertext


def test_ranges_whose_bytes_were_lost_are_forgotten_on_restart(world: World) -> None:
    rec = world.recording()
    world.send(rec.manifest(), *rec.chunks()[:3])
    (world.archive.incoming_dir / DEVICE / REC_ID / "audio.part").write_bytes(b"")
    world.restart()
    assert world.send(rec.fin()) == [Ack(REC_ID, AckStatus.MISSING)]


# --- other messages --------------------------------------------------------------------------


def test_device_status_is_noted(world: World) -> None:
    world.send((topics.status(DEVICE), encode_status("online", {"spool": 0})), (topics.status(DEVICE), b""))
    assert world.archive.devices()[0]["status"] == {"v": 1, "state": "online", "spool": 0}


def test_bad_messages_are_logged_in_one_line_and_not_answered(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="linerec.agent.ingest"):
        assert world.send((topics.fin(DEVICE, REC_ID), b"{not json")) == []
        assert world.send((topics.status(DEVICE), b"[]")) == []
    assert caplog.messages == [
        f"message on linerec/pi-hall/rec/{REC_ID}/fin not processed: fin message is not JSON:"
        " Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "message on linerec/pi-hall/status not processed: status message is not a JSON object",
    ]


@pytest.mark.parametrize("kind", ["chunk/\u00b2", "chunk/x", "chunk", "extra/1", "fin/1", "status"])
def test_messages_on_malformed_recording_topics_are_ignored(world: World, kind: str) -> None:
    rec = world.recording()
    assert world.send((f"linerec/{DEVICE}/rec/{REC_ID}/{kind}", rec.chunk(0)[1])) == []
    assert incoming_files(world) == []


ids = st.sampled_from([REC_ID, "20240305T233000123Z-00000000", "bad-id", ""])
devices = st.sampled_from([DEVICE, "pi-rogue", "Bad Device", ""])
kinds = st.one_of(
    st.sampled_from(["manifest", "fin", "chunk/0", "chunk/7", "chunk/x", "chunk/\u00b2", "status", "", "chunk"]),
    st.text(max_size=12),
)
payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(encode_chunk, st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=64)),
    st.builds(
        lambda s, h: json.dumps({"v": 1, "size": s, "sha256": h}).encode(),
        st.integers(-5, 2**40),
        st.text("0123456789abcdef", min_size=64, max_size=64),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(devices, ids, kinds, payloads), max_size=8))
def test_random_messages_never_raise_out_of_handle(messages: list[tuple[str, str, str, bytes]]) -> None:
    identity = generate_identity()
    with tempfile.TemporaryDirectory() as tmp, Archive(Path(tmp)) as archive:
        archive.enrol(DEVICE, public_key_text(Ed25519PrivateKey.generate()))
        ingest = make_ingest(archive, identity)
        for device, rec_id, kind, payload in messages:
            topic = f"linerec/{device}/status" if kind == "status" else f"linerec/{device}/rec/{rec_id}/{kind}"
            for ack_topic, body in ingest.handle(topic, payload):
                assert ack_topic == topics.ack(device)
                assert decode_ack(body).status in (AckStatus.MISSING, AckStatus.REJECTED)
        assert list(archive.calls()) == []


# --- through a real broker ---------------------------------------------------------------------


@pytest.mark.broker
def test_recording_published_through_mosquitto_is_stored_and_acked(world: World, mosquitto: Mosquitto) -> None:
    world.ingest = make_ingest(world.archive, world.identity, mosquitto.settings)
    world.ingest.start()
    acks: queue.Queue[Ack] = queue.Queue()
    subscribed = queue.Queue[bool]()
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pi-hall", protocol=mqtt.MQTTv5)
    device.on_message = lambda _c, _u, message: acks.put(decode_ack(message.payload))
    device.on_subscribe = lambda *_: subscribed.put(True)
    try:
        assert world.ingest.wait_ready(timeout=10)
        device.connect(mosquitto.settings.host, mosquitto.settings.port)
        device.loop_start()
        device.subscribe(topics.ack(DEVICE), qos=1)
        assert subscribed.get(timeout=10)
        rec = world.recording(size=200_000)
        for topic, payload in [rec.manifest(), *rec.chunks(), rec.fin()]:
            device.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        assert acks.get(timeout=20) == stored()
        assert world.ingest.wait_stored(1, timeout=0)
        assert Path(world.archive.get(REC_ID).path).read_bytes() == rec.ciphertext
    finally:
        device.loop_stop()
        device.disconnect()
        world.ingest.stop()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_device_over_its_budget_is_dropped_then_catches_up_without_losing_anything(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.ratelimit import DeviceRateLimit  # noqa: PLC0415

    clock = Clock()
    world.ingest = Ingest(
        archive=world.archive,
        identities=[parse_identity(world.identity)],
        broker=BrokerSettings(),
        rate_limit=DeviceRateLimit(rate=10_000, burst=8_000, clock=clock),
    )
    other_key = Ed25519PrivateKey.generate()
    world.archive.enrol("pi-porch", public_key_text(other_key))
    rec = world.recording(size=20_000)
    # All at once: the manifest and the first chunks fit the burst, the rest is dropped unseen.
    assert world.send(rec.manifest(), *rec.chunks(), rec.fin()) == [], "over budget, even the fin is dropped"
    clock.t += 0.2
    [ack] = world.send(rec.fin())
    assert ack.status is AckStatus.MISSING
    held = sum(end - start for start, end in ack.ranges)
    assert 0 < held < len(rec.ciphertext)
    assert "device pi-hall is over its budget of 10000 bytes/s; dropping its messages" in caplog.text
    # Another device has a budget of its own.
    porch = world.recording("20240305T233100123Z-0a1b2c3e", device="pi-porch", signing_key=other_key, size=500)
    assert world.send(porch.manifest(), *porch.chunks(), porch.fin()) == [stored(porch.rec_id)]
    # Given time, the device asks with a fin and resends what the ranges say is missing, as the
    # uplink's retries do, and the recording is stored.
    for _ in range(20):
        clock.t += 1.0
        [ack] = world.send(rec.fin())
        if ack.status is AckStatus.STORED:
            break
        world.send(*(rec.chunk(o) for o in range(0, len(rec.ciphertext), CHUNK) if not covered(ack, o)))
    assert world.archive.has(rec.rec_id)
    assert world.archive.get(rec.rec_id).sha256 == hashlib.sha256(rec.ciphertext).hexdigest()


def covered(ack: Ack, offset: int) -> bool:
    return any(start <= offset < end for start, end in ack.ranges)
