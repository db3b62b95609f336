"""VAD trimming: no word is cut, long silences shrink to short gaps, and the trim map finds every moment again."""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.dsp.vad import Trimmer, TrimResult, TrimSettings, to_original, trim
from firmware.line.speech import SynthVoice

RATE = 8000
SILENCES_S = (0.4, 1.5, 5.0, 30.0)
FRAME_S = 0.030
ONSET_LEVEL = 1000  # a sample this loud is speech; the line noise stays near 10


@dataclass(frozen=True)
class Call:
    """A generated call: utterances at known places, separated by known silences."""

    audio: NDArray[np.int16]
    utterances: list[tuple[int, int]]  # sample ranges where each utterance is laid out
    onsets: list[int]  # the first loud sample of each utterance


@functools.cache
def call() -> Call:
    voice = SynthVoice(seed=5)
    rng = np.random.default_rng(0)
    parts: list[NDArray[np.int16]] = [np.zeros(RATE, dtype=np.int16)]
    utterances, onsets, at = [], [], RATE
    for i, silence in enumerate((*SILENCES_S, 0.0)):
        said = voice.say(f"sentence number {i} with a few words in it", "caller" if i % 2 else "callee", RATE)
        utterances.append((at, at + len(said)))
        onsets.append(at + int(np.flatnonzero(np.abs(said) > ONSET_LEVEL)[0]))
        parts += [said, np.zeros(round(silence * RATE), dtype=np.int16)]
        at += len(said) + round(silence * RATE)
    audio = np.concatenate(parts).astype(np.float64) + 10.0 * rng.standard_normal(at)
    return Call(np.clip(np.rint(audio), -32768, 32767).astype(np.int16), utterances, onsets)


@functools.cache
def trimmed() -> TrimResult:
    return trim(call().audio, RATE)


def kept_samples(result: TrimResult) -> list[tuple[int, int]]:
    return [(round(a * RATE), round(b * RATE)) for a, b in result.segments]


def overlap(ranges: list[tuple[int, int]], a: int, b: int) -> int:
    return sum(max(0, min(b, y) - max(a, x)) for x, y in ranges)


