"""One call's consent as it happens: the notice at the answer, the periodic tone, the express question.

The service makes a :class:`ConsentSession` when a call is answered, plays what
:meth:`~ConsentSession.opening` returns at once (so the notice starts within a
block of the answer and, heard back through the line, is inside the recording),
feeds it the call's audio while it waits for an express answer, and plays the
beeps :meth:`~ConsentSession.tick` returns. Times are the line's clock; the
evidence gives them as offsets into the recording.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.consent.decision import Decision
from firmware.consent.notices import Notice, NoticeLibrary
from firmware.dsp.dtmf import DtmfDetector


class Consent(enum.Enum):
    """Where a call's consent stands."""

    GIVEN = "given"  # nothing more is needed: the rule allows recording, with or without the notice played
    ASKING = "asking"  # the express question was asked; waiting for 1 or 2
    REFUSED = "refused"  # the caller pressed 2, or did not answer in time
    NOT_RECORDED = "not-recorded"  # the owner's never-record list


@dataclass(frozen=True, slots=True)
class Played:
    """A notice played to the line, and when."""

    kind: str  # "notice", "question" or "beep"
    notice: Notice
    t: float


class ConsentSession:
    """The consent of one answered call."""

    def __init__(
        self,
        decision: Decision,
        library: NoticeLibrary,
        *,
        express_timeout_s: float,
        beep: bool,
        language: str | None = None,
    ) -> None:
        self.decision = decision
        self.language = language
        self._library = library
        self._timeout_s = express_timeout_s
        self._beep_every = decision.beep_interval_s if beep else None
        self._next_beep: float | None = None
        self._deadline: float | None = None
        self._dtmf: DtmfDetector | None = None
        self._heard_from: float | None = None  # the line time of the first sample listened to
        self.played: list[Played] = []
        self.answer: dict[str, Any] | None = None
        self.state = Consent.GIVEN if decision.record else Consent.NOT_RECORDED

    @property
    def refused(self) -> bool:
        """The express question was answered no, or not at all."""
        return self.state is Consent.REFUSED

    def opening(self, t: float) -> list[Notice]:
        """What to play when the call is answered, starting at ``t``."""
        if self.state is Consent.NOT_RECORDED:
            return []
        if self.decision.rule == "express":
            question = self._library.question(self.language)
            self.state = Consent.ASKING
            self._deadline = t + question.duration_s + self._timeout_s
            self._dtmf = DtmfDetector(self._library.sample_rate)
            return [self._play("question", question, t)]
        if not self.decision.announce:
            return []
        notice = self._library.for_rule(self.decision.rule, self.language)
        if self._beep_every:
            self._next_beep = t + notice.duration_s + self._beep_every
        return [self._play("notice", notice, t)]

    def _play(self, kind: str, notice: Notice, t: float) -> Notice:
        self.played.append(Played(kind, notice, t))
        return notice

    def heard(self, t: float, audio: NDArray[np.int16]) -> None:
        """Listen to the call's audio (from ``t``) for the express answer."""
        if self.state is not Consent.ASKING or self._dtmf is None:
            return
        if self._heard_from is None:
            self._heard_from = t
        for digit in self._dtmf.feed(audio):
            if digit.digit in "12":
                at = self._heard_from + digit.start_s
                yes = digit.digit == "1"
                self.answer = {"answer": "yes" if yes else "no", "digit": digit.digit, "t": at}
                self.state = Consent.GIVEN if yes else Consent.REFUSED
                if yes and self._beep_every:
                    self._next_beep = t + self._beep_every
                return

    def tick(self, t: float) -> list[Notice]:
        """The beep when one is due at ``t``; an unanswered express question times out here."""
        if self.state is Consent.ASKING and self._deadline is not None and t >= self._deadline:
            self.answer = {"answer": "timeout", "digit": None, "t": t}
            self.state = Consent.REFUSED
            return []
        if self.state is not Consent.GIVEN or self._next_beep is None or t < self._next_beep:
            return []
        assert self._beep_every is not None
        self._next_beep = t + self._beep_every
        return [self._play("beep", self._library.tone, t)]

    def evidence(self, since: float | None, *, reference: str = "recording") -> dict[str, Any]:
        """The manifest's ``consent``: the decision, what was played when, and the express answer.

        Offsets are seconds from ``since``: the recording's first sample (pre-roll
        included), or for a call kept without audio the answer; ``offsets_from``
        says which.
        """

        def offset(t: float) -> float | None:
            return round(t - since, 3) if since is not None else None

        d = self.decision
        notices = [
            {
                "kind": p.kind,
                "id": p.notice.id,
                "sha256": p.notice.sha256,
                "offset_s": offset(p.t),
                "duration_s": round(p.notice.duration_s, 3),
            }
            for p in self.played
            if p.kind != "beep"
        ]
        beeps = [p for p in self.played if p.kind == "beep"]
        answer = dict(self.answer) if self.answer is not None else None
        if answer is not None:
            answer["offset_s"] = offset(answer.pop("t"))
        return {
            "rule": d.rule,
            "jurisdiction": d.jurisdiction,
            "basis": d.basis,
            "disputed": d.disputed,
            "caller_region": d.caller_region,
            "language": self.language,
            "recorded": self.state is Consent.GIVEN,
            "offsets_from": reference,
            "notices": notices,
            "beep": {
                "interval_s": self._beep_every,
                "id": self._library.tone.id,
                "sha256": self._library.tone.sha256,
                "offsets_s": [offset(p.t) for p in beeps],
            }
            if self._beep_every
            else None,
            "express": answer,
        }
