"""Call-progress tones: each country's tones found with the right span, and nothing found in speech or noise."""

from __future__ import annotations

import shutil
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from firmware.config import ArchiveSettings, DeviceConfig, DeviceSettings
from firmware.dsp.toneplan import parse_tone_plans
from firmware.dsp.tones import (
    CallProgressDetector,
    ToneEvent,
    ToneSpec,
    detect_tones,
    generate_tone,
    load_tone_plan,
)
from firmware.line.base import BackendHealth, LineBackend, LineBlock, ToneDetected
from firmware.line.sim import SimLine
from firmware.line.speech import EspeakVoice, SynthVoice
from firmware.service import DeviceService
from firmware.spool import Spool
from firmware.wire import age
from firmware.wire.errors import ConfigError
from firmware.wire.manifest import verify_manifest
from firmware.wire.signing import load_or_create_signing_key

RATE = 8000
BLOCK = 160
LEAD_S = 0.6
TAIL_S = 1.6
TONE_DBFS = -15.0
COUNTRIES = ("US", "CA", "GB", "DE", "FR", "NL", "AU", "default")
CASES = [(c, t.name) for c in COUNTRIES for t in load_tone_plan(c).tones]
SENTENCES = (
    "Hello, this is the pharmacy calling about your prescription, which is ready to collect.",
    "I'm sorry, I can't hear you very well, could you say that again a little more slowly?",
    "The meeting has moved to Thursday at half past ten, in the room on the second floor.",
    "Yes, yes, that's fine, I'll be there around four and bring the papers with me.",
)


def noise(rng: np.random.Generator, n: int, dbfs: float) -> NDArray[np.float64]:
    return rng.normal(0.0, 32767.0 * 10 ** (dbfs / 20), n)


def seconds_for(spec: ToneSpec) -> float:
    """Long enough to confirm the tone, and a whole number of cycles so no burst is cut short."""
    if not spec.cadence:
        return spec.min_s + 1.5
    if spec.once:
        return sum(spec.cadence)
    cycle = sum(spec.cadence)
    return cycle * max(2, int(np.ceil(3.0 / cycle)) + 1)


def expected_span(spec: ToneSpec, seconds: float) -> tuple[float, float]:
    """Start and end of the tone in a signal of LEAD_S silence, the tone, then silence."""
    if not spec.cadence:
        return LEAD_S, LEAD_S + seconds
    if spec.once:
        return LEAD_S, LEAD_S + sum(spec.cadence)
    # A whole number of cycles: the last burst ends one final "off" before the end.
    return LEAD_S, LEAD_S + seconds - spec.cadence[-1]


def tone_signal(country: str, tone: str, seed: int) -> tuple[NDArray[np.float64], tuple[float, float]]:
    """The tone between stretches of silence, 1.5 % off frequency, with noise 20 dB below it."""
    rng = np.random.default_rng(seed)
    spec = load_tone_plan(country).tone(tone)
    seconds = seconds_for(spec)
    detune = 0.015 if seed % 2 else -0.015
    body = generate_tone(tone, country=country, sample_rate=RATE, seconds=seconds, level_dbfs=TONE_DBFS, detune=detune)
    audio = np.concatenate([np.zeros(round(LEAD_S * RATE)), body, np.zeros(round(TAIL_S * RATE))])
    return audio + noise(rng, len(audio), TONE_DBFS - 20.0), expected_span(spec, seconds)


def stream(detector: CallProgressDetector, audio: NDArray[np.float64], t0: float) -> list[ToneDetected]:
    pcm = np.clip(np.round(audio), -32768, 32767).astype(np.int16)
    heard: list[ToneDetected] = []
    for k in range(0, len(pcm), BLOCK):
        heard += detector.feed(t0 + k / RATE, pcm[k : k + BLOCK])
    return heard


@pytest.mark.parametrize(("country", "tone"), CASES)
def test_every_tone_is_found_once_with_its_span_in_the_whole_file(country: str, tone: str) -> None:
    audio, (start, end) = tone_signal(country, tone, seed=len(CASES) + CASES.index((country, tone)))
    [event] = detect_tones(audio, RATE, country=country)
    assert event.tone == tone
    assert event.start_s == pytest.approx(start, abs=0.06)
    assert event.end_s == pytest.approx(end, abs=0.06)


