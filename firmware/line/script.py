"""Scripted calls for the simulated line: what each call does, checked when it is written.

A :class:`ScriptedCall` says how one call goes: how the line rings, how caller
ID arrives, who answers, what is said, and how the call ends. :func:`scenario`
names the calls tests and the demo play, one per situation a real line brings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.dsp.callerid import ABSENCE_REASONS, encode_mdmf, encode_sdmf, parse_message
from firmware.line.base import CallerId, ScriptError
from firmware.line.cadence import cadence_for_country
from firmware.wire.errors import ConfigError

__all__ = [
    "ANSWERERS",
    "CALLER_ID_STANDARDS",
    "CALLER_ID_TIMINGS",
    "HANGUPS",
    "SCENARIOS",
    "ScriptedCall",
    "demo_calls",
    "scenario",
]

CALLER_ID_TIMINGS = ("after-first-ring", "before-ring", "none")
CALLER_ID_STANDARDS = ("bell202-mdmf", "bell202-sdmf", "etsi-v23", "dtmf")
# remote: CPC loop drop; polarity: the exchange reverses the line instead; tone: busy
# tone and no CPC; silence: the far end just goes quiet; local: the local phone hangs up.
HANGUPS = ("remote", "local", "polarity", "tone", "silence")
# Who takes the call off-hook: the phone, another phone on the line, or the recorder.
ANSWERERS = ("local", "extension", "machine")

_DEFAULT_TALK: tuple[tuple[str, str], ...] = (
    ("callee", "Hello?"),
    ("caller", "Hi, this is a test call on the simulated line."),
    ("callee", "Thanks, I can hear you fine."),
)
# DTMF caller ID codes for a missing number (Asterisk callerid.c): B00 unavailable, B10 private.
_DTMF_ABSENT = {"O": "B00", "P": "B10"}


def _one_of(what: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        msg = f"{what} {value!r} must be {choices}"
        raise ScriptError(msg)


@dataclass(frozen=True)
class ScriptedCall:
    """One call as the simulated line should play it."""

    caller_number: str | None = "+12125550142"
    caller_name: str | None = None
    # 'P' withheld, 'O' unavailable; used when caller_number is None.
    number_absent: str | None = None
    name_absent: str | None = None
    # Rings before the answer; for an unanswered call, rings before the caller gives up;
    # for answered_by="machine", the most rings before the caller gives up.
    rings: int = 2
    answered: bool = True
    # (speaker, text) turns, usually "caller" and "callee".
    talk: tuple[tuple[str, str], ...] = _DEFAULT_TALK
    # One of HANGUPS.
    hangup: str = "remote"
    gap_before_s: float = 3.0
    # Ring on/off seconds, repeated per ring (US 2.0/4.0; GB 0.4/0.2/0.4/2.0); each
    # burst is reported as a ring of its own. `country` overrides it.
    cadence: tuple[float, ...] = (2.0, 4.0)
    # Ring with this country's cadence from cadences.toml, reported as a ring detector
    # does: bursts closer than 640 ms are one ring, and RingEnd names the cadence from
    # the second ring on. Also picks the country's call-progress tones.
    country: str | None = None
    caller_id_timing: str = "after-first-ring"
    caller_id_standard: str = "bell202-mdmf"
    answered_by: str = "local"
    # How long the exchange opens the loop when the far end hangs up (hangup="remote").
    cpc_ms: int = 600
    # How long busy tone plays before the local phone hangs up (hangup="tone").
    tone_s: float = 5.0
    # How long the dead line lasts before the local phone hangs up (hangup="silence").
    silence_s: float = 40.0
    # Seconds after the answer when a second caller's call-waiting alert sounds.
    call_waiting_at_s: float | None = None
    noise_dbfs: float = -60.0
    # Mains hum (50 or 60 Hz) at -40 dBFS on the line; None for none.
    hum_hz: float | None = None
    # A call placed from here: off-hook, dial tone, talk. No rings, no caller ID.
    outgoing: bool = False
    # True: the caller ID is sent as line audio (FSK or DTMF) for a decoder to find, with no event.
    caller_id_audio: bool = False

    def __post_init__(self) -> None:
        self._check_caller()
        self._check_choices()
        self._check_numbers()
        self._check_answer()

    def _check_caller(self) -> None:
        for what, reason in (("number_absent", self.number_absent), ("name_absent", self.name_absent)):
            if reason is not None and reason not in ABSENCE_REASONS:
                msg = f"{what} {reason!r} must be 'O' (unavailable), 'P' (private) or None"
                raise ScriptError(msg)
        if self.caller_number is not None and not any(c.isdigit() for c in self.caller_number):
            msg = f"caller_number {self.caller_number!r} has no digits"
            raise ScriptError(msg)
        narrow = self.caller_id_standard in ("bell202-sdmf", "dtmf")
        if narrow and (self.caller_name is not None or self.name_absent is not None):
            msg = (
                f"caller_name {self.caller_name!r} / name_absent {self.name_absent!r} cannot be sent: "
                f"caller_id_standard {self.caller_id_standard!r} carries the number only"
            )
            raise ScriptError(msg)

    def _check_choices(self) -> None:
        _one_of("hangup", self.hangup, HANGUPS)
        _one_of("caller_id_timing", self.caller_id_timing, CALLER_ID_TIMINGS)
        _one_of("caller_id_standard", self.caller_id_standard, CALLER_ID_STANDARDS)
        _one_of("answered_by", self.answered_by, ANSWERERS)
        if self.country is not None:
            try:
                cadence_for_country(self.country)
            except ConfigError as exc:
                raise ScriptError(str(exc)) from None

    def _check_numbers(self) -> None:
        # The recorder answers only a ringing line, so a machine-answered call rings at least once.
        picked_up = self.answered and self.answered_by != "machine"
        if self.rings < (0 if picked_up else 1):
            kind = "an answered call" if picked_up else "an unanswered call"
            if self.answered and not picked_up:
                kind = "a call the machine answers"
            msg = f"rings {self.rings} is too few for {kind}"
            raise ScriptError(msg)
        for what, seconds in (
            ("gap_before_s", self.gap_before_s),
            ("tone_s", self.tone_s),
            ("silence_s", self.silence_s),
        ):
            if not seconds >= 0:
                msg = f"{what} {seconds!r} must be zero or more seconds"
                raise ScriptError(msg)
        if not self.cadence or len(self.cadence) % 2 or not all(s > 0 for s in self.cadence):
            msg = f"cadence {self.cadence!r} must be pairs of positive on/off seconds"
            raise ScriptError(msg)
        if not 50 <= self.cpc_ms <= 2000:
            msg = f"cpc_ms {self.cpc_ms!r} must be 50..2000 milliseconds (exchanges use 250..900)"
            raise ScriptError(msg)
        if self.call_waiting_at_s is not None and not self.call_waiting_at_s > 0:
            msg = f"call_waiting_at_s {self.call_waiting_at_s!r} must be a positive number of seconds or None"
            raise ScriptError(msg)
        if not -120.0 <= self.noise_dbfs <= -20.0:
            msg = f"noise_dbfs {self.noise_dbfs!r} must be -120..-20 dBFS"
            raise ScriptError(msg)
        if self.hum_hz is not None and not 16.0 <= self.hum_hz <= 400.0:
            msg = f"hum_hz {self.hum_hz!r} must be 16..400 Hz (mains is 50 or 60) or None"
            raise ScriptError(msg)

    def _check_answer(self) -> None:
        if self.answered_by == "machine":
            if not self.answered:
                msg = "answered_by 'machine' needs answered=True: the recorder answers when it goes off-hook"
                raise ScriptError(msg)
            if self.hangup == "local":
                msg = "hangup 'local' cannot end a call the machine answered: nobody is there to hang up"
                raise ScriptError(msg)
        if self.outgoing and (not self.answered or self.answered_by == "machine"):
            msg = "an outgoing call must be answered=True and answered_by 'local' or 'extension'"
            raise ScriptError(msg)

    @property
    def wire_number(self) -> str | None:
        """The number as caller ID carries it: its digits only."""
        if self.caller_number is None:
            return None
        return "".join(c for c in self.caller_number if c.isdigit())

    @property
    def ring_pattern(self) -> tuple[float, ...]:
        """On/off seconds of one ring cycle: the country's cadence, or ``cadence``."""
        if self.country is None:
            return self.cadence
        return cadence_for_country(self.country).pattern

    @property
    def cadence_key(self) -> str | None:
        """The cadences.toml key a ring detector would name, when ringing by country."""
        return None if self.country is None else cadence_for_country(self.country).key

    def caller_id(self, when: datetime) -> CallerId | None:
        """The caller ID the exchange sends at ``when``; None if it sends none."""
        fields = (self.wire_number, self.caller_name, self.number_absent, self.name_absent)
        if self.caller_id_timing == "none" or all(value is None for value in fields):
            return None
        standard = self.caller_id_standard
        if standard == "dtmf":
            return self._dtmf_caller_id()
        if standard == "bell202-sdmf":
            if self.wire_number is None and self.number_absent is None:
                return None
            raw = encode_sdmf(number=self.wire_number, number_absent=self.number_absent, when=when)
        else:
            # ETSI EN 300 659 uses the MDMF message layout, carried on V.23 instead of Bell 202.
            raw = encode_mdmf(
                number=self.wire_number,
                name=self.caller_name,
                number_absent=self.number_absent,
                name_absent=self.name_absent,
                when=when,
            )
        return parse_message(raw, standard=standard)

    def _dtmf_caller_id(self) -> CallerId | None:
        if self.wire_number is not None:
            body = f"A{self.wire_number}C"
        elif self.number_absent is not None:
            body = f"{_DTMF_ABSENT[self.number_absent]}C"
        else:
            return None
        return CallerId(
            number=self.wire_number,
            name=None,
            number_absent=None if self.wire_number is not None else self.number_absent,
            name_absent=None,
            standard="dtmf",
            raw=body.encode("ascii"),
        )


