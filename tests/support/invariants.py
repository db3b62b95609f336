"""What a fault-injection run must leave behind, checked from the outside: the archive and the spool.

The checks read the archive's files and index and the device's spool folder,
never the code under test's own counters, so a bug that lies about its work is
caught too.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.archive import Archive
from firmware.wire.age import decrypt_bytes
from firmware.wire.errors import LinerecError
from firmware.wire.manifest import verify_manifest


@dataclass(frozen=True)
class Made:
    """A recording the device made: what the archive must end up holding for it."""

    rec_id: str
    device: str
    size: int | None
    sha256: str | None  # None: made by the recorder, whose bytes only the manifest can tell


@dataclass(frozen=True)
class Archived:
    """One archived recording as found on disk: the index row and what its files really hold."""

    rec_id: str
    device: str
    row_sha256: str
    file_sha256: str
    manifest_problem: str | None  # why the stored manifest does not verify, or None


@dataclass(frozen=True)
class Removal:
    """A recording that left the device's outbox, and whether the archive held it at that moment."""

    rec_id: str
    archived_then: bool
    where: str  # "deleted" or "rejected"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_archive(
    archive: Archive, identities: Sequence[X25519PrivateKey], keys: Mapping[str, Ed25519PublicKey]
) -> tuple[list[Archived], list[str]]:
    """Every archived recording re-hashed and re-verified, and the files on disk no row names."""
    found: list[Archived] = []
    named: set[Path] = set()
    for row in archive.calls():
        audio, manifest_path = Path(row.path), Path(row.manifest_path)
        named.update((audio, manifest_path))
        problem: str | None = None
        try:
            manifest = verify_manifest(decrypt_bytes(manifest_path.read_bytes(), identities), keys[row.device])
        except (LinerecError, OSError, KeyError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if manifest.recording_id != row.id or manifest.ciphertext["sha256"] != row.sha256:
                problem = f"manifest names {manifest.recording_id} {manifest.ciphertext['sha256']}"
        file_sha = _sha256(audio) if audio.is_file() else "missing"
        found.append(Archived(row.id, row.device, row.sha256, file_sha, problem))
    strays = []
    for folder, dirs, files in os.walk(archive.root):
        dirs[:] = [d for d in dirs if Path(folder, d) != archive.incoming_dir]
        for name in files:
            path = Path(folder, name)
            if path not in named and not name.startswith(archive.db_path.name):
                strays.append(str(path.relative_to(archive.root)))
    return found, sorted(strays)


def delivery_problems(
    made: Iterable[Made],
    archived: Sequence[Archived],
    removals: Iterable[Removal],
    *,
    strays: Iterable[str] = (),
    left_in_spool: Iterable[str] = (),
) -> list[str]:
    """Every way the run broke its promises, one line each; empty when all held."""
    problems: list[str] = []
    expected = {m.rec_id: m for m in made}
    seen: dict[str, int] = {}
    for entry in archived:
        seen[entry.rec_id] = seen.get(entry.rec_id, 0) + 1
        want = expected.get(entry.rec_id)
        if want is None:
            problems.append(f"{entry.rec_id}: archived but never made")
            continue
        if entry.device != want.device:
            problems.append(f"{entry.rec_id}: archived for device {entry.device}, made by {want.device}")
        sha256 = want.sha256 if want.sha256 is not None else entry.row_sha256
        if entry.row_sha256 != sha256 or entry.file_sha256 != sha256:
            problems.append(
                f"{entry.rec_id}: SHA-256 made {want.sha256}, index {entry.row_sha256}, file {entry.file_sha256}"
            )
        if entry.manifest_problem is not None:
            problems.append(f"{entry.rec_id}: stored manifest does not verify: {entry.manifest_problem}")
    problems += [f"{rid}: archived {n} times" for rid, n in sorted(seen.items()) if n > 1]
    problems += [f"{rid}: made but never archived" for rid in sorted(expected.keys() - seen.keys())]
    for removal in removals:
        if removal.where != "deleted":
            problems.append(f"{removal.rec_id}: left the outbox to {removal.where}, not to the archive")
        elif not removal.archived_then:
            problems.append(f"{removal.rec_id}: deleted from the spool before the archive held it")
    problems += [f"{path}: file in the archive that no index row names" for path in strays]
    problems += [f"{rid}: still in the spool" for rid in left_in_spool]
    return problems


class OutboxWatcher:
    """Polls a spool's outbox and notes, for every id that leaves it, whether the archive held it then.

    The agent commits before it acks and the device deletes only after the ack,
    so an id that is gone from the outbox must already be in the archive when
    the watcher looks, however late it looks.
    """

    def __init__(
        self, outbox: Path, rejected: Path, is_archived: Callable[[str], bool], period_s: float = 0.05
    ) -> None:
        self._outbox, self._rejected = outbox, rejected
        self._is_archived = is_archived
        self._period_s = period_s
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.removals: list[Removal] = []
        self.seen: set[str] = set()  # every id the outbox ever held while watched
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-watcher", daemon=True)

    def ids(self) -> list[str]:
        """The ids in the outbox right now, oldest first."""
        try:
            return sorted(entry.name for entry in self._outbox.iterdir())
        except FileNotFoundError:
            return []

    def start(self) -> None:
        self._known = set(self.ids())
        self._thread.start()

    def expect(self, rec_id: str) -> None:
        """Watch ``rec_id`` from now on; call it right after sealing, so its leaving cannot be missed."""
        with self._lock:
            self._known.add(rec_id)

    def poll(self) -> None:
        """Look once at the outbox and note every id that left it since the last look."""
        with self._lock:
            now = set(self.ids())
            self.seen |= now
            for rec_id in sorted(self._known - now):
                where = "rejected" if (self._rejected / rec_id).exists() else "deleted"
                self.removals.append(Removal(rec_id, self._is_archived(rec_id), where))
            self._known = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.poll()
