"""Retention policy: which archived recordings are due for deletion, and what a legal hold keeps.

Pure policy: it takes settings, facts about calls, the current time and the holds,
and answers with decisions. Reading the index and deleting files belong to the
archive and its ``purge`` verb.

The ``[retention]`` table of ``agent.toml``::

    [retention]
    default_days = 90           # absent, 0 or "forever": keep forever
    missed_days = 7             # calls without audio; absent: they follow the device or default class
    min_days = 7                # the floor: a shorter class is a configuration error, not a purge
    [retention.devices]
    pi-kitchen = 30
    [retention.tags]
    complaint = 365
    litigation = "forever"

Every value in days is a whole number from ``min_days`` to 36500, or ``0`` or
``"forever"`` to keep forever.

Which class applies, in order:

1. A legal hold beats everything. A recording held by its id, or whose caller
   number is held, is never due, however old it is.
2. The base class is ``missed_days`` for a call without audio when it is set,
   else the class of the call's device when ``[retention.devices]`` lists it,
   else ``default_days``.
3. Every tag the call carries that ``[retention.tags]`` lists adds its class
   (tags are compared without regard to case).
4. The call is kept for the **longest** of those classes, and forever beats any
   number. Tagging a call can therefore only keep it longer: a tag never
   shortens what a device class (perhaps a legal minimum) asks for.
5. A call is due once ``now >= ended_at + days``: a recording exactly 30 days
   old under a 30-day class is due, its 30 days of keeping being over.

Times are timezone-aware (naive ones are refused) and decisions are in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent.errors import AgentError
from firmware.wire.errors import ConfigError, WireError
from firmware.wire.settings import Table
from firmware.wire.topics import check_device_id

FOREVER = 0  # a class of 0 days keeps forever, as in the config file
MAX_DAYS = 36500  # a century: far beyond any legal period, and far inside datetime's range
MAX_TAG_LENGTH = 64
HOLD_SUFFIX_DIGITS = 7  # a held number also covers numbers that end with its last 7+ digits, and vice versa
_CACHE_LIMIT = 4096
_NOT_DIGITS = re.compile(r"[^0-9]+")


class RetentionError(AgentError, ValueError):
    """A call's facts or a hold cannot be judged: a naive time, a hold on a number without digits."""


def _days_problem(key: str, value: object, min_days: int) -> str | None:
    """What is wrong with ``value`` as the days of ``key``, or None when it is a valid class."""
    if value == "forever" or (type(value) is int and (value == FOREVER or min_days <= value <= MAX_DAYS)):
        return None
    return (
        f"{key} is {value!r}; expected a whole number of days from {min_days} (retention.min_days)"
        f' to {MAX_DAYS}, or 0 or "forever" to keep forever'
    )


def _days(value: object) -> int:
    """A checked config value as days (FOREVER for ``"forever"``)."""
    return value if isinstance(value, int) else FOREVER


def _tag_problem(key: str, tag: str) -> str | None:
    if tag and len(tag) <= MAX_TAG_LENGTH and tag == tag.strip() and tag.isprintable():
        return None
    return f"{key} has the tag {tag!r}; expected 1-{MAX_TAG_LENGTH} printable characters without surrounding spaces"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """``[retention]``: how many days each class of recording is kept (0 keeps forever)."""

    default_days: int = FOREVER
    devices: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, int] = field(default_factory=dict)
    missed_days: int | None = None  # None: calls without audio follow their device or the default
    min_days: int = 1

    def __post_init__(self) -> None:
        if type(self.min_days) is not int or not 1 <= self.min_days <= MAX_DAYS:
            msg = f"retention.min_days is {self.min_days!r}; expected an integer from 1 to {MAX_DAYS}"
            raise ConfigError(msg)
        checks: list[tuple[str, object]] = [("retention.default_days", self.default_days)]
        if self.missed_days is not None:
            checks.append(("retention.missed_days", self.missed_days))
        checks += [(f"retention.devices.{d}", v) for d, v in self.devices.items()]
        checks += [(f"retention.tags.{t}", v) for t, v in self.tags.items()]
        for key, value in checks:
            problem = _days_problem(key, value, self.min_days)
            if problem is not None or type(value) is not int:
                raise ConfigError(problem or f"{key} is {value!r}; expected a whole number of days, 0 keeping forever")
        for device in self.devices:
            try:
                check_device_id(device)
            except WireError as exc:
                raise ConfigError(f"retention.devices: {exc}") from None
        tags: dict[str, int] = {}
        for tag, days in self.tags.items():
            problem = _tag_problem("retention.tags", tag)
            if problem is not None:
                raise ConfigError(problem)
            if tag.casefold() in tags:
                msg = f"retention.tags has {tag!r} twice (tags are compared without regard to case)"
                raise ConfigError(msg)
            tags[tag.casefold()] = days
        object.__setattr__(self, "devices", MappingProxyType(dict(self.devices)))
        object.__setattr__(self, "tags", MappingProxyType(tags))


