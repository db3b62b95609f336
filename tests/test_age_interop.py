"""Our age files against the real ``age`` tool both ways, and hostile or broken input."""

from __future__ import annotations

import io
import os
import pty
import random
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.wire import age
from firmware.wire.armor import ArmorReader
from firmware.wire.errors import AgeError

SIZES = [0, 1, 65536, 65537, 5 * 1024 * 1024]

needs_age = pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("age-keygen") is None,
    reason="the age and age-keygen commands are not installed",
)


def seeded_bytes(size: int, seed: int = 2024) -> bytes:
    return random.Random(seed + size).randbytes(size)


def run(*args: str | Path, stdin: bytes = b"") -> bytes:
    result = subprocess.run([str(arg) for arg in args], input=stdin, capture_output=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.fixture
def keygen_file(tmp_path: Path) -> Path:
    """An identity file written by ``age-keygen``."""
    path = tmp_path / "key.txt"
    run("age-keygen", "-o", path)
    return path


def public_line(identity_file: Path) -> str:
    for line in identity_file.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.removeprefix("# public key: ")
    raise AssertionError(f"no public key comment in {identity_file}")


def encrypt_in_pieces(data: bytes, recipients: list[str], piece: int = 1000) -> bytes:
    sink = io.BytesIO()
    with age.Encryptor(sink, recipients) as encryptor:
        for start in range(0, len(data), piece):
            encryptor.write(data[start : start + piece])
    return sink.getvalue()


@pytest.mark.agecli
@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_age_cli_decrypts_what_our_encryptor_writes(size: int, keygen_file: Path) -> None:
    data = seeded_bytes(size)
    ciphertext = encrypt_in_pieces(data, [public_line(keygen_file)])
    assert run("age", "-d", "-i", keygen_file, stdin=ciphertext) == data


@pytest.mark.agecli
@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_our_decryptor_reads_what_age_cli_writes(size: int, keygen_file: Path) -> None:
    data = seeded_bytes(size)
    ciphertext = run("age", "-e", "-r", public_line(keygen_file), stdin=data)
    with age.Decryptor(io.BytesIO(ciphertext), age.load_identities(keygen_file)) as decryptor:
        assert b"".join(decryptor) == data


@pytest.mark.agecli
@needs_age
def test_age_keygen_identity_gives_the_public_key_it_prints(keygen_file: Path) -> None:
    secret = next(line for line in keygen_file.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    assert age.recipient_of(secret) == public_line(keygen_file)
    assert len(age.load_identities(keygen_file)) == 1


@pytest.mark.agecli
@needs_age
def test_age_cli_accepts_our_generated_identity(tmp_path: Path) -> None:
    identity = age.generate_identity()
    identity_file = tmp_path / "ours.txt"
    identity_file.write_text(f"# made by linerec\n{identity}\n")
    assert run("age-keygen", "-y", identity_file).decode().strip() == age.recipient_of(identity)
    ciphertext = age.encrypt_bytes(b"hello from the line", [age.recipient_of(identity)])
    assert run("age", "-d", "-i", identity_file, stdin=ciphertext) == b"hello from the line"


@pytest.mark.agecli
@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_our_decryptor_reads_what_age_cli_armors(size: int, keygen_file: Path) -> None:
    data = seeded_bytes(size)
    ciphertext = run("age", "-a", "-e", "-r", public_line(keygen_file), stdin=data)
    assert ciphertext.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    with age.Decryptor(io.BytesIO(ciphertext), age.load_identities(keygen_file)) as decryptor:
        assert b"".join(decryptor) == data


@pytest.mark.agecli
@needs_age
@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 65536, 200_000])
def test_age_cli_decrypts_what_we_armor(size: int, keygen_file: Path) -> None:
    data = seeded_bytes(size)
    armored = age.armor(age.encrypt_bytes(data, [public_line(keygen_file)]))
    assert run("age", "-d", "-i", keygen_file, stdin=armored) == data


