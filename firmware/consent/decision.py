"""The consent decision for one call: which rule applies, whether to record, announce and beep, and why.

Both ends' laws apply to a call, so the stricter of the device's rule and the
caller's rule wins (Kearney v. Salomon Smith Barney, 2006). One end's rule is:

* its region's row; a subdivision's rule is never weaker than its country's row,
  because federal law applies in every state;
* at least the ``default`` rule when the row is marked ``disputed``, because
  linerec cannot know which reading a court would take;
* for a country whose subdivisions have rows but no subdivision is known (a US
  toll-free number, any Australian number, a device set to just ``US``): the
  strictest of them, since the caller could be in any;
* the ``default`` rule when the number is withheld, unreadable or unassigned,
  or the region has no row: linerec cannot tell which law applies.

So a withheld call never gets a weaker rule than the device's own, and never a
weaker one than the owner's ``default``. The owner's never-record list wins over
all of this (the call is not recorded at all), and the always-announce list
turns on the notice where the rule would not need one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from firmware.consent.regions import international, locate
from firmware.consent.rules import Row, Rule, RuleBook, stricter, strictness
from firmware.wire.errors import ConfigError

# The recorder warning tone repeats every 15 s (Federal Standard 1037C; 47 CFR 64.501).
BEEP_INTERVAL_S = 15.0
UNKNOWN = "unknown"
# The object `linerec consent --json` prints, in this order.
CLI_FIELDS = ("jurisdiction", "rule", "announce", "beep_interval_s", "basis", "disputed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with one call, and the one-line reason, kept with the recording as evidence."""

    jurisdiction: str  # the region whose rule won, or "unknown"
    rule: Rule
    record: bool  # False only when the number is on the never-record list
    announce: bool
    beep_interval_s: float | None
    basis: str
    disputed: bool  # the winning rule rests on a reading that is disputed
    caller_region: str | None

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict (every field)."""
        return asdict(self)

    def line(self) -> str:
        """One readable line: the rule, what to do, and why."""
        actions = [
            "record" if self.record else "do not record",
            "announce" if self.announce else "no notice",
            f"tone every {self.beep_interval_s:g} s" if self.beep_interval_s else "no tone",
        ]
        if self.disputed:
            actions.append("disputed")
        return f"{self.jurisdiction}: {self.rule}; {', '.join(actions)}; because {self.basis}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Law:
    """The rule one end of a call is under, the row it comes from, and how it was reached."""

    region: str  # "US-CA", "AU", or "unknown"
    rule: Rule
    row: Row
    disputed: bool
    beep: bool
    label: str  # "US-CA (all-party, Cal. Penal Code § 632)"
    short: str  # "US-CA (all-party)"


def law_of(region: str | None, rules: RuleBook, *, why: str = "place unknown") -> Law:
    """The rule a place is under (``None`` is a place linerec cannot tell; ``why`` says how)."""
    if region is None:
        row = rules.default
        return Law(
            region=UNKNOWN,
            rule=row.rule,
            row=row,
            disputed=False,
            beep=row.beep,
            label=f"{UNKNOWN} ({why}: the default {row.rule})",
            short=f"{UNKNOWN} ({why}: {row.rule})",
        )
    country, _, subdivision = region.partition("-")
    inside = () if subdivision else rules.subdivision_rows(country)
    own = _one(region, rules)
    if not inside:
        return own
    widest = max((_one(row.region, rules) for row in inside), key=lambda law: strictness(law.rule))
    if strictness(widest.rule) <= strictness(own.rule):
        return own
    return Law(
        region=region,
        rule=widest.rule,
        row=widest.row,
        disputed=widest.disputed,
        beep=widest.beep,
        label=f"{region} (place within it unknown: the strictest is {widest.label})",
        short=f"{region} ({widest.rule})",
    )


def _one(region: str, rules: RuleBook) -> Law:
    """The law of one region from its own row and its country's, without looking at subdivisions."""
    country = region.split("-", maxsplit=1)[0]
    own = rules.row(region)
    parent = rules.row(country) if country != region else None
    rows = [row for row in (own, parent) if row is not None]
    if not rows:
        row = rules.default
        label = f"{region} (no row of its own: the default {row.rule})"
        return Law(region=region, rule=row.rule, row=row, disputed=False, beep=row.beep, label=label, short=label)
    # max() keeps the first of equals, so the region's own row speaks when its country agrees.
    row, rule = max(((r, _lifted(r, rules)) for r in rows), key=lambda pair: strictness(pair[1]))
    if rule != row.rule:
        label = f"{region} (disputed {row.rule}, so the default {rule})"
    elif row is parent and own is not None:
        label = f"{region} ({rule} under {country} law, {row.source})"
    else:
        label = f"{region} ({rule}{', disputed' if row.disputed else ''}, {row.source})"
    return Law(
        region=region,
        rule=rule,
        row=row,
        disputed=row.disputed,
        beep=any(r.beep for r in rows),
        label=label,
        short=f"{region} ({rule})",
    )


