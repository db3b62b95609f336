"""Moving archived recordings to the current identity, and checking them afterwards.

A rewrap gives each archived file (the recording, the untrimmed original, the
manifest; each segment of a segment log) a new age header that wraps the same
file key to the current identity only, with a new header MAC, and leaves the
payload as it is (see :mod:`agent.envelope`). Files are replaced one at a time:
written under a temporary name beside the original, fsynced, renamed over it,
and the folder fsynced.

The signed manifest commits to the SHA-256 of each file as the device sent it,
header included, which a new header changes. So before the first rewrap of a
file its whole SHA-256 is checked against the signed manifest, and the SHA-256
of its payload alone (everything after the header; for a segment log see
:func:`agent.envelope.segment_log_payload_sha256`) is recorded in the index
table ``payload_digests``, signed by the agent's key. From then on a file
verifies if either its whole SHA-256 is the signed one, or its payload matches
a record that the agent signed and that names the signed SHA-256.

What a rewrap does not change: a call recovered after a crash carries its
facts inside the signed manifest, encrypted to the recipients of the day; the
agent opened them when the call was archived, and once the identity they were
encrypted to is retired they stay closed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.archive import Archive, CallRow
from agent.envelope import Header, file_sha256, payload_sha256, read_header, segment_log_payload_sha256
from agent.errors import AgentError
from agent.integrity import NOT_REWRAPPED
from agent.keyring import ensure_key_tables, fsync_dir, utc_now
from firmware.wire import age, segments
from firmware.wire.errors import LinerecError, WireError
from firmware.wire.manifest import Manifest, verify_manifest

_DOMAIN = b"linerec-payload-digest/1\n"
ROLES = ("recording", "original")


class RewrapError(AgentError, ValueError):
    """An archived file cannot be rewrapped or verified as it is."""


# --- which identities open which file -------------------------------------------------


def headers(path: Path) -> list[Header]:
    """The age header of an archived file; for a segment log, one per segment."""
    with path.open("rb") as f:
        if not path.name.endswith(".segments"):
            return [read_header(f)]
        scan = segments.scan(f, os.fstat(f.fileno()).st_size)
        found = []
        for record in scan.records:
            f.seek(record.offset)
            found.append(read_header(io.BytesIO(f.read(record.length))))
        return found


def files_of(row: CallRow) -> list[tuple[str, Path]]:
    """Every archived file of a call with its role: recording, original (when kept), manifest."""
    found = [("recording", Path(row.path))]
    if row.original_path is not None:
        found.append(("original", Path(row.original_path)))
    found.append(("manifest", Path(row.manifest_path)))
    return found


def opens(found: Sequence[Header], key: X25519PrivateKey) -> bool:
    """Whether ``key`` opens every header (a file with no segment is opened by anyone)."""
    return all(h.opens_with(key) for h in found)


def only_for(found: Sequence[Header], key: X25519PrivateKey) -> bool:
    """Whether every header has exactly one stanza and it is ``key``'s: nothing left to rewrap."""
    return all(len(h.stanzas) == 1 and h.opens_with(key) for h in found)


def needing(archive: Archive, keys: Sequence[X25519PrivateKey], retiring: Sequence[int]) -> dict[int, list[str]]:
    """For each index in ``retiring``, the files that no other key in ``keys`` opens."""
    needed: dict[int, list[str]] = {i: [] for i in retiring}
    for row in archive.calls():
        for _role, path in files_of(row):
            try:
                found = headers(path)
            except (OSError, WireError) as exc:
                msg = f"cannot read {path}: {exc}; fix or restore it before retiring an identity"
                raise RewrapError(msg) from None
            openers = [i for i, key in enumerate(keys) if opens(found, key)]
            for i in retiring:
                if i in openers and not [j for j in openers if j not in retiring]:
                    needed[i].append(path.name)
    return needed


def count_opened(archive: Archive, keys: Sequence[X25519PrivateKey]) -> list[int]:
    """How many archived recordings each key opens (the recording file itself)."""
    counts = [0] * len(keys)
    for row in archive.calls():
        try:
            found = headers(Path(row.path))
        except (OSError, WireError):
            continue
        for i, key in enumerate(keys):
            counts[i] += opens(found, key)
    return counts


