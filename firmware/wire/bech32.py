"""Bech32 (BIP-173) text encoding, as age uses it for recipients and identities.

age strings are longer than BIP-173's 90-character limit, so no length limit is
applied here. Everything else is strict: one case throughout, a valid checksum
(constant 1, not Bech32m) and zero padding bits.
"""

from __future__ import annotations

from .errors import WireError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {char: value for value, char in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LENGTH = 6


class Bech32Error(WireError):
    """A string is not valid Bech32."""


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = ((checksum & 0x1FFFFFF) << 5) ^ value
        for bit, generator in enumerate(_GENERATOR):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _expand_hrp(hrp: str) -> list[int]:
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def _regroup(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    accumulator = 0
    bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & mask)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & mask)
    elif bits >= from_bits or (accumulator << (to_bits - bits)) & mask:
        # Leftover bits must be fewer than one input group and all zero,
        # otherwise two strings would decode to the same bytes.
        raise Bech32Error("Bech32 data has non-zero or excess padding bits")
    return out


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise Bech32Error("Bech32 string has an empty human-readable part")
    if any(not 33 <= ord(char) <= 126 for char in hrp):
        raise Bech32Error(f"Bech32 human-readable part {hrp!r} has characters outside ASCII 33-126")


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp``; the result takes the case of ``hrp``."""
    _check_hrp(hrp)
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise Bech32Error(f"Bech32 human-readable part {hrp!r} mixes upper and lower case")
    lower = hrp.lower()
    values = _regroup(data, 8, 5, pad=True)
    polymod = _polymod([*_expand_hrp(lower), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LENGTH)]
    text = lower + "1" + "".join(CHARSET[value] for value in values + checksum)
    return text.upper() if hrp.isupper() else text


def decode(text: str) -> tuple[str, bytes]:
    """Split ``text`` into its human-readable part (case kept) and its data bytes."""
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("Bech32 string mixes upper and lower case")
    separator = text.rfind("1")
    if separator < 1:
        raise Bech32Error("Bech32 string has no '1' separator after a human-readable part")
    hrp = text[:separator]
    _check_hrp(hrp)
    lower = text.lower()
    payload = lower[separator + 1 :]
    if len(payload) < _CHECKSUM_LENGTH:
        raise Bech32Error("Bech32 string is too short to hold a checksum")
    try:
        values = [_VALUES[char] for char in payload]
    except KeyError as exc:
        raise Bech32Error(f"Bech32 string has the character {exc.args[0]!r}, not in the alphabet") from None
    if _polymod(_expand_hrp(lower[:separator]) + values) != 1:
        raise Bech32Error("Bech32 checksum does not match")
    return hrp, bytes(_regroup(values[:-_CHECKSUM_LENGTH], 5, 8, pad=False))
