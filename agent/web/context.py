"""What every request of the review app shares: settings, archive, audit log, users, and the keys to open calls."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.audit import Action

if TYPE_CHECKING:
    from agent.archive import Archive
    from agent.audit import AuditLog
    from agent.config import AgentConfig
    from agent.web.live import LiveStatus
    from agent.web.users import UserStore
    from firmware.wire import age

log = logging.getLogger("linerec.agent.web")
ENVELOPES_KEPT = 64  # waveforms remembered (600 numbers each) so a page reload does not decode the call again


@dataclass
class WebContext:
    """The review app's shared state; every part of it is safe to use from several threads."""

    cfg: AgentConfig
    archive: Archive
    audit: AuditLog
    users: UserStore
    identities: Sequence[age.Identity]
    live: LiveStatus | None = None  # statuses as the broker has them now, when the app follows it
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listened: dict[str, set[str]] = field(default_factory=dict)  # session token -> audio already recorded as heard
    _envelopes: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def record(
        self, actor: str, action: Action, target: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """Append an audit entry for what a request is about to show or do (an error stops the request)."""
        self.audit.record(actor, action, target, details)

    def first_listen(self, token: str, key: str) -> bool:
        """Whether this session asks for this audio for the first time (then it is now marked as heard)."""
        with self._lock:
            heard = self._listened.setdefault(token, set())
            if key in heard:
                return False
            heard.add(key)
            return True

    def forget_session(self, token: str) -> None:
        """Drop what was remembered for a session that ended."""
        with self._lock:
            self._listened.pop(token, None)

    def envelope(self, key: str) -> list[float] | None:
        """A waveform envelope computed before, if it is still remembered."""
        with self._lock:
            found = self._envelopes.get(key)
            if found is not None:
                self._envelopes.move_to_end(key)
            return found

    def keep_envelope(self, key: str, peaks: list[float]) -> None:
        """Remember an envelope, forgetting the least recently used beyond ``ENVELOPES_KEPT``."""
        with self._lock:
            self._envelopes[key] = peaks
            while len(self._envelopes) > ENVELOPES_KEPT:
                self._envelopes.popitem(last=False)

    def close(self) -> None:
        """Close the archive, the audit log and the user store."""
        for item in (self.archive, self.audit, self.users):
            item.close()
