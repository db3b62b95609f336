"""Checking an audit log: one streaming pass over its rows that reports every edit, gap, swap and truncation.

``AuditLog.verify`` takes a read snapshot and hands each row to a ``ChainWalk``, which
keeps only the chain's end so far and the problems it found; memory stays flat however
long the log is. The kinds of problem are the ``Finding`` values.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from agent.audit_entry import ZERO_HASH, Head, encode_entry


class Finding(StrEnum):
    """The kinds of problem ``verify`` reports."""

    EDITED = "edited"  # an entry's fields do not match its hash, or are not what an entry holds
    MAC_MISMATCH = "mac mismatch"  # hash chain sound, but not written with the audit key
    MISSING = "missing"  # a gap in the sequence numbers
    REORDERED = "reordered"  # stored out of order, or not linked to the entry before it
    INSERTED = "inserted"  # a sequence number that appears more than once
    TRUNCATED = "truncated"  # the log ends before the entry a checkpoint names
    HEAD_MISMATCH = "head mismatch"  # the entry a checkpoint names is not the one in the log
    CHECKPOINT = "checkpoint"  # the checkpoint file is missing, unreadable or forged


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One thing ``verify`` found wrong: the entry's seq (None if it cannot be told), the kind, and a sentence."""

    seq: int | None
    kind: Finding
    message: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``verify`` found: ``ok`` only if nothing is wrong; at most ``max_problems`` problems are listed."""

    ok: bool
    entries: int  # rows checked
    head: Head  # the chain's end as stored
    checkpoint: Head | None  # what the checkpoint file said, if it could be read and trusted
    macs_checked: bool  # False when verified without the key
    beyond_checkpoint: int  # entries after the checkpoint (normal: 0, or 1 after a crash)
    problems: tuple[AuditProblem, ...]
    problem_count: int

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready object."""
        out = asdict(self)
        out["head"] = list(self.head)
        out["checkpoint"] = list(self.checkpoint) if self.checkpoint else None
        out["problems"] = [{"seq": p.seq, "kind": str(p.kind), "message": p.message} for p in self.problems]
        return out


class ChainWalk:
    """One pass over the rows in storage order, remembering only the chain's end and the problems."""

    def __init__(self, db: sqlite3.Connection, key: bytes | None, refs: list[tuple[str, Head]], limit: int) -> None:
        self.db = db
        self.key = key
        self.refs = refs
        self.seen = [False] * len(refs)
        self.limit = limit
        self.problems: list[AuditProblem] = []
        self.count = 0
        self.rows = 0
        self.expected = 1
        self.head = Head(0, ZERO_HASH)

    def add(self, seq: int | None, kind: Finding, message: str) -> None:
        self.count += 1
        if len(self.problems) < self.limit:
            self.problems.append(AuditProblem(seq, kind, message))

    def row(self, row: tuple[Any, ...]) -> None:
        rowid, seq, *fields = row
        self.rows += 1
        if not isinstance(seq, int) or seq < 1:
            self.add(None, Finding.EDITED, f"the entry in row {rowid} has seq {seq!r}, not a whole number from 1")
            return
        intact = self._content(seq, fields)
        prev, digest = fields[5], fields[6]
        self._place(seq, prev if intact else self.head.hash, digest)  # an edited entry's prev means nothing
        for i, (name, ref) in enumerate(self.refs):
            if ref.seq == seq and not self.seen[i]:
                self.seen[i] = True
                if digest != ref.hash:
                    self.add(seq, Finding.HEAD_MISMATCH, f"entry {seq} is not the one {name} names (another hash)")

    def _content(self, seq: int, fields: list[Any]) -> bool:
        """Check an entry against its hash and mac; False if its fields were edited."""
        at, actor, action, target, details, prev, digest, mac = fields
        names = ("at", "actor", "action", "details", "prev", "hash", "mac")
        bad = [
            n
            for n, v in zip(names, (at, actor, action, details, prev, digest, mac), strict=True)
            if not isinstance(v, str)
        ]
        if target is not None and not isinstance(target, str):
            bad.append("target")
        if bad:
            self.add(seq, Finding.EDITED, f"entry {seq} was edited: {', '.join(bad)} not stored as text")
            return False
        encoded = encode_entry((seq, at, actor, action, target, details, prev))
        if hashlib.sha256(encoded).hexdigest() != digest:
            self.add(seq, Finding.EDITED, f"entry {seq} was edited: its fields do not match its hash")
            return False
        if self.key is not None:
            expected = hmac.new(self.key, encoded, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(mac.encode(), expected.encode()):
                self.add(seq, Finding.MAC_MISMATCH, f"entry {seq} was not written with the audit key (its mac differs)")
        return True

    def _place(self, seq: int, prev: object, digest: object) -> None:
        if seq == self.expected:
            if prev != self.head.hash:
                before = f"entry {seq - 1}" if seq > 1 else "the start of the log"
                self.add(seq, Finding.REORDERED, f"entry {seq} does not link to {before} (its prev is another hash)")
            self._advance(seq, digest)
        elif seq > self.expected:
            low, high = self.expected, seq - 1
            span = f"entry {low}" if low == high else f"entries {low} to {high}"
            if self._count("seq BETWEEN ? AND ?", (low, high)) == 0:
                self.add(low, Finding.MISSING, f"{span} {'is' if low == high else 'are'} missing")
            else:
                self.add(seq, Finding.REORDERED, f"entry {seq} is stored before {span}")
            self._advance(seq, digest)
        else:
            copies = self._count("seq = ?", (seq,))
            if copies > 1:
                self.add(seq, Finding.INSERTED, f"entry {seq} appears {copies} times: entries were inserted")
            else:
                self.add(seq, Finding.REORDERED, f"entry {seq} is stored after entry {self.expected - 1}")

    def _advance(self, seq: int, digest: object) -> None:
        self.expected = seq + 1
        self.head = Head(seq, digest if isinstance(digest, str) else "")

    def _count(self, where: str, params: tuple[int, ...]) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM entries WHERE {where}", params).fetchone()[0])  # noqa: S608

    def finish(self) -> None:
        for (name, ref), seen in zip(self.refs, self.seen, strict=True):
            if seen or (ref.seq == 0 and ref.hash == ZERO_HASH):
                continue
            if ref.seq == 0:
                self.add(0, Finding.HEAD_MISMATCH, f"{name} names an empty log with a hash that is not zeros")
            elif self.head.seq < ref.seq:
                gone = (
                    f"entry {ref.seq} is"
                    if ref.seq == self.head.seq + 1
                    else f"entries {self.head.seq + 1} to {ref.seq} are"
                )
                self.add(
                    self.head.seq + 1,
                    Finding.TRUNCATED,
                    f"the log ends at entry {self.head.seq} but {name} names entry {ref.seq}: {gone} gone",
                )
            else:
                self.add(ref.seq, Finding.HEAD_MISMATCH, f"entry {ref.seq}, which {name} names, is not in the log")
