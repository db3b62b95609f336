"""A seeded storm of faults over many recordings: every one still ends up archived exactly once.

The device's uplink, its recorder and the agent's ingest run as child
processes against a private mosquitto. While the device keeps sealing
recordings (and the recorder keeps recording calls into the same spool), a
schedule drawn from ``random.Random(seed)`` SIGKILLs and restarts the broker,
the agent, the uplink and the recorder mid-call; a chaos client replays,
reorders and forges the device's messages; the device's TCP link to the broker
is cut (messages in flight are dropped); the device's clock jumps (to 1970, as
a Pi without a clock battery boots, or hours and days either way), so ids stop
following the order calls were made in; and the agent's disk fills up for a
while (its archive is on a small tmpfs of its own, which needs root, as CI
runs). Then everything runs quietly until the spool drains, and the archive
and the spool are checked from the outside (tests/support/invariants.py).

``LINEREC_FAULT_SEED`` replays another schedule; the seed is printed with the counts.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.archive import Archive
from firmware.journal import SEGMENTS_FILE
from firmware.spool import Spool
from firmware.wire.age import generate_identity, parse_identity, recipient_of
from firmware.wire.signing import load_or_create_signing_key, public_key_text
from tests.faults.report import add_summary
from tests.support.broker import Mosquitto
from tests.support.chaos import AGENT_CHILD, RECORDER_CHILD, UPLINK_CHILD, ChaosPublisher, Child, Device
from tests.support.invariants import Made, OutboxWatcher, delivery_problems, read_archive
from tests.support.tcpproxy import CuttableProxy

SEED = int(os.environ.get("LINEREC_FAULT_SEED", "20240601"))
EPOCH_1970_S = 1_717_200_000.0  # 2024-06-01, the storm's first id, as seconds since 1970
DEVICE = "pi-faults"
RECORDINGS = 80
SEALED_AT_START = 20
SIZES = (5_000, 200_000)
CHUNK = 32 * 1024
MIN_FAULTS = 200
FAULT_PHASE_MAX_S = 90.0  # the storm stops here even if the faults or recordings fall short (then it fails)
QUIET_PHASE_MAX_S = 100.0  # everything up, nothing injected: the spool must drain within this

RECORDER_CALL_S = "4"  # seconds of audio in each of the recorder's calls...
RECORDER_SPEED = "5"  # ...written this many times faster than real time
ARCHIVE_DISK = "64m"  # the agent's tmpfs: room for the run, filled up on purpose now and then
# How wrong the device's clock becomes at a jump: back to 1970, an hour, days, or right again.
CLOCK_JUMPS_S = (-EPOCH_1970_S, -3600.0, -86_400.0 * 3, 3600.0, 86_400.0 * 400, 0.0)

# How often each kind is drawn; the kills are rarer because each costs a reconnect.
WEIGHTS = {
    "broker_kill": 4,
    "agent_kill": 6,
    "uplink_kill": 4,
    "recorder_kill": 4,
    "agent_disk_full": 2,
    "clock_jump": 2,
    "link_cut": 5,
    "duplicate": 18,
    "reorder": 8,
    "forged_chunk": 8,
    "bad_hash_chunk": 6,
    "forged_fin": 4,
}


@dataclass
class Rig:
    """Everything one run needs: the broker, the two children, the chaos client and the books."""

    broker: Mosquitto
    agent: Child
    uplink: Child
    recorder: Child
    chaos: ChaosPublisher
    proxy: CuttableProxy
    device: Device
    archive: Archive
    watcher: OutboxWatcher
    identity: str
    disk: Path | None  # the agent's own small filesystem, or None where it cannot be mounted
    stop_recorder: Path
    made: dict[str, Made] = field(default_factory=dict)
    ciphertexts: dict[str, bytes] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    busy_kills: Counter[str] = field(default_factory=Counter)  # kills while a recording was waiting
    interrupted: set[str] = field(default_factory=set)  # calls the recorder was killed in, journal begun
    clock_offset_s: float = 0.0
    ballast: Path | None = None
    ballast_until: float = 0.0

    def seal(self, n: int, rng: random.Random) -> None:
        made, ciphertext = self.device.record(n, rng, SIZES, self.clock_offset_s)
        self.watcher.expect(made.rec_id)
        self.made[made.rec_id] = made
        self.ciphertexts[made.rec_id] = ciphertext

    def fill_disk(self, seconds: float) -> int:
        """Fill the agent's disk to the last block for ``seconds``; 0 where there is no disk of its own."""
        if self.disk is None or self.ballast is not None:
            return 0
        self.ballast = self.disk / "ballast"
        stat = os.statvfs(self.disk)
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, stat.f_bavail * stat.f_frsize)
        except OSError:
            pass  # it took what there was: that is the point
        finally:
            os.close(fd)
        self.ballast_until = time.monotonic() + seconds
        return 1

    def free_disk(self, *, now: bool = False) -> None:
        if self.ballast is not None and (now or time.monotonic() >= self.ballast_until):
            self.ballast.unlink()
            self.ballast = None

    def calls_in_progress(self) -> list[str]:
        """The recorder's calls in the spool's incoming folder whose journal holds at least one segment."""
        incoming = self.device.spool.incoming
        return sorted(p.name for p in incoming.iterdir() if p.is_dir() and _size(p / SEGMENTS_FILE) > 0)

    def kill_recorder_mid_call(self, pause: float) -> int:
        """SIGKILL the recorder inside a journalled call and start it again; 0 if it is between calls."""
        if not self.calls_in_progress():
            return 0  # between calls, or before the first second of one is journalled
        self.recorder.kill()
        self.interrupted.update(self.calls_in_progress())
        time.sleep(pause)
        self.recorder.start()  # it seals the interrupted call from its journal first
        return 1

    def check_children(self) -> None:
        self.agent.check_running()
        self.uplink.check_running()
        if not self.stop_recorder.exists():
            self.recorder.check_running()
        if self.broker.process is None or self.broker.process.poll() is not None:
            pytest.fail(f"mosquitto died by itself; see {self.broker.workdir / 'mosquitto.log'}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mount_small_disk(folder: Path) -> bool:
    """Mount a tmpfs of ARCHIVE_DISK on ``folder``; False where this user may not mount."""
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={ARCHIVE_DISK},mode=0700", "linerec-faults", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed; `make test` installs it with apt-get")
    key = load_or_create_signing_key(tmp_path / "signing.key")  # the recorder's key, from the same file
    identity = generate_identity()
    (tmp_path / "identity.txt").write_text(identity + "\n")
    disk = tmp_path / "archive"
    mounted = _mount_small_disk(disk)
    if mounted:  # registered first, so that it runs even if what follows fails
        request.addfinalizer(lambda: subprocess.run(["umount", "--lazy", str(disk)], check=False))
    archive = Archive(disk)
    archive.enrol(DEVICE, public_key_text(key))
    spool = Spool(tmp_path / "spool")
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = Mosquitto(broker_dir)
    port = str(broker.port)
    agent = Child(
        "agent",
        AGENT_CHILD,
        [str(archive.root), str(tmp_path / "identity.txt"), port],
        tmp_path / "agent.log",
    )
    proxy = CuttableProxy(broker.port)  # the device's link; the agent's stays direct
    uplink_args = [str(spool.root), str(proxy.port), DEVICE, str(CHUNK)]
    uplink = Child("uplink", UPLINK_CHILD, uplink_args, tmp_path / "uplink.log")
    stop_recorder = tmp_path / "stop-recorder"
    recipient = recipient_of(identity)
    recorder_args = [DEVICE, str(tmp_path), recipient, RECORDER_CALL_S, RECORDER_SPEED, str(stop_recorder)]
    recorder = Child("recorder", RECORDER_CHILD, recorder_args, tmp_path / "recorder.log")
    watcher = OutboxWatcher(spool.outbox, spool.rejected, archive.has)
    made = Rig(
        broker,
        agent,
        uplink,
        recorder,
        ChaosPublisher(broker.port),
        proxy,
        Device(DEVICE, key, recipient_of(identity), spool),
        archive,
        watcher,
        identity,
        disk if mounted else None,
        stop_recorder,
    )
    try:
        yield made
    finally:
        for child in (recorder, uplink, agent):
            child.kill()
        made.chaos.stop()
        proxy.stop()
        watcher.stop()
        broker.kill()
        archive.close()


