"""The moving parts of a fault-injection run: recordings, killable peers and a chaos publisher.

The agent and the uplink run as child processes so that they can be killed with
SIGKILL at any instant, as a power cut or the OOM killer would; the chaos
publisher is a third MQTT client that replays, reorders and forges the
device's messages, as a misbehaving network or broker might deliver them.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware.spool import AUDIO_NAME, MANIFEST_NAME, Spool
from firmware.wire import topics
from firmware.wire.age import encrypt_bytes
from firmware.wire.manifest import sign_manifest
from firmware.wire.messages import Fin, encode_chunk, encode_fin
from tests.support.invariants import Made
from tests.test_archive import make_manifest

REPO = Path(__file__).resolve().parents[2]

AGENT_CHILD = """
import logging, sys, time
from pathlib import Path
from agent.archive import Archive
from agent.ingest import Ingest
from firmware.wire.age import parse_identity
from firmware.wire.broker import BrokerSettings

logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
root, identity_file, port = sys.argv[1:4]
identity = parse_identity(Path(identity_file).read_text().strip())
broker = BrokerSettings(host="127.0.0.1", port=int(port))
ingest = Ingest(archive=Archive(Path(root)), identities=[identity], broker=broker)
ingest.start()
while True:
    time.sleep(3600)
"""

UPLINK_CHILD = """
import logging, sys, time
from pathlib import Path
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire.broker import BrokerSettings

logging.basicConfig(level=logging.INFO, format="%(asctime)s uplink %(levelname)s %(message)s")
root, port, device, chunk = sys.argv[1:5]
uplink = Uplink(
    device_id=device,
    spool=Spool(Path(root)),
    broker=BrokerSettings(host="127.0.0.1", port=int(port)),
    chunk_size=int(chunk),
    ack_timeout_s=3.0,
    publish_timeout_s=3.0,
    retry_backoff_s=(0.2, 1.0),
)
uplink.start()
while True:
    time.sleep(3600)
"""


RECORDER_CHILD = """
import logging, sys, time
from pathlib import Path
import numpy as np
import dataclasses
from firmware.calls import Call, CallState, HangupCause
from firmware.line.base import CallerId
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.recorder import CallRecorder
from firmware.recovery import recover
from firmware.spool import Spool
from firmware.wire.signing import load_or_create_signing_key

# The recorder alone, as the device runs it: calls of speech-like noise written a few
# times faster than real time, each journalled as it goes; killed at any moment, and
# at each start it seals what the last run left, as the service does.
logging.basicConfig(level=logging.INFO, format="%(asctime)s recorder %(levelname)s %(message)s")
device, state_dir, recipient, seconds, speed, stop_file = sys.argv[1:7]
config = DeviceConfig(
    device=DeviceSettings(id=device, state_dir=Path(state_dir)),
    archive=ArchiveSettings(recipients=(recipient,)),
    audio=AudioSettings(checkpoint_s=1.0),
)
spool = Spool(config.device.spool_dir)
key = load_or_create_signing_key(config.device.signing_key_path)
for rec_id in recover(spool, config=config, signing_key=key):
    print("recovered", rec_id, flush=True)
recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=8000)
rng = np.random.default_rng(time.time_ns() % 2**32)
block_s, frames = 0.1, 800
while not Path(stop_file).exists():
    started = time.time()
    call = Call(
        state=CallState.ANSWERED, ring_count=1, first_ring_at=started - 3.0, answered_at=started,
        caller_id=CallerId(number="2125550199", name="STORM", number_absent=None, name_absent=None,
                           standard="bell202-mdmf"),
        answered_by="phone",
    )
    recorder.start(started)
    recorder.note(call)
    for i in range(int(float(seconds) / block_s)):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * (i * frames + np.arange(frames)) / 8000)
        recorder.write((rng.standard_normal(frames) * 3000 * envelope).astype(np.int16))
        time.sleep(block_s / float(speed))
    ended = time.time()
    call = dataclasses.replace(call, state=CallState.ENDED, ended_at=ended, hangup_cause=HangupCause.REMOTE_LOOP_DROP)
    print("sealed", recorder.finish(call), flush=True)
    time.sleep(rng.uniform(0.2, 1.0))
