"""A call's recording is its trimmed, cleaned audio; the original and the trim map let anyone check it."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.calls import Call, CallState, HangupCause
from firmware.config import ArchiveSettings, AudioSettings, DeviceConfig, DeviceSettings
from firmware.dsp.filters import LineCleaner
from firmware.line.speech import SynthVoice
from firmware.recorder import CallRecorder
from firmware.spool import AUDIO_NAME, MANIFEST_NAME, ORIGINAL_NAME, Spool
from firmware.wire import age
from firmware.wire.manifest import Manifest, verify_manifest
from firmware.wire.signing import load_or_create_signing_key

RATE = 8000
IDENTITY = age.generate_identity()
T0 = 1_790_000_000.0


def conversation() -> np.ndarray:  # type: ignore[type-arg]
    """Three utterances with 0.8 s and 12 s of line noise between them."""
    voice = SynthVoice(seed=2)
    rng = np.random.default_rng(3)
    parts = []
    for i, gap in enumerate((0.8, 12.0, 0.5)):
        parts += [voice.say(f"this is part {i} of the call", "caller", RATE), np.zeros(round(gap * RATE), np.int16)]
    audio = np.concatenate(parts).astype(np.float64) + 20 * rng.standard_normal(sum(map(len, parts)))
    return np.clip(np.rint(audio), -32768, 32767).astype(np.int16)


def record(tmp_path: Path, audio: np.ndarray, **settings: object) -> tuple[Manifest, Path]:  # type: ignore[type-arg]
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(IDENTITY),)),
        audio=AudioSettings(**settings),  # type: ignore[arg-type]
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    spool = Spool(config.device.spool_dir)
    recorder = CallRecorder(config=config, spool=spool, signing_key=key, sample_rate=RATE)
    recorder.start(T0)
    for block in np.array_split(audio, len(audio) // 160):
        recorder.write(block)
    call = Call(CallState.ENDED, answered_at=T0, ended_at=T0 + len(audio) / RATE, hangup_cause=HangupCause.LOCAL_ONHOOK)
    rec_id = recorder.finish(call)
    folder = spool.outbox / rec_id
    doc = age.decrypt_bytes((folder / MANIFEST_NAME).read_bytes(), [age.parse_identity(IDENTITY)])
    return verify_manifest(doc, key.public_key()), folder


def decoded(path: Path) -> np.ndarray:  # type: ignore[type-arg]
    return sf.read(io.BytesIO(age.decrypt_bytes(path.read_bytes(), [age.parse_identity(IDENTITY)])), dtype="int16")[0]


def test_the_recording_is_the_cleaned_original_cut_to_its_trim_map_and_the_original_is_kept_exactly(
    tmp_path: Path,
) -> None:
    audio = conversation()
    manifest, folder = record(tmp_path, audio, keep_original=True)

    original = decoded(folder / ORIGINAL_NAME)
    assert np.array_equal(original, audio)
    assert manifest.audio["original"]["pcm_sha256"] == hashlib.sha256(audio.astype("<i2").tobytes()).hexdigest()

    cleaned = LineCleaner(RATE).process(audio)
    segments = manifest.audio["trim_map"]
    expected = np.concatenate([cleaned[round(a * RATE) : round(b * RATE)] for a, b in segments])
    recording = decoded(folder / AUDIO_NAME)
    assert np.array_equal(recording, expected)
    assert manifest.audio["frames"] == len(recording)
    # The 12 s of noise became a short gap; the 0.8 s and 0.5 s pauses were kept whole.
    assert len(audio) / RATE - len(recording) / RATE > 10.0
    assert len(segments) == 2
    assert manifest.audio["duration_s"] == pytest.approx(len(audio) / RATE, abs=0.001)
    assert manifest.audio["trimmed_duration_s"] == pytest.approx(len(recording) / RATE, abs=0.001)
    for start, end in manifest.audio["speech"]:
        assert any(a <= start and end <= b for a, b in segments)
    assert manifest.audio["processing"]["highpass_hz"] == 120.0
    assert manifest.audio["processing"]["vad"]["min_silence_ms"] == 2000
    assert [p["role"] for p in manifest.ciphertext["parts"]] == ["recording", "original"]


def test_with_trimming_and_cleaning_off_the_recording_is_the_audio_as_captured(tmp_path: Path) -> None:
    audio = conversation()
    manifest, folder = record(tmp_path, audio, trim=False, clean=False)
    assert np.array_equal(decoded(folder / AUDIO_NAME), audio)
    assert manifest.audio["trimmed"] is False
    assert manifest.audio["trim_map"] == [[0.0, round(len(audio) / RATE, 3)]]
    assert not (folder / ORIGINAL_NAME).exists()
    assert "parts" not in manifest.ciphertext


def test_noise_reduction_and_levelling_keep_every_sample_of_the_trimmed_audio(tmp_path: Path) -> None:
    audio = conversation()
    plain, plain_folder = record(tmp_path / "a", audio)
    polished, folder = record(tmp_path / "b", audio, noise_reduction=True, normalise=True, normalise_lufs=-16.0)
    assert polished.audio["frames"] == plain.audio["frames"]
    assert polished.audio["trim_map"] == plain.audio["trim_map"]
    out = decoded(folder / AUDIO_NAME).astype(np.float64)
    # Louder than the quiet synthetic voice, and never clipped.
    rms_plain = np.sqrt(np.mean(decoded(plain_folder / AUDIO_NAME).astype(np.float64) ** 2))
    assert np.sqrt(np.mean(out**2)) > rms_plain
    assert np.abs(out).max() < 32767
    assert polished.audio["processing"]["noise_reduction"] is True
    assert polished.audio["processing"]["normalise_lufs"] == -16.0


def test_dtmf_pressed_in_a_long_silence_is_timed_in_the_originals_time(tmp_path: Path) -> None:
    from firmware.dsp.dtmf import generate_dtmf  # noqa: PLC0415

    audio = conversation()
    keyed = generate_dtmf("5", RATE, level_dbfs=-10.0)
    at = round(10.0 * RATE)  # in the middle of the 12 s of noise
    audio = audio.copy()
    audio[at : at + len(keyed)] = np.clip(audio[at : at + len(keyed)] + keyed * 32767, -32768, 32767)
    manifest, _ = record(tmp_path, audio)
    [digit] = manifest.audio["dtmf"]
    assert digit["digit"] == "5"
    assert digit["start_s"] == pytest.approx(10.0, abs=0.05)
    assert any(a <= digit["start_s"] <= b for a, b in manifest.audio["trim_map"]), "the keypress is kept"


def test_the_audio_settings_name_what_is_allowed() -> None:
    from firmware.config import parse  # noqa: PLC0415
    from firmware.errors import ConfigError  # noqa: PLC0415

    base = {"device": {"id": "pi"}, "archive": {"recipients": [age.recipient_of(IDENTITY)]}}
    for audio, message in (
        ({"mains_hz": 55}, 'audio.mains_hz is 55; expected 50, 60, "auto" or "off"'),
        ({"mains_hz": True}, 'audio.mains_hz is True; expected 50, 60, "auto" or "off"'),
        ({"vad_frame_ms": 25}, "audio.vad_frame_ms is 25; expected 10, 20 or 30"),
        ({"vad_aggressiveness": 4}, "audio.vad_aggressiveness is 4; expected an integer from 0 to 3"),
    ):
        with pytest.raises(ConfigError) as info:
            parse({**base, "audio": audio})
        assert str(info.value) == f"<config>: {message}"
    assert parse({**base, "audio": {"mains_hz": "off"}}).audio.mains is None
    assert dataclasses.replace(AudioSettings(), mains=60).mains == 60
