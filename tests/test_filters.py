"""Line cleaning, levelling and noise reduction: what a listener would hear change, and what must not."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyloudnorm  # type: ignore[import-untyped]
import pytest
from numpy.typing import NDArray
from scipy import ndimage  # type: ignore[import-untyped]

from firmware.dsp.filters import (
    Leveller,
    LineCleaner,
    NoiseReducer,
    _k_weighting,
    _window_minima,
    clean,
    level,
    reduce_noise,
)
from firmware.line.speech import SynthVoice

RATE = 8000
FULL_SCALE = 32767.0


def tone(freq: float, seconds: float, dbfs: float, rate: int = RATE) -> NDArray[np.float64]:
    t = np.arange(round(seconds * rate)) / rate
    return np.asarray(FULL_SCALE * 10 ** (dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * freq * t))


def hum(mains: float, seconds: float, dbfs: float) -> NDArray[np.float64]:
    """Mains hum as a line picks it up: the fundamental and odd and even harmonics, falling off."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * k * mains * t + k) / k for k in range(1, 6))
    return np.asarray(x / np.sqrt(np.mean(x**2)) * FULL_SCALE * 10 ** (dbfs / 20))


def as_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def rms_db(x: NDArray[np.generic]) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2) + 1e-12))


def speech(seconds_of_pause: float, dbfs: float, sentences: int = 10, seed: int = 1) -> NDArray[np.int16]:
    voice = SynthVoice(seed=seed, level_dbfs=dbfs)
    parts: list[NDArray[np.int16]] = []
    for i in range(sentences):
        parts.append(voice.say(f"this is sentence {i} of a quiet telephone call", "caller", RATE))
        parts.append(np.zeros(round(seconds_of_pause * RATE), dtype=np.int16))
    return np.concatenate(parts)


def in_blocks(process: object, audio: NDArray[np.int16], seed: int) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(audio):
        n = int(rng.choice([0, 1, 7, 160, 161, 999, 4096, 16001]))
        out.append(process(audio[i : i + n]))  # type: ignore[operator]
        i += n
    return np.concatenate(out)


# --- LineCleaner -----------------------------------------------------------------------


