"""The archive's files on disk: put in place durably, taken back on failure, and shredded when purged.

Placing a recording renames the received ciphertext into its day folder and
writes the manifest beside it; every file and every new directory entry is
fsynced before the index row that names them is committed. Shredding overwrites
a file in place with random bytes of the same length, fsyncs it, then unlinks
it and fsyncs its folder (see ``agent/purge.py`` for what that does and does not
guarantee).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from agent.errors import ArchiveError

log = logging.getLogger("linerec.agent.archive")

_SHRED_BLOCK = 1 << 20


def fsync_path(path: Path) -> None:
    """Flush a file's or directory's contents and entry table to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(root: Path, relative: Path) -> None:
    """Create ``root/relative`` a component at a time, fsyncing each new entry."""
    current = root
    for part in relative.parts:
        parent, current = current, current / part
        if not current.is_dir():
            current.mkdir(exist_ok=True)
            fsync_path(current)
            fsync_path(parent)


def place_files(
    root: Path, relative: Path, *, audio_rel: Path, manifest_rel: Path, doc: bytes, ciphertext: Path
) -> None:
    """Rename the ciphertext into place and write the manifest; all fsynced, or nothing left."""
    target = root / relative
    step_path = target
    try:
        make_dirs(root, relative)
        step_path = root / manifest_rel
        tmp = step_path.with_name(step_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(doc)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(step_path)
        step_path = ciphertext
        fsync_path(ciphertext)
        step_path = root / audio_rel
        ciphertext.replace(step_path)
        step_path = target
        fsync_path(target)
        fsync_path(ciphertext.parent)
    except OSError as exc:
        unplace(root, audio_rel, manifest_rel, ciphertext)
        msg = f"cannot store a recording at {exc.filename or step_path}: {exc.strerror or exc}"
        raise ArchiveError(msg) from None


def place_original(root: Path, relative: Path, original_rel: Path, original: Path) -> None:
    """Rename the untrimmed original into place, fsynced; before the recording, so a row never lacks it."""
    try:
        make_dirs(root, relative)
        fsync_path(original)
        original.replace(root / original_rel)
        fsync_path(root / relative)
        fsync_path(original.parent)
    except OSError as exc:
        unplace_original(root, original_rel, original)
        msg = f"cannot store a recording at {exc.filename or original_rel}: {exc.strerror or exc}"
        raise ArchiveError(msg) from None


def unplace_original(root: Path, original_rel: Path, original: Path) -> None:
    """Move a placed original back where it came from."""
    placed = root / original_rel
    if placed.exists() and not original.exists():
        try:
            placed.replace(original)
        except OSError:
            log.exception("cannot move %s back to %s", placed, original)


def unplace(root: Path, audio_rel: Path, manifest_rel: Path, ciphertext: Path) -> None:
    """Undo what ``place_files`` did, as far as the disk lets us, so a retry can succeed."""
    audio = root / audio_rel
    manifest = root / manifest_rel
    for path in (manifest, manifest.with_name(manifest.name + ".tmp")):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    if audio.exists() and not ciphertext.exists():
        try:
            audio.replace(ciphertext)
        except OSError:
            log.exception("cannot move %s back to %s", audio, ciphertext)


def shred(path: Path) -> int | None:
    """Overwrite ``path`` in place with random bytes, fsync, unlink, fsync its folder; the bytes overwritten.

    None when the file is already gone (a purge cut short is run again). Raises OSError.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        done = 0
        while done < size:
            block = os.urandom(min(_SHRED_BLOCK, size - done))
            done += os.pwrite(fd, block, done)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_path(path.parent)
    return size
