"""The C2SP CCTV age vectors: every X25519, scrypt, armor, stanza, HMAC and stream case."""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.wire import age, bech32
from firmware.wire.errors import AgeError

VECTOR_DIR = Path(__file__).parent / "age-cctv"
VECTOR_PATHS = sorted(path for path in VECTOR_DIR.iterdir() if path.name != "SOURCE.md")

# The text each failure stage puts in its message, so a vector failing at the
# wrong stage (say a payload vector tripping over its header) is caught.
STAGE_TEXT = {
    "armor failure": "bad age armor",
    "header failure": "bad age header",
    "HMAC failure": "age header MAC does not verify",
    "no match": "no identity matches",
    "payload failure": "bad age payload",
}


@dataclass(frozen=True)
class Vector:
    """One vector file: its metadata lines and the age file after the blank line."""

    name: str
    expect: str
    payload_sha256: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    armored: bool
    body: bytes


def load_vector(path: Path) -> Vector:
    meta, _, body = path.read_bytes().partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in meta.decode("utf-8").splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload_sha256=fields.get("payload", [None])[0],
        identities=tuple(fields.get("identity", [])),
        passphrases=tuple(fields.get("passphrase", [])),
        armored=fields.get("armored") == ["yes"],
        body=body,
    )


def unsupported_reason(vector: Vector) -> str | None:
    """Why linerec cannot run this vector, or None when it must pass it."""
    if any(text.startswith("AGE-SECRET-KEY-PQ-") for text in vector.identities):
        return "post-quantum hybrid (mlkem768x25519) recipients are not implemented"
    return None


def vector_identities(vector: Vector) -> list[age.Identity]:
    keys: list[age.Identity] = [age.parse_identity(text) for text in vector.identities]
    return keys + [age.Passphrase(text) for text in vector.passphrases]


def test_every_vector_file_is_read() -> None:
    """The parametrized test below covers every file in the folder, none dropped."""
    assert len(VECTOR_PATHS) == 143
    assert {load_vector(path).expect for path in VECTOR_PATHS} == {"success", *STAGE_TEXT}
    assert sum(unsupported_reason(load_vector(path)) is not None for path in VECTOR_PATHS) == 19


@pytest.mark.parametrize("path", VECTOR_PATHS, ids=[path.name for path in VECTOR_PATHS])
def test_cctv_vector(path: Path) -> None:
    vector = load_vector(path)
    # The armored flag is what the vector's own metadata says, as age's test kit
    # uses it: it makes leading garbage an armor failure, not a header one.
    armored = True if vector.armored else None
    reason = unsupported_reason(vector)
    if reason is not None:
        # Even a file we cannot open must be refused cleanly, never misread.
        x25519 = [text for text in vector.identities if text.startswith("AGE-SECRET-KEY-1")]
        with pytest.raises(AgeError):
            age.decrypt_bytes(vector.body, [age.parse_identity(text) for text in x25519], armored=armored)
        pytest.skip(reason)

    identities = vector_identities(vector)
    if vector.expect == "success":
        plaintext = age.decrypt_bytes(vector.body, identities, armored=armored)
        assert hashlib.sha256(plaintext).hexdigest() == vector.payload_sha256
        return
    with pytest.raises(AgeError) as caught:
        age.decrypt_bytes(vector.body, identities, armored=armored)
    assert_stage(vector, str(caught.value))


def assert_stage(vector: Vector, message: str) -> None:
    """The message names the stage the vector expects to fail at, and no other."""
    assert STAGE_TEXT[vector.expect] in message
    for other_stage, text in STAGE_TEXT.items():
        if other_stage != vector.expect:
            assert text not in message


ARMORED_PATHS = [path for path in VECTOR_PATHS if load_vector(path).armored]


@pytest.mark.parametrize("path", ARMORED_PATHS, ids=[path.name for path in ARMORED_PATHS])
def test_armor_is_detected_without_being_told(path: Path) -> None:
    """Left to spot the armor itself, the decryptor meets each vector's verdict.

    The one exception is text before the BEGIN line: without the hint it is
    simply not an age file, a header failure.
    """
    vector = load_vector(path)
    if unsupported_reason(vector) is not None:
        pytest.skip("post-quantum hybrid recipients are not implemented")
    try:
        plaintext = age.decrypt_bytes(vector.body, vector_identities(vector))
    except AgeError as exc:
        if path.name == "armor_garbage_leading":
            assert str(exc) == "bad age header: not an age file (no 'age-encryption.org/v1' line)"
            return
        assert vector.expect != "success", str(exc)
        assert_stage(vector, str(exc))
        return
    assert vector.expect == "success"
    assert hashlib.sha256(plaintext).hexdigest() == vector.payload_sha256