def _subtable(raw: dict[str, Any], name: str, source: Path | str, min_days: int) -> dict[str, int]:
    """``[retention.<name>]``: keys checked by the caller, values checked here."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        msg = f"{source}: [retention.{name}] must be a table, not {table!r}"
        raise ConfigError(msg)
    out: dict[str, int] = {}
    for key, value in table.items():
        problem = _days_problem(f"retention.{name}.{key}", value, min_days)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        out[key] = _days(value)
    return out


def parse_retention(data: dict[str, Any], source: Path | str = "<config>") -> RetentionSettings:
    """The ``[retention]`` table of a parsed agent config as RetentionSettings (defaults when absent)."""
    t = Table(data, "retention", source)
    raw = dict(data.get("retention", {}))
    min_days = t.integer("min_days", 1, 1, MAX_DAYS)
    values: dict[str, int | None] = {}
    for key in ("default_days", "missed_days"):
        value = t.optional(key, object)
        if value is not None:
            problem = _days_problem(t.key(key), value, min_days)
            if problem is not None:
                raise ConfigError(f"{source}: {problem}")
            values[key] = _days(value)
    for name in ("devices", "tags"):
        t.optional(name, object)
    devices = _subtable(raw, "devices", source, min_days)
    for device in devices:
        try:
            check_device_id(device)
        except WireError:
            msg = (
                f'{source}: retention.devices."{device}" is not a device id; expected 1-63 lowercase letters,'
                " digits, '-' or '_', starting with a letter or digit"
            )
            raise ConfigError(msg) from None
    tags = _subtable(raw, "tags", source, min_days)
    seen: dict[str, str] = {}
    for tag in tags:
        problem = _tag_problem("retention.tags", tag)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        if tag.casefold() in seen:
            msg = (
                f"{source}: retention.tags has {seen[tag.casefold()]!r} and {tag!r};"
                " expected each tag once (tags are compared without regard to case)"
            )
            raise ConfigError(msg)
        seen[tag.casefold()] = tag
    t.done()
    default_days = values.get("default_days")
    return RetentionSettings(
        default_days=FOREVER if default_days is None else default_days,
        devices=devices,
        tags=tags,
        missed_days=values.get("missed_days"),
        min_days=min_days,
    )


def _hold_key(number: str) -> str:
    """The significant digits of a number: no punctuation, no '+', no trunk or international zeros."""
    return _NOT_DIGITS.sub("", number).lstrip("0")


@dataclass(frozen=True, slots=True)
class Holds:
    """The legal holds in force: recording ids, and caller numbers whose every call is held.

    A held number may be written in E.164 (``+12125550143``) or as raw digits
    (``2125550143``, ``020 7946 0000``). It holds a call when the significant
    digits (punctuation and leading zeros dropped) are equal, or when one ends
    with the other and the shorter has at least seven digits; so a hold placed
    on the international form also covers a caller ID delivered in national
    form. Matching errs towards holding: a hold keeps, it never deletes.
    """

    ids: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()
    _keys: dict[str, str] = field(init=False, repr=False, compare=False)
    _suffixes: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", frozenset(self.ids))
        object.__setattr__(self, "numbers", frozenset(self.numbers))
        for rec_id in self.ids:
            if not isinstance(rec_id, str) or not rec_id:
                msg = f"cannot hold the recording {rec_id!r}; expected a recording id"
                raise RetentionError(msg)
        keys: dict[str, str] = {}
        suffixes: dict[str, str] = {}
        for number in sorted(self.numbers):
            key = _hold_key(number) if isinstance(number, str) else ""
            if not key:
                msg = f"cannot hold calls from {number!r}; expected a caller number with digits"
                raise RetentionError(msg)
            keys.setdefault(key, number)
            for start in range(len(key) - HOLD_SUFFIX_DIGITS + 1):
                suffixes.setdefault(key[start:], number)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_suffixes", suffixes)

    @classmethod
    def of(cls, *, ids: Iterable[str] = (), numbers: Iterable[str] = ()) -> Holds:
        """Holds from any iterables of recording ids and caller numbers."""
        return cls(frozenset(ids), frozenset(numbers))

    def holding(self, call: CallFacts) -> str | None:
        """Why ``call`` is held (in words), or None when no hold covers it."""
        if call.id in self.ids:
            return f"recording {call.id} is under legal hold"
        if not self._keys or not call.caller_number:
            return None
        key = _hold_key(call.caller_number)
        # Equal, or the caller's number is the tail of a held one, or a held number is the tail of the caller's.
        held = self._keys.get(key) or self._suffixes.get(key)
        if held is None:
            tails = (key[start:] for start in range(1, len(key) - HOLD_SUFFIX_DIGITS + 1))
            held = next((self._keys[tail] for tail in tails if tail in self._keys), None)
        if held is None:
            return None
        return f"calls from {held} are under legal hold (this call is from {call.caller_number})"


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the policy needs to know about one archived call."""

    id: str
    device: str
    ended_at: datetime  # timezone-aware; naive times are refused when judged
    tags: tuple[str, ...] = ()
    caller_number: str | None = None
    has_audio: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """A call that is due for deletion, the class that made it due, and since when."""

    id: str
    policy: str  # e.g. "default 90 d", "device pi-kitchen 30 d", "tag sales 14 d", "missed 7 d"
    due_at: datetime  # UTC

    def to_json(self) -> dict[str, str]:
        """The decision as a JSON-ready object (one line of a purge plan)."""
        return {"id": self.id, "policy": self.policy, "due_at": stamp(self.due_at)}


