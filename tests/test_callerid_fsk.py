"""FSK caller ID: bursts made here are read back through line impairments, damage is reported, noise is not.

Noise levels are given as SNR: the burst's power over the noise's power, with the
noise (white, seeded) limited to the 300-3400 Hz telephone band, so all of it
lands where a line would carry it.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from firmware.dsp.callerid import (
    CallerIdDecoder,
    CallerIdError,
    DecodedCallerId,
    checksum,
    decode_callerid,
    encode_mdmf,
    encode_sdmf,
    finding_from_bytes,
    fsk_callerid_audio,
    repair_one_bit,
)
from firmware.dsp.dtmf import generate_dtmf
from firmware.dsp.fsk import FskError, fsk_burst
from firmware.line.speech import SynthVoice, to_telephone_band

WHEN = datetime(2024, 3, 7, 14, 5)
MDMF = encode_mdmf(number="2125550142", name="ACME PLUMBING", number_absent=None, name_absent=None, when=WHEN)
SDMF = encode_sdmf(number="6175550199", number_absent=None, when=WHEN)
STANDARD_NAME = {"bell202": "bell202-mdmf", "v23": "etsi-v23"}


def _framed(message_type: int, data: bytes) -> bytes:
    head = bytes((message_type, len(data))) + data
    return head + bytes((checksum(head),))


def _on_line(message: bytes, standard: str = "bell202", rate: int = 8000, **options: float) -> NDArray[np.float64]:
    """A burst with half a second of silence either side, as a line would carry it between rings."""
    quiet = np.zeros(rate // 2)
    return np.concatenate([quiet, fsk_callerid_audio(message, standard=standard, sample_rate=rate, **options), quiet])


def _noisy(x: NDArray[np.float64], rate: int, snr_db: float, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    signal_power = float(np.mean(x[np.abs(x) > 0] ** 2))
    noise = to_telephone_band(rng.standard_normal(len(x)), rate, rate)
    noise *= np.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / np.mean(noise**2))
    return x + noise


def _only(found: list[DecodedCallerId]) -> DecodedCallerId:
    assert len(found) == 1, found
    return found[0]


# --- messages round trip -----------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 11025])
@pytest.mark.parametrize("standard", ["bell202", "v23"])
def test_mdmf_number_name_and_date_are_read_back(standard: str, rate: int) -> None:
    found = _only(decode_callerid(_on_line(MDMF, standard, rate), rate))
    assert found.checksum_ok
    assert found.standard == STANDARD_NAME[standard]
    assert (found.number, found.name, found.time) == ("2125550142", "ACME PLUMBING", "03071405")
    assert found.caller_id is not None
    assert found.caller_id.number == "2125550142"
    assert found.raw == MDMF


@pytest.mark.parametrize("rate", [8000, 16000])
def test_sdmf_number_and_date_are_read_back(rate: int) -> None:
    found = _only(decode_callerid(_on_line(SDMF, "bell202", rate), rate))
    assert (found.standard, found.number, found.name, found.time) == ("bell202-sdmf", "6175550199", None, "03071405")
    assert found.checksum_ok


@pytest.mark.parametrize(("reason", "meaning"), [("O", "unavailable"), ("P", "private")])
def test_absence_reasons_are_named(reason: str, meaning: str) -> None:
    raw = encode_mdmf(number=None, name=None, number_absent=reason, name_absent=reason, when=WHEN)
    found = _only(decode_callerid(_on_line(raw), 8000))
    assert (found.number, found.number_absence, found.name_absence) == (None, meaning, meaning)
    assert found.caller_id is not None
    assert found.caller_id.number_absent == reason


def test_sdmf_private_number_is_named() -> None:
    raw = encode_sdmf(number=None, number_absent="P", when=WHEN)
    assert _only(decode_callerid(_on_line(raw), 8000)).number_absence == "private"


def test_long_distance_and_unknown_call_type_parameters_are_skipped() -> None:
    raw = encode_mdmf(
        number="4415550100",
        name="J SMITH",
        number_absent=None,
        name_absent=None,
        when=WHEN,
        extra=[(0x06, b"L"), (0x11, b"\x01")],
    )
    found = _only(decode_callerid(_on_line(raw, "v23"), 8000))
    assert (found.standard, found.number, found.name, found.checksum_ok) == ("etsi-v23", "4415550100", "J SMITH", True)


@pytest.mark.parametrize(
    ("raw", "waiting"),
    [
        (_framed(0x06, b"BBB"), True),
        (_framed(0x06, b"ooo"), False),
        (_framed(0x82, b"\x01\x0803071405\x0b\x01\xff"), True),
        (_framed(0x82, b"\x0b\x01\x00"), False),
    ],
)
def test_message_waiting_is_reported_without_a_caller(raw: bytes, waiting: bool) -> None:
    found = _only(decode_callerid(_on_line(raw), 8000))
    assert (found.message_waiting, found.caller_id, found.checksum_ok) == (waiting, None, True)


def test_positions_in_the_audio_are_reported() -> None:
    found = _only(decode_callerid(_on_line(MDMF), 8000))
    # Silence 0.5 s + 0.05 s, seizure 250 ms, mark 150 ms, 40 bytes of 10 bits.
    assert found.start_s == pytest.approx(0.55, abs=0.02)
    assert found.end_s == pytest.approx(0.55 + (480 + 400) / 1200, abs=0.005)
    assert set(found.to_json()) == {
        "standard",
        "number",
        "name",
        "time",
        "number_absence",
        "name_absence",
        "message_waiting",
        "checksum_ok",
        "start_s",
        "end_s",
    }


@pytest.mark.parametrize("standard", ["bell202", "v23"])
def test_every_message_on_one_seizure_is_read(standard: str) -> None:
    waiting = _framed(0x82, b"\x0b\x01\xff")
    back_to_back = _on_line(MDMF + waiting, standard)
    quiet = np.zeros(4000)
    # A pause of twenty mark bits between the messages (the tone restarts, as from another sender).
    with_mark = np.concatenate(
        [
            quiet,
            fsk_burst(MDMF, standard=standard, sample_rate=8000),
            fsk_burst(waiting, standard=standard, sample_rate=8000, seizure_bits=0, mark_bits=20),
            quiet,
        ]
    )
    for x in (back_to_back, with_mark):
        found = decode_callerid(x, 8000)
        assert [(f.raw, f.checksum_ok) for f in found] == [(MDMF, True), (waiting, True)]
        assert (found[0].number, found[1].message_waiting) == ("2125550142", True)
        assert found[0].end_s <= found[1].start_s < found[1].end_s


def test_explicit_standard_reads_only_its_own_burst() -> None:
    assert _only(decode_callerid(_on_line(MDMF, "v23"), 8000, standard="v23")).standard == "etsi-v23"
    assert _only(decode_callerid(_on_line(MDMF), 8000, standard="bell202")).number == "2125550142"


# --- impairments ------------------------------------------------------------------------


@pytest.mark.parametrize("standard", ["bell202", "v23"])
@pytest.mark.parametrize("offset", [-0.02, 0.02])
@pytest.mark.parametrize("twist_db", [-6.0, 0.0, 6.0])
def test_frequency_offset_and_twist_are_tolerated(standard: str, offset: float, twist_db: float) -> None:
    for rate in (8000, 16000):
        found = decode_callerid(_on_line(MDMF, standard, rate, freq_offset=offset, twist_db=twist_db), rate)
        assert [(f.standard, f.raw) for f in found] == [(STANDARD_NAME[standard], MDMF)]


@pytest.mark.parametrize("hum_hz", [50.0, 60.0])
def test_hum_and_band_limiting_are_tolerated(hum_hz: float) -> None:
    x = _on_line(MDMF, level_dbfs=-20.0)
    hum = 10.0 ** (-20.0 / 20.0) * np.sin(2 * np.pi * hum_hz * np.arange(len(x)) / 8000)
    line = to_telephone_band(x, 8000, 8000) + hum
    assert _only(decode_callerid(line, 8000)).number == "2125550142"


def test_short_preamble_of_call_waiting_is_read() -> None:
    x = _on_line(MDMF, seizure_bits=0, mark_bits=80)
    assert _only(decode_callerid(x, 8000)).checksum_ok


@pytest.mark.parametrize("standard", ["bell202", "v23"])
@pytest.mark.parametrize(("snr_db", "at_least"), [(20.0, 10), (12.0, 10), (6.0, 5)])
def test_noise_is_tolerated(standard: str, snr_db: float, at_least: int) -> None:
    good = 0
    for seed in range(10):
        found = decode_callerid(_noisy(_on_line(MDMF, standard), 8000, snr_db, seed), 8000)
        # Whatever noise does, a message with a good checksum is the one sent.
        assert all(f.raw == MDMF for f in found if f.checksum_ok)
        good += any(f.checksum_ok for f in found)
    assert good >= at_least


@pytest.mark.parametrize(
    ("standard", "message"), [("bell202", SDMF), ("bell202", MDMF), ("v23", MDMF)], ids=["sdmf", "mdmf", "v23-mdmf"]
)
def test_at_6_db_nearly_every_burst_is_read_and_none_wrongly(standard: str, message: bytes) -> None:
    read = 0
    for seed in range(100, 140):
        found = decode_callerid(_noisy(_on_line(message, standard), 8000, 6.0, seed), 8000)
        assert all(f.raw == message for f in found if f.checksum_ok)
        read += any(f.checksum_ok for f in found)
    assert read >= 39


@pytest.mark.parametrize("snr_db", [0.0, 2.0, 4.0])
def test_in_loud_noise_a_message_whose_sum_checks_is_still_the_one_sent(snr_db: float) -> None:
    # Here bits are misread often enough that some pairs cancel in the one-byte sum.
    for seed in range(20):
        for message in (SDMF, MDMF):
            found = decode_callerid(_noisy(_on_line(message), 8000, snr_db, seed), 8000)
            assert all(f.raw == message for f in found if f.checksum_ok)


def test_misread_bits_that_keep_the_sum_are_not_believed_in_loud_noise() -> None:
    # This seed misreads bits that, repaired or not, leave the sum right on a wrong
    # message: taking soft decisions at face value at 2 dB would report it as a caller.
    found = _only(decode_callerid(_noisy(_on_line(SDMF), 8000, 2.0, 309), 8000))
    assert (found.checksum_ok, found.caller_id, found.number) == (False, None, None)


@pytest.mark.parametrize("standard", ["bell202", "v23"])
@pytest.mark.parametrize("offset", [-0.02, 0.02])
def test_a_dropout_in_the_mark_run_does_not_put_the_frequency_wrong(standard: str, offset: float) -> None:
    x = _on_line(MDMF, standard, freq_offset=offset)
    # Ten bits of silence, forty bits into the mark run (the seizure is 300 bits).
    start = 4000 + 400 + round(340 * 8000 / 1200)
    x[start : start + round(10 * 8000 / 1200)] = 0.0
    for seed in range(5):
        found = decode_callerid(_noisy(x, 8000, 12.0, seed), 8000)
        assert [(f.raw, f.checksum_ok) for f in found] == [(MDMF, True)]


@pytest.mark.parametrize("standard", ["bell202", "v23"])
@pytest.mark.parametrize(
    ("options", "snr_db"),
    [
        ({"freq_offset": 0.02}, 6.0),
        ({"freq_offset": -0.02}, 6.0),
        ({"twist_db": 6.0}, 12.0),
        ({"twist_db": -6.0, "freq_offset": 0.02}, 12.0),
    ],
)
def test_offset_and_twist_are_tolerated_in_noise(standard: str, options: dict[str, float], snr_db: float) -> None:
    read = 0
    for seed in range(10):
        found = decode_callerid(_noisy(_on_line(MDMF, standard, 8000, **options), 8000, snr_db, seed), 8000)
        assert all(f.raw == MDMF for f in found if f.checksum_ok)
        read += any(f.checksum_ok for f in found)
    assert read == 10


@pytest.mark.parametrize("standard", ["bell202", "v23"])
def test_hum_and_band_limiting_are_tolerated_in_noise(standard: str) -> None:
    read = 0
    for seed in range(10):
        x = to_telephone_band(_on_line(MDMF, standard), 8000, 8000)
        hum = 0.1 * np.sin(2 * np.pi * 50.0 * np.arange(len(x)) / 8000 + seed)
        found = decode_callerid(_noisy(x, 8000, 6.0, seed) + hum, 8000)
        assert all(f.raw == MDMF for f in found if f.checksum_ok)
        read += any(f.checksum_ok for f in found)
    assert read == 10


def test_integer_samples_are_read_like_floats() -> None:
    x = np.rint(_on_line(MDMF) * 32767).astype(np.int16)
    assert _only(decode_callerid(x, 8000)).number == "2125550142"


# --- streaming --------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 7, 160, 1021, 4099])
def test_streaming_in_any_block_size_equals_whole_file(block: int) -> None:
    x = np.concatenate([_on_line(MDMF), _noisy(_on_line(SDMF, "bell202"), 8000, 15.0, 3), _on_line(MDMF, "v23")])
    whole = decode_callerid(x, 8000)
    decoder = CallerIdDecoder(8000)
    streamed: list[DecodedCallerId] = []
    for i in range(0, len(x), block):
        streamed += decoder.feed(x[i : i + block])
    streamed += decoder.flush()
    assert streamed == whole
    assert [f.standard for f in whole] == ["bell202-mdmf", "bell202-sdmf", "etsi-v23"]


def test_streaming_memory_stays_bounded_over_a_minute_of_noise() -> None:
    decoder = CallerIdDecoder(8000)
    rng = np.random.default_rng(5)
    for _ in range(60):
        decoder.feed(to_telephone_band(rng.standard_normal(8000), 8000, 8000) * 0.05)
    assert len(decoder._buffer) < 8000


def test_reset_forgets_a_half_fed_burst() -> None:
    x = _on_line(MDMF)
    decoder = CallerIdDecoder(8000)
    decoder.feed(x[: len(x) // 2])
    decoder.reset()
    assert decoder.feed(x) + decoder.flush() == decode_callerid(x, 8000)


# --- damage ----------------------------------------------------------------------------


def _damaged_is_reported(x: NDArray[np.float64]) -> DecodedCallerId:
    found = _only(decode_callerid(x, 8000))
    assert not found.checksum_ok
    assert found.caller_id is None
    assert found.number is None
    return found


def test_bad_checksum_gives_no_caller() -> None:
    _damaged_is_reported(_on_line(MDMF[:-1] + bytes(((MDMF[-1] + 1) & 0xFF,))))


def test_truncated_burst_gives_no_caller() -> None:
    x = _on_line(MDMF)
    cut = int((0.55 + (480 + 200) / 1200) * 8000)
    _damaged_is_reported(np.concatenate([x[:cut], np.zeros(4000)]))


def test_length_beyond_the_data_gives_no_caller() -> None:
    lying = bytes((MDMF[0], MDMF[1] + 20)) + MDMF[2:-1]
    _damaged_is_reported(_on_line(lying + bytes((checksum(lying),))))


def _soft(raw: bytes, doubtful: dict[tuple[int, int], float]) -> list[list[float]]:
    return [[doubtful.get((i, b), 1.0) for b in range(8)] for i in range(len(raw))]


def test_one_doubtful_wrong_bit_is_put_right() -> None:
    damaged = bytearray(MDMF)
    damaged[20] ^= 1 << 2
    assert repair_one_bit(bytes(damaged), _soft(MDMF, {(20, 2): 0.1})) == MDMF


def test_a_wrong_bit_is_left_alone_when_it_was_read_with_confidence() -> None:
    damaged = bytearray(MDMF)
    damaged[20] ^= 1 << 2
    assert repair_one_bit(bytes(damaged), _soft(MDMF, {})) is None


def test_two_wrong_bits_are_not_guessed() -> None:
    damaged = bytearray(MDMF)
    damaged[20] ^= 1 << 2
    damaged[25] ^= 1 << 5
    assert repair_one_bit(bytes(damaged), _soft(MDMF, {(20, 2): 0.1, (25, 5): 0.1})) is None


def test_a_burst_too_noisy_to_trust_gives_no_caller_even_if_its_sum_checks() -> None:
    found = finding_from_bytes(MDMF, modulation="bell202", start_s=0.0, end_s=1.0, trusted=False)
    assert (found.caller_id, found.number, found.checksum_ok) == (None, None, False)


# --- no false messages ------------------------------------------------------------------


def test_a_minute_of_noise_gives_no_messages() -> None:
    rng = np.random.default_rng(11)
    noise = to_telephone_band(rng.standard_normal(60 * 8000), 8000, 8000) * 0.1
    assert decode_callerid(noise, 8000) == []


def test_speech_gives_no_messages() -> None:
    voice = SynthVoice(seed=4)
    text = "hello this is a long message about the plumbing and the weather " * 6
    speech = np.concatenate([voice.say(text, "caller", 8000), voice.say(text, "callee", 8000)])
    assert len(speech) > 30 * 8000
    assert decode_callerid(speech, 8000) == []


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=40), st.sampled_from(["bell202", "v23"]))
def test_any_bytes_as_a_burst_never_raise(data: bytes, standard: str) -> None:
    found = decode_callerid(_on_line(data, standard), 8000)
    assert all(isinstance(f, DecodedCallerId) for f in found)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=4000), st.sampled_from([8000, 16000, 11025]))
def test_any_audio_never_raises(samples: list[int], rate: int) -> None:
    x = np.array(samples, dtype=np.int16)
    decoder = CallerIdDecoder(rate)
    assert isinstance(decoder.feed(x) + decoder.flush(), list)


# --- DTMF caller ID ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "number", "absence"),
    [("A2125550142C", "2125550142", None), ("D4415550100#", "4415550100", None), ("AB10C", None, "private")],
)
def test_dtmf_caller_id_is_read(digits: str, number: str | None, absence: str | None) -> None:
    x = np.concatenate([np.zeros(4000), generate_dtmf(digits, 8000), np.zeros(4000)])
    found = _only(decode_callerid(x, 8000, standard="dtmf"))
    assert (found.standard, found.number, found.number_absence, found.checksum_ok) == ("dtmf", number, absence, True)
    assert found.caller_id is not None


def test_dtmf_without_its_end_digit_gives_no_caller() -> None:
    x = np.concatenate([np.zeros(4000), generate_dtmf("A21255501", 8000), np.zeros(4000)])
    found = _only(decode_callerid(x, 8000, standard="dtmf"))
    assert (found.caller_id, found.checksum_ok) == (None, False)


# --- settings, speed and other decoders -------------------------------------------------


def test_unknown_standard_is_refused_with_the_choices() -> None:
    with pytest.raises(CallerIdError, match=r"caller ID standard 'bell' is not known; expected one of auto, bell"):
        decode_callerid(np.zeros(10), 8000, standard="bell")
    with pytest.raises(FskError, match="FSK standard 'v22' is not known"):
        fsk_burst(b"\x80", standard="v22", sample_rate=8000)


def test_a_burst_at_the_start_of_a_minute_of_line_noise_is_found_once() -> None:
    # Speed is measured by bench/dsp.py; this pins down that a long input is read whole.
    x = _noisy(np.concatenate([_on_line(MDMF), np.zeros(58 * 8000)]), 8000, 20.0, 1)
    found = decode_callerid(x, 8000)
    assert [f.number for f in found] == ["2125550142"]


def _peer_output(args: list[str]) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False).stdout


@pytest.mark.skipif(shutil.which("minimodem") is None, reason="minimodem is not installed")
@pytest.mark.parametrize(("standard", "tones"), [("bell202", []), ("v23", ["-M", "1300", "-S", "2100"])])
def test_minimodem_reads_our_burst(tmp_path: Path, standard: str, tones: list[str]) -> None:
    wav = tmp_path / "mdmf.wav"
    sf.write(wav, _on_line(MDMF, standard), 8000, subtype="PCM_16")
    out = _peer_output(["minimodem", "--rx", "-q", "-f", str(wav), *tones, "callerid"])
    assert "Phone: 212-555-0142" in out
    assert "Name:  ACME PLUMBING" in out


@pytest.mark.skipif(shutil.which("multimon-ng") is None, reason="multimon-ng is not installed")
def test_multimon_ng_reads_our_bell202_burst(tmp_path: Path) -> None:
    # multimon-ng reads WAV through a sox pipe and then misses the burst in about one
    # run of three, so it gets its own raw format: 16-bit samples at 22050 Hz.
    raw = tmp_path / "mdmf.raw"
    np.rint(_on_line(MDMF, rate=22050) * 32767).astype("<i2").tofile(raw)
    out = _peer_output(["multimon-ng", "-q", "-c", "-a", "CLIPFSK", "-t", "raw", str(raw)])
    assert "CID=2125550142 CNT=ACME PLUMBING" in out