"""

EPOCH = datetime(2024, 6, 1, tzinfo=UTC)


def recording_id(n: int, clock_offset_s: float = 0.0) -> str:
    """The ``n``-th recording id of a run: time-sortable, so the uplink sends them in ``n`` order.

    ``clock_offset_s`` is how wrong the device's clock is: after a jump, ids (and
    so the order of delivery) no longer follow the order the calls were made in.
    """
    at = EPOCH + timedelta(seconds=n + clock_offset_s)
    return f"{at:%Y%m%dT%H%M%S}000Z-{n:08x}"


@dataclass(frozen=True)
class Device:
    """One device's identity and spool, and the archive recipient it encrypts to."""

    device_id: str
    key: Ed25519PrivateKey
    recipient: str
    spool: Spool

    def record(
        self, n: int, rng: random.Random, sizes: tuple[int, int], clock_offset_s: float = 0.0
    ) -> tuple[Made, bytes]:
        """Seal recording ``n`` into the spool: random ciphertext and a signed, encrypted manifest."""
        rec_id = recording_id(n, clock_offset_s)
        ciphertext = rng.randbytes(rng.randint(*sizes))
        at = EPOCH + timedelta(seconds=n + clock_offset_s)
        started = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        manifest = make_manifest(rec_id, device=self.device_id, started_at=started, ciphertext=ciphertext)
        folder = self.spool.begin(rec_id)
        (folder / MANIFEST_NAME).write_bytes(encrypt_bytes(sign_manifest(manifest, self.key), [self.recipient]))
        (folder / AUDIO_NAME).write_bytes(ciphertext)
        self.spool.seal(rec_id)
        made = Made(rec_id, self.device_id, len(ciphertext), hashlib.sha256(ciphertext).hexdigest())
        return made, ciphertext


@dataclass
class Child:
    """A Python child process that can be SIGKILLed and started again with the same arguments."""

    name: str
    script: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", self.script, *self.args], env=env, cwd=REPO, stdout=log, stderr=log
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a power cut would leave it."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def check_running(self) -> None:
        """Fail if the child died by itself: a crash is a bug, not a fault the test injected."""
        if self.process is not None and self.process.poll() is not None:
            msg = f"{self.name} exited by itself with {self.process.returncode}; see {self.log_path}"
            raise AssertionError(msg)


def flip(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one bit of one byte flipped."""
    out = bytearray(data)
    at = rng.randrange(len(out))
    out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


@dataclass
class ChaosPublisher:
    """A third MQTT client that hears the device's messages and publishes damaged versions of them."""

    port: int
    captured: deque[tuple[str, bytes]] = field(default_factory=lambda: deque(maxlen=600))

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async("127.0.0.1", self.port, 30, clean_start=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        # noLocal: what chaos itself publishes must not come back as "captured from the device".
        client.subscribe(f"{topics.ROOT}/+/rec/#", options=SubscribeOptions(qos=1, noLocal=True))

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.captured.append((message.topic, bytes(message.payload)))

    def _recent(self, kinds: tuple[str, ...], count: int, rng: random.Random) -> list[tuple[str, bytes]]:
        with self._lock:
            # Recent messages are the ones whose transfer is likely still open at the agent.
            pool = [m for m in list(self.captured)[-80:] if topics.parse_rec_topic(m[0]).kind in kinds]
        return rng.sample(pool, min(count, len(pool)))

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; True if the client took it (it is not connected while the broker is down)."""
        return self.client.publish(topic, payload, qos=1).rc == mqtt.MQTT_ERR_SUCCESS

    def duplicate(self, rng: random.Random) -> int:
        """Publish again one recent manifest, chunk or fin, exactly as the device sent it."""
        return sum(self.publish(*m) for m in self._recent(("manifest", "chunk", "fin"), 1, rng))

    def reorder(self, rng: random.Random) -> int:
        """Publish a handful of recent chunks again in shuffled order."""
        batch = self._recent(("chunk",), rng.randint(3, 8), rng)
        rng.shuffle(batch)
        return sum(self.publish(*m) for m in batch)

    def forged_chunk(self, device: str, rec_id: str, ciphertext: bytes, chunk: int, rng: random.Random) -> int:
        """A chunk of a real recording with a flipped bit and a hash that matches the flipped data."""
        index = rng.randrange(max(1, -(-len(ciphertext) // chunk)))
        data = flip(ciphertext[index * chunk : (index + 1) * chunk], rng)
        return int(self.publish(topics.chunk(device, rec_id, index), encode_chunk(index * chunk, data)))

    def bad_hash_chunk(self, device: str, rec_id: str, ciphertext: bytes, chunk: int, rng: random.Random) -> int:
        """A chunk whose data no longer matches the SHA-256 in its header."""
        index = rng.randrange(max(1, -(-len(ciphertext) // chunk)))
        payload = encode_chunk(index * chunk, ciphertext[index * chunk : (index + 1) * chunk])
        header = len(payload) - len(ciphertext[index * chunk : (index + 1) * chunk])
        damaged = payload[:header] + flip(payload[header:], rng)
        return int(self.publish(topics.chunk(device, rec_id, index), damaged))

    def forged_fin(self, device: str, rec_id: str, ciphertext: bytes, rng: random.Random) -> int:
        """A fin whose size or SHA-256 is wrong by one bit."""
        digest = hashlib.sha256(ciphertext).hexdigest()
        if rng.random() < 0.5:
            fin = Fin(len(ciphertext) + rng.choice((-1, 1)), digest)
        else:
            fin = Fin(len(ciphertext), flip(bytes.fromhex(digest), rng).hex())
        return int(self.publish(topics.fin(device, rec_id), encode_fin(fin)))