# --- payload digests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayloadDigest:
    """What the agent checked before a file's first rewrap: its signed SHA-256 and its payload's."""

    rec_id: str
    role: str
    sha256: str  # of the whole file as the device sent it: the signed manifest's value
    payload_sha256: str
    recorded_at: str
    signature: str

    def signed_bytes(self) -> bytes:
        """What the agent's signature covers."""
        text = f"{self.rec_id}\n{self.role}\n{self.sha256}\n{self.payload_sha256}\n{self.recorded_at}"
        return _DOMAIN + text.encode()

    def verify(self, key: Ed25519PublicKey) -> bool:
        """Whether the record is the agent's own, unchanged."""
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def digest_record(db: sqlite3.Connection, rec_id: str, role: str) -> PayloadDigest | None:
    """The payload digest recorded for one file, if any."""
    ensure_key_tables(db)
    row = db.execute(
        "SELECT rec_id, role, sha256, payload_sha256, recorded_at, signature FROM payload_digests"
        " WHERE rec_id = ? AND role = ?",
        (rec_id, role),
    ).fetchone()
    return PayloadDigest(*row) if row else None


def record_digest(
    db: sqlite3.Connection, key: Ed25519PrivateKey, *, rec_id: str, role: str, sha256: str, payload: str, at: str
) -> PayloadDigest:
    """Sign and store a payload digest (committed when this returns)."""
    unsigned = PayloadDigest(rec_id, role, sha256, payload, at, "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    record = PayloadDigest(rec_id, role, sha256, payload, at, signature)
    ensure_key_tables(db)
    db.execute(
        "INSERT OR REPLACE INTO payload_digests (rec_id, role, sha256, payload_sha256, recorded_at, signature)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (rec_id, role, sha256, payload, at, signature),
    )
    return record


def file_payload_sha256(path: Path, *, segment_log: bool | None = None) -> str:
    """The payload-only digest of an archived file (a segment log's, by its name or as told, by its own rule)."""
    if segment_log is None:
        segment_log = path.name.endswith(".segments")
    with path.open("rb") as f:
        if segment_log:
            return segment_log_payload_sha256(f, os.fstat(f.fileno()).st_size)
        return payload_sha256(f, read_header(f).length)


def signed_manifest(row: CallRow, archive: Archive, keys: Sequence[X25519PrivateKey]) -> Manifest:
    """The call's manifest, decrypted and verified against its device's pinned key."""
    device_key = archive.device_key(row.device)
    if device_key is None:
        msg = f"device {row.device} of call {row.id} is not enrolled, so its manifest cannot be verified"
        raise RewrapError(msg)
    try:
        manifest = verify_manifest(age.decrypt_bytes(Path(row.manifest_path).read_bytes(), keys), device_key)
    except OSError as exc:
        msg = f"cannot read the manifest of call {row.id}: {exc.strerror}"
        raise RewrapError(msg) from None
    except WireError as exc:
        msg = f"the manifest of call {row.id} does not check out: {exc}"
        raise RewrapError(msg) from None
    if manifest.recording_id != row.id:
        msg = f"the manifest filed under call {row.id} is for recording {manifest.recording_id}"
        raise RewrapError(msg)
    return manifest


def signed_sha256(manifest: Manifest, role: str) -> str:
    """The SHA-256 the signed manifest gives for the recording or the original file."""
    parts = manifest.ciphertext.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and part.get("role") == role and isinstance(part.get("sha256"), str):
                return str(part["sha256"])
        msg = f"the manifest of {manifest.recording_id} lists no {role} part"
        raise RewrapError(msg)
    if role != "recording":
        msg = f"the manifest of {manifest.recording_id} describes no {role}"
        raise RewrapError(msg)
    return str(manifest.ciphertext["sha256"])


# --- rewrap ------------------------------------------------------------------------------


@dataclass
class RewrapReport:
    """What a rewrap of the archive did."""

    calls: int = 0
    files_rewrapped: int = 0
    files_current: int = 0  # already for the current identity only
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rewrapper:
    """Rewraps archived files to ``recipient`` (the current identity's), opening them with ``keys``."""

    archive: Archive
    keys: Sequence[X25519PrivateKey]
    current: X25519PrivateKey
    recipient: str
    signing_key: Ed25519PrivateKey
    clock: Callable[[], float] = time.time

    def run(self, progress: Callable[[int, int, CallRow], None] | None = None) -> RewrapReport:
        """Rewrap every archived call; a call that fails is reported and left as it was."""
        report = RewrapReport()
        rows = list(self.archive.calls())
        for number, row in enumerate(rows, start=1):
            report.calls += 1
            try:
                done, current = self.call(row)
            except (LinerecError, OSError) as exc:
                report.failed.append(f"{row.id}: {exc}")
            else:
                report.files_rewrapped += done
                report.files_current += current
            if progress is not None:
                progress(number, len(rows), row)
        return report

    def call(self, row: CallRow) -> tuple[int, int]:
        """Rewrap one call's files; how many were rewrapped and how many were already current."""
        manifest = signed_manifest(row, self.archive, self.keys)
        done = current = 0
        for role, path in files_of(row):
            if only_for(headers(path), self.current):
                current += 1
                continue
            expected = None
            if role != "manifest":
                expected = self._checked_payload(row, role, path, signed_sha256(manifest, role))
            self._replace(path, expected)
            done += 1
        return done, current

    def _checked_payload(self, row: CallRow, role: str, path: Path, signed: str) -> str:
        """The file's payload digest, once the file is shown to be what the device signed; recorded."""
        payload = file_payload_sha256(path)
        with self.archive.connection() as db:
            record = digest_record(db, row.id, role)
        if (
            record is not None
            and record.verify(self.signing_key.public_key())
            and (record.sha256, record.payload_sha256) == (signed, payload)
        ):
            return payload
        if file_sha256(path) != signed:
            msg = f"the {role} file {path.name} does not match the SHA-256 in its signed manifest; left as it is"
            raise RewrapError(msg)
        with self.archive.connection() as db:  # committed before the file is replaced
            record_digest(
                db, self.signing_key, rec_id=row.id, role=role, sha256=signed, payload=payload, at=utc_now(self.clock)
            )
        return payload

    def _replace(self, path: Path, expected_payload: str | None) -> None:
        tmp = path.with_name(f".{path.name}.rewrap")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w+b") as out, path.open("rb") as src:
                if path.name.endswith(".segments"):
                    self._segment_log(src, out)
                else:
                    self._age_file(src, out)
                out.flush()
                os.fsync(out.fileno())
            log = path.name.endswith(".segments")
            if expected_payload is not None and file_payload_sha256(tmp, segment_log=log) != expected_payload:
                msg = f"the rewrapped {path.name} does not keep the payload; left as it was"
                raise RewrapError(msg)
            tmp.replace(path)
            fsync_dir(path.parent)
        except OSError as exc:
            msg = f"cannot rewrap {path}: {exc.strerror or exc}"
            raise RewrapError(msg) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _new_header(self, header: Header) -> bytes:
        return age.build_header(header.file_key(self.keys), [self.recipient])

    def _age_file(self, src: BinaryIO, out: BinaryIO) -> None:
        header = read_header(src)
        out.write(self._new_header(header))
        src.seek(header.length)
        while block := src.read(1 << 20):
            out.write(block)

    def _segment_log(self, src: BinaryIO, out: BinaryIO) -> None:
        scan = segments.scan(src, os.fstat(src.fileno()).st_size)
        if scan.torn:
            msg = f"segment log ends in a record cut short at byte {scan.valid_end}"
            raise RewrapError(msg)
        out.write(segments.MAGIC)
        for record in scan.records:
            src.seek(record.offset)
            piece = src.read(record.length)
            header = read_header(io.BytesIO(piece))
            out.write(segments.encode_record(self._new_header(header) + piece[header.length :], record.frames_end))


# --- verification ------------------------------------------------------------------------

RewrapCheck = Callable[[CallRow, str, Path, str], "str | None"]


def rewrap_check(
    archive: Archive, agent_key: Ed25519PublicKey | None, identities: Sequence[X25519PrivateKey]
) -> RewrapCheck:
    """The check :class:`agent.integrity.Verifier` runs on a file whose SHA-256 is not the signed one.

    The file is still the one the device sent if the agent recorded its payload
    under its own signature, for the SHA-256 the manifest signs, and the payload
    is unchanged since; its header must open with an identity held. Returns None
    then, ``NOT_REWRAPPED`` for a file with no payload record (judged as any
    other file), else one sentence saying what is wrong.
    """

    def check(row: CallRow, role: str, path: Path, signed: str) -> str | None:
        with archive.connection() as db:
            record = digest_record(db, row.id, role)
        if record is None:
            return NOT_REWRAPPED
        if agent_key is None or not record.verify(agent_key):
            return f"{role} file was rewrapped, but its payload record is not signed by this agent's key"
        if record.sha256 != signed:
            return f"{role} file was rewrapped, but its payload record is for another SHA-256 than the manifest's"
        try:
            for header in headers(path):
                header.file_key(identities)  # an identity held opens it, and the header MAC verifies
            payload = file_payload_sha256(path)
        except (LinerecError, OSError) as exc:
            return f"{role} file cannot be opened: {exc}"
        if payload != record.payload_sha256:
            return f"{role} file's payload was altered since it was checked against its signed manifest"
        return None

    return check
