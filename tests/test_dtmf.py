"""DTMF detector: every Q.24 receiver boundary, streaming, timing, talk-off and multimon-ng agreement."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from bench.dtmf_talkoff import multimon_digits, speech
from firmware.dsp import dtmflimits
from firmware.dsp.dtmf import (
    COLUMN_HZ,
    DIGITS,
    ROW_HZ,
    DtmfDetector,
    DtmfDigit,
    DtmfError,
    detect_dtmf,
    generate_dtmf,
)

RATES = (8000, 16000)
HAS_ESPEAK = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
HAS_MULTIMON = shutil.which("multimon-ng") is not None and shutil.which("sox") is not None


def decoded(audio: NDArray[np.float64], rate: int) -> str:
    return "".join(d.digit for d in detect_dtmf(audio, rate))


def padded(audio: NDArray[np.float64], rate: int, lead_samples: int = 0) -> NDArray[np.float64]:
    return np.concatenate([np.zeros(rate // 10 + lead_samples), audio, np.zeros(rate // 10)])


def one_digit(
    digit: str, rate: int, ms: float, row_offset: float = 0.0, col_offset: float = 0.0
) -> NDArray[np.float64]:
    """A digit at -10 dBFS per tone with its row and column tones moved separately."""
    row, col = divmod(DIGITS.index(digit), 4)
    t = np.arange(round(ms * rate / 1000)) / rate
    low = np.sin(2 * np.pi * ROW_HZ[row] * (1 + row_offset) * t)
    high = np.sin(2 * np.pi * COLUMN_HZ[col] * (1 + col_offset) * t)
    return 10 ** (-10 / 20) * (low + high)


def all_digits_moved(rate: int, row_offset: float, col_offset: float) -> NDArray[np.float64]:
    gap = np.zeros(rate // 20)
    return padded(
        np.concatenate([np.concatenate([one_digit(d, rate, 50, row_offset, col_offset), gap]) for d in DIGITS]), rate
    )


def with_noise(audio: NDArray[np.float64], rate: int, snr_db: float, seed: int) -> NDArray[np.float64]:
    """Add white noise in 300-3400 Hz whose power is ``snr_db`` below the tones' total power."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.normal(size=audio.size))
    freqs = np.fft.rfftfreq(audio.size, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spectrum, audio.size)
    tone_power = float(np.mean(audio[audio != 0] ** 2))
    return audio + noise * np.sqrt(tone_power / 10 ** (snr_db / 10) / np.mean(noise**2))


# --- the keypad --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_all_sixteen_keys_are_decoded_in_order(rate: int) -> None:
    assert decoded(padded(generate_dtmf(DIGITS, rate), rate), rate) == DIGITS


@pytest.mark.parametrize("rate", [11025, 22050, 44100, 0])
def test_other_sample_rates_are_refused_with_what_to_do(rate: int) -> None:
    with pytest.raises(DtmfError) as caught:
        DtmfDetector(rate)
    assert str(caught.value) == f"DTMF sample rate {rate} Hz is not supported: use 8000 or 16000 and resample first"
    assert isinstance(caught.value, ValueError)


def test_a_digit_serialises_to_its_key_and_times() -> None:
    assert DtmfDigit("#", 1.25, 1.5).to_json() == {"digit": "#", "start_s": 1.25, "end_s": 1.5}


def test_generator_refuses_keys_that_are_not_on_the_pad() -> None:
    with pytest.raises(DtmfError, match=r"DTMF digits 'EX' are not keys; use '123A456B789C\*0#D'"):
        generate_dtmf("1EX", 8000)


# --- Q.24: frequency -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("group", ["row", "column"])
@pytest.mark.parametrize("offset", [0.015, -0.015])
def test_tones_off_by_one_and_a_half_percent_are_accepted(rate: int, group: str, offset: float) -> None:
    moved = (offset, 0.0) if group == "row" else (0.0, offset)
    assert decoded(all_digits_moved(rate, *moved), rate) == DIGITS


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("group", ["row", "column"])
@pytest.mark.parametrize("offset", [0.035, -0.035])
def test_tones_off_by_three_and_a_half_percent_are_rejected(rate: int, group: str, offset: float) -> None:
    moved = (offset, 0.0) if group == "row" else (0.0, offset)
    assert decoded(all_digits_moved(rate, *moved), rate) == ""


def test_frequency_limit_sits_between_the_q24_boundaries() -> None:
    assert 0.015 < dtmflimits.FREQ_TOLERANCE < 0.035