def demo_calls() -> tuple[ScriptedCall, ...]:
    """Three calls for the demo: a named caller, a withheld number, and one nobody answers."""
    plumber = ScriptedCall(
        caller_number="+1 212 555 0142",
        caller_name="ACME PLUMBING",
        rings=2,
        hangup="remote",
        talk=(
            ("callee", "Hello?"),
            ("caller", "Hi, this is Acme Plumbing about your kitchen sink."),
            ("callee", "Oh great, when can you come by?"),
            ("caller", "Tomorrow morning at nine, if that works."),
            ("callee", "Nine is fine. See you then."),
            ("caller", "Thanks, bye."),
        ),
    )
    withheld = ScriptedCall(
        caller_number=None,
        number_absent="P",
        name_absent="P",
        rings=3,
        hangup="local",
        talk=(
            ("callee", "Hello, who is this?"),
            ("caller", "Hello, I am calling about your recent order."),
            ("callee", "Which order do you mean?"),
            ("caller", "The one from last week, it ships on Friday."),
            ("callee", "All right, thank you."),
        ),
    )
    missed = ScriptedCall(
        caller_number="+1 646 555 0199",
        caller_name="J SMITH",
        rings=4,
        answered=False,
        talk=(),
    )
    return plumber, withheld, missed


_SHORT_TALK: tuple[tuple[str, str], ...] = (
    ("callee", "Hello?"),
    ("caller", "Hi, it is Sam. Have you got a minute?"),
    ("callee", "Sure, go ahead."),
    ("caller", "I wanted to check the time for Saturday."),
    ("callee", "We said ten in the morning."),
    ("caller", "Great, see you then. Bye."),
)
_MESSAGE: tuple[tuple[str, str], ...] = (
    ("caller", "Hi, it is Sam. Sorry I missed you. Please call me back when you get this. Thanks, bye."),
)


