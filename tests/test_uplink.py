"""The uplink drains the spool through a real mosquitto to an agent and never loses a recording.

The agent side is played by ``FakeAgent`` below: a paho client that reassembles
recordings by byte offset, checks every chunk and fin with the wire decoders and
answers with real acks. It can be told to stay silent, reject, pretend to have
lost chunks or the manifest, repeat its acks, or kill the broker mid-transfer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
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

from firmware.spool import AUDIO_NAME, MANIFEST_NAME, Spool
from firmware.uplink import PUBLISH_WINDOW, Uplink, UplinkError
from firmware.wire import topics
from firmware.wire.broker import BrokerSettings
from firmware.wire.messages import (
    Ack,
    AckStatus,
    Range,
    decode_chunk,
    decode_fin,
    decode_status,
    encode_ack,
    merge_range,
    missing_ranges,
)
from tests.support.broker import Mosquitto, free_port

DEVICE = "test-pi"
CHUNK = 32 * 1024
REPO = Path(__file__).resolve().parent.parent


def rec_id(n: int) -> str:
    return f"20240501T{n:09d}Z-{n:08x}"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def spool_recording(spool: Spool, rid: str, size: int, seed: int) -> bytes:
    """Seal a recording of ``size`` random bytes; return its audio ciphertext stand-in."""
    folder = spool.begin(rid)
    audio = random.Random(seed).randbytes(size)
    (folder / MANIFEST_NAME).write_bytes(b"age-manifest-" + rid.encode())
    (folder / AUDIO_NAME).write_bytes(audio)
    spool.seal(rid)
    return audio


def new_client(client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.reconnect_delay_set(1, 1)
    return client


@dataclass
class FakeAgent:
    """The agent's side of the transfer, kept in memory."""

    settings: BrokerSettings
    reject: dict[str, str] = field(default_factory=dict)  # rec id -> reason
    silent: bool = False
    drop_chunks: set[int] = field(default_factory=set)  # indexes to "lose" the first time
    drop_manifest_once: bool = False
    duplicate_acks: bool = False
    on_chunk: Callable[[str, int], None] | None = None
    on_fin: Callable[[str], object] | None = None
    before_stored: Callable[[str], object] | None = None
    log: list[tuple[str, str, int | None]] = field(default_factory=list)
    data: dict[str, bytearray] = field(default_factory=dict)
    held: dict[str, list[Range]] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = threading.Event()
        self._dropped: set[tuple[str, int | None]] = set()
        self.client = new_client("fake-agent")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, 30, clean_start=True)
        self.client.loop_start()
        assert self.ready.wait(10), "fake agent did not subscribe"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def count(self, kind: str, rid: str, index: int | None = None) -> int:
        return sum(1 for k, r, i in list(self.log) if (k, r) == (kind, rid) and index in (None, i))

    def send_ack(self, ack: Ack) -> None:
        self.acks.append(ack)
        for _ in range(2 if self.duplicate_acks else 1):
            self.client.publish(topics.ack(DEVICE), encode_ack(ack), qos=1)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        self.ready.clear()
        client.subscribe(topics.AGENT_SUBSCRIPTIONS[0], qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        where = topics.parse_rec_topic(message.topic)
        rid = where.rec_id
        self.log.append((where.kind, rid, where.index))
        if where.kind == "manifest":
            if self.drop_manifest_once and (rid, None) not in self._dropped:
                self._dropped.add((rid, None))
                return
            self.manifests[rid] = bytes(message.payload)
        elif where.kind == "chunk":
            self._chunk(rid, where.index, bytes(message.payload))
        else:
            self._fin(rid, bytes(message.payload))

    def _chunk(self, rid: str, index: int | None, payload: bytes) -> None:
        chunk = decode_chunk(payload)
        if index is None or chunk.offset != index * CHUNK:
            self.problems.append(f"chunk {index} of {rid} has offset {chunk.offset}")
        if index in self.drop_chunks and (rid, index) not in self._dropped:
            self._dropped.add((rid, index))
        else:
            buf = self.data.setdefault(rid, bytearray())
            end = chunk.offset + len(chunk.data)
            buf.extend(b"\0" * max(0, end - len(buf)))
            buf[chunk.offset : end] = chunk.data
            self.held[rid] = merge_range(self.held.get(rid, []), (chunk.offset, end))
        if self.on_chunk is not None and index is not None:
            self.on_chunk(rid, index)

    def _fin(self, rid: str, payload: bytes) -> None:
        fin = decode_fin(payload)
        held = tuple(self.held.get(rid, []))
        if self.on_fin is not None:
            self.on_fin(rid)
        if self.silent:
            return
        if rid in self.reject:
            self.send_ack(Ack(rid, AckStatus.REJECTED, reason=self.reject[rid]))
        elif rid not in self.manifests or missing_ranges(held, fin.size):
            self.send_ack(Ack(rid, AckStatus.MISSING, held, need_manifest=rid not in self.manifests))
        elif hashlib.sha256(self.data.get(rid, b"")[: fin.size]).hexdigest() != fin.sha256:
            self.problems.append(f"{rid} does not match its fin")
            self.send_ack(Ack(rid, AckStatus.REJECTED, reason="checksum"))
        else:
            if self.before_stored is not None:
                self.before_stored(rid)
            if rid not in self.stored:
                self.stored.append(rid)
            self.send_ack(Ack(rid, AckStatus.STORED))


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def agent(mosquitto: Mosquitto) -> Iterator[FakeAgent]:
    fake = FakeAgent(mosquitto.settings)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def make_uplink(spool: Spool) -> Iterator[Callable[..., Uplink]]:
    made: list[Uplink] = []

    def make(broker: BrokerSettings, **options: Any) -> Uplink:
        settings: dict[str, Any] = {
            "chunk_size": CHUNK,
            # Long enough that a loaded machine does not time out a fin (a timeout is a retry of its
            # own and would change what the tests count); the timeout tests set their own.
            "ack_timeout_s": 5.0,
            "publish_timeout_s": 2.0,
            "retry_backoff_s": (0.05, 0.3),
        }
        settings.update(options)
        uplink = Uplink(device_id=DEVICE, spool=spool, broker=broker, **settings)
        made.append(uplink)
        return uplink

    try:
        yield make
    finally:
        for uplink in made:
            uplink.stop(timeout=5)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_recordings_arrive_in_order_byte_identical_and_leave_the_spool_only_after_stored(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink], protocol: str
) -> None:
    first, second = rec_id(1), rec_id(2)
    audio = {first: spool_recording(spool, first, 300_000, 1), second: spool_recording(spool, second, 1, 2)}
    outbox = spool.root / "outbox"
    still_spooled_at_stored: dict[str, bool] = {}
    agent.before_stored = lambda rid: still_spooled_at_stored.setdefault(rid, (outbox / rid).is_dir())

    uplink = make_uplink(dataclasses.replace(mosquitto.settings, protocol=protocol))
    uplink.start()
    assert uplink.wait_delivered(15)

    assert agent.stored == [first, second]
    assert still_spooled_at_stored == {first: True, second: True}
    for rid, data in audio.items():
        assert agent.data[rid] == data
        assert agent.manifests[rid] == b"age-manifest-" + rid.encode()
    kinds = [(kind, rid) for kind, rid, _ in agent.log]
    assert kinds.index(("fin", first)) < kinds.index(("manifest", second))
    assert agent.count("chunk", first) == 10  # 300 000 bytes in 32 KiB chunks
    assert agent.count("chunk", second) == 1
    assert agent.problems == []
    assert spool.pending() == []
    assert list((spool.root / "rejected").iterdir()) == []