def test_every_frame_with_speech_energy_lies_inside_a_kept_segment() -> None:
    audio, kept = call().audio, kept_samples(trimmed())
    frame = RATE // 100
    loud = np.abs(audio[: len(audio) // frame * frame].reshape(-1, frame)).max(axis=1) > ONSET_LEVEL // 4
    assert loud.sum() > 500
    for index in np.flatnonzero(loud):
        a, b = int(index) * frame, (int(index) + 1) * frame
        assert overlap(kept, a, b) == frame, f"speech at {a / RATE:.3f} s was cut"


def test_short_silences_are_kept_whole_and_long_ones_shrink_to_the_two_pads() -> None:
    kept = kept_samples(trimmed())
    layout = call().utterances
    for silence, (before, after) in zip(SILENCES_S, itertools.pairwise(layout), strict=True):
        gap = (before[1], after[0])
        left = overlap(kept, *gap) / RATE
        if silence <= 2.0:
            assert left == pytest.approx(silence, abs=1e-9)
        else:
            # 0.5 s after and 0.3 s before the speech; the voice's own lead-in and
            # trailing word gap and the VAD's hangover move that by a frame or few.
            assert 0.6 <= left <= 1.0, silence


def test_the_gap_between_speech_regions_is_exact_in_the_trimmed_audio() -> None:
    result, settings = trimmed(), TrimSettings()
    pads = (settings.pad_after_ms + settings.pad_before_ms) / 1000
    kept = kept_samples(result)
    for (_, end), (start, _) in itertools.pairwise(result.speech):
        original = start - end
        remaining = overlap(kept, round(end * RATE), round(start * RATE)) / RATE
        expected = original if original <= settings.min_silence_ms / 1000 else pads
        assert remaining == pytest.approx(expected, abs=1e-9)


def test_the_trimmed_audio_is_the_originals_kept_segments_sample_for_sample() -> None:
    result, audio = trimmed(), call().audio
    joined = np.concatenate([audio[a:b] for a, b in kept_samples(result)])
    assert np.array_equal(result.audio, joined)
    assert result.output_s == pytest.approx(len(result.audio) / RATE)
    assert result.input_s == pytest.approx(len(audio) / RATE)
    assert result.output_s < 0.5 * result.input_s


def test_to_original_finds_each_onset_of_the_trimmed_audio_within_one_frame() -> None:
    result = trimmed()
    loud = np.flatnonzero(np.abs(result.audio) > ONSET_LEVEL)
    # An onset in the trimmed audio: a loud sample after at least 0.25 s of quiet.
    found = [int(loud[0]), *(int(b) for a, b in itertools.pairwise(loud) if b - a > RATE // 4)]
    assert len(found) == len(call().onsets)
    for trimmed_at, original_at in zip(found, call().onsets, strict=True):
        assert to_original(trimmed_at / RATE, result.segments) == pytest.approx(original_at / RATE, abs=FRAME_S)


def test_to_original_maps_every_sample_back_to_the_same_sample() -> None:
    result, audio = trimmed(), call().audio
    for k in np.random.default_rng(3).integers(0, len(result.audio), 300):
        original = round(to_original(k / RATE, result.segments) * RATE)
        assert audio[original] == result.audio[k]


def test_to_original_refuses_times_outside_the_trimmed_audio() -> None:
    with pytest.raises(ValueError, match=r"^t_trimmed must be 0 s or later, not -1.0 s$"):
        to_original(-1.0, [(0.0, 1.0)])
    with pytest.raises(ValueError, match=r"^t_trimmed 3.5 s is past the end of the trimmed audio \(1.500 s\)$"):
        to_original(3.5, [(0.0, 1.0), (4.0, 4.5)])
    assert to_original(1.5, [(0.0, 1.0), (4.0, 4.5)]) == 4.5


@pytest.mark.parametrize("sizes", [(1, 7, 239), (241, 4801), (30000, 13, 2400, 960)])
def test_streaming_in_odd_blocks_equals_the_whole_array(sizes: tuple[int, ...]) -> None:
    audio, whole = call().audio, trimmed()
    trimmer = Trimmer(RATE)
    out, i, turn = [], 0, 0
    while i < len(audio):
        n = sizes[turn % len(sizes)]
        out.append(trimmer.feed(audio[i : i + n]))
        i, turn = i + n, turn + 1
    out.append(trimmer.flush())
    assert np.array_equal(np.concatenate(out), whole.audio)
    assert (trimmer.segments, trimmer.speech) == (whole.segments, whole.speech)
    assert (trimmer.input_frames, trimmer.output_frames) == (len(audio), len(whole.audio))


def line_noise(rng: np.random.Generator, n: int, level: float = 10.0) -> NDArray[np.float64]:
    return np.asarray(level * rng.standard_normal(n))


def as_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def test_ten_minutes_of_silence_hold_no_more_than_the_settings_allow() -> None:
    rng = np.random.default_rng(4)
    trimmer = Trimmer(RATE)
    bound = 2000 * RATE // 1000 + 30 * RATE // 1000  # min_silence plus one VAD frame
    said = SynthVoice(seed=1).say("hello, are you there", "caller", RATE)
    trimmer.feed(as_int16(line_noise(rng, 3 * RATE)))
    trimmer.feed(as_int16(said + line_noise(rng, len(said))))
    before = trimmer.output_frames
    out = 0
    for _ in range(600):
        out += len(trimmer.feed(as_int16(line_noise(rng, RATE))))
        assert trimmer.held_frames < bound
    assert trimmer.input_frames > 600 * RATE
    assert trimmer.output_frames == before + out
    # Of ten minutes only the pad after the speech came out, however long it went on.
    assert out < RATE
    last_speech_end, last_kept_end = trimmer.speech[-1][1], trimmer.segments[-1][1]
    assert last_speech_end < 6.0
    assert last_kept_end - last_speech_end == pytest.approx(0.5, abs=1e-9)
    assert len(trimmer.flush()) == 0


def test_a_quiet_line_without_speech_keeps_nothing_unless_it_is_short() -> None:
    quiet = as_int16(line_noise(np.random.default_rng(6), 10 * RATE, level=3.0))
    assert trim(quiet, RATE).segments == []
    assert trim(quiet[: RATE + 17], RATE).segments == [(0.0, (RATE + 17) / RATE)]


def test_a_part_frame_at_the_end_goes_with_the_speech_before_it() -> None:
    said = SynthVoice(seed=2).say("words right up to the end", "caller", RATE)
    tail = np.full(101, 2000, dtype=np.int16)  # less than a frame, still loud
    audio = np.concatenate((said, tail))
    result = trim(audio, RATE)
    assert result.segments[-1][1] == len(audio) / RATE
    assert np.array_equal(result.audio[-101:], tail)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("aggressiveness", 4, "aggressiveness must be 0, 1, 2 or 3, not 4"),
        ("aggressiveness", True, "aggressiveness must be 0, 1, 2 or 3, not True"),
        ("frame_ms", 25, "frame_ms must be 10, 20 or 30 (the frame lengths webrtcvad takes), not 25"),
        ("pad_before_ms", -1, "pad_before_ms must be a whole number of milliseconds from 0 to 10000, not -1"),
        ("pad_after_ms", 0.5, "pad_after_ms must be a whole number of milliseconds from 0 to 10000, not 0.5"),
        ("min_silence_ms", 60001, "min_silence_ms must be a whole number of milliseconds from 0 to 60000, not 60001"),
    ],
)
def test_bad_settings_say_which_field_what_value_and_what_is_allowed(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TrimSettings(**{field: value})  # type: ignore[arg-type]


def test_a_rate_webrtcvad_cannot_take_is_refused_by_name() -> None:
    message = "webrtcvad takes audio at 8000, 16000, 32000 or 48000 Hz, not 44100 Hz"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Trimmer(44100)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_other_rates_trim_the_same_way(rate: int) -> None:
    said = SynthVoice(seed=3).say("a short remark", "callee", rate)
    audio = np.concatenate((said, np.zeros(10 * rate, dtype=np.int16), said))
    result = trim(audio, rate)
    assert len(result.segments) == 2
    assert result.output_s == pytest.approx(2 * len(said) / rate + 0.8, abs=0.25)
