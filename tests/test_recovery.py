"""A recorder that dies mid-call loses at most the last moments: the journal is delivered at the next start."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.archive import Archive
from agent.export import export
from agent.ingest import Ingest
from agent.recovered import with_recovered_facts
from firmware.calls import Call, CallState
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.journal import FACTS_FILE, SEGMENTS_FILE, CallJournal
from firmware.line.base import CallerId
from firmware.recorder import CallRecorder
from firmware.recovery import recover
from firmware.spool import AUDIO_NAME, MANIFEST_NAME, SEGMENTS_NAME, Spool
from firmware.wire import age, segments
from firmware.wire.errors import WireError
from firmware.wire.manifest import verify_manifest
from firmware.wire.signing import load_or_create_signing_key, public_key_text
from tests.support.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
IDENTITY = age.generate_identity()
RECIPIENTS = (age.recipient_of(IDENTITY),)
T0 = 1_790_000_000.0


def config_for(tmp_path: Path, **audio: object) -> DeviceConfig:
    return DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path / "device"),
        archive=ArchiveSettings(recipients=RECIPIENTS),
        audio=AudioSettings(**audio),  # type: ignore[arg-type]
    )


def speechlike(seconds: float, seed: int = 1) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / 8000)
    return (rng.standard_normal(n) * 3000 * envelope).astype(np.int16)


def answered_call() -> Call:
    return Call(
        state=CallState.ANSWERED,
        ring_count=2,
        first_ring_at=T0 - 6.0,
        answered_at=T0,
        caller_id=CallerId(
            number="3125550142", name="JOURNAL TEST", number_absent=None, name_absent=None, standard="bell202-mdmf"
        ),
        answered_by="phone",
    )


def crash_mid_call(config: DeviceConfig, audio: np.ndarray) -> tuple[str, Spool]:  # type: ignore[type-arg]
    """Record ``audio`` of an answered call, then stop as a kill would: nothing closed."""
    spool = Spool(config.device.spool_dir)
    key = load_or_create_signing_key(config.device.signing_key_path)
    recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=8000)
    recorder.start(T0)
    recorder.note(answered_call())
    for block in np.array_split(audio, max(1, len(audio) // 160)):
        recorder.write(block)
    [rec_id] = [p.name for p in spool.incoming.iterdir()]
    return rec_id, spool


def decoded_segments(path: Path) -> np.ndarray:  # type: ignore[type-arg]
    with path.open("rb") as f:
        pieces = list(segments.plaintext(f, path.stat().st_size, [age.parse_identity(IDENTITY)]))
    return np.concatenate([sf.read(io.BytesIO(p), dtype="int16")[0] for p in pieces])


def test_the_journal_holds_every_whole_second_written_as_segments_that_decode_alone(tmp_path: Path) -> None:
    audio = speechlike(5.5)
    journal = CallJournal(tmp_path, recipients=RECIPIENTS, sample_rate=8000, checkpoint_s=1.0)
    for block in np.array_split(audio, len(audio) // 160):
        journal.write(block)
    log_path = tmp_path / SEGMENTS_FILE
    with log_path.open("rb") as f:
        scan = segments.scan(f, log_path.stat().st_size)
    assert (len(scan.records), scan.frames, scan.torn) == (5, 5 * 8000, False)
    assert np.array_equal(decoded_segments(log_path), audio[: 5 * 8000])
    journal.checkpoint()
    assert np.array_equal(decoded_segments(log_path), audio)


def test_the_journal_keeps_the_calls_facts_encrypted_and_only_rewrites_them_when_they_change(tmp_path: Path) -> None:
    journal = CallJournal(tmp_path, recipients=RECIPIENTS, sample_rate=8000)
    journal.note_facts({"caller_id": {"number": "3125550142"}})
    first = (tmp_path / FACTS_FILE).read_bytes()
    assert b"3125550142" not in first
    journal.note_facts({"caller_id": {"number": "3125550142"}})
    assert (tmp_path / FACTS_FILE).read_bytes() == first
    facts = json.loads(age.decrypt_bytes(first, [age.parse_identity(IDENTITY)]))
    assert facts == {"caller_id": {"number": "3125550142"}}


def test_a_normal_end_of_call_leaves_no_journal_behind(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    spool = Spool(config.device.spool_dir)
    key = load_or_create_signing_key(config.device.signing_key_path)
    recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=8000)
    recorder.start(T0)
    recorder.note(answered_call())
    recorder.write(speechlike(3.0))
    rec_id = recorder.finish(answered_call())
    assert sorted(p.name for p in (spool.outbox / rec_id).iterdir()) == [AUDIO_NAME, MANIFEST_NAME]


def test_a_call_cut_off_mid_recording_is_sealed_from_its_journal_with_its_facts(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    audio = speechlike(7.3)
    rec_id, spool = crash_mid_call(config, audio)
    key = load_or_create_signing_key(config.device.signing_key_path)

    assert recover(Spool(config.device.spool_dir), config=config, signing_key=key) == [rec_id]

    folder = spool.outbox / rec_id
    assert sorted(p.name for p in folder.iterdir()) == [SEGMENTS_NAME, MANIFEST_NAME]
    doc = age.decrypt_bytes((folder / MANIFEST_NAME).read_bytes(), [age.parse_identity(IDENTITY)])
    manifest = verify_manifest(doc, key.public_key())
    assert manifest.hangup_cause == "recorder-stopped"
    assert (manifest.audio["container"], manifest.audio["frames"]) == ("segments", 7 * 8000)
    assert manifest.ciphertext["file"] == SEGMENTS_NAME
    recovered = decoded_segments(folder / SEGMENTS_NAME)
    assert len(audio) - len(recovered) <= 8000, "at most the last second is lost"
    assert np.array_equal(recovered, audio[: len(recovered)])
    # The device signs the facts over unopened; the agent reads them back.
    assert b"3125550142" not in base64.b64decode(manifest.extra["facts"])
    indexed = with_recovered_facts(manifest, [age.parse_identity(IDENTITY)])
    assert indexed.caller_id is not None
    assert (indexed.caller_id["number"], indexed.ring_count, indexed.answered) == ("3125550142", 2, True)
    assert indexed.answered_at == "2026-09-21T14:13:20.000Z"


def test_a_record_torn_by_the_crash_is_cut_off_and_the_rest_delivered(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    audio = speechlike(4.2)
    rec_id, spool = crash_mid_call(config, audio)
    log_path = spool.incoming / rec_id / SEGMENTS_FILE
    whole = log_path.read_bytes()
    with log_path.open("ab") as f:  # half a record: the power went mid-append
        f.write(segments.encode_record(age.encrypt_bytes(b"x" * 500, RECIPIENTS), 5 * 8000)[:300])
    key = load_or_create_signing_key(config.device.signing_key_path)

    assert recover(spool, config=config, signing_key=key) == [rec_id]

    delivered = spool.outbox / rec_id / SEGMENTS_NAME
    assert delivered.read_bytes() == whole
    assert np.array_equal(decoded_segments(delivered), audio[: 4 * 8000])


def test_a_crash_after_the_manifest_was_written_seals_the_finished_recording(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    spool = Spool(config.device.spool_dir)
    key = load_or_create_signing_key(config.device.signing_key_path)
    recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=8000)
    recorder.start(T0)
    recorder.write(speechlike(2.0))
    rec_id = recorder.finish(answered_call())
    # Put it back as a crash between the manifest and the seal would have left it.
    folder = spool.incoming / rec_id
    (spool.outbox / rec_id).rename(folder)
    (folder / SEGMENTS_FILE).write_bytes(segments.MAGIC)

    assert recover(spool, config=config, signing_key=key) == [rec_id]
    assert sorted(p.name for p in (spool.outbox / rec_id).iterdir()) == [AUDIO_NAME, MANIFEST_NAME]


def test_a_folder_with_nothing_to_recover_from_is_left_where_it_is(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    spool = Spool(config.device.spool_dir)
    key = load_or_create_signing_key(config.device.signing_key_path)
    odd = spool.incoming / "20260921T141320000Z-0badc0de"
    odd.mkdir()
    (odd / AUDIO_NAME).write_bytes(b"half a file")
    broken = spool.incoming / "20260921T141321000Z-0badc0df"
    broken.mkdir()
    (broken / SEGMENTS_FILE).write_bytes(b"not a segment log at all")

    assert recover(spool, config=config, signing_key=key) == []
    assert (odd / AUDIO_NAME).read_bytes() == b"half a file"
    assert (broken / SEGMENTS_FILE).read_bytes() == b"not a segment log at all"


def test_an_empty_folder_left_by_a_kill_before_the_journal_opened_is_removed(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    spool = Spool(config.device.spool_dir)
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool.begin("20260921T141322000Z-0badc0e0")  # and nothing more: the recorder died here
    assert recover(spool, config=config, signing_key=key) == []
    assert list(spool.incoming.iterdir()) == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_a_segment_log_of_any_bytes_is_read_or_refused_with_a_wire_error(tail: bytes) -> None:
    data = segments.MAGIC + tail
    try:
        scan = segments.scan(io.BytesIO(data), len(data))
    except WireError:
        return
    assert scan.valid_end <= len(data)
    assert all(r.offset + r.length <= len(data) for r in scan.records)


def test_a_segment_that_does_not_decrypt_is_named(tmp_path: Path) -> None:
    other = age.recipient_of(age.generate_identity())
    data = (
        segments.MAGIC
        + segments.encode_record(age.encrypt_bytes(b"a", RECIPIENTS), 1)
        + segments.encode_record(age.encrypt_bytes(b"b", (other,)), 2)
    )
    pieces = segments.plaintext(io.BytesIO(data), len(data), [age.parse_identity(IDENTITY)])
    assert next(pieces) == b"a"
    with pytest.raises(WireError, match=r"^segment 1 of the log cannot be decrypted: "):
        next(pieces)


# -- the whole way: a real recorder process killed ten minutes into a call ------------------

CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from firmware.config import load
from firmware.line.base import LineBackend
from firmware.line.sim import ScriptedCall, SimLine
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.wire.signing import load_or_create_signing_key

config = load(Path(sys.argv[1]))
folder = Path(sys.argv[2])
call = ScriptedCall(caller_number="3125550142", caller_name="KILL TEST", rings=2, hangup="silence", silence_s=900.0)
line = SimLine([call], start_time=1_790_000_000.0, seed=11)
answered = next(e.t_start for e in line.script_timeline() if e.kind in ("talk", "pause"))
stall_at = answered + float(sys.argv[3])

class Stalls(LineBackend):
    # The line goes on, but from ``stall_at`` the recorder is never handed another block,
    # as if it had hung; the test kills it there, knowing exactly what it had been given.
    name, sample_rate, block_frames = line.name, line.sample_rate, line.block_frames
    def __init__(self):
        self.raw = (folder / "line.raw").open("wb")
    def read_block(self):
        block = line.read_block()
        if block is not None and block.t >= stall_at:
            self.raw.close()
            (folder / "stalled.json").write_text(json.dumps({"t": block.t}))
            while True:
                time.sleep(60)
        if block is not None:
            self.raw.write(block.audio.astype("<i2").tobytes())
        return block
    def set_hook(self, off_hook): line.set_hook(off_hook)
    def play(self, audio): line.play(audio)
    def close(self): line.close()

with line:
    DeviceService.on_line(
        config=config, backend=Stalls(), spool=Spool(config.device.spool_dir),
        signing_key=load_or_create_signing_key(config.device.signing_key_path),
    ).run()
"""


