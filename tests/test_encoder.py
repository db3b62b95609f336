"""Recordings are FLAC encrypted with age while they are written, with flat memory and exact samples."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware.encoder import EncryptedAudioWriter, file_sha256
from firmware.errors import RecordingError
from firmware.wire import age

IDENTITY = age.generate_identity()
RECIPIENTS = (age.recipient_of(IDENTITY),)


def noisy_tone(seconds: float, seed: int = 0, rate: int = 8000) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    tone = 6000 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    return (tone + rng.normal(0, 800, n)).astype(np.int16)


def record(path: Path, samples: np.ndarray, rate: int = 8000, block: int = 160):  # type: ignore[no-untyped-def,type-arg]
    writer = EncryptedAudioWriter(path, recipients=RECIPIENTS, sample_rate=rate)
    for i in range(0, len(samples), block):
        writer.write(samples[i : i + block])
    return writer.close()


def decode(path: Path) -> tuple[np.ndarray, int]:  # type: ignore[type-arg]
    plain = age.decrypt_bytes(path.read_bytes(), [age.parse_identity(IDENTITY)])
    samples, rate = sf.read(io.BytesIO(plain), dtype="int16")
    return samples, rate


# Durations whose FLAC lands below, near and well above one 64 KiB age chunk.
@pytest.mark.parametrize("seconds", [0.02, 1.0, 4.0, 5.5, 7.0, 30.0])
def test_decrypts_to_exactly_the_samples_written(tmp_path: Path, seconds: float) -> None:
    samples = noisy_tone(seconds, seed=int(seconds * 10))
    info = record(tmp_path / "a.flac.age", samples)
    decoded, rate = decode(tmp_path / "a.flac.age")
    assert rate == 8000
    assert np.array_equal(decoded, samples)
    assert info.frames == len(samples)
    assert info.pcm_sha256 == hashlib.sha256(samples.astype("<i2").tobytes()).hexdigest()
    assert (info.size, info.sha256) == file_sha256(tmp_path / "a.flac.age")


def test_16_khz_recordings_keep_their_rate(tmp_path: Path) -> None:
    samples = noisy_tone(3.0, rate=16000)
    record(tmp_path / "a.flac.age", samples, rate=16000)
    decoded, rate = decode(tmp_path / "a.flac.age")
    assert rate == 16000
    assert np.array_equal(decoded, samples)


def test_a_call_without_audio_is_an_empty_age_file(tmp_path: Path) -> None:
    info = record(tmp_path / "a.flac.age", np.zeros(0, dtype=np.int16))
    assert info.frames == 0
    assert age.decrypt_bytes((tmp_path / "a.flac.age").read_bytes(), [age.parse_identity(IDENTITY)]) == b""


def test_no_plaintext_audio_reaches_the_disk(tmp_path: Path) -> None:
    samples = noisy_tone(20.0)
    record(tmp_path / "a.flac.age", samples)
    data = (tmp_path / "a.flac.age").read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"fLaC" not in data
    assert samples[4000:4016].tobytes() not in data
    assert [p.name for p in tmp_path.iterdir()] == ["a.flac.age"]


def test_memory_stays_flat_however_long_the_call(tmp_path: Path) -> None:
    block = noisy_tone(0.02)
    writer = EncryptedAudioWriter(tmp_path / "long.flac.age", recipients=RECIPIENTS, sample_rate=8000)
    tracemalloc.start()
    try:
        held = []
        for _minute in range(10):
            for _ in range(60 * 50):
                writer.write(block)
            held.append(tracemalloc.get_traced_memory()[0])
        writer.close()
    finally:
        tracemalloc.stop()
    # After warming up, the second five minutes hold no more than the first five.
    assert max(held[5:]) < held[4] + 64 * 1024, held
    assert max(held) < 4 * 1024 * 1024, held


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "a.flac.age"
    path.write_bytes(b"earlier call")
    with pytest.raises(RecordingError, match=r"cannot start the recording file .*a\.flac\.age"):
        EncryptedAudioWriter(path, recipients=RECIPIENTS, sample_rate=8000)
    assert path.read_bytes() == b"earlier call"


def test_an_unfinished_recording_never_decrypts_as_complete(tmp_path: Path) -> None:
    path = tmp_path / "a.flac.age"
    writer = EncryptedAudioWriter(path, recipients=RECIPIENTS, sample_rate=8000)
    for _ in range(1000):
        writer.write(noisy_tone(0.02))
    writer._file.flush()  # what is on disk when the process dies here
    with pytest.raises(age.AgeError):
        age.decrypt_bytes(path.read_bytes(), [age.parse_identity(IDENTITY)])


@pytest.mark.parametrize("seconds", [0.5, 12.0])
def test_wav_recordings_decrypt_to_exactly_the_samples_written(tmp_path: Path, seconds: float) -> None:
    samples = noisy_tone(seconds, seed=3)
    writer = EncryptedAudioWriter(tmp_path / "a.wav.age", recipients=RECIPIENTS, sample_rate=8000, codec="wav")
    for i in range(0, len(samples), 160):
        writer.write(samples[i : i + 160])
    assert writer.close().codec == "wav"
    decoded, rate = decode(tmp_path / "a.wav.age")
    assert rate == 8000
    assert np.array_equal(decoded, samples)


def speech_like(seconds: float, rate: int) -> np.ndarray:  # type: ignore[type-arg]
    """Noise shaped like syllables: something a speech codec has to work at."""
    from firmware.line.speech import to_telephone_band  # noqa: PLC0415

    rng = np.random.default_rng(4)
    n = int(seconds * rate)
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * np.arange(n) / rate)
    return (to_telephone_band(rng.standard_normal(n), rate, rate) * 4000 * syllables).astype(np.int16)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_opus_recordings_play_back_at_about_the_bit_rate_asked_for(tmp_path: Path, rate: int) -> None:
    samples = speech_like(20.0, rate)
    writer = EncryptedAudioWriter(
        tmp_path / "a.opus.age", recipients=RECIPIENTS, sample_rate=rate, codec="opus", opus_kbps=16.0
    )
    for i in range(0, len(samples), rate // 50):
        writer.write(samples[i : i + rate // 50])
    info = writer.close()
    plain = age.decrypt_bytes((tmp_path / "a.opus.age").read_bytes(), [age.parse_identity(IDENTITY)])
    assert plain[:4] == b"OggS"
    decoded, got_rate = sf.read(io.BytesIO(plain), dtype="int16")
    assert got_rate == rate
    assert abs(len(decoded) - len(samples)) <= rate // 10
    kbps = len(plain) * 8 / 20.0 / 1000
    assert 10.0 < kbps < 24.0, f"{kbps:.1f} kb/s"
    # Lossy, but the same sound: the decoded signal follows the original closely.
    n = min(len(decoded), len(samples))
    best = max(float(np.corrcoef(decoded[lag:n], samples[: n - lag])[0, 1]) for lag in range(0, rate // 100))
    assert best > 0.8
    assert info.codec == "opus"


def test_an_unknown_codec_or_an_opus_rate_it_cannot_take_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError) as info:
        EncryptedAudioWriter(tmp_path / "a", recipients=RECIPIENTS, sample_rate=8000, codec="mp3")
    assert str(info.value) == "codec 'mp3' must be one of flac, opus, wav"
    with pytest.raises(RecordingError) as info:
        EncryptedAudioWriter(tmp_path / "b", recipients=RECIPIENTS, sample_rate=44100, codec="opus")
    assert str(info.value) == "Opus cannot encode 44100 Hz audio; it takes 8000, 12000, 16000, 24000, 48000"