def _scenarios() -> dict[str, tuple[ScriptedCall, ...]]:
    us = ScriptedCall(country="US", caller_number="+1 212 555 0142", caller_name="ACME PLUMBING", talk=_SHORT_TALK)
    return {
        "us-basic": (us,),
        "gb-pre-ring-cid": (
            ScriptedCall(
                country="GB",
                caller_number="020 7946 0018",
                caller_id_timing="before-ring",
                caller_id_standard="etsi-v23",
                hangup="local",
                talk=_SHORT_TALK,
            ),
        ),
        "cpc-hangup": (ScriptedCall(country="US", hangup="remote", cpc_ms=600, talk=_SHORT_TALK),),
        "polarity-hangup": (
            ScriptedCall(
                country="DE",
                caller_number="030 1234567",
                caller_id_standard="etsi-v23",
                hangup="polarity",
                talk=_SHORT_TALK,
            ),
        ),
        "tone-hangup": (ScriptedCall(country="US", hangup="tone", tone_s=5.0, talk=_SHORT_TALK),),
        "silence-hangup": (ScriptedCall(country="US", hangup="silence", silence_s=40.0, talk=_SHORT_TALK),),
        "call-waiting": (ScriptedCall(country="US", call_waiting_at_s=3.0, hangup="local", talk=_SHORT_TALK),),
        "missed": (
            ScriptedCall(
                country="US", caller_number="+1 646 555 0199", caller_name="J SMITH", rings=4, answered=False, talk=()
            ),
        ),
        "extension-pickup": (ScriptedCall(country="US", answered_by="extension", talk=_SHORT_TALK),),
        "answering-machine": (
            ScriptedCall(country="US", caller_name="SAM JONES", answered_by="machine", rings=6, talk=_MESSAGE),
        ),
    }


SCENARIOS = tuple(_scenarios())


def scenario(name: str) -> tuple[ScriptedCall, ...]:
    """The calls of the named scenario (one of SCENARIOS)."""
    calls = _scenarios().get(name)
    if calls is None:
        msg = f"scenario {name!r} is unknown; known: {', '.join(SCENARIOS)}"
        raise ScriptError(msg)
    return calls