@pytest.fixture
def killed_setup(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[Path, Path, Archive]]:
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(IDENTITY + "\n")
    conf = tmp_path / "device.toml"
    conf.write_text(
        f'[device]\nid = "pi-kill"\nline = "sim"\nstate_dir = "{tmp_path / "device"}"\n'
        f'[archive]\nrecipients = ["{RECIPIENTS[0]}"]\n'
        f'[mqtt]\nhost = "{mosquitto.settings.host}"\nport = {mosquitto.settings.port}\n'
        "[uplink]\nack_timeout_s = 10.0\n"
        "[calls]\nsilence_timeout_s = 3600.0\n"
        "[sim]\ncalls = 0\n"
    )
    with Archive(tmp_path / "archive") as archive:
        yield tmp_path, conf, archive


def test_a_recorder_killed_ten_minutes_into_a_call_delivers_it_complete_to_within_two_seconds(
    killed_setup: tuple[Path, Path, Archive], mosquitto: Mosquitto
) -> None:
    tmp_path, conf, archive = killed_setup
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    key = load_or_create_signing_key(tmp_path / "device" / "signing.key")
    archive.enrol("pi-kill", public_key_text(key))

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(conf), str(tmp_path), "600"], env=env)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "stalled.json").exists():
            assert child.poll() is None, "the recorder stopped by itself"
            assert time.monotonic() < deadline, "the recorder never reached ten minutes into the call"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [rec_id] = [p.name for p in (tmp_path / "device" / "spool" / "incoming").iterdir()]

    ingest = Ingest(archive=archive, identities=[age.parse_identity(IDENTITY)], broker=mosquitto.settings)
    ingest.start()
    try:
        restarted = subprocess.run(
            [sys.executable, "-m", "firmware", "run", "--config", str(conf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert restarted.returncode == 0, restarted.stderr
        assert f"recording {rec_id} was interrupted mid-call and has been recovered" in restarted.stderr
        assert ingest.wait_stored(1, 30)
    finally:
        ingest.stop()

    row = archive.get(rec_id)
    assert (row.hangup_cause, row.caller_number, row.caller_name, row.answered) == (
        "recorder-stopped",
        "3125550142",
        "KILL TEST",
        True,
    )
    assert list((tmp_path / "device" / "spool" / "outbox").iterdir()) == []
    out = tmp_path / "recovered.wav"
    export(Path(row.path), out, [age.parse_identity(IDENTITY)])
    recovered, rate = sf.read(out, dtype="int16")
    line = np.fromfile(tmp_path / "line.raw", dtype="<i2")
    # The recording starts with the pre-roll: find where in the line's audio it begins.
    starts = [i for i in range(0, len(line) - 8000, 160) if np.array_equal(line[i : i + 8000], recovered[:8000])]
    assert len(starts) == 1
    given_to_recorder = len(line) - starts[0]
    assert given_to_recorder >= 601 * 8000, "the call ran ten minutes, plus the pre-roll"
    assert given_to_recorder - len(recovered) <= 2 * rate, "at most the last 2 s are lost"
    assert np.array_equal(recovered, line[starts[0] : starts[0] + len(recovered)])