@pytest.mark.parametrize(("country", "tone"), CASES)
def test_every_tone_is_reported_once_when_streamed_and_matches_the_whole_file(country: str, tone: str) -> None:
    audio, (start, end) = tone_signal(country, tone, seed=CASES.index((country, tone)))
    t0 = 1_790_000_000.0
    detector = CallProgressDetector(country)
    heard = stream(detector, audio, t0)
    assert [h.tone for h in heard] == [tone]
    # Reported once confirmed: after the tone began, and no later than its guard after it ended.
    assert start < heard[0].t - t0 < end + 0.75
    whole = detect_tones(np.clip(np.round(audio), -32768, 32767).astype(np.int16), RATE, country=country)
    streamed = [ToneEvent(e.tone, e.start_s - t0, e.end_s - t0) for e in detector.events()]
    assert [e.tone for e in streamed] == [e.tone for e in whole]
    for s, w in zip(streamed, whole, strict=True):
        assert (s.start_s, s.end_s) == pytest.approx((w.start_s, w.end_s), abs=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_us_busy_reorder_dial_and_ringback_are_never_confused(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["busy", "reorder", "dial", "ringback"]
    rng.shuffle(names)
    parts, spans = [], []
    at = 0.0
    for name in names:
        spec = load_tone_plan("US").tone(name)
        seconds = seconds_for(spec)
        detune = float(rng.uniform(-0.018, 0.018))
        parts += [generate_tone(name, country="US", sample_rate=RATE, seconds=seconds, detune=detune)]
        parts += [np.zeros(round(2.0 * RATE))]
        lead, end = expected_span(spec, seconds)
        spans.append((name, at + lead - LEAD_S, at + end - LEAD_S))
        at += seconds + 2.0
    audio = np.concatenate(parts)
    audio += noise(rng, len(audio), -35.0)
    found = [(e.tone, e.start_s, e.end_s) for e in detect_tones(audio, RATE, country="US")]
    assert [f[0] for f in found] == [s[0] for s in spans]
    for (_, s, e), (_, s0, e0) in zip(found, spans, strict=True):
        assert (s, e) == pytest.approx((s0, e0), abs=0.06)


def test_every_country_in_the_data_file_has_each_of_its_tones_tested() -> None:
    table = tomllib.loads(resources.files("firmware.data").joinpath("tones.toml").read_text(encoding="utf-8"))
    assert set(table["country"]) == set(COUNTRIES)
    tested = {country: {tone for c, tone in CASES if c == country} for country in COUNTRIES}
    assert {"dial", "busy", "ringback", "sit"} <= tested["AU"]
    assert {"dial", "busy", "reorder", "ringback", "howler", "sit"} <= tested["US"]


# --- Australia: dial and ring tone are 425 Hz amplitude-modulated at 25 Hz ---------------


def australian(tone: str, seed: int, *, depth: float | None) -> tuple[NDArray[np.float64], tuple[float, float]]:
    """An Australian tone as exchanges send it, 1.5 % off frequency, with noise 20 dB below it.

    ``depth`` is the modulation depth (2.0: 400, 425 and 450 Hz equally strong); None is the
    413 + 438 Hz pair some exchanges send instead, which beats at the same 25 Hz.
    """
    rng = np.random.default_rng(seed)
    spec = load_tone_plan("AU").tone(tone)
    seconds = seconds_for(spec)
    detune = 0.015 if seed % 2 else -0.015
    phase = float(rng.uniform(0, 2 * np.pi))
    options = {"country": "AU", "sample_rate": RATE, "seconds": seconds, "level_dbfs": TONE_DBFS, "detune": detune}
    if depth is None:
        # A 425 Hz carrier times cos(12.5 Hz) is 412.5 + 437.5 Hz; sqrt(2) keeps the level.
        t = np.arange(round(seconds * RATE)) / RATE
        body = generate_tone(tone, modulation_depth=0.0, **options) * np.sqrt(2) * np.cos(np.pi * 25.0 * t + phase)
    else:
        body = generate_tone(tone, modulation_depth=depth, phase=phase, **options)
    audio = np.concatenate([np.zeros(round(LEAD_S * RATE)), body, np.zeros(round(TAIL_S * RATE))])
    return audio + noise(rng, len(audio), TONE_DBFS - 20.0), expected_span(spec, seconds)


def test_the_generated_australian_dial_tone_is_425_hz_modulated_at_25_hz() -> None:
    equal = generate_tone("dial", country="AU", sample_rate=RATE, seconds=1.0, modulation_depth=2.0)
    spectrum = np.abs(np.fft.rfft(equal))
    assert spectrum[[400, 450]] == pytest.approx([spectrum[425]] * 2, rel=1e-6)
    assert np.sqrt(np.mean(equal**2)) == pytest.approx(32767.0 * 10 ** (-15.0 / 20), rel=1e-3)
    full = generate_tone("dial", country="AU", sample_rate=RATE, seconds=1.0, modulation_depth=1.0)
    # The level swings down to nothing every 40 ms, halfway through each swing.
    trough = np.abs(full[round(0.02 * RATE) - 8 : round(0.02 * RATE) + 8])
    assert trough.max() < 0.02 * np.abs(full).max()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("depth", [0.5, 1.0, 2.0, None])
@pytest.mark.parametrize("tone", ["dial", "ringback"])
def test_australian_modulated_tones_are_one_tone_with_their_span(tone: str, depth: float | None, seed: int) -> None:
    audio, (start, end) = australian(tone, seed, depth=depth)
    [event] = detect_tones(audio, RATE, country="AU")
    assert event.tone == tone
    assert (event.start_s, event.end_s) == pytest.approx((start, end), abs=0.06)
    assert [h.tone for h in stream(CallProgressDetector("AU"), audio, 0.0)] == [tone]


@pytest.mark.parametrize("seed", range(3))
def test_australian_congestion_at_alternating_levels_is_reported_as_busy(seed: int) -> None:
    spec = load_tone_plan("AU").tone("busy")
    seconds = 6.0
    busy = generate_tone("busy", country="AU", sample_rate=RATE, seconds=seconds, level_dbfs=TONE_DBFS)
    # Every other burst 10 dB down (Asterisk's au congestion; ACIF S002).
    cycle = np.floor(np.arange(len(busy)) / RATE / sum(spec.cadence)).astype(int)
    body = busy * np.where(cycle % 2, 10 ** (-10 / 20), 1.0)
    audio = np.concatenate([np.zeros(round(LEAD_S * RATE)), body, np.zeros(round(TAIL_S * RATE))])
    audio += noise(np.random.default_rng(seed), len(audio), TONE_DBFS - 30.0)
    [event] = detect_tones(audio, RATE, country="AU")
    assert event.tone == "busy"
    assert (event.start_s, event.end_s) == pytest.approx(expected_span(spec, seconds), abs=0.06)


def test_a_modulated_tone_whose_sidebands_reach_another_tone_is_refused() -> None:
    dial = {"freqs": [425.0], "modulation_hz": 25.0, "min_s": 1.3}
    ringback = {"freqs": [400.0, 450.0], "cadence": [0.4, 0.2, 0.4, 2.0]}
    with pytest.raises(ConfigError) as err:
        parse_tone_plans({"country": {"XX": {"dial": dial, "ringback": ringback}}})
    assert str(err.value) == (
        "firmware/data/tones.toml: country.XX.dial.modulation_hz is 25.0; "
        "expected less than 8.5, or 425 Hz with its sidebands takes in 400 Hz of another tone"
    )


def cas_burst(ms: float, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    n = round(ms * RATE / 1000)
    t = np.arange(n) / RATE
    burst = 32767.0 * 10 ** (-20 / 20) * (np.sin(2 * np.pi * 2130 * t) + np.sin(2 * np.pi * 2750 * t))
    audio = np.concatenate([np.zeros(round(0.3 * RATE) + seed), burst, np.zeros(round(0.5 * RATE))])
    return audio + noise(rng, len(audio), -40.0)


@pytest.mark.parametrize("ms", [88.0, 110.0])
@pytest.mark.parametrize("seed", [0, 37, 81, 123])
def test_a_dual_tone_alert_of_88_to_110_ms_is_found(ms: float, seed: int) -> None:
    [event] = detect_tones(cas_burst(ms, seed), RATE, country="GB")
    assert event.tone == "cas"
    assert event.end_s - event.start_s == pytest.approx(ms / 1000, abs=0.015)
    assert [h.tone for h in stream(CallProgressDetector("GB"), cas_burst(ms, seed), 0.0)] == ["cas"]


@pytest.mark.parametrize("seed", [0, 37, 81, 123])
def test_a_50_ms_burst_of_the_alert_frequencies_is_not_an_alert(seed: int) -> None:
    assert detect_tones(cas_burst(50.0, seed), RATE, country="GB") == []


def speech(voice: SynthVoice | EspeakVoice) -> NDArray[np.int16]:
    gap = np.zeros(RATE // 3, dtype=np.int16)
    parts = [p for i, s in enumerate(SENTENCES) for p in (voice.say(s, ("caller", "callee")[i % 2], RATE), gap)]
    return np.concatenate(parts)


@pytest.mark.parametrize("country", COUNTRIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_speech_is_never_taken_for_a_tone(country: str, seed: int) -> None:
    audio = speech(SynthVoice(seed=seed))
    assert detect_tones(audio, RATE, country=country) == []
    assert stream(CallProgressDetector(country), audio.astype(np.float64), 0.0) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize("country", COUNTRIES)
def test_espeak_speech_is_never_taken_for_a_tone(country: str) -> None:
    audio = speech(EspeakVoice())
    assert detect_tones(audio, RATE, country=country) == []


@pytest.mark.parametrize("dbfs", [-50.0, -35.0, -20.0, -6.0])
def test_noise_and_hum_are_never_taken_for_a_tone(dbfs: float) -> None:
    rng = np.random.default_rng(int(-dbfs))
    t = np.arange(20 * RATE) / RATE
    audio = noise(rng, len(t), dbfs) + 32767.0 * 10 ** (-40 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 60 * t)
    for country in COUNTRIES:
        assert detect_tones(audio, RATE, country=country) == []


def test_a_tone_below_minus_40_dbfs_is_not_heard() -> None:
    audio = generate_tone("dial", country="US", sample_rate=RATE, seconds=3.0, level_dbfs=-46.0)
    assert detect_tones(audio, RATE, country="US") == []


def test_reset_forgets_a_tone_half_heard() -> None:
    detector = CallProgressDetector("US")
    dial = generate_tone("dial", country="US", sample_rate=RATE, seconds=1.0)
    assert stream(detector, dial, 0.0) == []
    detector.reset()
    assert stream(detector, dial, 10.0) == []
    assert detector.events() == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-32768, 32767), max_size=2000),
    st.integers(1, 400),
    st.sampled_from(COUNTRIES),
)
def test_any_audio_in_any_blocks_never_raises(samples: list[int], block: int, country: str) -> None:
    pcm = np.asarray(samples, dtype=np.int16)
    detector = CallProgressDetector(country)
    for k in range(0, len(pcm), block):
        for heard in detector.feed(k / RATE, pcm[k : k + block]):
            assert heard.tone in {t.name for t in detector.plan.tones}
    assert all(e.start_s <= e.end_s for e in detect_tones(pcm, RATE, country=country))


def test_an_unknown_country_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_tone_plan("XX")
    assert str(err.value) == (
        "no call-progress tones are known for country 'XX'; known: AU, CA, DE, FR, GB, NL, US, default"
    )


def test_canada_uses_the_north_american_tones() -> None:
    assert load_tone_plan("ca").tones == load_tone_plan("US").tones


def test_tone_events_are_json_ready() -> None:
    assert ToneEvent("busy", 1.0, 2.5).to_json() == {"tone": "busy", "start_s": 1.0, "end_s": 2.5}


class WithoutToneEvents(LineBackend):
    """The simulated line with its own tone reports taken out, so only the detector can hear the busy tone."""

    def __init__(self, line: SimLine) -> None:
        self.line = line
        self.name = line.name
        self.sample_rate = line.sample_rate
        self.block_frames = line.block_frames

    def start(self) -> None:
        self.line.start()

    def health(self) -> BackendHealth:
        return self.line.health()

    def read_block(self) -> LineBlock | None:
        block = self.line.read_block()
        if block is None:
            return None
        events = tuple(e for e in block.events if not isinstance(e, ToneDetected))
        return LineBlock(block.t, events, block.audio)

    def set_hook(self, off_hook: bool) -> None:
        self.line.set_hook(off_hook)

    def play(self, audio: NDArray[np.int16]) -> None:
        self.line.play(audio)

    def close(self) -> None:
        self.line.close()


def test_the_detector_hears_the_busy_tone_that_ends_a_simulated_call(tmp_path: Path) -> None:
    identity = age.generate_identity()
    config = DeviceConfig(
        device=DeviceSettings(id="pi-1", state_dir=tmp_path),
        archive=ArchiveSettings(recipients=(age.recipient_of(identity),)),
    )
    key = load_or_create_signing_key(config.device.signing_key_path)
    line = SimLine.from_scenario("tone-hangup", start_time=1_790_000_000.0, seed=5)
    [busy] = [e for e in line.script_timeline() if e.kind == "busy-tone"]
    detector = CallProgressDetector("US")
    spool = Spool(config.device.spool_dir)
    with WithoutToneEvents(line) as backend:
        [rec_id] = DeviceService(
            config=config, backend=backend, spool=spool, signing_key=key, tone_detector=detector
        ).run()
    doc = age.decrypt_bytes(spool.get(rec_id).manifest.read_bytes(), [age.parse_identity(identity)])
    assert verify_manifest(doc, key.public_key()).hangup_cause == "remote-tone"
    [heard] = detector.events()
    assert heard.tone == "busy"
    assert heard.start_s == pytest.approx(busy.t_start, abs=0.06)
    assert busy.t_start < heard.end_s < busy.t_end


def test_a_minute_of_reorder_is_one_tone_reported_once() -> None:
    audio = generate_tone("reorder", country="US", sample_rate=RATE, seconds=60.0) + noise(
        np.random.default_rng(7), 60 * RATE, -35.0
    )
    detector = CallProgressDetector("US")
    assert [h.tone for h in stream(detector, audio, 100.0)] == ["reorder"]
    [span] = detector.events()
    assert (span.start_s, span.end_s) == pytest.approx((100.0, 159.75), abs=0.06)