@pytest.mark.parametrize("path", ARMORED_PATHS[:3], ids=[path.name for path in ARMORED_PATHS[:3]])
def test_armored_vector_is_refused_as_binary(path: Path) -> None:
    vector = load_vector(path)
    with pytest.raises(AgeError, match=r"^bad age header: the file is ASCII-armored, but was opened as a binary"):
        age.decrypt_bytes(vector.body, vector_identities(vector), armored=False)


DRIBBLE_PATHS = [
    path
    for path in VECTOR_PATHS
    if path.name.startswith(("stream_", "armor_")) and unsupported_reason(load_vector(path)) is None
]


@pytest.mark.parametrize("path", DRIBBLE_PATHS, ids=[path.name for path in DRIBBLE_PATHS])
def test_vector_read_in_small_pieces_fails_or_passes_alike(path: Path) -> None:
    """Reading 1000 bytes at a time from a 7-byte pipe meets the same verdict as reading at once."""
    vector = load_vector(path)
    source = _Dribble(vector.body)
    armored = True if vector.armored else None
    try:
        with age.Decryptor(source, vector_identities(vector), armored=armored) as decryptor:
            pieces = []
            while piece := decryptor.read(1000):
                pieces.append(piece)
    except AgeError as exc:
        assert vector.expect != "success", str(exc)
        assert_stage(vector, str(exc))
        return
    assert vector.expect == "success"
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == vector.payload_sha256


class _Dribble:
    """A source that hands out at most 7 bytes a read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int = -1, /) -> bytes:
        size = 7 if size < 0 else min(size, 7)
        piece, self._data = self._data[:size], self._data[size:]
        return bytes(piece)

    def readline(self, limit: int = -1, /) -> bytes:
        end = bytes(self._data).find(b"\n")
        stop = len(self._data) if end < 0 else end + 1
        if limit >= 0:
            stop = min(stop, limit)
        line, self._data = self._data[:stop], self._data[stop:]
        return bytes(line)


def test_decrypt_error_after_failure_repeats_instead_of_ending() -> None:
    """Once a chunk fails, further reads keep failing rather than reporting a clean end."""
    vector = load_vector(VECTOR_DIR / "stream_bad_tag_second_chunk")
    identities = [age.parse_identity(text) for text in vector.identities]
    decryptor = age.Decryptor(_Dribble(vector.body), identities)
    with pytest.raises(AgeError, match="chunk 1 fails authentication"):
        decryptor.read()
    with pytest.raises(AgeError, match="chunk 1 fails authentication"):
        decryptor.read(1)


# BIP-173's own valid and invalid strings pin down the Bech32 layer under the keys.
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BIP173_INVALID = [
    ("A1G7SGD8", "checksum does not match"),
    ("10a06t8", "no '1' separator"),
    ("1qzzfhee", "no '1' separator"),
    ("a12UEL5L", "mixes upper and lower case"),
    ("x1b4n0q5v", "character 'b', not in the alphabet"),
    ("li1dgmt3", "too short to hold a checksum"),
    ("\x7f1axkwrx", "outside ASCII 33-126"),
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bip173_valid_string_decodes_and_reencodes(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert bech32.encode(hrp, data) == text


@pytest.mark.parametrize(("text", "message"), BIP173_INVALID)
def test_bip173_invalid_string_is_refused(text: str, message: str) -> None:
    with pytest.raises(bech32.Bech32Error, match=re.escape(message)):
        bech32.decode(text)


def test_identity_and_recipient_keep_their_case() -> None:
    identity = age.generate_identity()
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert identity == identity.upper()
    assert age.recipient_of(identity).startswith("age1")
    with pytest.raises(AgeError, match="expected the prefix 'AGE-SECRET-KEY-'1"):
        age.parse_identity(identity.lower())


def test_passphrase_with_a_lower_work_factor_limit_refuses_before_computing() -> None:
    """A small machine can cap scrypt below age's 22; the refusal names both numbers."""
    vector = load_vector(VECTOR_DIR / "scrypt")  # work factor 10
    with pytest.raises(AgeError, match=r"^bad age header: scrypt work factor 10 is above the limit of 9 set for this"):
        age.decrypt_bytes(vector.body, [age.Passphrase("password", max_work_factor=9)])
    assert age.decrypt_bytes(vector.body, [age.Passphrase("password", max_work_factor=10)])
