"""Caller ID message layer: build and read the bytes the exchange sends between rings.

This is the message layer shared by every on-the-wire form that carries
Bell/Telcordia-style framing (Bell 202 FSK in North America, V.23 FSK under
ETSI EN 300 659 and BT SIN 227). A message is::

    type (1 byte) | length (1 byte) | data (length bytes) | checksum (1 byte)

and all its bytes sum to zero modulo 256. SDMF (type 0x04) data is eight ASCII
digits MMDDHHMM followed by the number, or a single 'O' / 'P' when the number is
unavailable / private. MDMF (type 0x80) data is a run of parameters, each
``type | length | value``; unknown parameters are skipped.

The demodulators (``firmware.dsp.fsk``) sit in front of this layer and hand it the
bytes; ``firmware.dsp.callerid`` joins the two and re-exports this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from firmware.line.base import CallerId
from firmware.wire.errors import LinerecError

__all__ = [
    "ABSENCE_REASONS",
    "CallerIdError",
    "MessageType",
    "Param",
    "checksum",
    "encode_mdmf",
    "encode_sdmf",
    "iter_parameters",
    "message_waiting",
    "parse_message",
    "split_message",
]


class CallerIdError(LinerecError, ValueError):
    """Bytes offered as a caller ID message are not a valid one."""


class MessageType:
    """Message type bytes (the first byte of a message)."""

    SDMF_CALLER_ID = 0x04
    SDMF_MESSAGE_WAITING = 0x06
    MDMF_CALLER_ID = 0x80
    MDMF_MESSAGE_WAITING = 0x82


class Param:
    """MDMF parameter type bytes."""

    DATE_TIME = 0x01
    NUMBER = 0x02
    DIALLED_NUMBER = 0x03
    NUMBER_ABSENT = 0x04
    LONG_DISTANCE = 0x06
    NAME = 0x07
    NAME_ABSENT = 0x08
    VISUAL_INDICATOR = 0x0B


# Why a number or name is missing: unavailable (out of area) or private (withheld).
ABSENCE_REASONS = ("O", "P")

_STANDARD_BY_TYPE = {
    MessageType.SDMF_CALLER_ID: "bell202-sdmf",
    MessageType.MDMF_CALLER_ID: "bell202-mdmf",
}
_MESSAGE_WAITING_TYPES = (MessageType.SDMF_MESSAGE_WAITING, MessageType.MDMF_MESSAGE_WAITING)
_DATE_LEN = 8
_MAX_FIELD = 255


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to zero modulo 256."""
    return -sum(data) & 0xFF


# --- building messages ---------------------------------------------------------------


def _frame(message_type: int, data: bytes) -> bytes:
    if len(data) > _MAX_FIELD:
        msg = f"caller ID message data of {len(data)} bytes is longer than {_MAX_FIELD}"
        raise CallerIdError(msg)
    head = bytes((message_type, len(data))) + data
    return head + bytes((checksum(head),))


def _date_field(when: datetime) -> bytes:
    return f"{when:%m%d%H%M}".encode("ascii")


def _ascii(what: str, value: str) -> bytes:
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        msg = f"caller ID {what} {value!r} has characters outside ASCII"
        raise CallerIdError(msg) from None
    if not 0 < len(data) <= _MAX_FIELD:
        msg = f"caller ID {what} {value!r} must be 1 to {_MAX_FIELD} characters long"
        raise CallerIdError(msg)
    return data


def _digits(value: str) -> bytes:
    if not value.isascii() or not value.isdigit():
        msg = f"caller ID number {value!r} must be digits only, like '2125550142'"
        raise CallerIdError(msg)
    return _ascii("number", value)


def _reason(what: str, value: str) -> bytes:
    if value not in ABSENCE_REASONS:
        msg = f"caller ID {what} reason {value!r} must be 'O' (unavailable) or 'P' (private)"
        raise CallerIdError(msg)
    return value.encode("ascii")


def _param(param_type: int, value: bytes) -> bytes:
    return bytes((param_type, len(value))) + value


