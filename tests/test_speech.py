"""Voices for the simulated line: telephone-band int16 speech at the rates the line runs at."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.line.base import LineError
from firmware.line.speech import (
    EspeakVoice,
    SynthVoice,
    VoiceSource,
    default_voice,
    to_telephone_band,
)

SENTENCE = "Hi, this is Acme Plumbing calling about your kitchen sink."
HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")


def voices() -> list[object]:
    return [
        pytest.param(SynthVoice(), id="synth"),
        pytest.param(EspeakVoice(), id="espeak", marks=needs_espeak),
    ]


def band_fraction(audio: NDArray[np.int16], rate: int, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / rate)
    return float(power[(freqs >= low) & (freqs <= high)].sum() / power.sum())


def rms_dbfs(audio: NDArray[np.int16]) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / 32767))


@pytest.mark.parametrize("voice", voices())
@pytest.mark.parametrize("rate", [8000, 16000])
def test_voice_gives_int16_speech_on_the_telephone_band(voice: VoiceSource, rate: int) -> None:
    audio = voice.say(SENTENCE, "caller", rate)
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    assert 1.5 < len(audio) / rate < 10.0
    assert rms_dbfs(audio) == pytest.approx(-20.0, abs=1.0)
    assert band_fraction(audio, rate, 300.0, 3400.0) > 0.98
    # Speech, not a tone: the energy is spread over the band.
    assert band_fraction(audio, rate, 300.0, 1000.0) < 0.9
    assert band_fraction(audio, rate, 1000.0, 3400.0) > 0.02


@pytest.mark.parametrize("voice", voices())
def test_caller_and_callee_sound_different(voice: VoiceSource) -> None:
    caller = voice.say(SENTENCE, "caller", 8000)
    callee = voice.say(SENTENCE, "callee", 8000)
    n = min(len(caller), len(callee))
    assert not np.array_equal(caller[:n], callee[:n])


@pytest.mark.parametrize("voice", voices())
def test_voice_activity_detector_hears_speech(voice: VoiceSource) -> None:
    webrtcvad = pytest.importorskip("webrtcvad")
    vad = webrtcvad.Vad(2)
    audio = voice.say(SENTENCE, "callee", 8000)
    frame = 160
    frames = [audio[i : i + frame] for i in range(0, len(audio) - frame + 1, frame)]
    speech = sum(vad.is_speech(f.tobytes(), 8000) for f in frames)
    assert speech / len(frames) > 0.6


def test_synth_voice_is_repeatable_and_seeded() -> None:
    assert np.array_equal(
        SynthVoice(seed=3).say("one two", "caller", 8000), SynthVoice(seed=3).say("one two", "caller", 8000)
    )
    assert not np.array_equal(
        SynthVoice(seed=3).say("one two", "caller", 8000), SynthVoice(seed=4).say("one two", "caller", 8000)
    )


def test_synth_voice_takes_longer_for_longer_text() -> None:
    voice = SynthVoice()
    short = voice.say("Hello.", "caller", 8000)
    long = voice.say(SENTENCE + " " + SENTENCE, "caller", 8000)
    assert len(long) > 5 * len(short)


def test_synth_voice_pauses_between_words() -> None:
    audio = SynthVoice().say("one two three four five six", "caller", 8000).astype(np.float64)
    energy = np.array([np.mean(audio[i : i + 80] ** 2) for i in range(0, len(audio) - 80, 80)])
    quiet = energy < np.max(energy) * 1e-3
    assert 0.05 < quiet.mean() < 0.6


@pytest.mark.skipif(shutil.which("false") is None, reason="no 'false' program")
def test_espeak_failure_is_reported_as_a_line_error() -> None:
    voice = EspeakVoice(program="false")
    with pytest.raises(LineError) as info:
        voice.say("hello", "caller", 8000)
    assert str(info.value) == "false exited with status 1: no message"


def test_espeak_reports_a_missing_program_as_a_line_error() -> None:
    voice = EspeakVoice(program="/nonexistent/espeak-ng")
    with pytest.raises(LineError, match=r"^/nonexistent/espeak-ng could not speak 'hello': "):
        voice.say("hello", "caller", 8000)


@needs_espeak
def test_espeak_text_starting_with_a_dash_is_spoken_not_taken_as_an_option() -> None:
    audio = EspeakVoice().say("-5 degrees outside", "caller", 8000)
    assert len(audio) > 8000 // 2


def test_default_voice_prefers_espeak_when_it_works() -> None:
    expected = EspeakVoice if HAS_ESPEAK else SynthVoice
    assert isinstance(default_voice(), expected)


@pytest.mark.parametrize(("rate_in", "rate_out"), [(22050, 8000), (22050, 16000), (8000, 8000), (8000, 16000)])
def test_resampler_keeps_band_tones_and_removes_the_rest(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in) / rate_in

    def level(freq: float) -> float:
        y = to_telephone_band(np.sin(2 * np.pi * freq * t), rate_in, rate_out)
        assert len(y) == rate_out
        middle = y[rate_out // 10 : -rate_out // 10]
        return float(np.sqrt(np.mean(middle**2)) * np.sqrt(2))

    assert level(1000.0) == pytest.approx(1.0, abs=0.01)
    assert level(3000.0) == pytest.approx(1.0, abs=0.01)
    assert level(150.0) < 1e-3
    # Above the band and, at 8 kHz, above Nyquist: would alias to 3100 Hz without the filter.
    if rate_in > 8000:
        assert level(4900.0) < 1e-3
    assert level(3700.0) < 1e-3


def test_resampler_handles_empty_input() -> None:
    assert to_telephone_band(np.zeros(0), 22050, 8000).shape == (0,)
