"""Consent on a call: the notice is in the recording within 300 ms of the answer, and a refusal keeps no audio."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile as sf
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from agent.archive import Archive
from agent.ingest import Ingest
from firmware.config import ArchiveSettings, AudioSettings, ConsentSettings, DeviceConfig, DeviceSettings
from firmware.consent.notices import warning_tone
from firmware.dsp.dtmf import generate_dtmf
from firmware.line.base import LineBackend, LineBlock, OffHook
from firmware.line.sim import ScriptedCall, SimLine
from firmware.service import DeviceService
from firmware.spool import AUDIO_NAME, ORIGINAL_NAME, Spool
from firmware.uplink import Uplink
from firmware.wire import age
from firmware.wire.manifest import Manifest, verify_manifest
from firmware.wire.messages import decode_chunk
from firmware.wire.signing import load_or_create_signing_key, public_key_text
from tests.support.broker import Mosquitto

IDENTITY = age.generate_identity()
RATE = 8000
T0 = 1_790_000_000.0
NY_CALLER = "+12125550142"
LONG_TALK = tuple(("caller" if i % 2 else "callee", f"this is sentence {i} of a longer call") for i in range(12))


class CallerKeys(LineBackend):
    """A simulated line whose caller presses ``digit`` ``after_s`` seconds after the answer."""

    def __init__(self, inner: SimLine, digit: str | None, after_s: float) -> None:
        self.inner = inner
        self.name, self.sample_rate, self.block_frames = inner.name, inner.sample_rate, inner.block_frames
        self._keys: NDArray[np.int16] | None = None
        self._digit, self._after_s = digit, after_s
        self._at = 0

    def read_block(self) -> LineBlock | None:
        block = self.inner.read_block()
        if block is None or self._digit is None:
            return block
        if self._keys is None and any(isinstance(e, OffHook) for e in block.events):
            tone = generate_dtmf(self._digit, RATE, level_dbfs=-8.0)
            self._keys = np.concatenate([np.zeros(round(self._after_s * RATE)), tone * 32767]).astype(np.int16)
        if self._keys is None or self._at >= len(self._keys):
            return block
        piece = self._keys[self._at : self._at + len(block.audio)]
        self._at += len(piece)
        audio = block.audio.astype(np.int32)
        audio[: len(piece)] += piece
        return dataclasses.replace(block, audio=np.clip(audio, -32768, 32767).astype(np.int16))

    def set_hook(self, off_hook: bool) -> None:
        self.inner.set_hook(off_hook)

    def play(self, audio: NDArray[np.int16]) -> None:
        self.inner.play(audio)

    def close(self) -> None:
        self.inner.close()


def record(
    tmp_path: Path,
    call: ScriptedCall,
    consent: ConsentSettings,
    *,
    digit: str | None = None,
    after_s: float = 1.0,
) -> tuple[Manifest, Path]:
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
        audio=AudioSettings(keep_original=True),
        consent=consent,
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    line = CallerKeys(SimLine([call], start_time=T0, seed=4), digit, after_s)
    with line:
        service = DeviceService(config=config, backend=line, spool=Spool(config.device.spool_dir), signing_key=key)
        [rec_id] = service.run()
    folder = Spool(config.device.spool_dir).outbox / rec_id
    doc = age.decrypt_bytes((folder / "manifest.age").read_bytes(), [age.parse_identity(IDENTITY)])
    return verify_manifest(doc, key.public_key()), folder


def decoded(path: Path) -> NDArray[np.int16]:
    plain = age.decrypt_bytes(path.read_bytes(), [age.parse_identity(IDENTITY)])
    return sf.read(io.BytesIO(plain), dtype="int16")[0]


def tone_onsets(audio: NDArray[np.int16], hz: float = 1400.0) -> list[float]:
    """Where a tone at ``hz`` starts, in seconds: 10 ms frames whose energy is mostly that tone."""
    frame = RATE // 100
    n = len(audio) // frame
    x = audio[: n * frame].reshape(n, frame).astype(np.float64)
    t = np.arange(frame) / RATE
    i = x @ np.cos(2 * np.pi * hz * t)
    q = x @ np.sin(2 * np.pi * hz * t)
    share = (i**2 + q**2) * 2 / frame / np.maximum((x**2).sum(axis=1), 1e-9)
    on = share > 0.5
    return [k * frame / RATE for k in range(n) if on[k] and (k == 0 or not on[k - 1])]


def seconds(iso: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_new_york_caller_to_a_california_device_hears_the_tone_within_300_ms_and_every_15_s(tmp_path: Path) -> None:
    call = ScriptedCall(caller_number=NY_CALLER, talk=LONG_TALK)
    manifest, folder = record(tmp_path, call, ConsentSettings(region="US-CA"))

    consent = manifest.consent
    assert consent is not None
    assert (consent["rule"], consent["jurisdiction"], consent["recorded"]) == ("all-party", "US-CA", True)
    [notice] = consent["notices"]
    tone = warning_tone(RATE)
    assert (notice["kind"], notice["id"], notice["sha256"]) == ("notice", tone.id, tone.sha256)
    assert manifest.answered_at is not None
    answer = seconds(manifest.answered_at) - seconds(manifest.audio["audio_started_at"])
    onsets = tone_onsets(decoded(folder / ORIGINAL_NAME))
    assert onsets, "the warning tone is in the recording"
    assert 0.0 <= onsets[0] - answer <= 0.3
    assert abs(onsets[0] - notice["offset_s"]) <= 0.03
    beeps = consent["beep"]["offsets_s"]
    assert consent["beep"]["interval_s"] == 15.0
    assert len(beeps) >= 1
    assert beeps[0] == pytest.approx(notice["offset_s"] + 15.5, abs=0.05)
    for beep in beeps:
        assert any(abs(beep - onset) <= 0.03 for onset in onsets), f"beep at {beep} s is not in the recording"


def test_a_one_party_call_gets_no_notice_and_says_why(tmp_path: Path) -> None:
    manifest, folder = record(tmp_path, ScriptedCall(caller_number=NY_CALLER), ConsentSettings(region="US-NY"))
    assert manifest.consent is not None
    assert (manifest.consent["rule"], manifest.consent["notices"], manifest.consent["beep"]) == ("one-party", [], None)
    assert "one-party" in manifest.consent["basis"]
    assert tone_onsets(decoded(folder / ORIGINAL_NAME)) == []


def test_express_consent_given_with_1_records_the_call_with_the_question_and_the_answer(tmp_path: Path) -> None:
    call = ScriptedCall(caller_number="+4930901820", talk=LONG_TALK)
    manifest, folder = record(tmp_path, call, ConsentSettings(region="DE"), digit="1", after_s=9.0)
    consent = manifest.consent
    assert consent is not None
    assert (consent["rule"], consent["recorded"]) == ("express", True)
    [question] = consent["notices"]
    assert question["kind"] == "question"
    assert consent["express"]["answer"] == "yes"
    assert consent["express"]["offset_s"] > question["offset_s"]
    assert len(decoded(folder / ORIGINAL_NAME)) > 10 * RATE


@pytest.mark.parametrize(("digit", "answer"), [("2", "no"), (None, "timeout")])
def test_an_express_refusal_keeps_no_audio_only_the_signed_record(
    tmp_path: Path, digit: str | None, answer: str
) -> None:
    call = ScriptedCall(caller_number="+4930901820", talk=LONG_TALK)
    manifest, folder = record(
        tmp_path, call, ConsentSettings(region="DE", express_timeout_s=5.0), digit=digit, after_s=9.0
    )
    assert manifest.consent is not None
    assert (manifest.consent["recorded"], manifest.consent["express"]["answer"]) == (False, answer)
    assert manifest.consent["offsets_from"] == "answer"
    # The call went on unrecorded, and its end was still heard.
    assert manifest.hangup_cause == "remote-loop-drop"
    [question] = manifest.consent["notices"]
    assert 0.0 <= question["offset_s"] <= 0.3, "asked at once"
    assert manifest.consent["express"]["offset_s"] > question["duration_s"]
    assert sorted(p.name for p in folder.iterdir()) == [AUDIO_NAME, "manifest.age"]
    assert age.decrypt_bytes((folder / AUDIO_NAME).read_bytes(), [age.parse_identity(IDENTITY)]) == b""
    assert manifest.audio["frames"] == 0
    spool = folder.parent.parent
    assert list((spool / "incoming").iterdir()) == []


def test_a_number_on_the_never_record_list_is_not_recorded(tmp_path: Path) -> None:
    consent = ConsentSettings(region="US-NY", never_record=("1212555",))
    manifest, folder = record(tmp_path, ScriptedCall(caller_number=NY_CALLER), consent)
    assert manifest.consent is not None
    assert manifest.consent["recorded"] is False
    assert age.decrypt_bytes((folder / AUDIO_NAME).read_bytes(), [age.parse_identity(IDENTITY)]) == b""
    assert json.dumps(manifest.consent)  # JSON-ready evidence


def test_an_express_refusal_sends_only_the_refusal_record_through_the_broker_to_the_archive(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    seen: list[tuple[str, bytes]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="refusal-watcher")
    watcher.on_message = lambda _c, _u, m: seen.append((m.topic, bytes(m.payload)))
    watcher.on_connect = lambda c, *_: c.subscribe("linerec/#", qos=1)
    watcher.connect(mosquitto.settings.host, mosquitto.settings.port)
    watcher.loop_start()
    config = DeviceConfig(
        device=DeviceSettings(id="pi-de", state_dir=tmp_path / "device"),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
        audio=AudioSettings(keep_original=True),
        consent=ConsentSettings(region="DE"),
        mqtt=mosquitto.settings,
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    identities = [age.parse_identity(IDENTITY)]
    with Archive(tmp_path / "archive") as archive:
        archive.enrol("pi-de", public_key_text(key))
        ingest = Ingest(archive=archive, identities=identities, broker=mosquitto.settings)
        ingest.start()
        spool = Spool(config.device.spool_dir)
        uplink = Uplink(device_id="pi-de", spool=spool, broker=mosquitto.settings, ack_timeout_s=10.0)
        uplink.start()
        try:
            line = CallerKeys(SimLine([ScriptedCall(caller_number="+4930901820", talk=LONG_TALK)], seed=4), "2", 9.0)
            with line:
                [rec_id] = DeviceService(config=config, backend=line, spool=spool, signing_key=key, uplink=uplink).run()
            assert uplink.wait_delivered(30)
            assert ingest.wait_stored(1, 30)
        finally:
            uplink.stop()
            ingest.stop()
            watcher.loop_stop()
        row = archive.get(rec_id)
    # Nothing of the call's audio anywhere: the only ciphertext is an age file of nothing.
    chunks = [decode_chunk(p) for t, p in seen if "/chunk/" in t]
    sent = b"".join(c.data for c in sorted(chunks, key=lambda c: c.offset))
    assert age.decrypt_bytes(sent, identities) == b""
    assert age.decrypt_bytes(Path(row.path).read_bytes(), identities) == b""
    assert row.original_path is None
    assert (row.answered, row.duration_s) == (True, 0.0)
    assert list(spool.outbox.iterdir()) == list(spool.incoming.iterdir()) == []
    doc = age.decrypt_bytes(Path(row.manifest_path).read_bytes(), identities)
    manifest = verify_manifest(doc, key.public_key())
    assert manifest.consent is not None
    assert manifest.consent["express"]["answer"] == "no"


def test_a_caller_from_a_region_with_its_own_language_hears_the_notice_in_it(tmp_path: Path) -> None:
    t = np.arange(RATE) / RATE
    sf.write(tmp_path / "avis-fr.wav", (8000 * np.sin(2 * np.pi * 600 * t)).astype(np.int16), RATE)
    consent = ConsentSettings(
        region="GB",
        languages=(("FR", "fr"),),
        notices=(("fr", "notice", tmp_path / "avis-fr.wav"),),
    )
    manifest, _ = record(tmp_path / "fr", ScriptedCall(caller_number="0033142685300"), consent)
    assert manifest.consent is not None
    [notice] = manifest.consent["notices"]
    assert (manifest.consent["rule"], manifest.consent["language"], notice["id"]) == ("notice", "fr", "avis-fr.wav")
    manifest, _ = record(tmp_path / "gb", ScriptedCall(caller_number="+442079460018"), consent)
    assert manifest.consent is not None
    assert [n["id"] for n in manifest.consent["notices"]] == ["tone-1400hz-0.5s"]