def test_the_next_recording_goes_out_while_the_agent_stores_the_one_before_and_its_fin_waits(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    first, second, third = rec_id(1), rec_id(2), rec_id(3)
    audio = {rid: spool_recording(spool, rid, 100_000, n) for n, rid in enumerate((first, second, third))}
    agent.silent = True  # the agent is slow to store the first one
    uplink = make_uplink(mosquitto.settings, ack_timeout_s=2.0)
    uplink.start()
    wait_until(lambda: agent.count("chunk", second) == 4, what="the second recording's bytes")
    kinds = [(kind, rid) for kind, rid, _ in list(agent.log)]
    assert kinds.index(("fin", first)) < kinds.index(("manifest", second))
    assert agent.count("fin", second) == 0  # its fin waits for the first one's answer
    assert agent.count("manifest", third) == 0  # one ahead, no more
    assert (spool.root / "outbox" / first).is_dir()

    agent.silent = False
    assert uplink.wait_delivered(15)
    assert agent.stored == [first, second, third]
    for rid, data in audio.items():
        assert agent.data[rid] == data
        assert agent.count("manifest", rid) == 1
        assert agent.count("chunk", rid) == 4  # sent once, ahead or not: the retries were fins only
    assert agent.problems == []


def test_a_pace_limit_spreads_the_recordings_bytes_over_time_and_still_delivers_them_all(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    first, second = rec_id(1), rec_id(2)
    audio = {first: spool_recording(spool, first, 150_000, 1), second: spool_recording(spool, second, 150_000, 2)}
    arrivals: list[float] = []
    agent.on_chunk = lambda _rid, _index: arrivals.append(time.monotonic())
    uplink = make_uplink(mosquitto.settings, pace_kb_s=100.0)
    uplink.start()
    assert uplink.wait_delivered(20)
    assert agent.stored == [first, second]
    assert all(agent.data[rid] == data for rid, data in audio.items())
    # 300 kB at 100 kB/s after one 32 KiB chunk's burst: no faster than 2.6 s (a slow machine only adds).
    assert arrivals[-1] - arrivals[0] >= (300_000 - 2 * CHUNK) / 100_000


@pytest.mark.parametrize("pace", [-1.0, float("nan")])
def test_a_pace_limit_that_is_not_a_rate_is_refused(spool: Spool, mosquitto: Mosquitto, pace: float) -> None:
    message = r"^uplink pace_kb_s is .*; expected kilobytes per second, or 0 for no limit$"
    with pytest.raises(UplinkError, match=message):
        Uplink(device_id=DEVICE, spool=spool, broker=mosquitto.settings, pace_kb_s=pace)


def test_without_an_ack_nothing_is_removed_and_retries_ask_only_for_what_is_missing(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    rid = rec_id(1)
    audio = spool_recording(spool, rid, 100_000, 3)
    agent.silent = True
    chunks_at_fin: list[int] = []
    agent.on_fin = lambda r: chunks_at_fin.append(agent.count("chunk", r))
    uplink = make_uplink(mosquitto.settings, ack_timeout_s=0.3)
    uplink.start()
    wait_until(lambda: len(chunks_at_fin) >= 3, what="three fins")

    assert chunks_at_fin[:3] == [4, 4, 4]  # retries send the fin alone
    assert agent.count("manifest", rid) == 1
    assert spool.get(rid).audio.read_bytes() == audio
    assert uplink.connected
    assert uplink.healthy


def test_missing_answer_resends_only_the_missing_chunks_and_the_manifest(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    rid = rec_id(1)
    audio = spool_recording(spool, rid, 300_000, 4)
    agent.drop_chunks = {2, 5}
    agent.drop_manifest_once = True
    uplink = make_uplink(mosquitto.settings)
    uplink.start()
    assert uplink.wait_delivered(15)

    assert agent.stored == [rid]
    assert agent.data[rid] == audio
    assert [a.status for a in agent.acks] == [AckStatus.MISSING, AckStatus.STORED]
    assert agent.acks[0].need_manifest
    first_fin = agent.log.index(("fin", rid, None))
    resent = [(kind, index) for kind, _, index in agent.log[first_fin + 1 :]]
    assert resent == [("manifest", None), ("chunk", 2), ("chunk", 5), ("fin", None)]
    assert agent.count("chunk", rid) == 12


def test_rejected_recording_is_quarantined_with_its_reason_and_the_next_one_goes_on(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    bad, good = rec_id(1), rec_id(2)
    bad_audio = spool_recording(spool, bad, 5000, 5)
    good_audio = spool_recording(spool, good, 5000, 6)
    agent.reject[bad] = "device test-pi is not enrolled"
    uplink = make_uplink(mosquitto.settings)
    uplink.start()
    assert uplink.wait_delivered(15)

    kept = spool.root / "rejected" / bad
    assert (kept / AUDIO_NAME).read_bytes() == bad_audio
    assert (kept / MANIFEST_NAME).exists()
    assert (kept / "reason.txt").read_text() == "device test-pi is not enrolled\n"
    assert agent.stored == [good]
    assert agent.data[good] == good_audio


def test_broker_crash_mid_transfer_loses_nothing_and_the_transfer_resumes(
    spool: Spool, agent: FakeAgent, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    rid = rec_id(1)
    audio = spool_recording(spool, rid, 2_000_000, 7)
    chunks = -(-len(audio) // CHUNK)
    killed = threading.Event()

    def crash_mid_transfer(_rid: str, index: int) -> None:
        if index == 29 and not killed.is_set():
            mosquitto.kill()
            killed.set()

    agent.on_chunk = crash_mid_transfer
    uplink = make_uplink(mosquitto.settings)
    uplink.start()
    assert killed.wait(10)
    wait_until(lambda: not uplink.connected, what="the uplink noticing the crash")
    assert spool.get(rid).audio.read_bytes() == audio
    mosquitto.start()

    assert uplink.wait_delivered(20)
    assert agent.stored == [rid]
    assert agent.data[rid] == audio
    assert agent.problems == []
    assert agent.count("manifest", rid) == 1
    # Chunks the broker had acknowledged before the crash are never sent again; only the few
    # in flight at the crash may come twice (paho repeats them on reconnecting).
    assert all(agent.count("chunk", rid, i) == 1 for i in range(29 - PUBLISH_WINDOW))
    assert agent.count("chunk", rid) <= chunks + PUBLISH_WINDOW


def test_repeated_and_stray_acks_are_harmless(
    spool: Spool,
    agent: FakeAgent,
    mosquitto: Mosquitto,
    make_uplink: Callable[..., Uplink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = rec_id(1), rec_id(2)
    audio = {first: spool_recording(spool, first, 200_000, 8), second: spool_recording(spool, second, 140_000, 9)}
    agent.duplicate_acks = True
    agent.drop_chunks = {3}

    sent_strays: list[str] = []

    def stray_acks(rid: str) -> None:
        if rid == second and not sent_strays:
            # The first one is stored by now (its fin was answered before this one was sent):
            # late repeats about it, and an ack for a recording nobody has.
            sent_strays.append(rid)
            agent.send_ack(Ack(first, AckStatus.STORED))
            agent.send_ack(Ack(first, AckStatus.MISSING, ((0, 10),), need_manifest=True))
            agent.send_ack(Ack(rec_id(99), AckStatus.STORED))

    agent.on_fin = stray_acks
    uplink = make_uplink(mosquitto.settings)
    with caplog.at_level(logging.WARNING, logger="linerec.uplink"):
        uplink.start()
        assert uplink.wait_delivered(15)

    assert sent_strays == [second]
    assert agent.stored == [first, second]
    for rid, data in audio.items():
        assert agent.data[rid] == data
        assert agent.count("manifest", rid) == 1
        # Each lost chunk 3 was resent once and needed one more fin, although every MISSING came twice.
        assert agent.count("chunk", rid, 3) == 2
        assert agent.count("fin", rid) == 2
    assert caplog.records == []
    assert uplink.healthy


def _watch_status(settings: BrokerSettings) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    client = new_client("status-watcher")
    client.on_message = lambda _c, _u, m: seen.append({"retain": m.retain, **decode_status(bytes(m.payload))})
    client.on_connect = lambda c, *_: c.subscribe(topics.status(DEVICE), qos=1)
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client, seen


UPLINK_PROCESS = """
import sys, time
from pathlib import Path
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire.broker import BrokerSettings

uplink = Uplink(device_id=sys.argv[3], spool=Spool(Path(sys.argv[1])),
                broker=BrokerSettings(host="127.0.0.1", port=int(sys.argv[2])), ack_timeout_s=1.0)
uplink.start()
time.sleep(120)
"""


def test_status_is_online_with_the_spool_depth_and_the_last_will_says_offline(
    spool: Spool, mosquitto: Mosquitto
) -> None:
    for n in (1, 2):
        spool_recording(spool, rec_id(n), 100, n)
    watcher, seen = _watch_status(mosquitto.settings)
    process = subprocess.Popen(
        [sys.executable, "-c", UPLINK_PROCESS, str(spool.root), str(mosquitto.port), DEVICE], cwd=REPO
    )
    try:
        wait_until(lambda: any(s["state"] == "online" for s in seen), what="online status")
        online = next(s for s in seen if s["state"] == "online")
        assert online["spool_depth"] == 2
        assert online["spool_bytes"] == 200
        process.kill()
        process.wait(10)
        wait_until(lambda: seen[-1]["state"] == "offline", what="offline status from the last will")
    finally:
        process.kill()
        watcher.disconnect()
        watcher.loop_stop()
    late, late_seen = _watch_status(mosquitto.settings)  # a newcomer gets the retained state
    try:
        wait_until(lambda: bool(late_seen), what="retained status")
        assert late_seen == [{"v": 1, "state": "offline", "retain": True}]
    finally:
        late.disconnect()
        late.loop_stop()


def test_stop_publishes_offline_with_the_spool_depth(
    spool: Spool, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    spool_recording(spool, rec_id(1), 10, 1)
    watcher, seen = _watch_status(mosquitto.settings)
    uplink = make_uplink(mosquitto.settings, status_facts=lambda: {"line": "idle", "state": "ignored"})
    try:
        uplink.start()
        wait_until(lambda: any(s["state"] == "online" for s in seen), what="online status")
        assert seen[-1]["line"] == "idle"
        uplink.stop()
        wait_until(lambda: seen[-1]["state"] == "offline", what="offline status")
        assert seen[-1]["spool_depth"] == 1
        assert not uplink.healthy
    finally:
        watcher.disconnect()
        watcher.loop_stop()


def test_publish_event_reaches_the_broker_and_never_blocks_or_raises_when_it_is_down(
    spool: Spool, mosquitto: Mosquitto, make_uplink: Callable[..., Uplink]
) -> None:
    events: list[bytes] = []
    watcher = new_client("event-watcher")
    watcher.on_message = lambda _c, _u, m: events.append(bytes(m.payload))
    watcher.connect(mosquitto.settings.host, mosquitto.port)
    watcher.subscribe(topics.event(DEVICE), qos=1)
    watcher.loop_start()
    uplink = make_uplink(mosquitto.settings, publish_timeout_s=20.0)
    try:
        uplink.start()
        wait_until(lambda: uplink.connected, what="connection")
        uplink.publish_event("ringing", rings=1)
        wait_until(lambda: bool(events), what="event")
        assert events == [b'{"rings":1,"event":"ringing","v":1}']

        mosquitto.kill()
        for _ in range(2):  # before and after the uplink notices
            started = time.monotonic()
            uplink.publish_event("answered")
            # Far below the publish timeout: the caller never waits on a dead broker.
            assert time.monotonic() - started < 5.0
            wait_until(lambda: not uplink.connected, what="the uplink noticing the crash")
    finally:
        watcher.loop_stop()

    never = make_uplink(BrokerSettings(host="127.0.0.1", port=free_port()), publish_timeout_s=20.0)
    never.start()
    started = time.monotonic()
    never.publish_event("ended", duration_s=3.5)
    assert time.monotonic() - started < 5.0
    assert not never.connected
