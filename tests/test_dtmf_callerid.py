"""DTMF caller ID: framed digits before the ring, read deeper into the noise than DTMF during a call."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware.dsp.callerid import DtmfCallerIdDecoder, LineCallerIdDecoder, decode_callerid
from firmware.dsp.dtmf import DATA, TALK, detect_dtmf, generate_dtmf
from firmware.line.speech import to_telephone_band

RATE = 8000


def line(
    digits: str,
    snr_db: float | None,
    seed: int,
    *,
    offset: float = 0.0,
    twist_db: float = 0.0,
    hum: tuple[float, float] | None = None,
) -> NDArray[np.int16]:
    """Caller ID at -16 dBFS per tone, off frequency by ``offset`` and tilted by ``twist_db``.

    The noise is white in 300-3400 Hz, ``snr_db`` below the message's mean power (pauses
    included, as the bench measures it). ``hum`` is (mains frequency, dB above each tone):
    a sine with its third and fifth harmonics at a third and a fifth of its amplitude.
    """
    rng = np.random.default_rng(seed)
    signal = generate_dtmf(digits, RATE, level_dbfs=-10.0, twist_db=twist_db, freq_offset=offset)
    x = np.concatenate([np.zeros(RATE // 2), signal, np.zeros(RATE)])
    if snr_db is not None:
        noise = to_telephone_band(rng.standard_normal(len(x)), RATE, RATE)
        noise *= np.sqrt(np.mean(signal**2) / 10 ** (snr_db / 10) / np.mean(noise**2))
        x = x + noise
    if hum is not None:
        mains_hz, above_db = hum
        amplitude = 10 ** ((-10.0 + above_db) / 20)
        phase = rng.uniform(0, 2 * np.pi)
        t = np.arange(len(x)) / RATE
        x = x + sum(amplitude / k * np.sin(2 * np.pi * k * mains_hz * t + k * phase) for k in (1, 3, 5))
    return np.round(x * 16384).astype(np.int16)


def numbers(audio: NDArray[np.int16]) -> list[str | None]:
    return [f.number for f in decode_callerid(audio, RATE, standard="dtmf") if f.caller_id is not None]


def random_number(seed: int) -> str:
    return "".join(str(d) for d in np.random.default_rng(1000 + seed).integers(0, 10, 10))


@pytest.mark.parametrize(
    ("digits", "number", "absence"),
    [
        ("A2125550142C", "2125550142", None),
        ("D0301234567C", "0301234567", None),
        ("A0612345678#", "0612345678", None),
        ("AB10C", None, "private"),
        ("AB00C", None, "unavailable"),
        ("0612345678#", "0612345678", None),
        ("D1#", None, "private"),
        ("D2#", None, "unavailable"),
        ("D3#", None, "unavailable"),
    ],
)
def test_every_dtmf_format_is_read(digits: str, number: str | None, absence: str | None) -> None:
    [found] = decode_callerid(line(digits, None, 0), RATE, standard="dtmf")
    assert (found.number, found.number_absence, found.checksum_ok) == (number, absence, True)
    assert found.caller_id is not None


@pytest.mark.parametrize("seed", range(5))
def test_at_3_db_the_data_limits_still_read_the_number_where_talk_limits_would_not(seed: int) -> None:
    audio = line("A2125550142C", 3.0, seed)
    [found] = decode_callerid(audio, RATE, standard="dtmf")
    assert found.number == "2125550142"
    assert "".join(d.digit for d in detect_dtmf(audio, RATE, limits=DATA)) == "A2125550142C"
    assert "".join(d.digit for d in detect_dtmf(audio, RATE, limits=TALK)) != "A2125550142C"


def test_digits_without_framing_are_not_a_caller_id() -> None:
    assert [f.caller_id for f in decode_callerid(line("2125550142", None, 0), RATE, standard="dtmf")] == []


def test_a_message_that_lost_its_opening_a_is_not_read_as_a_number() -> None:
    # What is left when noise swallows the "A" and the first digits of "A2125550142C".
    assert numbers(line("5550142C", None, 0)) == []


def test_streaming_gives_the_message_once_the_digits_have_stopped() -> None:
    audio = line("A2125550142C", 12.0, 1)
    decoder = DtmfCallerIdDecoder(RATE)
    found = [f for i in range(0, len(audio), 160) for f in decoder.feed(audio[i : i + 160])]
    assert [f.number for f in found] == ["2125550142"]
    assert decoder.flush() == []


def test_the_line_decoder_hears_fsk_and_dtmf_alike() -> None:
    from datetime import datetime  # noqa: PLC0415

    from firmware.dsp.callerid import encode_mdmf, fsk_callerid_audio  # noqa: PLC0415

    message = encode_mdmf(
        number="2125550142", name=None, number_absent=None, name_absent=None, when=datetime(2026, 1, 1)
    )
    fsk = (fsk_callerid_audio(message, standard="bell202", sample_rate=RATE) * 32767).astype(np.int16)
    audio = np.concatenate([fsk, np.zeros(RATE, np.int16), line("A0301234567C", None, 0)])
    decoder = LineCallerIdDecoder(RATE)
    found = [f for i in range(0, len(audio), 160) for f in decoder.feed(audio[i : i + 160])] + decoder.flush()
    assert [(f.standard, f.number) for f in found] == [("bell202-mdmf", "2125550142"), ("dtmf", "0301234567")]


def test_a_digit_lost_in_the_noise_spoils_the_message_instead_of_giving_a_wrong_number() -> None:
    # "A2125550142C" with the second "5" missing: its 70 ms tone and 70 ms pause are silence.
    head, tail = generate_dtmf("A2125", RATE), generate_dtmf("50142C", RATE)
    gap = np.zeros(int(0.14 * RATE))
    audio = (np.concatenate([np.zeros(RATE // 2), head, gap, tail, np.zeros(RATE)]) * 16384).astype(np.int16)
    found = decode_callerid(audio, RATE, standard="dtmf")
    assert [f.caller_id for f in found] == [None]
    assert found[0].checksum_ok is False


def test_several_digits_lost_in_the_noise_still_spoil_the_message() -> None:
    # "A2125550142C" with every other digit from the "1" to the "1" silent: most gaps are
    # doubled, so the doubled gap is the typical one and only the short ones give it away.
    slots = "A2_2_5_0_42C"
    silent = np.zeros(len(generate_dtmf("1", RATE)))
    pieces = [silent if slot == "_" else generate_dtmf(slot, RATE) for slot in slots]
    audio = np.concatenate([np.zeros(RATE // 2), *pieces, np.zeros(RATE)])
    assert numbers(np.round(audio * 16384).astype(np.int16)) == []


@pytest.mark.parametrize("seed", range(20))
def test_at_0_db_snr_the_number_is_still_read(seed: int) -> None:
    number = random_number(seed)
    assert numbers(line(f"A{number}C", 0.0, seed)) == [number]


@pytest.mark.parametrize("snr_db", [-3.0, -6.0])
def test_deep_in_the_noise_a_number_is_read_right_or_not_at_all(snr_db: float) -> None:
    wrong = []
    for seed in range(40):
        number = random_number(seed)
        wrong += [n for n in numbers(line(f"A{number}C", snr_db, 100 + seed)) if n != number]
    assert wrong == []


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("offset", [-0.015, 0.015, -0.02, 0.02])
def test_an_exchange_off_frequency_is_read(offset: float, seed: int) -> None:
    number = random_number(seed)
    assert numbers(line(f"A{number}C", 6.0, seed, offset=offset)) == [number]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("twist_db", [-6.0, 6.0])
def test_six_db_of_twist_either_way_is_read(twist_db: float, seed: int) -> None:
    number = random_number(seed)
    assert numbers(line(f"A{number}C", 6.0, seed, twist_db=twist_db)) == [number]


@pytest.mark.parametrize("twist_db", [-8.0, 8.0])
def test_eight_db_of_twist_as_danish_clip_requires_is_read(twist_db: float) -> None:
    number = random_number(0)
    assert numbers(line(f"A{number}C", 12.0, 0, twist_db=twist_db)) == [number]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("mains_hz", [50.0, 60.0])
@pytest.mark.parametrize("above_db", [0.0, 10.0])
def test_mains_hum_up_to_10_db_above_the_tones_does_not_hide_them(mains_hz: float, above_db: float, seed: int) -> None:
    number = random_number(seed)
    assert numbers(line(f"A{number}C", 12.0, seed, hum=(mains_hz, above_db))) == [number]
