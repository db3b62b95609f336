"""Re-checking the archive: every file against its signed manifest and its index row, and nothing left over.

For each call in the index:

* its manifest file is decrypted with the archive identity and its Ed25519
  signature verified against the key pinned for its device; it must name the
  same recording and device as the row;
* its recording (and the untrimmed original, when kept) is re-hashed, a
  megabyte at a time: the SHA-256 and size of the bytes must be those the
  signed manifest gives (for each part when there are two, and for the whole)
  and those the index row holds.

Then every file under the archive folder (the index, the notification outbox
and transfers in progress aside) must be a file some row names; anything else
is reported as unreferenced.

A file whose header was rewritten by a key rotation no longer hashes to what
the device signed; the ``rewrapped`` check, when given, decides whether such a
file is still the one the device sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.schema import CALL_COLUMNS
from firmware.wire.age import Identity, decrypt_bytes
from firmware.wire.errors import AgeError, SignatureError, WireError
from firmware.wire.manifest import Manifest, verify_manifest
from firmware.wire.topics import check_recording_id

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow

BLOCK = 1 << 20
BATCH = 500
MAX_PROBLEMS = 1000
KINDS = ("missing", "unreadable", "size", "sha256", "manifest", "signature", "mismatch", "unreferenced")
# (row, role, path, the SHA-256 the device signed) -> None if the file is accepted, else what is wrong.
RewrapCheck = Callable[["CallRow", str, Path, str], "str | None"]
# What a RewrapCheck answers for a file that was never rewrapped: it is judged as any other file.
NOT_REWRAPPED = "not rewrapped"
_BATCH_SQL = f"SELECT {CALL_COLUMNS} FROM calls WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608  (fixed columns)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong: the recording (if known), the file, the kind and a sentence."""

    id: str | None
    path: str | None
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready object."""
        return {"id": self.id, "path": self.path, "kind": self.kind, "message": self.message}


@dataclass
class Report:
    """What a verification found; ``ok`` only when nothing is wrong. At most MAX_PROBLEMS are listed."""

    recordings: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """Whether every file checked out and none is unaccounted for."""
        return self.problem_count == 0

    def add(self, problems: Iterable[Problem]) -> None:
        """Count problems, keeping the first MAX_PROBLEMS."""
        for problem in problems:
            self.problem_count += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        counts = {kind: 0 for kind in KINDS}
        for problem in self.problems:
            counts[problem.kind] += 1
        return {
            "ok": self.ok,
            "recordings": self.recordings,
            "files": self.files,
            "bytes": self.bytes,
            "problem_count": self.problem_count,
            "by_kind": {kind: n for kind, n in counts.items() if n},
            "problems": [p.to_json() for p in self.problems],
        }


def _signed_parts(manifest: Manifest) -> list[tuple[str, int, str]]:
    """(role, size, sha256) of each file the manifest signs: the recording alone, or recording and original."""
    parts = manifest.ciphertext.get("parts")
    if isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, dict) for p in parts):
        return [(str(p.get("role")), int(p.get("size", -1)), str(p.get("sha256"))) for p in parts]
    return [("recording", int(manifest.ciphertext["size"]), str(manifest.ciphertext["sha256"]))]


class Verifier:
    """Checks an archive's files against their signed manifests, their rows and each other."""

    def __init__(
        self,
        archive: Archive,
        identities: Sequence[Identity],
        *,
        skip: Iterable[Path] = (),
        rewrapped: RewrapCheck | None = None,
    ) -> None:
        self.archive = archive
        self.identities = tuple(identities)
        self.rewrapped = rewrapped
        db = archive.db_path.absolute()
        # The index (and its -wal and -shm) and other files of ours that are not recordings.
        self._skip = {
            db,
            db.with_name(db.name + "-wal"),
            db.with_name(db.name + "-shm"),
            db.with_name(db.name + "-journal"),
        }
        for given in skip:
            path = Path(given).absolute()
            self._skip |= {path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")}

    def rows(self) -> Iterator[CallRow]:
        """Every archived call, by id, read in batches (no read is held open while files are hashed)."""
        after = ""
        while rows := self.archive.read(_BATCH_SQL, (after, BATCH)):
            yield from (self.archive.row(row) for row in rows)
            after = rows[-1]["id"]

    def run(self, progress: Callable[[CallRow], object] | None = None) -> Report:
        """Check every call, then look for files no row names."""
        report = Report()
        for row in self.rows():
            report.add(self.check(row, report))
            if progress is not None:
                progress(row)
        report.add(self.strays())
        return report

    # --- one call ------------------------------------------------------------------------

    def check(self, row: CallRow, report: Report | None = None) -> list[Problem]:
        """Every problem with one call's files; empty when they check out."""
        report = report if report is not None else Report()
        report.recordings += 1
        manifest, problems = self._manifest(row)
        if manifest is None:
            return problems
        files = [("recording", Path(row.path))]
        if row.original_path is not None:
            files.append(("original", Path(row.original_path)))
        signed = _signed_parts(manifest)
        if [role for role, _ in files] != [role for role, _, _ in signed]:
            kept = "kept" if row.original_path is not None else "did not keep"
            message = f"the archive {kept} an untrimmed original, but the signed manifest lists {len(signed)} part(s)"
            return [*problems, Problem(row.id, row.path, "mismatch", message)]
        whole = hashlib.sha256()
        total = 0
        for (role, path), (_, size, sha) in zip(files, signed, strict=True):
            found = self._hash(row, role, path, whole, report)
            if isinstance(found, Problem):
                return [*problems, found]
            digest, length = found
            total += length
            if digest != sha and self.rewrapped is not None:
                verdict = self.rewrapped(row, role, path, sha)
                if verdict != NOT_REWRAPPED:
                    if verdict is not None:
                        problems.append(Problem(row.id, str(path), "sha256", verdict))
                    continue
            if length != size:
                problems.append(
                    Problem(
                        row.id, str(path), "size", f"{role} file holds {length} bytes; the signed manifest says {size}"
                    )
                )
            elif digest != sha:
                problems.append(
                    Problem(
                        row.id, str(path), "sha256", f"{role} file does not match the SHA-256 in its signed manifest"
                    )
                )
        if (manifest.ciphertext["sha256"], manifest.ciphertext["size"]) != (row.sha256, row.size):
            message = "the index row's SHA-256 or size is not the signed manifest's"
            problems.append(Problem(row.id, row.path, "mismatch", message))
        elif not problems and self.rewrapped is None and (whole.hexdigest(), total) != (row.sha256, row.size):
            problems.append(
                Problem(row.id, row.path, "sha256", "the files together do not match the SHA-256 of the index row")
            )
        return problems

    def _manifest(self, row: CallRow) -> tuple[Manifest | None, list[Problem]]:
        path = Path(row.manifest_path)
        try:
            doc = path.read_bytes()
        except FileNotFoundError:
            return None, [Problem(row.id, str(path), "missing", "manifest file is missing")]
        except OSError as exc:
            return None, [Problem(row.id, str(path), "unreadable", f"manifest file cannot be read: {exc.strerror}")]
        key = self.archive.device_key(row.device)
        if key is None:
            return None, [
                Problem(row.id, str(path), "signature", f"device {row.device} is not enrolled; no key to check")
            ]
        try:
            manifest = verify_manifest(decrypt_bytes(doc, self.identities), key)
        except AgeError as exc:
            return None, [Problem(row.id, str(path), "manifest", f"manifest cannot be decrypted: {exc}")]
        except SignatureError as exc:
            return None, [Problem(row.id, str(path), "signature", str(exc))]
        except WireError as exc:
            return None, [Problem(row.id, str(path), "manifest", f"manifest is malformed: {exc}")]
        if (manifest.recording_id, manifest.device_id) != (row.id, row.device):
            message = f"manifest is of recording {manifest.recording_id} of device {manifest.device_id}"
            return None, [Problem(row.id, str(path), "mismatch", message)]
        return manifest, []

    def _hash(self, row: CallRow, role: str, path: Path, whole: Any, report: Report) -> tuple[str, int] | Problem:
        digest = hashlib.sha256()
        length = 0
        try:
            with path.open("rb") as f:
                while block := f.read(BLOCK):
                    digest.update(block)
                    whole.update(block)
                    length += len(block)
        except FileNotFoundError:
            return Problem(row.id, str(path), "missing", f"{role} file is missing")
        except OSError as exc:
            return Problem(row.id, str(path), "unreadable", f"{role} file cannot be read: {exc.strerror}")
        report.files += 1
        report.bytes += length
        return digest.hexdigest(), length

    # --- files nobody names --------------------------------------------------------------

    def strays(self) -> Iterator[Problem]:
        """Files under the archive folder that are neither a call's nor the index's."""
        root = self.archive.root
        for folder, dirs, names in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if here / d != self.archive.incoming_dir)
            for name in sorted(names):
                path = here / name
                if path.absolute() in self._skip or self._named(path):
                    continue
                yield Problem(None, str(path), "unreferenced", "no index row names this file")

    def _named(self, path: Path) -> bool:
        rec_id = path.name.split(".", 1)[0]
        try:
            check_recording_id(rec_id)
        except WireError:
            return False
        rows = self.archive.read("SELECT path, manifest_path, original_path FROM calls WHERE id = ?", (rec_id,))
        relative = str(path.relative_to(self.archive.root))
        return bool(rows) and relative in tuple(rows[0])
