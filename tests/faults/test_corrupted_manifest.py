"""A damaged copy of a manifest must not cost the genuine recording its place in the archive.

A device that is waiting for a recording's ack quarantines it when the answer
is ``rejected`` (PROTOCOL.md: a late ``rejected`` is honoured whenever it
comes). So once the agent holds the device's verified manifest, a copy that does
not decrypt or verify (a flipped bit in transit, or a publish by anything else
that can write the device's topic) is logged and otherwise ignored.
"""

# ruff: noqa: F811

from __future__ import annotations

import random

from firmware.wire.messages import AckStatus
from tests.support.chaos import flip

# The ingest tests' `world` fixture, used by name as pytest fixtures are (hence F401 and F811).
from tests.test_ingest import World, world  # noqa: F401


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
