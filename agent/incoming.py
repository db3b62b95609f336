"""What the agent holds of a recording still in transfer: its folder under ``.incoming/``.

One folder per device and recording (``.incoming/<device>/<id>/``) keeps the
manifest as received (``manifest.age``), the chunks written at their offsets
(``audio.part``) and the byte ranges held (``ranges.json``), so that an agent
restarted mid-transfer carries on where it was.

None of it is fsynced: it is a cache of what the device still holds. The ranges
are saved at most every ``RANGES_SAVE_INTERVAL_S`` while chunks arrive (and at a
clean stop), so after a crash they may name less than is on disk, which costs a
resend, never more than was written. If a power cut loses bytes, the fin's
SHA-256 check finds out and they are asked for again; nothing is acked as
stored before the archive has fsynced the whole file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.archive import fsync_path
from firmware.wire.manifest import Manifest
from firmware.wire.messages import Range, merge_range

log = logging.getLogger("linerec.agent.ingest")

# How often a transfer's ranges file is rewritten while chunks arrive.
RANGES_SAVE_INTERVAL_S = 1.0
_HASH_BLOCK = 1 << 20


@dataclass
class Transfer:
    """What the agent holds of one recording that is not archived yet."""

    device: str
    rec_id: str
    directory: Path
    manifest: Manifest | None = None
    manifest_doc: bytes | None = None  # the manifest message as received (still age-encrypted)
    ranges: list[Range] = field(default_factory=list)
    ranges_saved_at: float = 0.0  # time.monotonic() of the last ranges file write
    ranges_dirty: bool = False  # chunks arrived since then

    @property
    def part(self) -> Path:
        return self.directory / "audio.part"

    @property
    def ranges_file(self) -> Path:
        return self.directory / "ranges.json"

    @property
    def manifest_file(self) -> Path:
        return self.directory / "manifest.age"

    def write_chunk(self, start: int, data: bytes) -> None:
        """Write a chunk at its offset and note its range; the ranges go to disk now and then."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_at(self.part, start, data)
        self.ranges = merge_range(self.ranges, (start, start + len(data)))
        self.ranges_dirty = True
        if time.monotonic() - self.ranges_saved_at >= RANGES_SAVE_INTERVAL_S:
            self.save_ranges()

    def load_ranges(self) -> list[Range]:
        """The ranges a previous run saved, if the part file still holds them; else none."""
        try:
            raw = json.loads(self.ranges_file.read_text(encoding="utf-8"))
            ranges = [(int(s), int(e)) for s, e in raw["ranges"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("recording %s: unreadable %s (%s); starting over", self.rec_id, self.ranges_file, exc)
            return []
        on_disk = self.part.stat().st_size if self.part.exists() else 0
        if any(not 0 <= s < e <= on_disk for s, e in ranges):
            log.warning("recording %s: %s lacks bytes its ranges name; starting over", self.rec_id, self.part)
            return []
        held: list[Range] = []
        for item in ranges:
            held = merge_range(held, item)
        return held

    def save_ranges(self) -> None:
        body = json.dumps({"ranges": [list(r) for r in self.ranges]}).encode()
        write_atomic(self.ranges_file, body, durable=False)
        self.ranges_saved_at = time.monotonic()
        self.ranges_dirty = False

    def discard_data(self) -> None:
        """Drop the bytes held (they did not hash right, or describe another file)."""
        self.part.unlink(missing_ok=True)
        self.ranges_file.unlink(missing_ok=True)
        self.ranges = []

    def hash_part(self, size: int) -> str:
        """SHA-256 of the reassembled file, cut to ``size`` (bytes beyond it are not the recording)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with self.part.open("a+b") as part:
            part.truncate(size)
            part.seek(0)
            while block := part.read(_HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new bytes, never a mix.

    ``durable=False`` skips the fsyncs: a kill still leaves old or new, and a power
    cut may leave either or an unreadable file, which the reader treats as empty.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    tmp.replace(path)
    if durable:
        fsync_path(path.parent)


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` in ``path`` (created if need be), not fsynced (see the module)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(fd, view, offset + len(data) - len(view)) :]
    finally:
        os.close(fd)


def covered(ranges: list[Range], start: int, end: int) -> bool:
    """Whether ``start..end`` lies inside one of ``ranges``."""
    return any(s <= start and end <= e for s, e in ranges)


def clip(ranges: list[Range], size: int) -> list[Range]:
    """``ranges`` cut to the first ``size`` bytes."""
    return [(s, min(e, size)) for s, e in ranges if s < size]
