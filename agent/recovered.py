"""Calls a device recovered after a crash: what its journal says about them.

A device that stopped mid-call (a power cut, a kill) delivers the audio from its
call journal at the next start, with a manifest it rebuilt from what it can know
in the clear. What it knew about the call (times, rings, caller ID) it had
encrypted to the archive, so it passes that on unopened; the agent opens it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
from collections.abc import Sequence

from firmware.wire.age import Identity, decrypt_bytes
from firmware.wire.errors import AgeError, WireError
from firmware.wire.manifest import Manifest

log = logging.getLogger("linerec.agent.ingest")

# What a device's call journal may tell about a call it recovered after a crash.
_FACT_FIELDS = ("started_at", "answered_at", "ring_count", "answered", "caller_id")


def with_recovered_facts(manifest: Manifest, identities: Sequence[Identity]) -> Manifest:
    """The manifest with the facts a recovered call's journal holds, for the index.

    A device that crashed mid-call cannot read what it knew about the call (it
    was encrypted to the archive), so it signs it over unopened inside the
    manifest (``extra.facts``). The signed document is stored as received; this
    only fills in what the index shows. Facts that do not open or make sense are
    logged and left out: the audio still counts.
    """
    blob = manifest.extra.get("facts")
    if not isinstance(blob, str):
        return manifest
    try:
        facts = json.loads(decrypt_bytes(base64.b64decode(blob, validate=True), identities))
        if not isinstance(facts, dict):
            raise TypeError(type(facts).__name__)
        extra = facts.get("extra") or {}
        if not isinstance(extra, dict):
            raise TypeError("extra")
        merged = dataclasses.replace(
            manifest,
            **{name: facts[name] for name in _FACT_FIELDS if name in facts},
            extra={**manifest.extra, **extra},
        )
        merged.check()
    except (AgeError, WireError, ValueError, TypeError, binascii.Error) as exc:
        log.warning("recording %s: the recovered call's facts cannot be used: %s", manifest.recording_id, exc)
        return manifest
    return merged
