"""A seeded storm of faults over many recordings: every one still ends up archived exactly once.

The device's uplink and the agent's ingest run as child processes against a
private mosquitto. While the device keeps sealing recordings, a schedule drawn
from ``random.Random(seed)`` SIGKILLs and restarts the broker, the agent and the
uplink, and a chaos client replays, reorders and forges the device's messages, and the
device's TCP link to the broker is cut (messages in flight are dropped).
Then everything runs quietly until the spool drains, and the archive and the
spool are checked from the outside (tests/support/invariants.py).

``LINEREC_FAULT_SEED`` replays another schedule; the seed is printed with the counts.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive
from firmware.spool import Spool
from firmware.wire.age import generate_identity, parse_identity, recipient_of
from firmware.wire.signing import public_key_text
from tests.faults.report import add_summary
from tests.support.broker import Mosquitto
from tests.support.chaos import AGENT_CHILD, UPLINK_CHILD, ChaosPublisher, Child, Device
from tests.support.invariants import Made, OutboxWatcher, delivery_problems, read_archive
from tests.support.tcpproxy import CuttableProxy

SEED = int(os.environ.get("LINEREC_FAULT_SEED", "20240601"))
DEVICE = "pi-faults"
RECORDINGS = 80
SEALED_AT_START = 20
SIZES = (5_000, 200_000)
CHUNK = 32 * 1024
MIN_FAULTS = 200
FAULT_PHASE_MAX_S = 90.0  # the storm stops here even if the faults or recordings fall short (then it fails)
QUIET_PHASE_MAX_S = 100.0  # everything up, nothing injected: the spool must drain within this

# How often each kind is drawn; the kills are rarer because each costs a reconnect.
WEIGHTS = {
    "broker_kill": 4,
    "agent_kill": 6,
    "uplink_kill": 4,
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
    chaos: ChaosPublisher
    proxy: CuttableProxy
    device: Device
    archive: Archive
    watcher: OutboxWatcher
    identity: str
    made: dict[str, Made] = field(default_factory=dict)
    ciphertexts: dict[str, bytes] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    busy_kills: Counter[str] = field(default_factory=Counter)  # kills while a recording was waiting

    def seal(self, n: int, rng: random.Random) -> None:
        made, ciphertext = self.device.record(n, rng, SIZES)
        self.watcher.expect(made.rec_id)
        self.made[made.rec_id] = made
        self.ciphertexts[made.rec_id] = ciphertext

    def check_children(self) -> None:
        self.agent.check_running()
        self.uplink.check_running()
        if self.broker.process is None or self.broker.process.poll() is not None:
            pytest.fail(f"mosquitto died by itself; see {self.broker.workdir / 'mosquitto.log'}")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed; `make test` installs it with apt-get")
    key = Ed25519PrivateKey.generate()
    identity = generate_identity()
    (tmp_path / "identity.txt").write_text(identity + "\n")
    archive = Archive(tmp_path / "archive")
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
    watcher = OutboxWatcher(spool.outbox, spool.rejected, archive.has)
    made = Rig(
        broker,
        agent,
        uplink,
        ChaosPublisher(broker.port),
        proxy,
        Device(DEVICE, key, recipient_of(identity), spool),
        archive,
        watcher,
        identity,
    )
    try:
        yield made
    finally:
        for child in (uplink, agent):
            child.kill()
        made.chaos.stop()
        proxy.stop()
        watcher.stop()
        broker.kill()
        archive.close()


def inject(rig: Rig, kind: str, rng: random.Random) -> int:
    """Inject one fault of ``kind``; return how many faults that was (messages published, or 1 kill)."""
    if kind.endswith("_kill"):
        if rig.watcher.ids():
            rig.busy_kills[kind] += 1
        pause = rng.uniform(0.0, 0.4)
        if kind == "broker_kill":
            rig.broker.kill()
            time.sleep(pause)
            rig.broker.start()  # same port: both sides must find it again on their own
        else:
            child = rig.agent if kind == "agent_kill" else rig.uplink
            child.kill()
            time.sleep(pause)
            child.start()
        return 1
    if kind == "link_cut":
        return rig.proxy.cut()  # 0 while the device is reconnecting: nothing was cut
    if kind == "duplicate":
        return rig.chaos.duplicate(rng)
    if kind == "reorder":
        return rig.chaos.reorder(rng)
    waiting = rig.watcher.ids()[:2]  # the one being sent and the next: where forgeries can do harm
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
    rig.chaos.start()
    rig.watcher.start()

    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    sealed = SEALED_AT_START
    storm_ends = time.monotonic() + FAULT_PHASE_MAX_S
    while time.monotonic() < storm_ends and (sealed < RECORDINGS or rig.faults.total() < MIN_FAULTS):
        rig.check_children()
        if sealed < RECORDINGS and rng.random() < 0.3:
            rig.seal(sealed, rng)  # the device keeps recording through the storm
            sealed += 1
        kind = rng.choices(kinds, weights)[0]
        rig.faults[kind] += inject(rig, kind, rng)
        time.sleep(rng.uniform(0.05, 0.3))
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
            f" uplink {rig.uplink.starts}x",
        ],
    )

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
    leftovers = sorted(str(p.relative_to(rig.archive.root)) for p in rig.archive.incoming_dir.rglob("*") if p.is_file())

    add_summary(
        request.config,
        f"fault injection results (seed {SEED})",
        [
            f"recordings made {len(rig.made)}, archived {len(archived)}, left the outbox {len(rig.watcher.removals)}",
            f"quiet drain {quiet_s:.1f} s; files left in the agent's .incoming: {len(leftovers)}",
            f"problems: {len(problems)}",
        ],
    )
    assert sealed == RECORDINGS, f"only {sealed} of {RECORDINGS} recordings were made in {FAULT_PHASE_MAX_S:g} s"
    assert rig.faults.total() >= MIN_FAULTS, f"only {rig.faults.total()} faults injected: {dict(rig.faults)}"
    assert all(rig.faults[kind] > 0 for kind in WEIGHTS), f"a fault kind was never injected: {dict(rig.faults)}"
    assert problems == [], "\n".join(problems)