def kill(rig: Rig, kind: str, pause: float) -> int:
    """SIGKILL one part and start it again after ``pause``; 1, or 0 if there was nothing to do."""
    if kind == "recorder_kill":
        return rig.kill_recorder_mid_call(pause)
    if rig.watcher.ids():
        rig.busy_kills[kind] += 1
    if kind == "broker_kill":
        rig.broker.kill()
        time.sleep(pause)
        rig.broker.start()  # same port: both sides must find it again on their own
        return 1
    child = rig.agent if kind == "agent_kill" else rig.uplink
    child.kill()
    time.sleep(pause)
    child.start()
    return 1


def inject(rig: Rig, kind: str, rng: random.Random) -> int:
    """Inject one fault of ``kind``; return how many faults that was (messages published, or 1 kill)."""
    if kind.endswith("_kill"):
        return kill(rig, kind, rng.uniform(0.0, 0.4))
    if kind == "agent_disk_full":
        return rig.fill_disk(rng.uniform(0.5, 3.0))
    if kind == "clock_jump":
        rig.clock_offset_s = rng.choice(CLOCK_JUMPS_S)
        return 1
    if kind == "link_cut":
        return rig.proxy.cut()  # 0 while the device is reconnecting: nothing was cut
    if kind == "duplicate":
        return rig.chaos.duplicate(rng)
    if kind == "reorder":
        return rig.chaos.reorder(rng)
    # The one being sent and the next, where forgeries can do harm (the recorder's bytes are not known here).
    waiting = [rec_id for rec_id in rig.watcher.ids()[:2] if rec_id in rig.ciphertexts]
    if not waiting:
        return 0
    rec_id = rng.choice(waiting)
    ciphertext = rig.ciphertexts[rec_id]
    if kind == "forged_chunk":
        return rig.chaos.forged_chunk(DEVICE, rec_id, ciphertext, CHUNK, rng)
    if kind == "bad_hash_chunk":
        return rig.chaos.bad_hash_chunk(DEVICE, rec_id, ciphertext, CHUNK, rng)
    return rig.chaos.forged_fin(DEVICE, rec_id, ciphertext, rng)