def _lifted(row: Row, rules: RuleBook) -> Rule:
    return stricter(row.rule, rules.default.rule) if row.disputed else row.rule


def check_numbers(entries: Sequence[str], *, key: str, device_region: str) -> tuple[str, ...]:
    """The numbers or prefixes of a never-record or always-announce list, in international digits.

    A national entry (``0800``, ``(312) 555``) is read in the device's country.
    A bad entry is a ConfigError naming ``key`` and the entry.
    """
    if isinstance(entries, str):
        msg = f"{key}: must be a list of numbers or prefixes, such as ['+1900', '0800'], not {entries!r}"
        raise ConfigError(msg)
    country = device_region.split("-", maxsplit=1)[0]
    digits = []
    for entry in entries:
        found = international(entry, country, prefix=True) if isinstance(entry, str) else None
        if found is None:
            msg = (
                f"{key}: {entry!r} is not a phone number or prefix; "
                "expected digits with an optional leading +, such as '+1900' or '0800'"
            )
            raise ConfigError(msg)
        digits.append(found)
    return tuple(digits)


def _listed(number: str | None, entries: Sequence[str], key: str, device_region: str) -> str | None:
    """The first entry of a list that ``number`` (E.164) starts with, as the owner wrote it."""
    prefixes = check_numbers(entries, key=key, device_region=device_region)
    if number is None:
        return None
    return next((entry for entry, p in zip(entries, prefixes, strict=True) if number[1:].startswith(p)), None)


def decide(
    number: str | None,
    *,
    device_region: str,
    rules: RuleBook,
    never_record: Sequence[str] = (),
    always_announce: Sequence[str] = (),
) -> Decision:
    """The decision for a call from ``number`` (as caller ID gave it) to a device in ``device_region``.

    Never raises for any ``number`` text: what cannot be read is an unknown
    caller. A device region or list entry linerec does not know is a ConfigError.
    """
    rules.check_region(device_region, "device region")
    place = locate(number, device_country=device_region.split("-", maxsplit=1)[0])
    device = law_of(device_region, rules)
    caller = law_of(place.region, rules, why=place.why)
    ours, theirs = strictness(device.rule), strictness(caller.rule)
    if theirs > ours:
        winner, basis = caller, f"caller {caller.label} is stricter than device {device.short}"
    elif ours > theirs:
        winner, basis = device, f"device {device.label} is stricter than caller {caller.short}"
    elif device.disputed and not caller.disputed:
        winner, basis = caller, f"caller {caller.label} is as strict as device {device.short}"
    else:
        winner, basis = device, f"device {device.label} is as strict as caller {caller.short}"
    rule = winner.rule
    record, announce = True, rule != "one-party"
    beep = BEEP_INTERVAL_S if rule == "all-party" or device.beep or caller.beep else None
    never = _listed(place.number, never_record, "consent.never_record", device_region)
    always = _listed(place.number, always_announce, "consent.always_announce", device_region)
    if never is not None:
        record, announce, beep = False, False, None
        basis = f"on the never-record list ({never!r}), so not recorded; otherwise {basis}"
    elif always is not None and not announce:
        announce = True
        basis = f"{basis}; announced because {always!r} is on the always-announce list"
    return Decision(
        jurisdiction=winner.region,
        rule=rule,
        record=record,
        announce=announce,
        beep_interval_s=beep,
        basis=basis,
        disputed=winner.disputed,
        caller_region=place.region,
    )
