"""A damaged copy of a manifest must not cost the genuine recording its place in the archive.

A device that is waiting for a recording's ack quarantines it when the answer
is ``rejected`` (PROTOCOL.md: a late ``rejected`` is honoured whenever it
comes). So once the agent holds the device's verified manifest, a copy that does
not decrypt or verify (a flipped bit in transit, or a publish by anything else
that can write the device's topic) is logged and otherwise ignored.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive
from firmware.wire.age import generate_identity
from firmware.wire.messages import AckStatus
from firmware.wire.signing import public_key_text
from tests.support.chaos import flip
from tests.test_ingest import DEVICE, World, make_ingest


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    key = Ed25519PrivateKey.generate()
    identity = generate_identity()
    archive = Archive(tmp_path / "archive")
    archive.enrol(DEVICE, public_key_text(key))
    made = World(tmp_path / "archive", key, identity, archive, make_ingest(archive, identity))
    yield made
    made.archive.close()


def test_a_bit_flipped_copy_of_a_genuine_manifest_is_not_answered_rejected(world: World) -> None:
    rec = world.recording(size=20_000)
    topic, payload = rec.manifest()
    world.send(rec.manifest(), *rec.chunks())
    acks = world.send((topic, flip(payload, random.Random(1))), rec.fin())
    assert [a.status for a in acks] == [AckStatus.STORED]


def test_the_same_recording_without_the_damaged_copy_is_stored(world: World) -> None:
    rec = world.recording(size=20_000)
    acks = world.send(rec.manifest(), *rec.chunks(), rec.fin())
    assert [a.status for a in acks] == [AckStatus.STORED]