def wait_for(predicate: Callable[[], bool], timeout: float, what: Callable[[], str], rig: Rig) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        rig.check_children()
        if time.monotonic() > deadline:
            pytest.fail(f"{what()} within {timeout:g} s (seed {SEED}; logs in {rig.agent.log_path.parent})")
        time.sleep(0.1)


@pytest.mark.timeout(240)
def test_a_seeded_storm_of_faults_archives_every_recording_exactly_once_and_deletes_nothing_unacked(
    rig: Rig, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(SEED)
    began = time.monotonic()
    for n in range(SEALED_AT_START):
        rig.seal(n, rng)
    rig.broker.start()
    rig.proxy.start()
    rig.agent.start()
    rig.uplink.start()
    rig.recorder.start()
    rig.chaos.start()
    rig.watcher.start()

    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    sealed = SEALED_AT_START
    storm_ends = time.monotonic() + FAULT_PHASE_MAX_S
    while time.monotonic() < storm_ends and (sealed < RECORDINGS or rig.faults.total() < MIN_FAULTS):
        rig.check_children()
        rig.free_disk()
        if sealed < RECORDINGS and rng.random() < 0.3:
            rig.seal(sealed, rng)  # the device keeps recording through the storm
            sealed += 1
        kind = rng.choices(kinds, weights)[0]
        rig.faults[kind] += inject(rig, kind, rng)
        time.sleep(rng.uniform(0.05, 0.3))
    rig.free_disk(now=True)
    # The recorder is killed once more wherever it is, and its last start only seals what that left.
    rig.stop_recorder.touch()
    rig.recorder.kill()
    rig.interrupted.update(rig.calls_in_progress())
    rig.recorder.start()
    wait_for(lambda: not rig.recorder.alive(), 30, lambda: "the recorder did not finish its last start", rig)
    storm_s = time.monotonic() - began
    # Noted before the drain is checked, so that a run that fails there still says what it went through.
    add_summary(
        request.config,
        f"fault injection storm (seed {SEED})",
        [
            "faults injected: "
            + ", ".join(f"{kind} {rig.faults[kind]}" for kind in WEIGHTS)
            + f"; total {rig.faults.total()}",
            "kills while a recording was waiting: " + ", ".join(f"{k} {v}" for k, v in sorted(rig.busy_kills.items())),
            f"storm {storm_s:.1f} s over {sealed} recordings; agent started {rig.agent.starts}x,"
            f" uplink {rig.uplink.starts}x, recorder {rig.recorder.starts}x",
            f"calls the recorder was killed in: {len(rig.interrupted)}"
            + ("" if rig.disk is not None else "; agent_disk_full not injected: mounting a small disk needs root"),
        ],
    )

    recorded = _recorder_ids(rig)
    for rec_id in recorded:
        rig.made[rec_id] = Made(rec_id, DEVICE, None, None)
    quiet_began = time.monotonic()
    wait_for(
        lambda: not rig.watcher.ids() and all(rig.archive.has(r) for r in rig.made),
        QUIET_PHASE_MAX_S,
        lambda: f"{len(rig.watcher.ids())} recordings were still in the outbox after the faults stopped",
        rig,
    )
    quiet_s = time.monotonic() - quiet_began
    rig.uplink.kill()
    rig.agent.kill()
    rig.watcher.stop()

    identities = [parse_identity(rig.identity)]
    archived, strays = read_archive(rig.archive, identities, {DEVICE: rig.device.key.public_key()})
    spool = rig.device.spool
    left = sorted(p.name for folder in (spool.outbox, spool.rejected, spool.incoming) for p in folder.iterdir())
    problems = delivery_problems(rig.made.values(), archived, rig.watcher.removals, strays=strays, left_in_spool=left)
    recovered = _logged(rig.recorder.log_path, "recovered")
    lost = sorted(rig.interrupted - recovered)
    problems += [f"{rid}: the recorder was killed in this call and did not recover it" for rid in lost]
    leftovers = sorted(str(p.relative_to(rig.archive.root)) for p in rig.archive.incoming_dir.rglob("*") if p.is_file())

    add_summary(
        request.config,
        f"fault injection results (seed {SEED})",
        [
            f"recordings made {len(rig.made)} ({len(recorded)} by the recorder, {len(recovered)} of them recovered"
            f" after a kill), archived {len(archived)}, left the outbox {len(rig.watcher.removals)}",
            f"quiet drain {quiet_s:.1f} s; files left in the agent's .incoming: {len(leftovers)}",
            f"problems: {len(problems)}",
        ],
    )
    assert sealed == RECORDINGS, f"only {sealed} of {RECORDINGS} recordings were made in {FAULT_PHASE_MAX_S:g} s"
    assert rig.faults.total() >= MIN_FAULTS, f"only {rig.faults.total()} faults injected: {dict(rig.faults)}"
    possible = [kind for kind in WEIGHTS if kind != "agent_disk_full" or rig.disk is not None]
    assert all(rig.faults[kind] > 0 for kind in possible), f"a fault kind was never injected: {dict(rig.faults)}"
    assert problems == [], "\n".join(problems)


def _logged(log: Path, verb: str) -> set[str]:
    """The ids the recorder printed after ``verb`` (``sealed`` or ``recovered``) in its log."""
    return {line.split()[1] for line in log.read_text().splitlines() if line.startswith(f"{verb} ")}


def _recorder_ids(rig: Rig) -> set[str]:
    """Every call the recorder made: what it said it sealed or recovered, and what its spool held.

    A kill can land between sealing and printing, so the outbox's own record counts too.
    """
    said = _logged(rig.recorder.log_path, "sealed") | _logged(rig.recorder.log_path, "recovered")
    held = {p.name for p in rig.device.spool.outbox.iterdir()} | rig.watcher.seen
    return (said | held | rig.interrupted) - rig.made.keys()
