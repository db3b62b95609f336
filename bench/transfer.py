"""Benchmark delivery: spool, Uplink, mosquitto, Ingest and archive, against mosquitto_pub.

Run ``python bench/transfer.py [--recordings 100] [--size-mb 1] [--backlog 1000] [--runs 3]``.

* Throughput: ``--recordings`` recordings of ``--size-mb`` MB (random bytes as
  the ciphertext, with a signed, age-encrypted manifest the agent accepts) are
  sealed in a spool and delivered by a real ``Uplink`` (in a child process, as
  the device) through a private mosquitto to a real ``Ingest`` (in this
  process, as the agent), which verifies, fsyncs, archives and acks each one.
  The time runs from the uplink's start until the spool is empty, which is
  after the agent's ``stored`` ack for the last one. The peer, on the same
  broker in the same run: ``mosquitto_pub -q 1 -f`` of the same files, one
  after another, to a subscriber here that counts the bytes, timed until it has
  them all. Medians of ``--runs`` runs, alternating; the target is at least
  0.5 times the peer's MB/s.
* Backlog memory: the peak RSS (VmHWM) of the uplink child draining a spool of
  ``--backlog`` small (20 KB) recordings and one of 100; flat memory means the
  ratio is about 1.0 (target at most 1.1).

It reports and never fails on a missed target; it exits non-zero only when
something breaks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.archive import Archive  # noqa: E402
from agent.ingest import Ingest  # noqa: E402
from firmware.spool import AUDIO_NAME, MANIFEST_NAME, Spool  # noqa: E402
from firmware.wire import age  # noqa: E402
from firmware.wire.errors import LinerecError  # noqa: E402
from firmware.wire.manifest import Manifest, new_recording_id, sign_manifest, utc_iso  # noqa: E402
from firmware.wire.signing import load_or_create_signing_key, public_key_text  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

MB = 1_000_000
DEVICE = "bench-pi"
SMALL_SIZE = 20_000  # bytes of one recording in the backlog run
SMALL_BACKLOG = 100
TARGET_RATIO = 0.5
RSS_TARGET = 1.1
PEER_TOPIC = "bench/raw"
FIRST_START = 1_790_000_000.0  # recording ids sort by this time, one second apart

# The device side, alone in a fresh interpreter so its RSS is the uplink's and nothing else's.
CHILD = """
import sys, time
from pathlib import Path
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire.broker import BrokerSettings

spool_dir, port, device, timeout = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
spool = Spool(spool_dir)
uplink = Uplink(device_id=device, spool=spool, broker=BrokerSettings(host="127.0.0.1", port=port))
start = time.perf_counter()
uplink.start()
delivered = uplink.wait_delivered(timeout)
elapsed = time.perf_counter() - start
uplink.stop()
if not delivered:
    sys.exit(f"the spool still holds {spool.depth()} recordings after {timeout:g} s")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that started us.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(elapsed, hwm / 1024)
