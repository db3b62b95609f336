"""Caller ID message layer: SDMF/MDMF bytes built and read back, damage reported clearly."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.dsp.callerid import (
    CallerIdError,
    checksum,
    encode_mdmf,
    encode_sdmf,
    iter_parameters,
    parse_message,
    split_message,
)
from firmware.line.base import CallerId
from firmware.wire.errors import LinerecError

WHEN = datetime(2024, 3, 7, 14, 5)


def _framed(message_type: int, data: bytes) -> bytes:
    head = bytes((message_type, len(data))) + data
    return head + bytes((checksum(head),))


def test_mdmf_with_number_and_name_round_trips() -> None:
    raw = encode_mdmf(number="2125550142", name="ACME PLUMBING", number_absent=None, name_absent=None, when=WHEN)
    assert parse_message(raw) == CallerId(
        number="2125550142",
        name="ACME PLUMBING",
        number_absent=None,
        name_absent=None,
        standard="bell202-mdmf",
        raw=raw,
    )


def test_mdmf_bytes_follow_the_standard_layout() -> None:
    raw = encode_mdmf(number="5551234", name=None, number_absent=None, name_absent=None, when=WHEN)
    assert raw[0] == 0x80
    assert raw[1] == len(raw) - 3
    assert raw[2:12] == b"\x01\x0803071405"
    assert raw[12:21] == b"\x02\x075551234"
    assert sum(raw) % 256 == 0


def test_mdmf_withheld_number_and_name_carry_their_reasons() -> None:
    raw = encode_mdmf(number=None, name=None, number_absent="P", name_absent="P", when=WHEN)
    caller = parse_message(raw)
    assert (caller.number, caller.number_absent) == (None, "P")
    assert (caller.name, caller.name_absent) == (None, "P")
    assert b"\x04\x01P" in raw
    assert b"\x08\x01P" in raw


def test_mdmf_unavailable_number_with_a_name() -> None:
    raw = encode_mdmf(number=None, name="J SMITH", number_absent="O", name_absent=None, when=WHEN)
    caller = parse_message(raw)
    assert (caller.number, caller.number_absent, caller.name) == (None, "O", "J SMITH")


def test_unknown_mdmf_parameters_are_skipped() -> None:
    # 0x11 (call type) and 0x06 (long distance) before and after the number.
    raw = encode_mdmf(
        number="2125550142",
        name="ACME",
        number_absent=None,
        name_absent=None,
        when=WHEN,
        extra=[(0x11, b"\x01"), (0x06, b"L"), (0xEE, b"")],
    )
    caller = parse_message(raw)
    assert (caller.number, caller.name) == ("2125550142", "ACME")
    types = [param_type for param_type, _ in iter_parameters(split_message(raw)[1])]
    assert types == [0x01, 0x02, 0x07, 0x11, 0x06, 0xEE]


def test_unknown_parameter_first_is_skipped() -> None:
    data = b"\x11\x01\x01" + b"\x02\x03555"
    caller = parse_message(_framed(0x80, data))
    assert caller.number == "555"


def test_mdmf_number_keeps_what_the_wire_says() -> None:
    data = b"\x02\x0c+1 212 555 0"
    assert parse_message(_framed(0x80, data)).number == "+1 212 555 0"


def test_sdmf_number_round_trips() -> None:
    raw = encode_sdmf(number="2125550142", number_absent=None, when=WHEN)
    assert raw[:2] == bytes((0x04, 18))
    assert raw[2:10] == b"03071405"
    caller = parse_message(raw)
    assert (caller.number, caller.number_absent, caller.name) == ("2125550142", None, None)
    assert caller.standard == "bell202-sdmf"


@pytest.mark.parametrize("reason", ["O", "P"])
def test_sdmf_absent_number_round_trips(reason: str) -> None:
    caller = parse_message(encode_sdmf(number=None, number_absent=reason, when=WHEN))
    assert (caller.number, caller.number_absent) == (None, reason)


def test_standard_can_be_named_by_the_demodulator() -> None:
    raw = encode_mdmf(number="0123", name=None, number_absent=None, name_absent=None, when=WHEN)
    assert parse_message(raw, standard="etsi-v23").standard == "etsi-v23"


def test_to_json_gives_raw_as_hex() -> None:
    raw = encode_sdmf(number=None, number_absent="P", when=WHEN)
    assert parse_message(raw).to_json() == {
        "number": None,
        "name": None,
        "number_absent": "P",
        "name_absent": None,
        "standard": "bell202-sdmf",
        "raw": raw.hex(),
    }


# --- damaged messages ------------------------------------------------------------------


def test_empty_message_is_refused() -> None:
    with pytest.raises(CallerIdError, match=r"^caller ID message is empty$"):
        parse_message(b"")


def test_too_short_message_is_truncated() -> None:
    with pytest.raises(CallerIdError) as info:
        parse_message(b"\x80\x05")
    assert str(info.value) == (
        "caller ID message of 2 bytes is truncated: it needs at least a type, a length and a checksum byte"
    )


def test_message_cut_short_is_truncated() -> None:
    raw = encode_mdmf(number="2125550142", name=None, number_absent=None, name_absent=None, when=WHEN)
    with pytest.raises(CallerIdError) as info:
        parse_message(raw[:-5])
    assert str(info.value) == ("caller ID message is truncated: it declares 22 data bytes but only 17 follow")


def test_trailing_bytes_are_a_bad_length() -> None:
    raw = encode_mdmf(number="2125550142", name=None, number_absent=None, name_absent=None, when=WHEN)
    with pytest.raises(CallerIdError) as info:
        parse_message(raw + b"\x00\x00")
    assert str(info.value) == ("caller ID message has a bad length: it declares 22 data bytes but 24 follow")


def test_flipped_bit_fails_the_checksum() -> None:
    raw = bytearray(encode_mdmf(number="2125550142", name=None, number_absent=None, name_absent=None, when=WHEN))
    good = raw[-1]
    raw[15] ^= 0x01  # the digit "1" becomes "0"
    with pytest.raises(CallerIdError) as info:
        parse_message(bytes(raw))
    assert str(info.value) == (
        f"caller ID message checksum 0x{good:02x} does not match its contents (expected 0x{(good + 1) & 0xFF:02x})"
    )


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(CallerIdError) as info:
        parse_message(_framed(0x42, b"abc"))
    assert str(info.value) == ("caller ID message type 0x42 is unknown (expected 0x04 SDMF or 0x80 MDMF)")


def test_message_waiting_is_not_caller_id() -> None:
    with pytest.raises(CallerIdError, match="0x82 is a message-waiting indication"):
        parse_message(_framed(0x82, b"\x0b\x01\xff"))


def test_parameter_running_past_the_end_is_a_bad_length() -> None:
    with pytest.raises(CallerIdError) as info:
        parse_message(_framed(0x80, b"\x02\x0a555"))
    assert str(info.value) == (
        "caller ID parameter 0x02 at offset 0 has a bad length: it declares 10 bytes but only 3 remain"
    )


def test_parameter_without_length_byte_is_truncated() -> None:
    with pytest.raises(CallerIdError, match="parameter at offset 3 is truncated"):
        parse_message(_framed(0x80, b"\x02\x015\x07"))


def test_sdmf_shorter_than_its_date_is_a_bad_length() -> None:
    with pytest.raises(CallerIdError, match="cannot hold the 8-digit date"):
        parse_message(_framed(0x04, b"0307"))


def test_caller_id_error_is_a_linerec_value_error() -> None:
    assert issubclass(CallerIdError, LinerecError)
    assert issubclass(CallerIdError, ValueError)


# --- building refuses what the wire cannot carry --------------------------------------


def test_encoder_refuses_non_digit_numbers() -> None:
    with pytest.raises(CallerIdError) as info:
        encode_mdmf(number="+1 212", name=None, number_absent=None, name_absent=None, when=WHEN)
    assert str(info.value) == "caller ID number '+1 212' must be digits only, like '2125550142'"


def test_encoder_refuses_unknown_absence_reason() -> None:
    with pytest.raises(CallerIdError, match=r"reason 'X' must be 'O' \(unavailable\) or 'P'"):
        encode_mdmf(number=None, name=None, number_absent="X", name_absent=None, when=WHEN)


def test_encoder_refuses_non_ascii_name() -> None:
    with pytest.raises(CallerIdError, match="has characters outside ASCII"):
        encode_mdmf(number=None, name="CAFÉ", number_absent="O", name_absent=None, when=WHEN)


def test_sdmf_needs_a_number_or_a_reason() -> None:
    with pytest.raises(CallerIdError, match="needs a number or a number absent reason"):
        encode_sdmf(number=None, number_absent=None, when=WHEN)


# --- properties -------------------------------------------------------------------------

_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=15)
_numbers = st.text(alphabet="0123456789", min_size=1, max_size=15)


@given(
    number=st.none() | _numbers,
    name=st.none() | _names,
    number_absent=st.sampled_from(["O", "P"]),
    name_absent=st.sampled_from(["O", "P"]),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
)
def test_any_mdmf_round_trips(
    number: str | None, name: str | None, number_absent: str, name_absent: str, when: datetime
) -> None:
    raw = encode_mdmf(number=number, name=name, number_absent=number_absent, name_absent=name_absent, when=when)
    caller = parse_message(raw)
    assert caller.number == number
    assert caller.name == name
    assert caller.number_absent == (None if number is not None else number_absent)
    assert caller.name_absent == (None if name is not None else name_absent)
    assert caller.raw == raw


@given(st.binary(max_size=300))
def test_hostile_bytes_only_raise_caller_id_error(raw: bytes) -> None:
    try:
        caller = parse_message(raw)
    except CallerIdError as exc:
        assert str(exc)
        assert "\n" not in str(exc)
    else:
        assert caller.raw == raw


@given(st.integers(0, 255), st.binary(max_size=255))
def test_well_framed_hostile_data_only_raises_caller_id_error(message_type: int, data: bytes) -> None:
    try:
        caller = parse_message(_framed(message_type, data))
    except CallerIdError as exc:
        assert "\n" not in str(exc)
    else:
        assert message_type in (0x04, 0x80)
        assert caller.standard in ("bell202-sdmf", "bell202-mdmf")
