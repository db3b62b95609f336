"""MQTT topic names under ``linerec/<device_id>/`` and the parsing of incoming ones."""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware.wire.errors import WireError

ROOT = "linerec"

# Device and recording ids become path components on the agent: keep them boring.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RECORDING_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{9}Z-[0-9a-f]{8}$")


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is a valid device id, else raise WireError."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        msg = (
            f"device id {device_id!r} is not valid: use 1-63 lowercase letters, digits,"
            " '-' or '_', starting with a letter or digit"
        )
        raise WireError(msg)
    return device_id


def check_recording_id(rec_id: str) -> str:
    """Return ``rec_id`` if it is a valid recording id, else raise WireError."""
    if not RECORDING_ID_RE.fullmatch(rec_id):
        msg = f"recording id {rec_id!r} is not valid: expected YYYYMMDDTHHMMSSmmmZ-xxxxxxxx"
        raise WireError(msg)
    return rec_id


def status(device_id: str) -> str:
    """Retained device status; the last will sets it offline."""
    return f"{ROOT}/{device_id}/status"


def event(device_id: str) -> str:
    """Line events: ringing, answered, ended."""
    return f"{ROOT}/{device_id}/event"


def manifest(device_id: str, rec_id: str) -> str:
    """The age-encrypted signed manifest of one recording."""
    return f"{ROOT}/{device_id}/rec/{rec_id}/manifest"


def chunk(device_id: str, rec_id: str, index: int) -> str:
    """One piece of a recording's ciphertext."""
    return f"{ROOT}/{device_id}/rec/{rec_id}/chunk/{index}"


def fin(device_id: str, rec_id: str) -> str:
    """The end of a recording's transfer: total size and SHA-256."""
    return f"{ROOT}/{device_id}/rec/{rec_id}/fin"


def ack(device_id: str) -> str:
    """The agent's answers to a device."""
    return f"{ROOT}/{device_id}/ack"


def recipients(device_id: str) -> str:
    """The archive recipients the agent deploys to a device (retained, signed by the agent)."""
    return f"{ROOT}/{device_id}/recipients"


# Subscriptions of each side.
AGENT_SUBSCRIPTIONS = (f"{ROOT}/+/rec/#", f"{ROOT}/+/status")


@dataclass(frozen=True, slots=True)
class RecTopic:
    """A parsed ``linerec/<device>/rec/<id>/<kind>[/<index>]`` topic."""

    device_id: str
    rec_id: str
    kind: str  # "manifest", "chunk" or "fin"
    index: int | None = None


def parse_rec_topic(topic: str) -> RecTopic:
    """Split a recording topic into its parts, or raise WireError saying what is wrong."""
    parts = topic.split("/")
    if len(parts) < 5 or parts[0] != ROOT or parts[2] != "rec":
        msg = f"topic {topic!r} is not a linerec recording topic"
        raise WireError(msg)
    device_id = check_device_id(parts[1])
    rec_id = check_recording_id(parts[3])
    kind = parts[4]
    if kind in ("manifest", "fin") and len(parts) == 5:
        return RecTopic(device_id, rec_id, kind)
    index = parts[5] if len(parts) == 6 else ""
    if kind == "chunk" and index.isascii() and index.isdigit() and len(index) <= 9:
        return RecTopic(device_id, rec_id, kind, int(index))
    msg = f"topic {topic!r} is not a linerec recording topic (expected manifest, chunk/<n> or fin)"
    raise WireError(msg)


def device_of(topic: str) -> str:
    """The device id of any ``linerec/<device>/...`` topic."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        msg = f"topic {topic!r} is not under {ROOT}/<device_id>/"
        raise WireError(msg)
    return check_device_id(parts[1])
