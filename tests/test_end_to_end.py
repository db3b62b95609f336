"""A simulated call travels the whole way: line, recorder, spool, MQTT (real mosquitto), agent, archive.

The archived ciphertext must open with the stock ``age`` tool. The untrimmed
original (``audio.keep_original``) holds exactly the samples captured from the
line; the recording holds the trimmed, cleaned audio of the segments its trim
map names.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.archive import Archive
from agent.cli import main as agent_main
from agent.ingest import Ingest
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings, UplinkSettings
from firmware.line.base import LineBackend, LineBlock, OffHook
from firmware.line.sim import ScriptedCall, SimLine
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.uplink import Uplink
from firmware.wire import age
from firmware.wire.manifest import verify_manifest
from firmware.wire.signing import load_or_create_signing_key, public_key_text
from tests.support.broker import Mosquitto

pytestmark = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is installed by make test")

DEVICE = "e2e-pi"


class TapLine(LineBackend):
    """Passes a real backend through and keeps every block it delivered, as the capture saw it."""

    def __init__(self, inner: SimLine) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.block_frames = inner.block_frames
        self.blocks: list[LineBlock] = []

    def read_block(self) -> LineBlock | None:
        block = self.inner.read_block()
        if block is not None:
            self.blocks.append(block)
        return block

    def set_hook(self, off_hook: bool) -> None:
        self.inner.set_hook(off_hook)

    def play(self, audio: np.ndarray) -> None:  # type: ignore[type-arg]
        self.inner.play(audio)

    def close(self) -> None:
        self.inner.close()

    def captured_from_answer(self, frames: int, preroll: int = 0) -> np.ndarray:  # type: ignore[type-arg]
        """The samples from ``preroll`` before the block in which the phone was answered."""
        start = next(i for i, b in enumerate(self.blocks) if any(isinstance(e, OffHook) for e in b.events))
        before = np.concatenate([b.audio for b in self.blocks[:start]])[-preroll:] if preroll else []
        return np.concatenate([before, *[b.audio for b in self.blocks[start:]]])[:frames]


@dataclass
class Setup:
    tmp: Path
    identity: str
    identity_file: Path
    key: Ed25519PrivateKey
    config: DeviceConfig
    archive: Archive
    extra: dict[str, object] = field(default_factory=dict)


@pytest.fixture
def s(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Setup]:
    identity = age.generate_identity()
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(identity + "\n")
    identity_file.chmod(0o600)
    config = DeviceConfig(
        device=DeviceSettings(id=DEVICE, line="sim", state_dir=tmp_path / "device"),
        archive=ArchiveSettings(recipients=(age.recipient_of(identity),)),
        mqtt=mosquitto.settings,
        uplink=UplinkSettings(ack_timeout_s=5.0),
        audio=AudioSettings(keep_original=True),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    with Archive(tmp_path / "archive") as archive:
        yield Setup(tmp_path, identity, identity_file, key, config, archive)


def record_and_deliver(s: Setup, calls: list[ScriptedCall]) -> tuple[TapLine, list[str]]:
    s.archive.enrol(DEVICE, public_key_text(s.key))
    ingest = Ingest(archive=s.archive, identities=[age.parse_identity(s.identity)], broker=s.config.mqtt)
    ingest.start()
    spool = Spool(s.config.device.spool_dir)
    uplink = Uplink(device_id=DEVICE, spool=spool, broker=s.config.mqtt, ack_timeout_s=5.0)
    uplink.start()
    try:
        tap = TapLine(SimLine(calls, start_time=1_790_000_000.0, seed=7))
        recorded = DeviceService(config=s.config, backend=tap, spool=spool, signing_key=s.key, uplink=uplink).run()
        assert uplink.wait_delivered(30), "the spool did not empty"
        assert ingest.wait_stored(len(recorded), 30)
        assert spool.pending() == []
    finally:
        uplink.stop()
        ingest.stop()
    return tap, recorded


def age_decrypt(identity_file: Path, path: Path) -> bytes:
    out = subprocess.run(["age", "-d", "-i", str(identity_file), str(path)], capture_output=True, check=True)
    return out.stdout


def test_simulated_call_lands_in_archive_and_decrypts_with_age_cli_to_the_captured_samples(s: Setup) -> None:
    call = ScriptedCall(caller_number="2125550142", caller_name="ACME PLUMBING", rings=2)
    tap, recorded = record_and_deliver(s, [call])
    assert len(recorded) == 1
    row = s.archive.get(recorded[0])
    assert (row.caller_number, row.caller_name, row.answered, row.device) == (
        "2125550142",
        "ACME PLUMBING",
        True,
        DEVICE,
    )
    assert row.ring_count == 2
    assert Path(row.path).name.endswith(".flac.age")
    assert row.original_path is not None
    assert Path(row.original_path).name == f"{row.id}.original.flac.age"

    doc = age_decrypt(s.identity_file, Path(row.manifest_path))
    manifest = verify_manifest(doc, s.key.public_key())
    assert manifest.recording_id == row.id
    assert manifest.ciphertext["sha256"] == row.sha256
    assert manifest.caller_id is not None
    assert manifest.caller_id["standard"] == "bell202-mdmf"
    assert manifest.audio["preroll_s"] == 1.0
    assert [p["role"] for p in manifest.ciphertext["parts"]] == ["recording", "original"]

    # The original: every sample captured, from the second before the answer (the pre-roll).
    original, rate = sf.read(io.BytesIO(age_decrypt(s.identity_file, Path(row.original_path))), dtype="int16")
    assert rate == 8000
    assert len(original) == round(manifest.audio["duration_s"] * 8000) == round(row.duration_s * 8000)
    assert len(original) > 5 * 8000, "a scripted conversation lasts several seconds"
    assert np.array_equal(original, tap.captured_from_answer(len(original), preroll=8000))
    assert hashlib.sha256(original.astype("<i2").tobytes()).hexdigest() == manifest.audio["original"]["pcm_sha256"]

    # The recording: the trim map's segments of the original, cleaned.
    trimmed, _ = sf.read(io.BytesIO(age_decrypt(s.identity_file, Path(row.path))), dtype="int16")
    kept = sum(round(b * 8000) - round(a * 8000) for a, b in manifest.audio["trim_map"])
    assert manifest.audio["trimmed"] is True
    assert abs(len(trimmed) - kept) <= len(manifest.audio["trim_map"])
    assert len(trimmed) == manifest.audio["frames"]
    assert manifest.audio["speech"], "the VAD heard the conversation"
    for start, end in manifest.audio["speech"]:
        assert any(a <= start and end <= b for a, b in manifest.audio["trim_map"])


def test_withheld_and_unanswered_calls_are_archived_with_what_is_known(s: Setup) -> None:
    calls = [
        ScriptedCall(caller_number=None, number_absent="P", rings=2),
        ScriptedCall(caller_number="02079460018", answered=False, rings=3),
    ]
    _, recorded = record_and_deliver(s, calls)
    withheld, missed = (s.archive.get(r) for r in recorded)
    assert (withheld.caller_number, withheld.caller_absent, withheld.answered) == (None, "P", True)
    assert (missed.caller_number, missed.answered, missed.duration_s, missed.hangup_cause) == (
        "02079460018",
        False,
        0.0,
        "unanswered",
    )


def test_agent_cli_lists_and_exports_the_archived_call(s: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    tap, recorded = record_and_deliver(s, [ScriptedCall(caller_name="JANE ROE")])
    s.archive.close()
    conf = s.tmp / "agent.toml"
    conf.write_text(f'[agent]\nidentity = "{s.identity_file}"\narchive_dir = "{s.tmp / "archive"}"\n')

    assert agent_main(["--config", str(conf), "list", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    item = json.loads(lines[0])
    assert {"id", "device", "started_at", "duration_s", "caller_number", "caller_name", "answered", "path"} <= set(item)
    assert (item["id"], item["device"], item["caller_name"], item["answered"]) == (
        recorded[0],
        DEVICE,
        "JANE ROE",
        True,
    )

    out = s.tmp / "call.wav"
    assert agent_main(["--config", str(conf), "export", "--original", recorded[0], str(out)]) == 0
    samples, rate = sf.read(out, dtype="int16")
    assert rate == 8000
    assert np.array_equal(samples, tap.captured_from_answer(len(samples), preroll=8000))
    trimmed = s.tmp / "trimmed.flac"
    assert agent_main(["--config", str(conf), "export", recorded[0], str(trimmed)]) == 0
    assert 0 < sf.info(str(trimmed)).frames <= len(samples)


def test_export_with_the_wrong_identity_is_one_clear_error(s: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    _, recorded = record_and_deliver(s, [ScriptedCall()])
    s.archive.close()
    wrong = s.tmp / "other.txt"
    wrong.write_text(age.generate_identity() + "\n")
    conf = s.tmp / "agent.toml"
    conf.write_text(f'[agent]\nidentity = "{wrong}"\narchive_dir = "{s.tmp / "archive"}"\n')
    capsys.readouterr()
    assert agent_main(["--config", str(conf), "export", recorded[0], str(s.tmp / "x.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("linerec-agent: error: cannot decrypt ")
    assert "no identity matches" in err[0]
    assert "Traceback" not in err[0]
    assert not (s.tmp / "x.wav").exists()