@dataclass(frozen=True, slots=True)
class _Class:
    label: str
    days: int  # FOREVER or a number of days

    def longer_than(self, other: _Class) -> bool:
        if self.days == FOREVER:
            return other.days != FOREVER
        return other.days != FOREVER and self.days > other.days


def stamp(when: datetime) -> str:
    """A time as the agent writes it: ISO 8601 in UTC with a ``Z``."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _aware(when: datetime, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        msg = f"{what} is {when!r}; expected a timezone-aware UTC time"
        raise RetentionError(msg)
    return when


def _label(kind: str, days: int) -> str:
    return f"{kind} forever" if days == FOREVER else f"{kind} {days} d"


def _classes(
    device: str, has_audio: bool, tags: Iterable[str], settings: RetentionSettings
) -> tuple[_Class, list[_Class]]:
    """The base class of a call and the classes its tags add, tags in sorted order."""
    if not has_audio and settings.missed_days is not None:
        base = _Class(_label("missed", settings.missed_days), settings.missed_days)
    elif device in settings.devices:
        days = settings.devices[device]
        base = _Class(_label(f"device {device}", days), days)
    else:
        base = _Class(_label("default", settings.default_days), settings.default_days)
    extra: list[_Class] = []
    for tag in sorted({t.casefold() for t in tags}):
        days_or_none = settings.tags.get(tag)
        if days_or_none is not None:
            extra.append(_Class(_label(f"tag {tag}", days_or_none), days_or_none))
    return base, extra


def _longest(base: _Class, extra: list[_Class]) -> _Class:
    """The class that keeps longest; on a tie, the base class, then the first tag."""
    best = base
    for cls in extra:
        if cls.longer_than(best):
            best = cls
    return best


def due(calls: Iterable[CallFacts], now: datetime, settings: RetentionSettings, holds: Holds) -> Iterator[Decision]:
    """The calls that are due for deletion at ``now``, in the order given; streams, holds nothing back."""
    now = _aware(now, "the current time")
    # Calls of one device with the same tags share a class, so a purge over many rows judges each mix once.
    cache: dict[tuple[str, bool, tuple[str, ...]], tuple[str, timedelta | None]] = {}
    for call in calls:
        ended = call.ended_at
        if not isinstance(ended, datetime) or ended.tzinfo is None or ended.utcoffset() is None:
            _aware(ended, f"the end time of recording {call.id}")
        if holds.holding(call) is not None:
            continue
        key = (call.device, call.has_audio, call.tags)
        found = cache.get(key)
        if found is None:
            best = _longest(*_classes(call.device, call.has_audio, call.tags, settings))
            found = (best.label, None if best.days == FOREVER else timedelta(days=best.days))
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = found
        label, keep = found
        if keep is not None and now >= ended + keep:
            yield Decision(call.id, label, (ended + keep).astimezone(UTC))


def explain(call: CallFacts, now: datetime, settings: RetentionSettings, holds: Holds) -> str:
    """One sentence for ``show``: why the call is kept, until when, or since when it is due."""
    now = _aware(now, "the current time")
    ended = _aware(call.ended_at, f"the end time of recording {call.id}")
    held = holds.holding(call)
    if held is not None:
        return f"held: {held}, so it is never due"
    base, extra = _classes(call.device, call.has_audio, call.tags, settings)
    best = _longest(base, extra)
    others = [c.label for c in (base, *extra) if c is not best]
    also = f"; also applies: {', '.join(others)}" if others else ""
    if best.days == FOREVER:
        return f"kept forever under {best.label}{also}"
    due_at = ended + timedelta(days=best.days)
    if now >= due_at:
        return f"due since {stamp(due_at)} under {best.label} (ended {stamp(ended)}){also}"
    return f"kept until {stamp(due_at)} under {best.label} (ended {stamp(ended)}){also}"


def oldest_possible_due(settings: RetentionSettings, now: datetime) -> datetime | None:
    """The latest end time a call can have and still be due at ``now``; None if nothing can be due.

    Tags only lengthen retention, so no call is kept for less than the shortest
    base class. The archive can select ``WHERE ended_at <= cut-off`` (in UTC)
    and leave recent rows unread; the rows it reads still go through ``due``.
    """
    now = _aware(now, "the current time")
    bases = [settings.default_days, *settings.devices.values()]
    if settings.missed_days is not None:
        bases.append(settings.missed_days)
    finite = [days for days in bases if days != FOREVER]
    if not finite:
        return None
    return (now - timedelta(days=min(finite))).astimezone(UTC)
