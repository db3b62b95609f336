"""DTMF caller ID: framed digits before the ring, read deeper into the noise than DTMF during a call."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.dsp.callerid import DtmfCallerIdDecoder, LineCallerIdDecoder, decode_callerid
from firmware.dsp.dtmf import DATA, TALK, detect_dtmf, generate_dtmf
from firmware.line.speech import to_telephone_band

RATE = 8000


def line(digits: str, snr_db: float | None, seed: int) -> np.ndarray:  # type: ignore[type-arg]
    signal = generate_dtmf(digits, RATE, level_dbfs=-10.0)
    x = np.concatenate([np.zeros(RATE // 2), signal, np.zeros(RATE)])
    if snr_db is not None:
        noise = to_telephone_band(np.random.default_rng(seed).standard_normal(len(x)), RATE, RATE)
        noise *= np.sqrt(np.mean(signal**2) / 10 ** (snr_db / 10) / np.mean(noise**2))
        x = x + noise
    return (x * 16384).astype(np.int16)


@pytest.mark.parametrize(
    ("digits", "number", "absence"),
    [
        ("A2125550142C", "2125550142", None),
        ("D0301234567C", "0301234567", None),
        ("A0612345678#", "0612345678", None),
        ("AB10C", None, "private"),
        ("AB00C", None, "unavailable"),
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
