"""The journal of the call in progress: what a crash must not take away.

While a call is recorded, :class:`CallJournal` keeps beside the main file

* a segment log (:mod:`firmware.wire.segments`): every ``checkpoint_s`` of
  audio is closed as a small FLAC file of its own, encrypted as an age file of
  its own, appended and fsynced, so a power cut or a kill loses at most the
  last ``checkpoint_s`` (a second by default). Each segment decodes alone with
  any FLAC decoder; the recording is their samples one after another;
* ``facts.age``: what is known about the call (times, rings, caller ID, keys
  pressed), encrypted to the archive and replaced atomically whenever it
  changes, so the device keeps no caller ID it could read back.

When the call ends normally both are deleted once the main file and manifest
are on disk. After a crash :mod:`firmware.recovery` delivers them instead.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from firmware.errors import RecordingError
from firmware.spool import SEGMENTS_NAME, fsync_path
from firmware.wire import age, segments

# The journal's segment log becomes the audio of a call recovered after a crash.
SEGMENTS_FILE = SEGMENTS_NAME
FACTS_FILE = "facts.age"


class CallJournal:
    """Appends the call's audio to a segment log a second at a time, and keeps its facts, in ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        recipients: tuple[str, ...],
        sample_rate: int,
        checkpoint_s: float = 1.0,
    ) -> None:
        self.folder = folder
        self.frames = 0  # written
        self.saved_frames = 0  # on disk in whole segments
        self._rate = sample_rate
        self._recipients = recipients
        self._every = max(1, round(checkpoint_s * sample_rate))
        self._facts: dict[str, Any] | None = None
        self._pending: list[NDArray[np.int16]] = []
        path = folder / SEGMENTS_FILE
        try:
            self._log = path.open("xb")
            self._log.write(segments.MAGIC)
            self._sync()
            fsync_path(folder, directory=True)
        except OSError as exc:
            msg = f"cannot start the call journal {path}: {exc.strerror or exc}"
            raise RecordingError(msg) from None

    def _sync(self) -> None:
        self._log.flush()
        os.fdatasync(self._log.fileno())

    def write(self, block: NDArray[np.int16]) -> None:
        """Add audio; every ``checkpoint_s`` of it goes to disk as one segment."""
        self._pending.append(np.array(block, dtype="<i2"))
        self.frames += len(block)
        if self.frames - self.saved_frames >= self._every:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Encode the audio since the last checkpoint as FLAC, encrypt it, append it, fsync."""
        if self.frames == self.saved_frames:
            return
        audio = np.concatenate(self._pending)
        flac = io.BytesIO()
        sf.write(flac, audio, self._rate, subtype="PCM_16", format="FLAC")
        record = segments.encode_record(age.encrypt_bytes(flac.getvalue(), self._recipients), self.frames)
        try:
            self._log.write(record)
            self._sync()
        except OSError as exc:
            msg = f"cannot append to the call journal {self._log.name}: {exc.strerror or exc}"
            raise RecordingError(msg) from None
        self._pending.clear()
        self.saved_frames = self.frames

    def note_facts(self, facts: dict[str, Any]) -> None:
        """Keep the call's facts, encrypted, if they changed since last time."""
        if facts == self._facts:
            return
        path = self.folder / FACTS_FILE
        tmp = path.with_suffix(".tmp")
        doc = age.encrypt_bytes(json.dumps(facts, sort_keys=True).encode(), self._recipients)
        try:
            with tmp.open("wb") as f:
                f.write(doc)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
            fsync_path(self.folder, directory=True)
        except OSError as exc:
            msg = f"cannot write the call's facts {path}: {exc.strerror or exc}"
            raise RecordingError(msg) from None
        self._facts = dict(facts)

    def discard(self) -> None:
        """Delete the journal: the call's main file and manifest are safely on disk."""
        self._pending.clear()
        self._log.close()
        for name in (SEGMENTS_FILE, FACTS_FILE):
            (self.folder / name).unlink(missing_ok=True)
        fsync_path(self.folder, directory=True)
