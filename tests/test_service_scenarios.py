"""Every line scenario through the device's main loop: the right calls sealed, ended for the right reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.config import ArchiveSettings, CallSettings, DeviceConfig, DeviceSettings
from firmware.line.base import ToneDetected
from firmware.line.script import scenario
from firmware.line.sim import SimLine
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.wire import age
from firmware.wire.manifest import verify_manifest
from firmware.wire.signing import load_or_create_signing_key

IDENTITY = age.generate_identity()


def run_scenario(tmp_path: Path, name: str, calls: CallSettings | None = None) -> tuple[SimLine, list[dict]]:  # type: ignore[type-arg]
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
        calls=calls or CallSettings(),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool = Spool(config.device.spool_dir)
    line = SimLine.from_scenario(name, start_time=1_790_000_000.0, seed=5)
    with line:
        DeviceService(config=config, backend=line, spool=spool, signing_key=key).run()
    manifests = []
    for rec in spool.pending():
        doc = age.decrypt_bytes(rec.manifest.read_bytes(), [age.parse_identity(IDENTITY)])
        manifests.append(json.loads(verify_manifest(doc, key.public_key()).to_json()))
    return line, manifests


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("us-basic", "remote-loop-drop"),
        ("cpc-hangup", "remote-loop-drop"),
        ("polarity-hangup", "remote-polarity-reversal"),
        ("tone-hangup", "remote-tone"),
        ("silence-hangup", "silence-timeout"),
        ("call-waiting", "local-onhook"),
        ("extension-pickup", "remote-loop-drop"),
        ("gb-pre-ring-cid", "local-onhook"),
    ],
)
def test_each_answered_scenario_is_one_recording_ended_for_the_right_reason(
    tmp_path: Path, name: str, cause: str
) -> None:
    _, manifests = run_scenario(tmp_path, name)
    assert len(manifests) == 1
    [m] = manifests
    assert (m["answered"], m["hangup_cause"]) == (True, cause)
    assert m["audio"]["duration_s"] > 5.0


def test_silence_ends_the_call_after_the_timeout_not_when_the_line_is_finally_hung_up(tmp_path: Path) -> None:
    line, [m] = run_scenario(tmp_path, "silence-hangup", CallSettings(silence_timeout_s=10.0))
    talk_end = max(e.t_end for e in line.script_timeline() if e.kind == "talk")
    ended = m["audio"]["duration_s"]
    answered = next(e.t_start for e in line.script_timeline() if e.kind in ("talk", "pause"))
    # Ended 10 s after the last word (give or take the answer-to-first-word gap), well before the 40 s of quiet ran out.
    assert talk_end - answered + 9.0 < ended < talk_end - answered + 12.0


def test_call_waiting_keeps_a_single_recording_and_notes_the_alert(tmp_path: Path) -> None:
    _, manifests = run_scenario(tmp_path, "call-waiting")
    assert len(manifests) == 1
    assert manifests[0]["extra"]["call_waiting_alerts"] == 1


def test_caller_id_sent_before_the_first_ring_is_kept_with_the_call(tmp_path: Path) -> None:
    _, [m] = run_scenario(tmp_path, "gb-pre-ring-cid")
    assert m["caller_id"]["number"] == "02079460018"
    assert m["caller_id"]["standard"] == "etsi-v23"


def test_a_missed_call_is_filed_with_its_caller_and_no_audio(tmp_path: Path) -> None:
    _, [m] = run_scenario(tmp_path, "missed")
    assert (m["answered"], m["hangup_cause"], m["ring_count"]) == (False, "unanswered", 4)
    assert m["audio"]["frames"] == 0
    assert m["caller_id"]["name"] == "J SMITH"


def test_the_answering_machine_answers_greets_records_the_message_and_hangs_up(tmp_path: Path) -> None:
    calls = CallSettings(answering_machine=True, answer_after_rings=4)
    line, [m] = run_scenario(tmp_path, "answering-machine", calls)
    asked = [what for _, what in line.requests]
    assert asked[0] == "off-hook"
    assert asked[1].startswith("play ")
    assert asked[-1] == "on-hook"
    assert (m["answered"], m["extra"]["answered_by"], m["ring_count"]) == (True, "machine", 4)
    assert m["hangup_cause"] == "remote-loop-drop"
    assert m["audio"]["duration_s"] > 4.0


def test_without_the_answering_machine_nobody_answers_and_the_call_is_missed(tmp_path: Path) -> None:
    line, [m] = run_scenario(tmp_path, "answering-machine")
    assert line.requests == []
    assert (m["answered"], m["hangup_cause"]) == (False, "unanswered")


class BusyAfter:
    """A tone detector standing in for the DSP's: it hears busy tone from a set time on."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.resets = 0
        self.fed = 0

    def feed(self, t: float, audio: object) -> list[ToneDetected]:
        self.fed += 1
        return [ToneDetected(t, "busy")] if t >= self.at else []

    def reset(self) -> None:
        self.resets += 1


def test_a_tone_the_detector_hears_in_the_call_audio_ends_the_call(tmp_path: Path) -> None:
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    line = SimLine.from_scenario("silence-hangup", start_time=1_790_000_000.0, seed=5)
    answered_at = next(e.t_start for e in line.script_timeline() if e.kind in ("talk", "pause"))
    detector = BusyAfter(answered_at + 4.0)
    with line:
        service = DeviceService(
            config=config, backend=line, spool=Spool(config.device.spool_dir), signing_key=key, tone_detector=detector
        )
        [rec_id] = service.run()
    rec = Spool(config.device.spool_dir).get(rec_id)
    doc = age.decrypt_bytes(rec.manifest.read_bytes(), [age.parse_identity(IDENTITY)])
    manifest = verify_manifest(doc, key.public_key())
    assert manifest.hangup_cause == "remote-tone"
    assert 3.9 < manifest.duration_s - manifest.audio["preroll_s"] < 4.5
    assert detector.resets == 1
    assert detector.fed > 0