"""


@dataclass(frozen=True)
class Sealed:
    """One recording ready to go into a spool: its id, the manifest message and the ciphertext file."""

    rec_id: str
    manifest: bytes
    audio: Path


@dataclass(frozen=True)
class Keys:
    """The device's signing key (public half, to enrol) and the agent's age identity."""

    device_public: str
    identity: str


def make_manifest(rec_id: str, started: float, size: int, sha256: str) -> Manifest:
    """A plausible manifest of an answered call whose ciphertext is ``size`` bytes hashing to ``sha256``."""
    iso = utc_iso(started)
    return Manifest(
        recording_id=rec_id,
        device_id=DEVICE,
        line="line1",
        started_at=iso,
        answered_at=iso,
        ended_at=iso,
        ring_count=2,
        answered=True,
        hangup_cause="remote",
        caller_id=None,
        consent={"rule": "one-party", "jurisdiction": "US-NY"},
        audio={"codec": "flac", "sample_rate": 8000, "duration_s": 60.0},
        ciphertext={"file": f"{rec_id}.flac.age", "size": size, "sha256": sha256},
        firmware_version="bench",
    )


def make_recordings(folder: Path, count: int, size: int) -> tuple[list[Sealed], Keys]:
    """``count`` recordings of ``size`` random bytes, signed by one device key, manifests sealed to one identity."""
    folder.mkdir()
    key = load_or_create_signing_key(folder / "device.key")
    identity = age.generate_identity()
    recipient = age.recipient_of(identity)
    sealed = []
    for i in range(count):
        started = FIRST_START + i
        rec_id = new_recording_id(started)
        audio = os.urandom(size)
        path = folder / f"{rec_id}.age"
        path.write_bytes(audio)
        manifest = make_manifest(rec_id, started, size, hashlib.sha256(audio).hexdigest())
        sealed.append(Sealed(rec_id, age.encrypt_bytes(sign_manifest(manifest, key), [recipient]), path))
    return sealed, Keys(public_key_text(key), identity)


def fill_spool(root: Path, recordings: list[Sealed]) -> Spool:
    """A fresh spool holding ``recordings`` sealed in the outbox, as the recorder leaves them."""
    spool = Spool(root)
    for rec in recordings:
        folder = spool.begin(rec.rec_id)
        (folder / MANIFEST_NAME).write_bytes(rec.manifest)
        shutil.copyfile(rec.audio, folder / AUDIO_NAME)
        spool.seal(rec.rec_id)
    return spool


def run_uplink_child(spool_dir: Path, port: int, timeout: float) -> tuple[float, float]:
    """Drain ``spool_dir`` with an Uplink in a child process; its seconds and peak RSS in MiB."""
    argv = [sys.executable, "-c", CHILD, str(spool_dir), str(port), DEVICE, str(timeout)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=timeout + 60)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-3:]
        msg = f"the uplink child exited with status {out.returncode}: {' / '.join(tail)}"
        raise RuntimeError(msg)
    elapsed, rss = out.stdout.split()
    return float(elapsed), float(rss)


def deliver(recordings: list[Sealed], keys: Keys, broker: Mosquitto, work: Path, timeout: float) -> tuple[float, float]:
    """Deliver ``recordings`` from a fresh spool to a fresh archive; the child's seconds and peak RSS."""
    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        spool = fill_spool(folder / "spool", recordings)
        with Archive(folder / "archive") as archive:
            archive.enrol(DEVICE, keys.device_public)
            ingest = Ingest(archive=archive, identities=[age.parse_identity(keys.identity)], broker=broker.settings)
            ingest.start()
            try:
                if not ingest.wait_ready(10):
                    msg = f"the ingest did not subscribe at the broker on port {broker.port} within 10 s"
                    raise RuntimeError(msg)
                result = run_uplink_child(spool.root, broker.port, timeout)
                if not ingest.wait_stored(len(recordings), 10):
                    msg = f"the spool is empty but the agent stored {ingest.stored_count} of {len(recordings)}"
                    raise RuntimeError(msg)
            finally:
                ingest.stop()
            if spool.depth() != 0:
                msg = f"the uplink finished with {spool.depth()} recordings still in the spool"
                raise RuntimeError(msg)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ByteCounter:
    """A subscriber that counts the messages and bytes it receives on the peer's topic."""

    def __init__(self, broker: Mosquitto) -> None:
        self._cond = threading.Condition()
        self._messages = 0
        self._bytes = 0
        self._subscribed = threading.Event()
        self._client = broker.settings.client("bench-counter")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            msg = f"the counting subscriber did not subscribe at the broker on port {broker.port} within 10 s"
            raise RuntimeError(msg)

    def _on_connect(self, client: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        client.subscribe(PEER_TOPIC, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, _rc: Any, _p: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._cond:
            self._messages += 1
            self._bytes += len(message.payload)
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._messages = self._bytes = 0

    def wait_for(self, messages: int, timeout: float) -> int:
        """Wait until ``messages`` have arrived; the bytes received by then (fewer messages: RuntimeError)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._messages >= messages, timeout):
                msg = f"the counting subscriber got {self._messages} of {messages} messages within {timeout:g} s"
                raise RuntimeError(msg)
            return self._bytes

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def time_peer(recordings: list[Sealed], broker: Mosquitto, counter: ByteCounter, timeout: float) -> float:
    """Seconds for ``mosquitto_pub -q 1 -f`` of each ciphertext file until the subscriber holds them all."""
    counter.reset()
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", PEER_TOPIC, "-f"]
    start = time.perf_counter()
    for rec in recordings:
        subprocess.run([*base, str(rec.audio)], check=True, timeout=timeout)
    received = counter.wait_for(len(recordings), timeout)
    elapsed = time.perf_counter() - start
    expected = sum(rec.audio.stat().st_size for rec in recordings)
    if received != expected:
        msg = f"the counting subscriber got {received} bytes; the files hold {expected}"
        raise RuntimeError(msg)
    return elapsed


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def report_throughput(args: argparse.Namespace, broker: Mosquitto, work: Path) -> None:
    size = int(args.size_mb * MB)
    recordings, keys = make_recordings(work / "big", args.recordings, size)
    total_mb = args.recordings * size / MB
    timeout = 120 + 10 * total_mb + args.recordings
    ours: list[float] = []
    peer: list[float] = []
    rss: list[float] = []
    counter = ByteCounter(broker)
    try:
        for _ in range(args.runs):
            seconds, peak = deliver(recordings, keys, broker, work, timeout)
            ours.append(seconds)
            rss.append(peak)
            peer.append(time_peer(recordings, broker, counter, timeout))
    finally:
        counter.close()
    ours_s, peer_s = statistics.median(ours), statistics.median(peer)
    ours_rate, peer_rate = total_mb / ours_s, total_mb / peer_s
    ratio = ours_rate / peer_rate
    print(
        f"throughput: {args.recordings} recordings of {args.size_mb:g} MB ({total_mb:g} MB) through mosquitto,"
        f" median of {args.runs}:"
    )
    print(
        f"  linerec Uplink -> Ingest (stored, acked):   {ours_rate:7.1f} MB/s  median {ours_s:6.2f} s"
        f"  ({args.recordings / ours_s:6.1f} recordings/s)  runs {runs_text(ours)}"
    )
    print(
        f"  mosquitto_pub -q 1 -f, one per file:        {peer_rate:7.1f} MB/s  median {peer_s:6.2f} s"
        f"  ({args.recordings / peer_s:6.1f} recordings/s)  runs {runs_text(peer)}"
    )
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"  ratio linerec/mosquitto_pub: {ratio:.2f}  ({verdict} the {TARGET_RATIO}x target)")
    print(f"  uplink child peak RSS (VmHWM), median: {statistics.median(rss):.1f} MiB")
    shutil.rmtree(work / "big")


def report_backlog(args: argparse.Namespace, broker: Mosquitto, work: Path) -> None:
    small_count = min(SMALL_BACKLOG, args.backlog)
    recordings, keys = make_recordings(work / "small", args.backlog, SMALL_SIZE)
    timeout = 120 + args.backlog
    sizes = sorted({small_count, args.backlog})
    results: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
    for _ in range(args.runs):
        for n in sizes:
            results[n].append(deliver(recordings[:n], keys, broker, work, timeout))
    print(f"backlog memory: uplink child draining {SMALL_SIZE // 1000} KB recordings, median of {args.runs}:")
    rss = {}
    for n in sizes:
        rss[n] = statistics.median(r[1] for r in results[n])
        seconds = statistics.median(r[0] for r in results[n])
        print(
            f"  backlog {n:5d}: peak RSS (VmHWM) {rss[n]:6.1f} MiB  runs {runs_text([r[1] for r in results[n]])};"
            f"  drained in {seconds:6.2f} s ({n / seconds:5.1f} recordings/s)"
        )
    ratio = rss[args.backlog] / rss[small_count]
    verdict = "meets" if ratio <= RSS_TARGET else "MISSES"
    print(f"  ratio backlog {args.backlog}/{small_count}: {ratio:.2f}  ({verdict} the <= {RSS_TARGET} target)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--recordings", type=int, default=100, help="recordings in the throughput run")
    parser.add_argument("--size-mb", type=float, default=1.0, help="MB (10^6 bytes) per recording")
    parser.add_argument("--backlog", type=int, default=1000, help="recordings in the large backlog")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement; medians are reported")
    args = parser.parse_args(argv)
    if args.recordings < 1 or args.backlog < 1 or args.runs < 1 or not args.size_mb > 0:
        parser.error("--recordings, --backlog and --runs must be at least 1 and --size-mb above 0")
    missing = [tool for tool in ("mosquitto_pub",) if shutil.which(tool) is None]
    if missing or (shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists()):
        print("mosquitto and mosquitto_pub are needed (apt install mosquitto mosquitto-clients)", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="linerec-transfer-") as tmp:
            work = Path(tmp)
            (work / "broker").mkdir()
            broker = Mosquitto(work / "broker")
            broker.start()
            try:
                report_throughput(args, broker, work)
                report_backlog(args, broker, work)
            finally:
                broker.stop()
    except (OSError, subprocess.SubprocessError, RuntimeError, LinerecError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
