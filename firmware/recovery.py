"""At start, turn the calls a crash interrupted into sealed recordings, so that nothing is lost.

A folder left in ``incoming/`` is in one of these states:

* manifest and main file both written (the crash came just before sealing):
  the journal is dropped and the recording sealed as it is;
* a call journal (:mod:`firmware.journal`): the recorder died mid-call. The
  main file is useless (its first chunk is completed only at the end of the
  call) and is deleted; the segment log, cut back to its last whole record,
  becomes the recording's audio, and the encrypted facts go inside a new
  signed manifest for the agent to open. The device cannot read either: it
  holds only the archive's public keys;
* an empty folder (the recorder died between making it and opening the call's
  journal, so nothing was recorded) is removed;
* anything else (a folder from before journals, or emptied by hand) is left
  alone and logged: no recording is deleted without the agent's word.
"""

from __future__ import annotations

import base64
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.calls import HangupCause
from firmware.config import DeviceConfig
from firmware.encoder import file_sha256
from firmware.errors import RecordingError
from firmware.journal import FACTS_FILE, SEGMENTS_FILE
from firmware.recipients import RecipientStore
from firmware.recorder import write_durably
from firmware.spool import AUDIO_NAME, MANIFEST_NAME, SEGMENTS_NAME, Spool, fsync_path
from firmware.wire import age, segments
from firmware.wire.errors import WireError
from firmware.wire.manifest import Manifest, firmware_version, sign_manifest, utc_iso

log = logging.getLogger("linerec.recovery")


def recover(spool: Spool, *, config: DeviceConfig, signing_key: Ed25519PrivateKey) -> list[str]:
    """Seal every interrupted recording that can be delivered; the ids sealed."""
    sealed = []
    for rec_id in spool.recover():
        folder = spool.incoming / rec_id
        try:
            if (folder / MANIFEST_NAME).is_file() and (folder / AUDIO_NAME).is_file():
                _drop_journal(folder)
            elif (folder / SEGMENTS_FILE).is_file():
                _rebuild(folder, rec_id, config=config, signing_key=signing_key)
            elif not any(folder.iterdir()):
                # Killed between making the folder and opening the call's journal: nothing was recorded.
                folder.rmdir()
                fsync_path(spool.incoming, directory=True)
                log.info("recording %s was interrupted before anything was written; its empty folder is gone", rec_id)
                continue
            else:
                log.warning("recording %s has no journal to recover from; left in %s", rec_id, folder)
                continue
            spool.seal(rec_id)
        except (OSError, WireError) as exc:
            log.error("recording %s could not be recovered and stays in %s: %s", rec_id, folder, exc)
            continue
        log.warning("recording %s was interrupted mid-call and has been recovered", rec_id)
        sealed.append(rec_id)
    return sealed


def _drop_journal(folder: Path) -> None:
    for name in (SEGMENTS_FILE, FACTS_FILE):
        (folder / name).unlink(missing_ok=True)
    fsync_path(folder, directory=True)


def _rebuild(folder: Path, rec_id: str, *, config: DeviceConfig, signing_key: Ed25519PrivateKey) -> None:
    log_path = folder / SEGMENTS_FILE
    with log_path.open("r+b") as f:
        size = os.fstat(f.fileno()).st_size
        scan = segments.scan(f, size)
        if scan.torn:
            f.truncate(scan.valid_end)
            f.flush()
            os.fsync(f.fileno())
    # Only the segment log holds the audio now; the half-written main file cannot be read.
    (folder / AUDIO_NAME).unlink(missing_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    facts_path = folder / FACTS_FILE
    facts = facts_path.read_bytes() if facts_path.is_file() else None
    size, digest = file_sha256(log_path)
    manifest = recovered_manifest(
        rec_id, config=config, frames=scan.frames, segments_count=len(scan.records), size=size, sha256=digest
    )
    if facts is not None:
        manifest.extra["facts"] = base64.b64encode(facts).decode()
    doc = age.encrypt_bytes(sign_manifest(manifest, signing_key), RecipientStore.for_config(config).current())
    write_durably(folder / MANIFEST_NAME, doc)
    facts_path.unlink(missing_ok=True)
    fsync_path(folder, directory=True)


def recovered_manifest(
    rec_id: str, *, config: DeviceConfig, frames: int, segments_count: int, size: int, sha256: str
) -> Manifest:
    """The manifest of a recording rebuilt from its journal: what the device can know in the clear."""
    try:
        started = datetime.strptime(rec_id[:18], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC).timestamp()
    except ValueError:
        msg = f"recording id {rec_id} does not start with its time"
        raise RecordingError(msg) from None
    rate = config.audio.sample_rate
    duration = frames / rate
    return Manifest(
        recording_id=rec_id,
        device_id=config.device.id,
        line=config.device.line_name,
        started_at=utc_iso(started) or "",
        answered_at=None,
        ended_at=utc_iso(started + duration) or "",
        ring_count=0,
        answered=frames > 0,
        hangup_cause=str(HangupCause.RECORDER_STOPPED),
        caller_id=None,
        consent=None,
        audio={
            "codec": "flac",
            "container": "segments",
            "segments": segments_count,
            "sample_rate": rate,
            "channels": 1,
            "frames": frames,
            "duration_s": round(duration, 3),
            "audio_started_at": utc_iso(started),
            "pcm_sha256": None,
            "trimmed": False,
            "trim_map": [[0.0, round(duration, 3)]] if frames else [],
            "dtmf": [],
            "overflows": 0,
            "recovered": True,
        },
        ciphertext={"file": SEGMENTS_NAME, "size": size, "sha256": sha256},
        firmware_version=firmware_version(),
        extra={"recovered": True},
    )