# --- Q.24: timing ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("lead", range(0, 51, 7))
def test_forty_millisecond_tones_are_accepted_at_any_frame_alignment(rate: int, lead: int) -> None:
    audio = generate_dtmf(DIGITS, rate, on_ms=40, off_ms=40)
    assert decoded(padded(audio, rate, lead * rate // 8000), rate) == DIGITS


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("lead", range(0, 51, 7))
def test_twenty_three_millisecond_tones_are_rejected_at_any_frame_alignment(rate: int, lead: int) -> None:
    audio = generate_dtmf(DIGITS, rate, on_ms=23, off_ms=40)
    assert decoded(padded(audio, rate, lead * rate // 8000), rate) == ""


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("lead", range(0, 51, 10))
def test_a_forty_millisecond_pause_separates_repeated_digits(rate: int, lead: int) -> None:
    audio = generate_dtmf("5555", rate, on_ms=40, off_ms=40)
    assert decoded(padded(audio, rate, lead * rate // 8000), rate) == "5555"


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("lead", range(0, 51, 10))
def test_a_ten_millisecond_drop_out_does_not_split_a_digit(rate: int, lead: int) -> None:
    tone = generate_dtmf("9", rate, on_ms=40, off_ms=0)
    audio = np.concatenate([tone, np.zeros(rate // 100), tone])
    digits = detect_dtmf(padded(audio, rate, lead * rate // 8000), rate)
    assert [d.digit for d in digits] == ["9"]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("edge", ["start", "end"])
def test_a_digit_louder_for_a_few_milliseconds_at_one_end_is_still_reported(rate: int, edge: str) -> None:
    # Noise adding in phase at a tone's edge does this: the edge frame becomes the run's
    # strongest, and every frame of the tone itself must still count as inside it.
    tone = generate_dtmf("5", rate, on_ms=70, off_ms=0)
    lift = round(0.008 * rate)
    edge_slice = slice(None, lift) if edge == "start" else slice(-lift, None)
    tone[edge_slice] *= 10 ** (3 / 20)
    assert decoded(padded(tone, rate), rate) == "5"


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("burst_ms", [8, 10, 13])
def test_a_burst_of_another_row_tone_inside_a_digit_is_not_a_second_key_press(rate: int, burst_ms: int) -> None:
    # 90 ms of "8" (852 + 1336 Hz) with a burst of 770 Hz twice as strong as the row tone in
    # the middle: the frames under the burst name "5". Like a drop-out, that is not a new digit.
    t = np.arange(round(0.09 * rate)) / rate
    audio = 10 ** (-10 / 20) * (np.sin(2 * np.pi * 852 * t) + np.sin(2 * np.pi * 1336 * t))
    n, at = round(burst_ms * rate / 1000), round((0.045 - burst_ms / 2000) * rate)
    audio[at : at + n] += 2 * 10 ** (-10 / 20) * np.hanning(n) * np.sin(2 * np.pi * 770 * t[at : at + n])
    assert decoded(padded(audio, rate), rate) == "8"


@pytest.mark.parametrize("rate", RATES)
def test_digit_start_and_end_are_within_ten_milliseconds(rate: int) -> None:
    lead_s = 0.1 + 0.0031
    audio = padded(generate_dtmf("147*", rate, on_ms=60, off_ms=90), rate, round(0.0031 * rate))
    digits = detect_dtmf(audio, rate)
    assert [d.digit for d in digits] == list("147*")
    for n, digit in enumerate(digits):
        start = lead_s + n * 0.150
        assert digit.start_s == pytest.approx(start, abs=0.010)
        assert digit.end_s == pytest.approx(start + 0.060, abs=0.010)


# --- Q.24: twist, noise, level ---------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("twist", [4.0, -8.0])
def test_twist_within_q24_is_accepted(rate: int, twist: float) -> None:
    audio = generate_dtmf(DIGITS, rate, on_ms=50, off_ms=50, twist_db=twist)
    assert decoded(padded(audio, rate), rate) == DIGITS


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("twist", [8.0, -12.0])
def test_twist_two_decibels_past_the_limits_is_rejected(rate: int, twist: float) -> None:
    # Limits: high group at most 6 dB above the low group, low group at most 10 dB above the high.
    assert (dtmflimits.MAX_TWIST_DB, dtmflimits.MIN_TWIST_DB) == (6.0, -10.0)
    audio = generate_dtmf(DIGITS, rate, on_ms=50, off_ms=50, twist_db=twist)
    assert decoded(padded(audio, rate), rate) == ""


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("twist", "offset"), [(0.0, 0.0), (4.0, 0.015), (-8.0, -0.015)])
def test_fifteen_db_signal_to_noise_is_detected(rate: int, seed: int, twist: float, offset: float) -> None:
    audio = padded(generate_dtmf(DIGITS, rate, on_ms=40, off_ms=40, twist_db=twist, freq_offset=offset), rate)
    assert decoded(with_noise(audio, rate, 15.0, seed), rate) == DIGITS


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("level", [-10.0, -23.0, -36.0])
def test_twenty_six_db_of_level_range_is_accepted(rate: int, level: float) -> None:
    audio = generate_dtmf(DIGITS, rate, on_ms=40, off_ms=40, level_dbfs=level)
    assert decoded(padded(audio, rate), rate) == DIGITS


def test_int16_input_decodes_like_float() -> None:
    audio = padded(generate_dtmf(DIGITS, 8000, level_dbfs=-30.0), 8000)
    assert decoded((audio * 32767).astype(np.int16), 8000) == DIGITS  # type: ignore[arg-type]


def test_tones_below_the_level_floor_are_ignored() -> None:
    audio = generate_dtmf(DIGITS, 8000, level_dbfs=-50.0)
    assert decoded(padded(audio, 8000), 8000) == ""


# --- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("block", [1, 7, 51, 101, 333, 4097])
def test_streaming_in_any_block_size_matches_the_whole_file(rate: int, block: int) -> None:
    audio = with_noise(padded(generate_dtmf("9D#05", rate, on_ms=45, off_ms=45), rate), rate, 20.0, 1)
    detector = DtmfDetector(rate)
    streamed: list[DtmfDigit] = []
    for start in range(0, audio.size, block):
        streamed += detector.feed(audio[start : start + block])
    streamed += detector.flush()
    assert streamed == detect_dtmf(audio, rate)
    assert "".join(d.digit for d in streamed) == "9D#05"


def test_a_digit_is_reported_soon_after_it_ends() -> None:
    detector = DtmfDetector(8000)
    tone = generate_dtmf("6", 8000, on_ms=60, off_ms=0)
    assert detector.feed(tone) == []
    assert [d.digit for d in detector.feed(np.zeros(8000 * 40 // 1000))] == ["6"]


def test_reset_forgets_a_digit_in_progress_and_restarts_the_clock() -> None:
    detector = DtmfDetector(8000)
    detector.feed(generate_dtmf("1", 8000, on_ms=60, off_ms=0))
    detector.reset()
    digits = detector.feed(padded(generate_dtmf("2", 8000), 8000)) + detector.flush()
    assert [d.digit for d in digits] == ["2"]
    assert digits[0].start_s == pytest.approx(0.1, abs=0.01)


def test_flush_reports_a_digit_still_sounding_at_the_end() -> None:
    detector = DtmfDetector(8000)
    assert detector.feed(generate_dtmf("#", 8000, on_ms=80, off_ms=0)) == []
    assert [d.digit for d in detector.flush()] == ["#"]


@settings(max_examples=60, deadline=None)
@given(
    audio=hnp.arrays(np.float64, st.integers(0, 3000), elements=st.floats(allow_nan=True, allow_infinity=True)),
    block=st.integers(1, 700),
    rate=st.sampled_from(RATES),
)
def test_any_float_audio_never_raises(audio: NDArray[np.float64], block: int, rate: int) -> None:
    detector = DtmfDetector(rate)
    for start in range(0, audio.size, block):
        detector.feed(audio[start : start + block])
    for digit in detector.flush():
        assert digit.digit in DIGITS


@settings(max_examples=40, deadline=None)
@given(audio=hnp.arrays(np.int16, st.integers(0, 4000)))
def test_any_int16_audio_never_raises(audio: NDArray[np.int16]) -> None:
    for digit in detect_dtmf(audio, 8000):
        assert digit.start_s <= digit.end_s


# --- talk-off and a second opinion -----------------------------------------------------------


@pytest.fixture(scope="session")
def speech_8k(tmp_path_factory: pytest.TempPathFactory) -> NDArray[np.float64]:
    """Five minutes of espeak-ng speech in several voices, made once per test session."""
    if not HAS_ESPEAK:
        pytest.skip("espeak-ng and sox are needed to synthesise speech")
    audio, minutes = speech(5.0, Path(tmp_path_factory.mktemp("speech")))
    assert minutes >= 5.0
    return audio


@pytest.mark.parametrize("gain_db", [-6.0, -20.0])
def test_speech_produces_no_digits(speech_8k: NDArray[np.float64], gain_db: float) -> None:
    assert detect_dtmf(speech_8k * 10 ** (gain_db / 20), 8000) == []


def test_speech_with_line_noise_produces_no_digits(speech_8k: NDArray[np.float64]) -> None:
    noisy = 0.5 * speech_8k + 0.003 * np.random.default_rng(3).normal(size=speech_8k.size)
    assert detect_dtmf(noisy, 8000) == []


def test_dialling_over_speech_is_still_heard(speech_8k: NDArray[np.float64]) -> None:
    audio = 0.1 * speech_8k[: 8000 * 3].copy()
    tones = generate_dtmf("2580", 8000, on_ms=60, off_ms=200, level_dbfs=-6.0)
    audio[8000 : 8000 + tones.size] += tones
    assert decoded(audio, 8000) == "2580"


@pytest.mark.skipif(not HAS_MULTIMON, reason="multimon-ng and sox are needed")
def test_multimon_ng_decodes_the_same_digits_from_a_clean_sequence() -> None:
    audio = padded(generate_dtmf(DIGITS + "0918273645", 8000, on_ms=70, off_ms=70), 8000)
    ours = decoded(audio, 8000)
    assert ours == DIGITS + "0918273645"
    assert multimon_digits(audio, 8000) == ours
