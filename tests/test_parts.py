"""A recording delivered with its untrimmed original: the manifest's parts must describe the bytes exactly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.parts import PartsError, check_parts, split_original


def described(recording: bytes, original: bytes) -> dict[str, Any]:
    return {
        "size": len(recording) + len(original),
        "sha256": hashlib.sha256(recording + original).hexdigest(),
        "parts": [
            {"role": "recording", "size": len(recording), "sha256": hashlib.sha256(recording).hexdigest()},
            {"role": "original", "size": len(original), "sha256": hashlib.sha256(original).hexdigest()},
        ],
    }


def test_the_original_is_cut_off_the_end_and_the_recording_left_alone(tmp_path: Path) -> None:
    recording, original = os.urandom(70_000), os.urandom(200_000)
    whole = tmp_path / "audio.part"
    whole.write_bytes(recording + original)
    ciphertext = described(recording, original)
    check_parts(ciphertext)
    split_original(whole, ciphertext["parts"], tmp_path / "original.part")
    assert whole.read_bytes() == recording
    assert (tmp_path / "original.part").read_bytes() == original


@pytest.mark.parametrize("which", [0, 1])
def test_a_part_that_does_not_hash_as_claimed_is_refused_and_nothing_is_cut(tmp_path: Path, which: int) -> None:
    recording, original = os.urandom(500), os.urandom(700)
    whole = tmp_path / "audio.part"
    whole.write_bytes(recording + original)
    ciphertext = described(recording, original)
    ciphertext["parts"][which]["sha256"] = "0" * 64
    with pytest.raises(PartsError) as info:
        split_original(whole, ciphertext["parts"], tmp_path / "original.part")
    role = ("recording", "original")[which]
    assert str(info.value) == f"the {role} part does not match its SHA-256 in the manifest"
    assert whole.read_bytes() == recording + original


def _broken(change: str) -> dict[str, Any]:
    ciphertext = described(b"a" * 10, b"b" * 20)
    parts = ciphertext["parts"]
    if change == "swapped":
        parts.reverse()
    elif change == "sizes":
        parts[0]["size"] = 11
    elif change == "one":
        del parts[1]
    elif change == "bool size":
        parts[0]["size"] = True
    elif change == "not a list":
        ciphertext["parts"] = {"role": "recording"}
    elif change == "short hash":
        parts[1]["sha256"] = "ab"
    return ciphertext


@pytest.mark.parametrize("change", ["swapped", "sizes", "one", "bool size", "not a list", "short hash"])
def test_parts_that_do_not_add_up_to_the_recording_then_the_original_are_refused(change: str) -> None:
    with pytest.raises(PartsError) as info:
        check_parts(_broken(change))
    assert str(info.value) == "ciphertext parts must be the recording then the original, adding up to the size"


def test_a_single_file_recording_has_no_parts_to_check() -> None:
    check_parts({"size": 3, "sha256": "0" * 64})
