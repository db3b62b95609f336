"""The recording manifest: what was recorded, when, from whom, and proof it is the device's.

A manifest is JSON with a format version. The device signs the exact bytes with
its Ed25519 key; the signed document is then age-encrypted to the archive's
recipients like the audio itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware.wire.errors import SignatureError, WireError
from firmware.wire.topics import check_device_id, check_recording_id

MANIFEST_FORMAT = "linerec-manifest/1"
SIGNED_FORMAT = "linerec-signed-manifest/1"


def new_recording_id(t: float | None = None) -> str:
    """A recording id that sorts by time: ``YYYYMMDDTHHMMSSmmmZ-xxxxxxxx``."""
    when = datetime.fromtimestamp(t if t is not None else datetime.now(UTC).timestamp(), UTC)
    return f"{when:%Y%m%dT%H%M%S}{when.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def utc_iso(t: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds, or None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything known about one recording, signed by the device that made it."""

    recording_id: str
    device_id: str
    line: str
    started_at: str  # ISO 8601 UTC: first ring, or off-hook for a call without ring
    answered_at: str | None
    ended_at: str
    ring_count: int
    answered: bool
    hangup_cause: str
    caller_id: dict[str, Any] | None  # number, name, absence reasons, standard, raw (hex)
    consent: dict[str, Any] | None  # rule, jurisdiction, what was played, when, how long
    audio: dict[str, Any]  # codec, rate, durations, trim map, dtmf events, overflows
    ciphertext: dict[str, Any]  # {"file": name, "size": n, "sha256": hex}
    firmware_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The manifest's canonical bytes (these are what gets signed)."""
        body = {"format": MANIFEST_FORMAT, **asdict(self)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse manifest bytes, checking the format and the fields a reader relies on."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"manifest is not JSON: {exc}"
            raise WireError(msg) from None
        if not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT:
            got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            msg = f"manifest format is {got!r}; expected {MANIFEST_FORMAT!r}"
            raise WireError(msg)
        obj.pop("format")
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(obj) - {"extra"})
        if missing:
            msg = f"manifest lacks the fields {', '.join(missing)}"
            raise WireError(msg)
        extra = obj.pop("extra", {})
        if not isinstance(extra, dict):
            msg = "manifest field 'extra' must be an object"
            raise WireError(msg)
        extra.update({k: obj.pop(k) for k in list(obj) if k not in names})
        manifest = cls(**obj, extra=extra)
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise WireError unless the fields have the types and shapes readers rely on."""
        check_recording_id(self.recording_id)
        check_device_id(self.device_id)
        for name in ("line", "started_at", "ended_at", "hangup_cause", "firmware_version"):
            _expect(self, name, str, "text")
        _expect(self, "answered_at", (str, type(None)), "text or null")
        _expect(self, "ring_count", int, "an integer")
        _expect(self, "answered", bool, "true or false")
        for name in ("caller_id", "consent"):
            _expect(self, name, (dict, type(None)), "an object or null")
        for name in ("audio", "ciphertext"):
            _expect(self, name, dict, "an object")
        size, digest = self.ciphertext.get("size"), self.ciphertext.get("sha256")
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(digest, str)
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
        ):
            msg = "manifest field 'ciphertext' must hold a size in bytes and a 64-digit hex sha256"
            raise WireError(msg)

    @property
    def duration_s(self) -> float:
        """Seconds of audio in the recording as captured."""
        value = self.audio.get("duration_s", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0


def _expect(manifest: Manifest, name: str, kinds: type | tuple[type, ...], what: str) -> None:
    value = getattr(manifest, name)
    wrong_bool = isinstance(value, bool) and kinds is int
    if not isinstance(value, kinds) or wrong_bool:
        msg = f"manifest field {name!r} is {value!r}; expected {what}"
        raise WireError(msg)


def sign_manifest(manifest: Manifest, key: Ed25519PrivateKey) -> bytes:
    """The signed manifest document: the manifest bytes and their Ed25519 signature."""
    body = manifest.to_json()
    doc = {
        "format": SIGNED_FORMAT,
        "manifest": body.decode(),
        "signature": base64.b64encode(key.sign(body)).decode(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def read_signed_manifest(doc: bytes) -> tuple[bytes, bytes]:
    """Split a signed manifest document into manifest bytes and signature, unverified."""
    try:
        obj = json.loads(doc.decode("utf-8"))
        if obj["format"] != SIGNED_FORMAT:
            raise ValueError(obj["format"])
        body = obj["manifest"].encode()
        signature = base64.b64decode(obj["signature"], validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        msg = f"signed manifest is malformed: expected a {SIGNED_FORMAT} document"
        raise WireError(msg) from None
    return body, signature


def verify_manifest(doc: bytes, public_key: Ed25519PublicKey) -> Manifest:
    """The manifest inside a signed document, once its signature verifies against ``public_key``."""
    body, signature = read_signed_manifest(doc)
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        msg = "manifest signature does not verify against the device's enrolled key"
        raise SignatureError(msg) from None
    return Manifest.from_json(body)


def unverified_device_id(doc: bytes) -> str:
    """The device id a signed manifest claims, to find the key to check it with."""
    body, _ = read_signed_manifest(doc)
    try:
        device = json.loads(body)["device_id"]
    except (json.JSONDecodeError, KeyError, TypeError):
        device = None
    if not isinstance(device, str):
        msg = "signed manifest names no device"
        raise WireError(msg)
    return check_device_id(device)


def firmware_version() -> str:
    """The version string recorded in manifests."""
    from firmware import __version__  # noqa: PLC0415  (firmware/__init__ is import-light)

    return __version__
