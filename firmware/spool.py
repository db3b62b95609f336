"""The durable outbox on the SD card: recordings wait here until the agent has stored them.

Layout under the spool root::

    incoming/<id>/   being written: audio.age, and the call journal (audio.segments,
                     facts.age) that a crash leaves for recovery; never touched by delivery
    outbox/<id>/     sealed: manifest.age + audio.age (or audio.segments for a call
                     recovered after a crash), waiting for the agent
    rejected/<id>/   refused by the agent; kept for a person, with reason.txt
    .trash/<id>/     acknowledged as stored, being deleted (emptied at start)

Every change of state is a ``rename`` between these directories, followed by an
``fsync`` of the directories involved, so a power cut leaves each recording
whole in exactly one place. Files are flushed with ``fsync`` before they move.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from firmware.wire.errors import LinerecError
from firmware.wire.messages import Ack, AckStatus
from firmware.wire.topics import check_recording_id

log = logging.getLogger("linerec.spool")

MANIFEST_NAME = "manifest.age"
AUDIO_NAME = "audio.age"  # one age file: the codec is in the manifest
SEGMENTS_NAME = "audio.segments"  # a segment log (firmware.wire.segments): a recovered call
ORIGINAL_NAME = "original.age"  # the untrimmed recording, when the owner keeps it (audio.keep_original)
REASON_NAME = "reason.txt"
DIR_MODE = 0o700


class SpoolError(LinerecError, OSError):
    """The spool cannot do what was asked: a missing recording, a full or read-only disk."""


def _error(action: str, path: Path, exc: OSError) -> SpoolError:
    """A SpoolError naming the path, keeping the errno of the cause (ENOSPC, EACCES...)."""
    detail = exc.strerror or str(exc)
    err = SpoolError(f"spool could not {action} {path}: {detail}")
    err.errno = exc.errno
    return err


def _audio_in(folder: Path) -> Path:
    """A recording's audio file: the age file, or the segment log of a recovered call."""
    segments = folder / SEGMENTS_NAME
    return segments if segments.is_file() and not (folder / AUDIO_NAME).exists() else folder / AUDIO_NAME


def fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SpooledRecording:
    """A sealed recording in the outbox: its id, its manifest and its audio file(s)."""

    rec_id: str
    manifest: Path
    audio: Path
    original: Path | None = None  # the untrimmed copy, sent after ``audio`` as one stream

    @property
    def parts(self) -> tuple[Path, ...]:
        """The audio files in the order they go on the wire."""
        return (self.audio,) if self.original is None else (self.audio, self.original)

    @property
    def size(self) -> int:
        """Bytes of ciphertext to deliver (all parts)."""
        return sum(part.stat().st_size for part in self.parts)

    def open(self) -> ConcatReader:
        """A reader over the parts as one stream of bytes, as the uplink sends them."""
        return ConcatReader(self.parts)


