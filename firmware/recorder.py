"""Writes one call into the spool: encrypted audio, its journal, then the signed manifest.

The audio of a call starts with the pre-roll the service kept from before the
off-hook edge, so that the first word is there. The captured audio goes

* through :class:`~firmware.processing.AudioChain` (cleaned, trimmed) into the
  main file, ``audio.age``: one age stream, finished at the end of the call;
* as captured into ``original.age`` when the owner keeps the untrimmed original;
* as captured into the call journal (:mod:`firmware.journal`), which a crash
  leaves behind for :mod:`firmware.recovery` to deliver.

DTMF is detected on the captured audio, so its times are in the original's time,
like the trim map.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from firmware.calls import Call, HangupCause
from firmware.config import DeviceConfig
from firmware.dsp.dtmf import DtmfDetector, DtmfDigit
from firmware.encoder import EncodedAudio, EncryptedAudioWriter
from firmware.errors import RecordingError
from firmware.journal import CallJournal
from firmware.processing import AudioChain
from firmware.recipients import RecipientStore
from firmware.spool import AUDIO_NAME, MANIFEST_NAME, ORIGINAL_NAME, Spool
from firmware.wire import age
from firmware.wire.manifest import Manifest, firmware_version, new_recording_id, sign_manifest, utc_iso

log = logging.getLogger("linerec.recorder")


class CallRecorder:
    """Writes one call at a time into the spool: encrypted audio, then the signed manifest."""

    def __init__(
        self,
        *,
        config: DeviceConfig,
        spool: Spool,
        signing_key: Ed25519PrivateKey,
        sample_rate: int,
        on_sealed: Callable[[str], None] = lambda _rec_id: None,
    ) -> None:
        self._config = config
        self._spool = spool
        self._key = signing_key
        self._rate = sample_rate
        self._on_sealed = on_sealed
        self._rec_id: str | None = None
        self._started: float = 0.0
        self._writer: EncryptedAudioWriter | None = None
        self._original: EncryptedAudioWriter | None = None
        self._journal: CallJournal | None = None
        self._chain = AudioChain(config.audio, sample_rate)
        self._captured_frames = 0
        self._batch: list[NDArray[np.int16]] = []
        self._batched = 0
        self._batch_frames = sample_rate // 2
        self._preroll_s = 0.0
        # Keys pressed during the call, in seconds from the start of the recording.
        self._dtmf = DtmfDetector(sample_rate)
        self._digits: list[DtmfDigit] = []
        # Read when each recording starts, so one that is open keeps the recipients it began with.
        self._recipient_store = RecipientStore.for_config(config)
        self._recipients = config.archive.recipients

    @property
    def active(self) -> bool:
        """True while a call's audio is being written."""
        return self._writer is not None

    def start(self, t: float, preroll: NDArray[np.int16] | None = None) -> None:
        """Open a new recording whose live audio starts at ``t``, after ``preroll``, the audio just before."""
        before = preroll if preroll is not None else np.zeros(0, np.int16)
        self._preroll_s = len(before) / self._rate
        self._open(t - self._preroll_s)
        if len(before):
            self.write(before)

    def _open(self, t: float) -> EncryptedAudioWriter:
        self._dtmf.reset()
        self._chain.reset()
        self._digits = []
        self._captured_frames = 0
        self._batch.clear()
        self._batched = 0
        self._started = t
        self._rec_id = new_recording_id(t)
        self._recipients = self._recipient_store.current()
        folder = self._spool.begin(self._rec_id)
        audio = self._config.audio
        # The journal first: a folder a crash leaves is then empty (nothing was recorded yet) or
        # holds a journal to recover from, never half an audio file alone.
        self._journal = CallJournal(
            folder,
            recipients=self._recipients,
            sample_rate=self._rate,
            checkpoint_s=audio.checkpoint_s,
        )
        self._writer = self._audio_file(folder / AUDIO_NAME)
        self._original = self._audio_file(folder / ORIGINAL_NAME) if audio.keep_original else None
        return self._writer

    def _audio_file(self, path: Path) -> EncryptedAudioWriter:
        audio = self._config.audio
        return EncryptedAudioWriter(
            path,
            recipients=self._recipients,
            sample_rate=self._rate,
            codec=audio.codec,
            opus_kbps=audio.opus_kbps,
        )

    def write(self, block: NDArray[np.int16]) -> None:
        """Append captured audio to the open recording."""
        if self._writer is None or self._journal is None:
            return
        self._captured_frames += len(block)
        self._journal.write(block)
        # The rest works on half a second at a time: per-call costs of the filters, the VAD
        # and the encoders are paid 25 times less often than per 20 ms block.
        self._batch.append(np.array(block, dtype=np.int16))
        self._batched += len(block)
        if self._batched >= self._batch_frames:
            self._process_batch()

    def _process_batch(self) -> None:
        if not self._batch or self._writer is None:
            return
        audio = np.concatenate(self._batch)
        self._batch.clear()
        self._batched = 0
        if self._original is not None:
            self._original.write(audio)
        processed = self._chain.process(audio)
        if len(processed):
            self._writer.write(processed)
        found = self._dtmf.feed(audio)
        if found:
            self._digits += found

    def note(self, call: Call) -> None:
        """Keep what is known about the call in the journal, for a recovery after a crash."""
        if self._journal is not None:
            self._journal.note_facts(self._facts(call))

    @property
    def started_at(self) -> float | None:
        """Line time of the open recording's first sample (pre-roll included)."""
        return self._started if self._writer is not None else None

    def refuse(self) -> str | None:
        """Stop recording and delete all of the call's audio at once; the id, for its record at the end."""
        for writer in (self._writer, self._original):
            if writer is not None:
                writer.discard()
        if self._journal is not None:
            self._journal.discard()
        self._writer = self._original = self._journal = None
        self._batch.clear()
        self._batched = 0
        rec_id, self._rec_id = self._rec_id, None
        return rec_id

    def record_without_audio(
        self, call: Call, consent: dict[str, Any] | None, *, reason: str, rec_id: str | None = None
    ) -> str:
        """Seal a call that is not recorded (refused, never-record, a full disk): its facts and why, no audio."""
        started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
        if rec_id is None:
            rec_id = new_recording_id(started if started is not None else 0.0)
            self._recipients = self._recipient_store.current()
            self._spool.begin(rec_id)
        recipients = self._recipients
        folder = self._spool.incoming / rec_id
        # An age file of nothing: the transfer and the archive work alike, and no audio exists to leak.
        empty = age.encrypt_bytes(b"", recipients)
        write_durably(folder / AUDIO_NAME, empty)
        size, digest = len(empty), hashlib.sha256(empty).hexdigest()
        manifest = Manifest(
            recording_id=rec_id,
            device_id=self._config.device.id,
            line=self._config.device.line_name,
            started_at=utc_iso(started) or "",
            answered_at=utc_iso(call.answered_at),
            ended_at=utc_iso(call.ended_at) or utc_iso(call.answered_at) or "",
            ring_count=call.ring_count,
            answered=call.answered,
            hangup_cause=str(call.hangup_cause or HangupCause.LINE_LOST),
            caller_id=call.caller_id.to_json() if call.caller_id is not None else None,
            consent=consent,
            audio={"codec": None, "container": "age", "frames": 0, "duration_s": 0.0, "not_recorded": reason},
            ciphertext={"file": AUDIO_NAME, "size": size, "sha256": digest},
            firmware_version=firmware_version(),
            extra={"answered_by": call.answered_by},
        )
        doc = age.encrypt_bytes(sign_manifest(manifest, self._key), recipients)
        write_durably(folder / MANIFEST_NAME, doc)
        self._spool.seal(rec_id)
        log.info("call %s sealed without audio: %s", rec_id, reason)
        self._on_sealed(rec_id)
        return rec_id

    def finish(self, call: Call, *, overflows: int = 0, consent: dict[str, Any] | None = None) -> str:
        """Close the call's audio (an unanswered call gets an empty one), sign, encrypt and seal."""
        started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
        writer = self._writer or self._open(started if started is not None else 0.0)
        self._process_batch()
        journal, original_writer = self._journal, self._original
        rec_id = self._rec_id
        assert rec_id is not None and journal is not None
        self._writer = self._journal = self._original = None
        self._rec_id = None
        tail = self._chain.flush()
        if len(tail):
            writer.write(tail)
        audio = writer.close()
        original = original_writer.close() if original_writer is not None else None
        self._digits += self._dtmf.flush()
        manifest = dataclasses.replace(self._manifest(rec_id, call, audio, original), consent=consent)
        manifest.audio["overflows"] = overflows
        doc = age.encrypt_bytes(sign_manifest(manifest, self._key), self._recipients)
        write_durably(audio.path.parent / MANIFEST_NAME, doc)
        # The main file and the manifest are on disk: the journal has done its job.
        journal.discard()
        self._spool.seal(rec_id)
        log.info("recording %s sealed (%.1f s, %d bytes)", rec_id, audio.duration_s, audio.size)
        self._on_sealed(rec_id)
        return rec_id

    def _facts(self, call: Call) -> dict[str, Any]:
        return {
            "answered_at": utc_iso(call.answered_at),
            "ring_count": call.ring_count,
            "answered": call.answered,
            "caller_id": call.caller_id.to_json() if call.caller_id is not None else None,
            "started_at": utc_iso(call.first_ring_at if call.first_ring_at is not None else call.answered_at),
            "extra": {"answered_by": call.answered_by, "call_waiting_alerts": call.call_waiting},
        }

    def _manifest(self, rec_id: str, call: Call, audio: EncodedAudio, original: EncodedAudio | None) -> Manifest:
        started = call.first_ring_at if call.first_ring_at is not None else call.answered_at
        caller = call.caller_id.to_json() if call.caller_id is not None else None
        captured_s = self._captured_frames / self._rate
        return Manifest(
            recording_id=rec_id,
            device_id=self._config.device.id,
            line=self._config.device.line_name,
            started_at=utc_iso(started) or "",
            answered_at=utc_iso(call.answered_at),
            ended_at=utc_iso(call.ended_at) or "",
            ring_count=call.ring_count,
            answered=call.answered,
            hangup_cause=str(call.hangup_cause or HangupCause.LINE_LOST),
            caller_id=caller,
            consent=None,
            audio={
                "codec": audio.codec,
                "container": "age",
                "sample_rate": audio.sample_rate,
                "channels": 1,
                # The call as captured (pre-roll included), and the recording after trimming.
                "duration_s": round(captured_s, 3),
                "frames": audio.frames,
                "trimmed_duration_s": round(audio.duration_s, 3),
                "audio_started_at": utc_iso(self._started) if self._captured_frames else None,
                "preroll_s": round(self._preroll_s, 3) if self._captured_frames else 0.0,
                "pcm_sha256": audio.pcm_sha256,
                **self._chain.facts(),
                "original": (
                    {"frames": original.frames, "pcm_sha256": original.pcm_sha256} if original is not None else None
                ),
                "dtmf": [d.to_json() for d in self._digits],
                # Blocks of 20 ms the capture lost (the recording has a gap of that much).
                "overflows": 0,
            },
            ciphertext=_ciphertext(audio, original),
            firmware_version=firmware_version(),
            extra={"answered_by": call.answered_by, "call_waiting_alerts": call.call_waiting},
        )


def _ciphertext(audio: EncodedAudio, original: EncodedAudio | None) -> dict[str, Any]:
    """What goes on the wire: one file, or the recording then the original, sent as one stream."""
    if original is None:
        return {"file": AUDIO_NAME, "size": audio.size, "sha256": audio.sha256}
    whole = hashlib.sha256()
    for part in (audio.path, original.path):
        with part.open("rb") as f:
            while piece := f.read(1 << 16):
                whole.update(piece)
    return {
        "file": AUDIO_NAME,
        "size": audio.size + original.size,
        "sha256": whole.hexdigest(),
        "parts": [
            {"role": "recording", "file": AUDIO_NAME, "size": audio.size, "sha256": audio.sha256},
            {"role": "original", "file": ORIGINAL_NAME, "size": original.size, "sha256": original.sha256},
        ],
    }


def write_durably(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and fsync it; RecordingError if the disk refuses."""
    try:
        with path.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror}"
        raise RecordingError(msg) from None
