"""What a delivered recording is made of: the recording, and the untrimmed original when the device kept one.

A device that keeps the original (``audio.keep_original``) sends both files as
one stream of bytes, the recording first. The manifest's ``ciphertext`` then
holds, besides the size and SHA-256 of the whole stream, ``parts``: each file's
role, size and SHA-256. Once the whole stream checks out, the agent cuts it
back into the two files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

from agent.errors import AgentError

ROLES = ("recording", "original")
_BLOCK = 1 << 20


class PartsError(AgentError):
    """The parts a manifest lists do not describe the bytes received."""


def check_parts(ciphertext: dict[str, Any]) -> None:
    """PartsError unless ``parts`` (if any) are the recording then the original, adding up to the size."""
    parts = ciphertext.get("parts")
    if parts is None:
        return
    ok = (
        isinstance(parts, list)
        and len(parts) == len(ROLES)
        and all(isinstance(p, dict) for p in parts)
        and [p.get("role") for p in parts] == list(ROLES)
        and all(isinstance(p.get("size"), int) and not isinstance(p.get("size"), bool) for p in parts)
        and all(p["size"] >= 0 for p in parts)
        and sum(p["size"] for p in parts) == ciphertext["size"]
        and all(isinstance(p.get("sha256"), str) and len(p["sha256"]) == 64 for p in parts)
    )
    if not ok:
        msg = "ciphertext parts must be the recording then the original, adding up to the size"
        raise PartsError(msg)


def split_original(whole_path: Path, parts: list[dict[str, Any]], target: Path) -> None:
    """Move the original's bytes from the end of ``whole_path`` to ``target``; each part must hash as claimed."""
    recording, original = parts
    with whole_path.open("r+b") as whole, target.open("wb") as out:
        if _sha256_of(whole, 0, recording["size"]) != recording["sha256"]:
            msg = "the recording part does not match its SHA-256 in the manifest"
            raise PartsError(msg)
        whole.seek(recording["size"])
        digest = hashlib.sha256()
        while block := whole.read(_BLOCK):
            digest.update(block)
            out.write(block)
        if digest.hexdigest() != original["sha256"]:
            msg = "the original part does not match its SHA-256 in the manifest"
            raise PartsError(msg)
        out.flush()
        os.fsync(out.fileno())
        whole.truncate(recording["size"])


def _sha256_of(f: BinaryIO, start: int, size: int) -> str:
    digest = hashlib.sha256()
    f.seek(start)
    while size > 0 and (block := f.read(min(size, _BLOCK))):
        digest.update(block)
        size -= len(block)
    return digest.hexdigest()
