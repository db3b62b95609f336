"""Calls recorded by the device's own recorder and archived by the agent's own ingest, for agent tests.

Nothing is faked: :class:`firmware.recorder.CallRecorder` writes the call into
a spool (a crash and :func:`firmware.recovery.recover` make a segment log), and
:meth:`agent.ingest.Ingest.handle` takes its manifest, chunks and fin as the
broker would deliver them, verifies them and stores them in the archive.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from agent.archive import Archive
from agent.ingest import Ingest
from firmware.calls import Call, CallState, HangupCause
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.recorder import CallRecorder
from firmware.recovery import recover
from firmware.spool import Spool
from firmware.wire import age, topics
from firmware.wire.broker import BrokerSettings
from firmware.wire.messages import AckStatus, Fin, decode_ack, encode_chunk, encode_fin
from firmware.wire.signing import load_or_create_signing_key, public_key_text

RATE = 8000
T0 = 1_790_000_000.0
CHUNK = 64 * 1024
# Exactness tests want the audio as captured: no cleaning, no trimming, no pre-roll.
PLAIN: dict[str, Any] = {"clean": False, "trim": False, "preroll_s": 0.0}


def ramp(frames: int, offset: int = 0) -> NDArray[np.int16]:
    """Samples that name their own position: sample i is (i + offset) wrapped into int16."""
    return (((np.arange(frames, dtype=np.int64) + offset) % 65536) - 32768).astype(np.int16)


def noise(frames: int, seed: int = 1) -> NDArray[np.int16]:
    """Loud speech-band noise: the device's VAD keeps all of it."""
    return (np.random.default_rng(seed).standard_normal(frames) * 4000).astype(np.int16)


@dataclass
class Device:
    """One device's config, key and spool."""

    config: DeviceConfig
    key: Ed25519PrivateKey
    spool: Spool

    @classmethod
    def make(cls, root: Path, recipients: tuple[str, ...], device_id: str = "pi-test", **audio: Any) -> Device:
        config = DeviceConfig(
            device=DeviceSettings(id=device_id, state_dir=root / device_id),
            archive=ArchiveSettings(recipients=recipients),
            audio=AudioSettings(**audio),
        )
        key = load_or_create_signing_key(config.device.signing_key_path)
        return cls(config, key, Spool(config.device.spool_dir))

    def with_audio(self, **audio: Any) -> Device:
        """The same device with other audio settings."""
        return Device(replace(self.config, audio=AudioSettings(**audio)), self.key, self.spool)

    def record(self, samples: NDArray[np.int16], *, t0: float = T0) -> str:
        """Record one answered call holding ``samples``; its id."""
        recorder = CallRecorder(config=self.config, spool=self.spool, signing_key=self.key, sample_rate=RATE)
        recorder.start(t0)
        for block in np.array_split(samples, max(1, len(samples) // 160)):
            recorder.write(block)
        call = Call(
            CallState.ENDED,
            ring_count=1,
            first_ring_at=t0 - 4.0,
            answered_at=t0,
            ended_at=t0 + len(samples) / RATE,
            hangup_cause=HangupCause.LOCAL_ONHOOK,
        )
        return recorder.finish(call)

    def crash(self, samples: NDArray[np.int16], *, t0: float = T0) -> str:
        """Record ``samples`` and die mid-call; the next start recovers the call as a segment log."""
        recorder = CallRecorder(config=self.config, spool=self.spool, signing_key=self.key, sample_rate=RATE)
        recorder.start(t0)
        for block in np.array_split(samples, max(1, len(samples) // 160)):
            recorder.write(block)
        [rec_id] = recover(self.spool, config=self.config, signing_key=self.key)
        return rec_id


def deliver(device: Device, archive: Archive, identities: list[Any]) -> list[str]:
    """Hand every sealed recording of ``device`` to an ingest on ``archive``; the ids stored."""
    archive.enrol(device.config.device.id, public_key_text(device.key))  # the same key again changes nothing
    ingest = Ingest(archive=archive, identities=identities, broker=BrokerSettings())
    stored = []
    dev = device.config.device.id
    for rec in device.spool.pending():
        ingest.handle(topics.manifest(dev, rec.rec_id), rec.manifest.read_bytes())
        sha = hashlib.sha256()
        with rec.open() as f:
            offset = 0
            while data := f.read(CHUNK):
                sha.update(data)
                ingest.handle(topics.chunk(dev, rec.rec_id, offset // CHUNK), encode_chunk(offset, data))
                offset += len(data)
        [(_topic, payload)] = ingest.handle(topics.fin(dev, rec.rec_id), encode_fin(Fin(offset, sha.hexdigest())))
        ack = decode_ack(payload)
        assert ack.status is AckStatus.STORED, ack
        device.spool.remove_delivered(rec.rec_id, ack)
        stored.append(rec.rec_id)
    return stored


def identity_file(path: Path, identity: str | None = None) -> str:
    """Write an age identity file (mode 0600); the identity."""
    identity = identity or age.generate_identity()
    path.write_text(f"# test identity\n{identity}\n")
    path.chmod(0o600)
    return identity