def encode_mdmf(
    *,
    number: str | None,
    name: str | None,
    number_absent: str | None,
    name_absent: str | None,
    when: datetime,
    extra: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """An MDMF caller ID message (type 0x80) with its checksum.

    ``number`` wins over ``number_absent`` and ``name`` over ``name_absent``; a
    field whose value and absence reason are both None is left out. ``extra``
    parameters are appended as given (type, value), for other parameters such as
    0x06 long distance or 0x11 call type.
    """
    data = _param(Param.DATE_TIME, _date_field(when))
    if number is not None:
        data += _param(Param.NUMBER, _digits(number))
    elif number_absent is not None:
        data += _param(Param.NUMBER_ABSENT, _reason("number absent", number_absent))
    if name is not None:
        data += _param(Param.NAME, _ascii("name", name))
    elif name_absent is not None:
        data += _param(Param.NAME_ABSENT, _reason("name absent", name_absent))
    for param_type, value in extra:
        if not 0 <= param_type <= 0xFF or len(value) > _MAX_FIELD:
            msg = f"caller ID parameter 0x{param_type:02x} of {len(value)} bytes does not fit"
            raise CallerIdError(msg)
        data += _param(param_type, value)
    return _frame(MessageType.MDMF_CALLER_ID, data)


def encode_sdmf(*, number: str | None, number_absent: str | None, when: datetime) -> bytes:
    """An SDMF caller ID message (type 0x04): date, then the number or its absence reason."""
    if number is not None:
        body = _digits(number)
    elif number_absent is not None:
        body = _reason("number absent", number_absent)
    else:
        msg = "an SDMF caller ID message needs a number or a number absent reason ('O' or 'P')"
        raise CallerIdError(msg)
    return _frame(MessageType.SDMF_CALLER_ID, _date_field(when) + body)


# --- reading messages ----------------------------------------------------------------


def split_message(raw: bytes) -> tuple[int, bytes]:
    """Check a message's framing and checksum; return its type and data."""
    if not raw:
        msg = "caller ID message is empty"
        raise CallerIdError(msg)
    if len(raw) < 3:
        msg = (
            f"caller ID message of {len(raw)} bytes is truncated: "
            "it needs at least a type, a length and a checksum byte"
        )
        raise CallerIdError(msg)
    declared = raw[1]
    present = len(raw) - 3
    if present < declared:
        msg = f"caller ID message is truncated: it declares {declared} data bytes but only {present} follow"
        raise CallerIdError(msg)
    if present > declared:
        msg = f"caller ID message has a bad length: it declares {declared} data bytes but {present} follow"
        raise CallerIdError(msg)
    if sum(raw) & 0xFF:
        msg = (
            f"caller ID message checksum 0x{raw[-1]:02x} does not match its contents "
            f"(expected 0x{checksum(raw[:-1]):02x})"
        )
        raise CallerIdError(msg)
    return raw[0], bytes(raw[2:-1])


def iter_parameters(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The (type, value) parameters of MDMF data, in the order they were sent."""
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            msg = f"caller ID parameter at offset {offset} is truncated: its length byte is missing"
            raise CallerIdError(msg)
        param_type, length = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if len(value) < length:
            msg = (
                f"caller ID parameter 0x{param_type:02x} at offset {offset} has a bad length: "
                f"it declares {length} bytes but only {len(value)} remain"
            )
            raise CallerIdError(msg)
        yield param_type, value
        offset += 2 + length


def _text(value: bytes) -> str:
    # Latin-1 maps every byte to one character, so whatever the wire said is kept.
    return value.decode("latin-1")


@dataclass(slots=True)
class _Fields:
    number: str | None = None
    name: str | None = None
    number_absent: str | None = None
    name_absent: str | None = None


def _parse_mdmf(data: bytes) -> _Fields:
    fields = _Fields()
    for param_type, value in iter_parameters(data):
        if param_type == Param.NUMBER:
            fields.number = _text(value)
        elif param_type == Param.NUMBER_ABSENT:
            fields.number_absent = _text(value)
        elif param_type == Param.NAME:
            fields.name = _text(value)
        elif param_type == Param.NAME_ABSENT:
            fields.name_absent = _text(value)
        # Date/time, dialled number, long distance, call type and the rest are not
        # part of CallerId; skipping unknown parameters is what the standards ask.
    return fields


def _parse_sdmf(data: bytes) -> _Fields:
    if len(data) < _DATE_LEN:
        msg = (
            f"SDMF caller ID message has a bad length: its {len(data)} data bytes "
            f"cannot hold the {_DATE_LEN}-digit date"
        )
        raise CallerIdError(msg)
    body = _text(data[_DATE_LEN:])
    if body in ABSENCE_REASONS:
        return _Fields(number_absent=body)
    return _Fields(number=body or None)


def parse_message(raw: bytes, *, standard: str | None = None) -> CallerId:
    """Read an SDMF or MDMF caller ID message; a damaged one raises CallerIdError.

    ``standard`` names how the bytes arrived (for example "etsi-v23"); by default it
    is the Bell 202 name of the message type.
    """
    message_type, data = split_message(raw)
    if message_type == MessageType.MDMF_CALLER_ID:
        fields = _parse_mdmf(data)
    elif message_type == MessageType.SDMF_CALLER_ID:
        fields = _parse_sdmf(data)
    elif message_type in _MESSAGE_WAITING_TYPES:
        msg = f"caller ID message type 0x{message_type:02x} is a message-waiting indication"
        raise CallerIdError(msg)
    else:
        msg = f"caller ID message type 0x{message_type:02x} is unknown (expected 0x04 SDMF or 0x80 MDMF)"
        raise CallerIdError(msg)
    return CallerId(
        number=fields.number,
        name=fields.name,
        number_absent=fields.number_absent,
        name_absent=fields.name_absent,
        standard=standard or _STANDARD_BY_TYPE[message_type],
        raw=bytes(raw),
    )


def message_waiting(raw: bytes) -> bool | None:
    """Whether a checked message-waiting message turns the indicator on; None if it does not say."""
    message_type, data = split_message(raw)
    if message_type == MessageType.SDMF_MESSAGE_WAITING:
        # GR-30: three bytes 0x42 turn the indicator on, three bytes 0x6F turn it off.
        return {b"BBB": True, b"ooo": False}.get(data[:3])
    if message_type == MessageType.MDMF_MESSAGE_WAITING:
        for param_type, value in iter_parameters(data):
            if param_type == Param.VISUAL_INDICATOR and value:
                return {0xFF: True, 0x00: False}.get(value[0])
    return None