class ConcatReader:
    """Reads several files as one: ``seek`` and ``read`` across their joins."""

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self._files = [path.open("rb") for path in paths]
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._pos = 0

    def seek(self, pos: int) -> None:
        self._pos = pos

    def read(self, size: int) -> bytes:
        out = bytearray()
        start = 0
        for f, length in zip(self._files, self._sizes, strict=True):
            if len(out) < size and start <= self._pos < start + length:
                f.seek(self._pos - start)
                piece = f.read(min(size - len(out), start + length - self._pos))
                out += piece
                self._pos += len(piece)
            start += length
        return bytes(out)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> ConcatReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Spool:
    """The on-disk outbox of recordings between the encoder and the uplink.

    Thread safety: ``begin``/``seal`` are called by the recorder and the other
    methods by the uplink worker; they touch different directories, and every
    move is one atomic ``rename``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.outbox = self.root / "outbox"
        self.rejected = self.root / "rejected"
        self._sizes: dict[str, int] = {}  # sealed recordings' sizes, for bytes_pending
        self.trash = self.root / ".trash"
        for path in (self.root, self.incoming, self.outbox, self.rejected, self.trash):
            if path.exists() and not path.is_dir():
                msg = f"spool could not use {path}: it exists and is not a directory"
                raise SpoolError(msg)
            try:
                path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise _error("create the directory", path, exc) from exc
        self._empty_trash()

    # -- recording side -------------------------------------------------------------

    def begin(self, rec_id: str) -> Path:
        """Make ``incoming/<id>/`` for a new recording and return it."""
        check_recording_id(rec_id)
        for parent in (self.incoming, self.outbox, self.rejected):
            if (parent / rec_id).exists():
                msg = f"spool already holds recording {rec_id} in {parent / rec_id}"
                raise SpoolError(msg)
        path = self.incoming / rec_id
        try:
            path.mkdir(mode=DIR_MODE)
            fsync_path(self.incoming, directory=True)
        except OSError as exc:
            raise _error("create the directory", path, exc) from exc
        return path

    def seal(self, rec_id: str) -> SpooledRecording:
        """Flush a finished recording to disk and move it into the outbox."""
        check_recording_id(rec_id)
        src = self.incoming / rec_id
        dst = self.outbox / rec_id
        if not (src / MANIFEST_NAME).is_file():
            msg = f"spool cannot seal recording {rec_id}: {src / MANIFEST_NAME} is missing"
            raise SpoolError(msg)
        audio = _audio_in(src)
        if not audio.is_file():
            msg = f"spool cannot seal recording {rec_id}: {src / AUDIO_NAME} is missing"
            raise SpoolError(msg)
        if dst.exists():
            msg = f"spool cannot seal recording {rec_id}: {dst} already exists"
            raise SpoolError(msg)
        step = src / MANIFEST_NAME
        try:
            fsync_path(src / MANIFEST_NAME)
            for step in (audio, src / ORIGINAL_NAME):
                if step.exists():
                    fsync_path(step)
            step = src
            fsync_path(src, directory=True)
            src.rename(dst)
            step = dst
            fsync_path(self.incoming, directory=True)
            fsync_path(self.outbox, directory=True)
        except OSError as exc:
            raise _error("flush and seal", step, exc) from exc
        rec = self._recording(rec_id)
        log.info("sealed recording %s (%d bytes)", rec_id, rec.size)
        return rec

    # -- delivery side --------------------------------------------------------------

    def _recording(self, rec_id: str) -> SpooledRecording:
        path = self.outbox / rec_id
        original = path / ORIGINAL_NAME
        return SpooledRecording(rec_id, path / MANIFEST_NAME, _audio_in(path), original if original.is_file() else None)

    def _waiting(self) -> list[str]:
        """Ids in the outbox, oldest first (ids sort by time); one directory read, no file looked at."""
        try:
            return sorted(entry.name for entry in os.scandir(self.outbox) if entry.is_dir())
        except OSError as exc:
            raise _error("list", self.outbox, exc) from exc

    def pending(self) -> list[SpooledRecording]:
        """Sealed recordings waiting for delivery, oldest first."""
        return [self._recording(name) for name in self._waiting()]

    def oldest(self) -> SpooledRecording | None:
        """The recording to deliver next, or None; cheap however long the backlog is."""
        names = self._waiting()
        return self._recording(names[0]) if names else None

    def next_after(self, rec_id: str) -> SpooledRecording | None:
        """The recording delivered after ``rec_id`` (the oldest newer one), or None."""
        later = [name for name in self._waiting() if name > rec_id]
        return self._recording(later[0]) if later else None

    def get(self, rec_id: str) -> SpooledRecording:
        """The sealed recording ``rec_id``; SpoolError if it is not in the outbox."""
        check_recording_id(rec_id)
        if not (self.outbox / rec_id).is_dir():
            msg = f"spool has no recording {rec_id} waiting in {self.outbox}"
            raise SpoolError(msg)
        return self._recording(rec_id)

    def free_bytes(self) -> int:
        """Bytes free for the spool on its filesystem."""
        try:
            return shutil.disk_usage(self.root).free
        except OSError as exc:
            raise _error("measure the free space of", self.root, exc) from exc

    def depth(self) -> int:
        """How many recordings wait for delivery."""
        return len(self._waiting())

    def bytes_pending(self) -> int:
        """Total ciphertext bytes waiting for delivery.

        A sealed recording never changes, so each one's size is read once and
        remembered: the status asks after every delivery, and a backlog may be long.
        """
        names = self._waiting()
        sizes = {name: self._sizes.get(name) for name in names}
        for name, size in sizes.items():
            if size is None:
                try:
                    sizes[name] = self._recording(name).size
                except FileNotFoundError:
                    sizes[name] = 0  # delivered while we counted
                except OSError as exc:
                    raise _error("read the size of", self.outbox / name, exc) from exc
        self._sizes = {name: size for name, size in sizes.items() if size is not None}
        return sum(self._sizes.values())

    def remove_delivered(self, rec_id: str, ack: Ack) -> None:
        """Delete a recording the agent has acknowledged as stored; anything else is refused."""
        if ack.rec_id != rec_id:
            msg = f"spool refuses to delete recording {rec_id}: the ack is for {ack.rec_id}"
            raise SpoolError(msg)
        if ack.status is not AckStatus.STORED:
            msg = f"spool refuses to delete recording {rec_id}: the ack says {ack.status}, not stored"
            raise SpoolError(msg)
        src = self.get(rec_id)
        dst = self.trash / rec_id
        # One rename takes it out of the outbox; the deletion after it may be cut short
        # by a power loss and is finished at the next start. Not fsynced: if a power cut
        # undoes the rename, the recording is sent again and the agent answers "stored".
        try:
            (self.outbox / rec_id).rename(dst)
        except OSError as exc:
            raise _error("move the delivered recording to", dst, exc) from exc
        self._delete_tree(dst)
        log.info("removed delivered recording %s from %s", rec_id, src.audio.parent)

    def quarantine(self, rec_id: str, reason: str) -> None:
        """Move a recording the agent refused to ``rejected/<id>/`` with the reason."""
        src = self.get(rec_id).audio.parent
        dst = self.rejected / rec_id
        if dst.exists():
            msg = f"spool cannot quarantine recording {rec_id}: {dst} already exists"
            raise SpoolError(msg)
        reason_path = src / REASON_NAME
        tmp = src / (REASON_NAME + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write((reason or "no reason given") + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(reason_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _error("write", reason_path, exc) from exc
        try:
            fsync_path(src, directory=True)
            src.rename(dst)
            fsync_path(self.outbox, directory=True)
            fsync_path(self.rejected, directory=True)
        except OSError as exc:
            raise _error("move the rejected recording to", dst, exc) from exc
        log.warning("recording %s was rejected and kept in %s: %s", rec_id, dst, reason)

    def rejected_recordings(self) -> list[tuple[str, str]]:
        """The recordings the agent refused, oldest first, each with the reason it gave."""
        found = []
        try:
            names = sorted(entry.name for entry in os.scandir(self.rejected) if entry.is_dir())
        except OSError as exc:
            raise _error("list", self.rejected, exc) from exc
        for name in names:
            try:
                reason = (self.rejected / name / REASON_NAME).read_text(encoding="utf-8").strip()
            except OSError:
                reason = "no reason kept"
            found.append((name, reason))
        return found

    def requeue(self, rec_id: str) -> None:
        """Put a rejected recording back in the outbox, to be sent again (after the agent's problem is fixed)."""
        check_recording_id(rec_id)
        src = self.rejected / rec_id
        dst = self.outbox / rec_id
        if not src.is_dir():
            msg = f"spool has no rejected recording {rec_id} in {self.rejected}"
            raise SpoolError(msg)
        if dst.exists():
            msg = f"spool cannot send recording {rec_id} again: {dst} already exists"
            raise SpoolError(msg)
        try:
            (src / REASON_NAME).unlink(missing_ok=True)
            fsync_path(src, directory=True)
            src.rename(dst)
            fsync_path(self.rejected, directory=True)
            fsync_path(self.outbox, directory=True)
        except OSError as exc:
            raise _error("move the rejected recording back to", dst, exc) from exc
        log.info("recording %s is back in the outbox, to be sent again", rec_id)

    # -- start-up -------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Ids left in ``incoming/`` by a crash mid-recording; they are kept, never deleted."""
        try:
            ids = sorted(entry.name for entry in os.scandir(self.incoming) if entry.is_dir())
        except OSError as exc:
            raise _error("list", self.incoming, exc) from exc
        for rec_id in ids:
            log.warning(
                "recording %s was never sealed (the recorder stopped mid-call); its files stay in %s",
                rec_id,
                self.incoming / rec_id,
            )
        return ids

    def _empty_trash(self) -> None:
        try:
            leftovers = sorted(self.trash.iterdir())
        except OSError as exc:
            raise _error("list", self.trash, exc) from exc
        for entry in leftovers:
            self._delete_tree(entry)

    def _delete_tree(self, path: Path) -> None:
        try:
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
            fsync_path(self.trash, directory=True)
        except OSError as exc:
            # The recording is already out of the outbox; what is left is retried at start.
            log.warning("%s", _error("delete", path, exc))