def test_a_dc_offset_is_removed_without_a_click_at_the_start() -> None:
    signal = tone(1000.0, 2.0, -20.0) + 4000.0
    out = clean(as_int16(signal), RATE, mains_hz=50)
    assert abs(float(out[RATE // 10 :].mean())) < 2.0
    # Primed on the first sample: the offset never shows up as a step.
    assert np.abs(out).max() < 1.1 * np.abs(signal - 4000.0).max()


@pytest.mark.parametrize("mains", [50, 60])
@pytest.mark.parametrize("mode", ["fixed", "auto"])
def test_hum_at_minus_20_dbfs_drops_30_db_while_a_1_khz_tone_passes(mains: int, mode: str) -> None:
    choice = mains if mode == "fixed" else "auto"
    hummed = hum(mains, 6.0, -20.0)
    out = LineCleaner(RATE, mains_hz=choice).process(as_int16(hummed))  # type: ignore[arg-type]
    settled = slice(3 * RATE, None)  # after the auto choice and the notches' ring-in
    assert rms_db(hummed[settled]) - rms_db(out[settled]) >= 30.0

    speech_tone = tone(1000.0, 6.0, -20.0)
    passed = LineCleaner(RATE, mains_hz=choice).process(as_int16(speech_tone))  # type: ignore[arg-type]
    assert rms_db(passed[settled]) - rms_db(speech_tone[settled]) == pytest.approx(0.0, abs=0.5)


@pytest.mark.parametrize("mains", [50, 60])
def test_hum_drifting_off_the_nominal_frequency_is_still_cut_25_db(mains: int) -> None:
    hummed = hum(mains + 0.2, 6.0, -20.0)
    out = LineCleaner(RATE, mains_hz=mains).process(as_int16(hummed))  # type: ignore[arg-type]
    assert rms_db(hummed[RATE:]) - rms_db(out[RATE:]) >= 25.0


@pytest.mark.parametrize("mains", [50, 60])
def test_auto_picks_the_family_that_hums_under_speech(mains: int) -> None:
    talk = speech(0.3, -20.0, sentences=2)
    audio = as_int16(talk + hum(mains, len(talk) / RATE, -40.0))
    cleaner = LineCleaner(RATE)
    cleaner.process(audio[: RATE + 1])
    assert cleaner.mains_hz is None  # still listening
    cleaner.process(audio[RATE + 1 :])
    assert cleaner.mains_hz == mains


def test_no_notches_leaves_the_hum_above_the_high_pass() -> None:
    hummed = hum(50, 4.0, -20.0)
    out = LineCleaner(RATE, mains_hz=None).process(as_int16(hummed))
    assert rms_db(hummed[RATE:]) - rms_db(out[RATE:]) < 10.0


def test_a_bad_mains_setting_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"^mains_hz must be 50, 60, 'auto' or None, not 55$"):
        LineCleaner(RATE, mains_hz=55)  # type: ignore[arg-type]


def test_blocks_must_be_int16_mono() -> None:
    with pytest.raises(ValueError, match=r"^audio blocks must be 1-D int16 arrays, not 1-D float64$"):
        LineCleaner(RATE).process(np.zeros(10))


# --- block by block equals whole -----------------------------------------------------


def noisy_call() -> NDArray[np.int16]:
    rng = np.random.default_rng(5)
    talk = speech(1.0, -25.0, sentences=3, seed=2).astype(np.float64)
    return as_int16(talk + hum(60, len(talk) / RATE, -30.0) + 800.0 + 40.0 * rng.standard_normal(len(talk)))


def test_the_cleaner_block_by_block_equals_the_whole_array() -> None:
    audio = noisy_call()
    whole = clean(audio, RATE)
    cleaner = LineCleaner(RATE)
    blocks = in_blocks(cleaner.process, audio, seed=1)
    assert cleaner.mains_hz == 60
    assert np.abs(blocks.astype(np.int32) - whole).max() <= 1


@pytest.mark.parametrize("kind", [Leveller, NoiseReducer])
def test_delayed_filters_block_by_block_equal_the_whole_array(kind: type[Leveller | NoiseReducer]) -> None:
    audio = noisy_call()
    whole = level(audio, RATE) if kind is Leveller else reduce_noise(audio, RATE)
    streaming = kind(RATE)
    blocks = np.concatenate((in_blocks(streaming.process, audio, seed=2), streaming.flush()))
    assert len(blocks) == len(audio) + streaming.latency_frames
    assert np.abs(blocks[streaming.latency_frames :].astype(np.int32) - whole).max() <= 1


# --- Leveller ------------------------------------------------------------------------


def test_quiet_speech_is_brought_near_the_target_loudness() -> None:
    meter = pyloudnorm.Meter(RATE)
    quiet = speech(1.5, -42.0)
    assert meter.integrated_loudness(quiet / 32768.0) < -38.0
    out = level(quiet, RATE, target_lufs=-20.0)
    assert meter.integrated_loudness(out / 32768.0) == pytest.approx(-20.0, abs=1.0)


def test_turned_up_speech_with_full_scale_clicks_never_clips() -> None:
    talk = speech(0.5, -22.0, sentences=4, seed=3).astype(np.float64)
    talk[:: RATE // 3] = 32767.0  # clicks at full scale
    leveller = Leveller(RATE, target_lufs=-10.0, ceiling_dbfs=-1.0)
    out = np.concatenate((leveller.process(as_int16(talk)), leveller.flush()))
    assert leveller.gain_db > 6.0  # so every click would clip without the limiter
    assert np.abs(out.astype(np.int32)).max() <= round(32767 * 10 ** (-1 / 20))


def test_the_gain_holds_through_a_pause_instead_of_raising_the_noise() -> None:
    rng = np.random.default_rng(9)
    talk = speech(0.3, -35.0, sentences=4)
    pause = 20.0 * rng.standard_normal(12 * RATE)
    audio = as_int16(np.concatenate((talk, pause)))
    leveller = Leveller(RATE)
    out = leveller.process(audio)
    gain_after_talk = leveller.gain_db
    assert gain_after_talk > 10.0  # quiet speech was turned up...
    first, last = out[len(talk) + RATE : len(talk) + 2 * RATE], out[-RATE:]
    assert rms_db(last) == pytest.approx(rms_db(first), abs=0.5)  # ...and the pause's noise was not
    assert leveller.gain_db == gain_after_talk


# BS.1770-4, tables 1 and 2: the K-weighting's two stages at 48 kHz.
BS1770_48K = np.array(
    [
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
    ]
)


def response_db(sections: NDArray[np.float64], freqs: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    z = np.exp(-2j * np.pi * freqs / rate)  # z^-1
    h = np.ones(len(freqs), dtype=complex)
    for b0, b1, b2, a0, a1, a2 in sections:
        h *= (b0 + b1 * z + b2 * z * z) / (a0 + a1 * z + a2 * z * z)
    return np.asarray(20 * np.log10(np.abs(h)))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_k_weighting_is_the_one_the_loudness_meter_uses(rate: int) -> None:
    filters = pyloudnorm.Meter(rate)._filters
    theirs = np.array([np.concatenate((filters[k].b, filters[k].a)) for k in ("high_shelf", "high_pass")])
    assert np.abs(_k_weighting(rate) - theirs).max() < 1e-12


@pytest.mark.parametrize(("rate", "within_db"), [(8000, 0.3), (16000, 0.1)])
def test_the_k_weighting_follows_the_standard_across_the_band(rate: int, within_db: float) -> None:
    freqs = np.geomspace(20.0, 0.975 * rate / 2, 500)
    error = response_db(_k_weighting(rate), freqs, rate) - response_db(BS1770_48K, freqs, 48000)
    assert np.abs(error).max() < within_db


@pytest.mark.parametrize("width", [1, 2, 5, 16, 96])
@pytest.mark.parametrize("length", [0, 1, 15, 95, 96, 97, 1000])
def test_the_limiter_takes_each_window_minimum_as_ndimage_did(width: int, length: int) -> None:
    rng = np.random.default_rng(width * 1000 + length)
    x = np.concatenate((np.ones(width - 1), rng.uniform(0.1, 1.0, length)))
    if len(x) < width:
        return
    expected = ndimage.minimum_filter1d(x, width, origin=(width - 1) // 2)[width - 1 :]
    assert np.array_equal(_window_minima(x, width), expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
def test_the_filters_load_without_scipy_and_its_70_mb() -> None:
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's, here pytest's 100 MB.
    code = (
        "import pathlib, sys\n"
        "import firmware.dsp.filters\n"
        "peak = next(l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM'))\n"
        "print('scipy' in sys.modules, int(peak.split()[1]) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert int(out[1]) < 60  # MB: about 27 with numpy alone, 99 once scipy.signal comes in


# --- NoiseReducer --------------------------------------------------------------------


def test_stationary_noise_drops_6_db_in_pauses_while_tones_keep_their_level() -> None:
    rng = np.random.default_rng(11)
    seconds = 20.0
    noise = 300.0 * rng.standard_normal(round(seconds * RATE))
    tones = np.zeros_like(noise)
    bursts = [(4.0, 500.0), (9.0, 1200.0), (14.0, 2500.0)]
    for start, freq in bursts:
        a = round(start * RATE)
        tones[a : a + 2 * RATE] = tone(freq, 2.0, -20.0)
    audio = as_int16(noise + tones)
    out = reduce_noise(audio, RATE)
    pause = slice(RATE, round(3.5 * RATE))
    assert rms_db(audio[pause]) - rms_db(out[pause]) >= 6.0
    t = np.arange(len(audio)) / RATE
    for start, freq in bursts:
        inside = slice(round((start + 0.2) * RATE), round((start + 1.8) * RATE))
        carrier = np.exp(-2j * np.pi * freq * t[inside])
        change = 20 * np.log10(abs(out[inside] @ carrier) / abs(audio[inside] @ carrier))
        assert change == pytest.approx(0.0, abs=2.0), freq


def test_with_no_reduction_the_noise_reducer_is_a_pure_delay() -> None:
    audio = noisy_call()
    reducer = NoiseReducer(RATE, reduction_db=0.0)
    assert reducer.latency_frames == 255  # a 32 ms frame at 8 kHz, less one sample
    out = np.concatenate((reducer.process(audio), reducer.flush()))
    assert np.array_equal(out[:255], np.zeros(255, dtype=np.int16))
    assert np.array_equal(out[255:], audio)
