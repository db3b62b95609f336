"""Real recordings for archive tests: age-encrypted audio and signed, encrypted manifests, as a device makes them.

``Studio`` holds a device signing key and an archive identity, and puts calls
into a real ``Archive`` through ``Archive.store`` (what ingest calls once a
transfer checks out), so every file on disk is what a device would have sent.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive, CallRow
from firmware.wire import age, topics
from firmware.wire.manifest import Manifest, sign_manifest
from firmware.wire.messages import Fin, encode_chunk, encode_fin
from firmware.wire.signing import public_key_text

DEVICE = "pi-hall"


def rec_id(day: int, hour: int = 12, n: int = 0, month: int = 3, year: int = 2024) -> str:
    """A recording id that starts at the given day and hour (UTC); ``n`` makes it unique."""
    return f"{year:04d}{month:02d}{day:02d}T{hour:02d}0000000Z-{n:08x}"


def iso(rid: str) -> str:
    """The start time in a recording id, as a manifest writes it."""
    return f"{rid[0:4]}-{rid[4:6]}-{rid[6:8]}T{rid[9:11]}:{rid[11:13]}:{rid[13:15]}.000Z"


CONSENT = {
    "rule": "all-party",
    "jurisdiction": "US-CA",
    "basis": "the caller's area code is in California",
    "disputed": False,
    "caller_region": "US-CA",
    "language": "en",
    "recorded": True,
    "offsets_from": "recording",
    "notices": [
        {"kind": "announcement", "id": "en-all-party", "sha256": "ab" * 32, "offset_s": 1.0, "duration_s": 4.2}
    ],
    "beep": None,
    "express": None,
}


@dataclass
class Studio:
    """A device key and an archive identity, and the calls stored with them."""

    archive: Archive
    device: str = DEVICE
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    identity: str = field(default_factory=age.generate_identity)
    audio: dict[str, bytes] = field(default_factory=dict)  # recording id -> its ciphertext
    manifests: dict[str, bytes] = field(default_factory=dict)  # recording id -> the manifest file's bytes

    def __post_init__(self) -> None:
        self.archive.enrol(self.device, public_key_text(self.key))

    @property
    def recipient(self) -> str:
        return age.recipient_of(self.identity)

    @property
    def identities(self) -> list[Any]:
        return [age.parse_identity(self.identity)]

    def seal(
        self,
        rid: str,
        *,
        number: str | None = "2125550142",
        name: str | None = "ACME PLUMBING",
        duration_s: float = 60.0,
        answered: bool = True,
        consent: dict[str, Any] | None = None,
        size: int = 6000,
        ended_after_s: float | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        original: bool = False,
    ) -> Sealed:
        """A call as its device sends it: real ciphertext (seeded by its id) and a signed, sealed manifest."""
        rng = random.Random(rid)
        audio = age.encrypt_bytes(b"fLaC" + rng.randbytes(size), [self.recipient])
        extra = age.encrypt_bytes(b"fLaC" + rng.randbytes(size * 2), [self.recipient]) if original else b""
        whole = audio + extra
        started = iso(rid)
        ended = started if ended_after_s is None else _plus(started, ended_after_s)
        ciphertext: dict[str, Any] = {
            "file": "audio.age",
            "size": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        }
        if original:
            ciphertext["parts"] = [
                {"role": "recording", "file": "a", "size": len(audio), "sha256": hashlib.sha256(audio).hexdigest()},
                {"role": "original", "file": "o", "size": len(extra), "sha256": hashlib.sha256(extra).hexdigest()},
            ]
        caller = {"number": number, "name": name, "number_absent": None if number else "P", "name_absent": None}
        manifest = Manifest(
            recording_id=rid,
            device_id=self.device,
            line="line1",
            started_at=started,
            answered_at=started if answered else None,
            ended_at=ended,
            ring_count=2,
            answered=answered,
            hangup_cause="remote" if answered else "unanswered",
            caller_id=caller,
            consent=consent if consent is not None else (CONSENT if answered else None),
            audio={"codec": "flac", "sample_rate": 8000, "duration_s": duration_s if answered else 0.0},
            ciphertext=ciphertext,
            firmware_version="0.1.0",
        )
        doc = age.encrypt_bytes(sign_manifest(manifest, signing_key or self.key), [self.recipient])
        return Sealed(manifest, doc, audio, extra)

    def store(self, rid: str, **kwargs: Any) -> CallRow:
        """Store one call (``seal``'s options) in the archive as ingest would; its row."""
        sealed = self.seal(rid, **kwargs)
        part = self.archive.incoming_dir / f"{rid}.part"
        part.write_bytes(sealed.audio)
        kept = None
        if sealed.original:
            kept = self.archive.incoming_dir / f"{rid}.original.part"
            kept.write_bytes(sealed.original)
        row = self.archive.store(sealed.manifest, sealed.doc, part, kept)
        self.audio[rid] = sealed.audio + sealed.original
        self.manifests[rid] = sealed.doc
        return row


@dataclass(frozen=True)
class Sealed:
    """One call as a device sends it."""

    manifest: Manifest
    doc: bytes  # the manifest message: signed, then age-encrypted
    audio: bytes  # the recording's ciphertext
    original: bytes  # the untrimmed original's ciphertext, or nothing

    def messages(self, chunk: int = 4096) -> list[tuple[str, bytes]]:
        """The MQTT messages of the transfer: manifest, chunks at their offsets, fin."""
        device, rid = self.manifest.device_id, self.manifest.recording_id
        whole = self.audio + self.original
        out = [(topics.manifest(device, rid), self.doc)]
        for n, offset in enumerate(range(0, len(whole), chunk)):
            out.append((topics.chunk(device, rid, n), encode_chunk(offset, whole[offset : offset + chunk])))
        out.append((topics.fin(device, rid), encode_fin(Fin(len(whole), hashlib.sha256(whole).hexdigest()))))
        return out


def _plus(started: str, seconds: float) -> str:
    from datetime import datetime, timedelta  # noqa: PLC0415

    when = datetime.fromisoformat(started.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def files_under(root: Path) -> dict[Path, bytes]:
    """Every regular file under ``root`` and what it holds (the index, its WAL and everything else)."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def windows(data: bytes, count: int = 6, width: int = 32, skip: int = 64) -> list[bytes]:
    """``count`` windows of ``width`` bytes spread over ``data`` from ``skip`` to the end.

    The first bytes of every age file are the same header text, so by default they are skipped.
    """
    body = data[skip:]
    last = len(body) - width
    return [body[round(last * i / (count - 1)) : round(last * i / (count - 1)) + width] for i in range(count)]


def found_in(root: Path, needles: list[bytes]) -> list[tuple[str, bytes]]:
    """Which needles some file under ``root`` holds, and where."""
    files = files_under(root)
    return [(str(path), needle) for needle in needles for path, data in files.items() if needle in data]