def age_with_passphrase(passphrase: str, *args: str | Path) -> None:
    """Run ``age -p`` on a pseudo-terminal, where it asks for the passphrase twice."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: age, with the pty as its controlling terminal
        os.execvp("age", ["age", "-p", *map(str, args)])  # noqa: S606 - a fixed argument list
    seen = b""
    try:
        for prompt in (b"Enter passphrase", b"Confirm passphrase"):
            deadline = time.monotonic() + 30
            while prompt not in seen:
                assert time.monotonic() < deadline, f"age never asked {prompt!r}: {seen!r}"
                if select.select([terminal], [], [], 0.5)[0]:
                    seen += os.read(terminal, 1024)
            os.write(terminal, passphrase.encode() + b"\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, seen


@pytest.mark.agecli
@needs_age
@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_our_decryptor_opens_age_cli_passphrase_files(armored: bool, tmp_path: Path) -> None:
    data = seeded_bytes(70_000)
    (tmp_path / "plain").write_bytes(data)
    flags = ["-a"] if armored else []
    age_with_passphrase("correct horse battery", *flags, "-o", tmp_path / "out.age", tmp_path / "plain")
    ciphertext = (tmp_path / "out.age").read_bytes()
    binary = ArmorReader(io.BytesIO(ciphertext)).read() if armored else ciphertext
    assert re.match(rb"age-encryption.org/v1\n-> scrypt \S{22} 18\n", binary)
    assert age.decrypt_bytes(ciphertext, [age.Passphrase("correct horse battery")]) == data
    with pytest.raises(AgeError, match=r"^no identity matches any recipient of this age file \(it was made"):
        age.decrypt_bytes(ciphertext, [age.Passphrase("wrong horse battery")])


@pytest.fixture
def sealed() -> tuple[str, bytes, bytes]:
    """An identity, a 3-chunk plaintext and its ciphertext."""
    identity = age.generate_identity()
    data = seeded_bytes(2 * age.CHUNK_SIZE + 500)
    return identity, data, age.encrypt_bytes(data, [age.recipient_of(identity)])


def test_truncated_ciphertext_is_refused(sealed: tuple[str, bytes, bytes]) -> None:
    identity, _, ciphertext = sealed
    keys = [age.parse_identity(identity)]
    with pytest.raises(AgeError, match=r"bad age payload: the file ends without a final chunk"):
        age.decrypt_bytes(ciphertext[: -(500 + 16)], keys)
    with pytest.raises(AgeError, match=r"bad age payload: chunk 2 fails authentication"):
        age.decrypt_bytes(ciphertext[:-1], keys)


def test_flipped_payload_byte_is_refused(sealed: tuple[str, bytes, bytes]) -> None:
    identity, _, ciphertext = sealed
    damaged = bytearray(ciphertext)
    damaged[-(500 + 16) - 1000] ^= 0x01  # inside chunk 1 of 0..2
    with pytest.raises(AgeError, match=r"bad age payload: chunk 1 fails authentication"):
        age.decrypt_bytes(bytes(damaged), [age.parse_identity(identity)])


def test_flipped_header_mac_byte_is_refused(sealed: tuple[str, bytes, bytes]) -> None:
    identity, _, ciphertext = sealed
    mac_start = ciphertext.index(b"\n--- ") + 5
    damaged = bytearray(ciphertext)
    damaged[mac_start + 10] = ord("A") if damaged[mac_start + 10] != ord("A") else ord("B")
    with pytest.raises(AgeError, match=r"^age header MAC does not verify"):
        age.decrypt_bytes(bytes(damaged), [age.parse_identity(identity)])


def test_wrong_identity_is_refused(sealed: tuple[str, bytes, bytes]) -> None:
    _, _, ciphertext = sealed
    stranger = age.parse_identity(age.generate_identity())
    with pytest.raises(AgeError, match=r"^no identity matches any recipient of this age file$"):
        age.decrypt_bytes(ciphertext, [stranger])


def test_any_of_several_identities_may_match(sealed: tuple[str, bytes, bytes]) -> None:
    identity, data, ciphertext = sealed
    keys = [age.parse_identity(age.generate_identity()), age.parse_identity(identity)]
    assert age.decrypt_bytes(ciphertext, keys) == data


def test_missing_identity_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(AgeError, match=rf"^cannot read age identity file {re.escape(str(missing))}: "):
        age.load_identities(missing)


def test_garbage_identity_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# a comment\n\nAGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(AgeError, match=rf"^age identity file {re.escape(str(path))}, line 3: age identity is not"):
        age.load_identities(path)


def test_identity_file_without_identities_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# only a comment\n")
    with pytest.raises(AgeError, match=rf"^age identity file {re.escape(str(path))} holds no AGE-SECRET-KEY-1"):
        age.load_identities(path)


def test_binary_identity_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AgeError, match=rf"^age identity file {re.escape(str(path))} is not UTF-8 text$"):
        age.load_identities(path)


def test_bad_identity_message_does_not_echo_the_secret() -> None:
    secret = age.generate_identity()
    broken = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(AgeError) as caught:
        age.parse_identity(broken)
    assert secret[16:40] not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age1qqq", "Bech32 string is too short"),
        ("age1notvalid", "character .o., not in the alphabet"),
        ("AGE1" + "Q" * 58, "checksum does not match"),
        ("Age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "mixes upper and lower"),
    ],
)
def test_bad_recipient_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(AgeError, match=message):
        age.parse_recipient(text)


def test_uppercase_recipient_is_refused() -> None:
    recipient = age.recipient_of(age.generate_identity())
    with pytest.raises(AgeError, match=r"expected the prefix 'age'1, found 'AGE'1"):
        age.parse_recipient(recipient.upper())


def test_header_without_recipients_is_refused() -> None:
    with pytest.raises(AgeError, match=r"at least one age1\.\.\. recipient"):
        age.build_header(age.new_file_key(), [])


def test_write_after_close_raises_value_error() -> None:
    encryptor = age.Encryptor(io.BytesIO(), [age.recipient_of(age.generate_identity())])
    encryptor.close()
    with pytest.raises(ValueError, match="closed"):
        encryptor.write(b"late")


def test_exception_inside_with_leaves_a_truncated_file() -> None:
    """An interrupted recording must never decrypt as if it were complete."""
    identity = age.generate_identity()
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), age.Encryptor(sink, [age.recipient_of(identity)]) as enc:
        enc.write(seeded_bytes(3 * age.CHUNK_SIZE))
        raise RuntimeError("capture died")
    with pytest.raises(AgeError, match="bad age payload"):
        age.decrypt_bytes(sink.getvalue(), [age.parse_identity(identity)])


def test_payload_stream_refuses_a_short_middle_chunk() -> None:
    stream = age.PayloadStream(age.new_file_key())
    with pytest.raises(AgeError, match="non-final chunks hold exactly 64 KiB"):
        stream.seal(0, b"short", final=False)


def test_exact_chunk_multiple_ends_with_a_full_final_chunk() -> None:
    """64 KiB written in one go is one final chunk, not a full chunk plus an empty one."""
    identity = age.generate_identity()
    ciphertext = age.encrypt_bytes(seeded_bytes(age.CHUNK_SIZE), [age.recipient_of(identity)])
    header_end = ciphertext.index(b"\n--- ") + 1
    header_end = ciphertext.index(b"\n", header_end) + 1
    assert len(ciphertext) - header_end == 16 + age.CHUNK_SIZE + 16


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3 * 65536 + 10) | st.integers(0, 4).map(lambda k: bytes(k * 65536)),
    cuts=st.lists(st.integers(0, 4 * 65536), max_size=8),
)
def test_round_trip_with_any_write_split(data: bytes, cuts: list[int]) -> None:
    identity = age.generate_identity()
    sink = io.BytesIO()
    with age.Encryptor(sink, [age.recipient_of(identity)]) as encryptor:
        start = 0
        for cut in sorted({min(cut, len(data)) for cut in cuts}):
            encryptor.write(data[start:cut])
            start = cut
        encryptor.write(data[start:])
    assert age.decrypt_bytes(sink.getvalue(), [age.parse_identity(identity)]) == data


ARMOR_SAMPLE = (
    b"-----BEGIN AGE ENCRYPTED FILE-----\n" + b"QUJD" * 16 + b"\nQUJDRA==\n-----END AGE ENCRYPTED FILE-----\n"
)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=500), piece=st.integers(1, 100))
def test_armor_round_trips_any_bytes_read_in_any_pieces(data: bytes, piece: int) -> None:
    reader = ArmorReader(io.BytesIO(age.armor(data)))
    pieces = []
    while chunk := reader.read(piece):
        pieces.append(chunk)
    assert b"".join(pieces) == data


def test_armor_writes_64_columns_and_a_short_padded_last_line() -> None:
    text = age.armor(b"ABC" * 16 + b"ABCD")
    assert text == ARMOR_SAMPLE
    assert age.armor(b"") == b"-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----\n"


def test_armor_with_crlf_and_surrounding_whitespace_is_read() -> None:
    text = b" \t\r\n\n  " + ARMOR_SAMPLE.replace(b"\n", b"\r\n") + b"\n \t\r\n"
    assert ArmorReader(io.BytesIO(text)).read() == b"ABC" * 16 + b"ABCD"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ARMOR_SAMPLE.replace(b"QUJDRA==\n", b"QUJDRA==\r\n"), "line 3 ends differently from the BEGIN line"),
        (ARMOR_SAMPLE + b"x", "data follows the '-----END AGE ENCRYPTED FILE-----' line"),
        (ARMOR_SAMPLE.replace(b"RA==", b"RB=="), "line 3 is not canonical base64"),
        (ARMOR_SAMPLE.replace(b"RA==", b"R==="), "line 3 holds characters outside base64"),
        (ARMOR_SAMPLE.replace(b"QUJDRA==\n", b"QUJD\nRA==\n"), "line 3 is short or padded, so it must be the last"),
        (ARMOR_SAMPLE[:-33], "the file ends without the '-----END AGE ENCRYPTED FILE-----' line"),
        (ARMOR_SAMPLE[:-36], "the file ends inside line 3, before the END line"),
        (b"-----BEGIN AGE ENCRYPTED FILE-----", "the file ends right after the BEGIN line"),
    ],
    ids=["mixed-eol", "trailing", "non-canonical", "bad-padding", "short-inside", "no-end", "cut-line", "only-begin"],
)
def test_broken_armor_names_the_line_and_the_problem(text: bytes, message: str) -> None:
    with pytest.raises(AgeError, match="^bad age armor: " + re.escape(message)):
        ArmorReader(io.BytesIO(text)).read()


def test_armored_file_decrypts_when_read_a_line_at_a_time(sealed: tuple[str, bytes, bytes]) -> None:
    identity, data, ciphertext = sealed
    with age.Decryptor(io.BytesIO(age.armor(ciphertext)), [age.parse_identity(identity)]) as decryptor:
        assert b"".join(decryptor.chunks()) == data


def test_garbage_after_armor_fails_the_last_read(sealed: tuple[str, bytes, bytes]) -> None:
    identity, _, ciphertext = sealed
    with pytest.raises(AgeError, match=r"^bad age armor: data follows the '-----END AGE ENCRYPTED FILE-----' line$"):
        age.decrypt_bytes(age.armor(ciphertext) + b"PS: hello\n", [age.parse_identity(identity)])


def test_passphrase_hides_its_text_and_checks_its_limit() -> None:
    assert "hunter2" not in repr(age.Passphrase("hunter2"))
    with pytest.raises(AgeError, match=r"^age passphrase is empty$"):
        age.Passphrase("")
    with pytest.raises(AgeError, match=r"^age passphrase max_work_factor 23 is outside 1 to 22$"):
        age.Passphrase("hunter2", max_work_factor=23)


def test_passphrase_among_identities_does_not_stop_an_x25519_match(sealed: tuple[str, bytes, bytes]) -> None:
    identity, data, ciphertext = sealed
    assert age.decrypt_bytes(ciphertext, [age.Passphrase("hunter2"), age.parse_identity(identity)]) == data