@pytest.mark.parametrize(
    ("standard", "timing", "country", "name"),
    [
        ("bell202-mdmf", "after-first-ring", "US", "ACME PLUMBING"),
        ("bell202-sdmf", "after-first-ring", "US", None),
        ("etsi-v23", "before-ring", "GB", "J SMITH"),
        ("etsi-v23", "after-first-ring", "DE", "MUELLER"),
        ("dtmf", "before-ring", "NL", None),
    ],
)
def test_caller_id_sent_as_line_audio_is_decoded_on_the_real_path(
    tmp_path: Path, standard: str, timing: str, country: str, name: str | None
) -> None:
    from firmware.line.sim import ScriptedCall  # noqa: PLC0415
    from firmware.service import line_decoders  # noqa: PLC0415

    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    call = ScriptedCall(
        country=country,
        caller_number="2125550142",
        caller_name=name,
        caller_id_standard=standard,
        caller_id_timing=timing,
        caller_id_audio=True,
        rings=2,
    )
    tones, decoder = line_decoders(config)
    line = SimLine([call], start_time=1_790_000_000.0, seed=9)
    with line:
        [rec_id] = DeviceService(
            config=config,
            backend=line,
            spool=Spool(config.device.spool_dir),
            signing_key=key,
            tone_detector=tones,
            caller_id_decoder=decoder,
        ).run()
    rec = Spool(config.device.spool_dir).get(rec_id)
    doc = age.decrypt_bytes(rec.manifest.read_bytes(), [age.parse_identity(IDENTITY)])
    manifest = verify_manifest(doc, key.public_key())
    assert manifest.caller_id is not None
    assert (manifest.caller_id["number"], manifest.caller_id["name"], manifest.caller_id["standard"]) == (
        "2125550142",
        name,
        standard,
    )


def test_keys_pressed_during_a_call_are_listed_in_the_manifest(tmp_path: Path) -> None:
    import numpy as np  # noqa: PLC0415

    from firmware import calls  # noqa: PLC0415
    from firmware.dsp.dtmf import generate_dtmf  # noqa: PLC0415
    from firmware.service import CallRecorder  # noqa: PLC0415

    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool = Spool(config.device.spool_dir)
    recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=8000)
    audio = np.concatenate([np.zeros(8000), generate_dtmf("12#", 8000) * 32767, np.zeros(8000)]).astype(np.int16)
    recorder.start(1_790_000_000.0)
    for i in range(0, len(audio), 160):
        recorder.write(audio[i : i + 160])
    call = calls.Call(
        calls.CallState.ENDED,
        answered_at=1_790_000_000.0,
        ended_at=1_790_000_003.0,
        hangup_cause=calls.HangupCause.LOCAL_ONHOOK,
    )
    rec_id = recorder.finish(call)
    doc = age.decrypt_bytes(spool.get(rec_id).manifest.read_bytes(), [age.parse_identity(IDENTITY)])
    dtmf = verify_manifest(doc, key.public_key()).audio["dtmf"]
    assert [d["digit"] for d in dtmf] == ["1", "2", "#"]
    assert dtmf[0]["start_s"] == pytest.approx(1.0, abs=0.02)


class LossyLine(SimLine):
    """A simulated line whose sound card says it lost two blocks each time it is asked."""

    def take_overflows(self) -> int:
        return 2


def test_audio_lost_by_the_card_during_a_call_is_in_its_manifest_and_the_status(tmp_path: Path) -> None:
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    line = LossyLine(scenario("us-basic"), start_time=1_790_000_000.0, seed=3)
    with line:
        service = DeviceService(config=config, backend=line, spool=Spool(config.device.spool_dir), signing_key=key)
        [rec_id] = service.run()
    rec = Spool(config.device.spool_dir).get(rec_id)
    manifest = verify_manifest(
        age.decrypt_bytes(rec.manifest.read_bytes(), [age.parse_identity(IDENTITY)]), key.public_key()
    )
    # Two lost before the call (not the call's), two during it.
    assert manifest.audio["overflows"] == 2
    assert service.overflows == 4
    facts = service.status_facts()
    assert (facts["line_state"], facts["audio_overflows"]) == ("idle", 4)


def test_below_the_disk_reserve_a_call_is_kept_as_facts_only_and_the_alarm_is_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil  # noqa: PLC0415

    from firmware.config import SpoolSettings  # noqa: PLC0415

    free_mb = shutil.disk_usage(tmp_path).free // 1024**2
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
        # A reserve above what this disk has: the recorder must treat it as full.
        spool=SpoolSettings(reserve_mb=free_mb + 1000, alert_free_mb=free_mb + 2000),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool = Spool(config.device.spool_dir)
    with SimLine(scenario("us-basic"), start_time=1_790_000_000.0, seed=3) as line:
        service = DeviceService(config=config, backend=line, spool=spool, signing_key=key)
        [rec_id] = service.run()
    doc = age.decrypt_bytes(spool.get(rec_id).manifest.read_bytes(), [age.parse_identity(IDENTITY)])
    manifest = verify_manifest(doc, key.public_key())
    assert (manifest.answered, manifest.audio["frames"], manifest.audio["not_recorded"]) == (True, 0, "disk-full")
    assert age.decrypt_bytes(spool.get(rec_id).audio.read_bytes(), [age.parse_identity(IDENTITY)]) == b""
    assert service.status_facts()["disk_alert"] is True
    assert "below spool.alert_free_mb" in caplog.text
    assert "the spool's disk is below its reserve: this call is not recorded" in caplog.text
