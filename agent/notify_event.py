"""What the targets are told about a call: the event document, checked from an archive row, and a notice's text.

Every target of one event gets the same document, less the caller for a target set
with ``include_caller = false``. A webhook sends it as JSON (``agent.webhook``); a
notice turns it into a title and a plain-text body with ``render_notice``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.errors import AgentError
from agent.notify_settings import EVENTS, zone_info
from firmware.wire.manifest import new_recording_id
from firmware.wire.topics import DEVICE_ID_RE, RECORDING_ID_RE

ALL_EVENTS = (*EVENTS, "test")

_ABSENCE = {"P": "a withheld number", "O": "an unavailable number"}


class NotifyError(AgentError, ValueError):
    """An event or call handed to the notifier cannot be sent as given."""


_TEXT = (str, type(None))
_CALL_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "line": (_TEXT, "text"),
    "started_at": ((str,), "an ISO 8601 time"),
    "answered_at": (_TEXT, "text or null"),
    "ended_at": (_TEXT, "text or null"),
    "duration_s": ((int, float), "a number of seconds"),
    "answered": ((bool,), "true or false"),
    "hangup_cause": (_TEXT, "text or null"),
    "ring_count": ((int,), "a count"),
    "timezone": (_TEXT, "an IANA time zone name"),
}
_CALLER_FIELDS = {"caller_number": "number", "caller_name": "name", "caller_absent": "absent"}


def _bad_field(name: str, value: object, what: str) -> NotifyError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return NotifyError(f"call field {name!r} is {shown}; expected {what}")


def call_facts(call: Mapping[str, Any]) -> dict[str, Any]:
    """The event document without its event: id, device and the call's checked facts (caller included)."""
    if not isinstance(call, Mapping):
        msg = f"a call must be a mapping of its fields, not {type(call).__name__}"
        raise NotifyError(msg)
    rec_id, device = call.get("id"), call.get("device")
    if not isinstance(rec_id, str) or not RECORDING_ID_RE.fullmatch(rec_id):
        raise _bad_field("id", rec_id, "a recording id YYYYMMDDTHHMMSSmmmZ-xxxxxxxx")
    if not isinstance(device, str) or not DEVICE_ID_RE.fullmatch(device):
        raise _bad_field("device", device, "a device id")
    facts: dict[str, Any] = {}
    for name, (kinds, what) in _CALL_FIELDS.items():
        value = call.get(name)
        if value is None and name not in ("started_at", "answered"):
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _bad_field(name, value, what)
        if isinstance(value, int | float) and not isinstance(value, bool) and not (math.isfinite(value) and value >= 0):
            raise _bad_field(name, value, what + " of zero or more")
        facts[name] = value
    if "timezone" in facts and zone_info(facts["timezone"]) is None:
        raise _bad_field("timezone", facts["timezone"], "an IANA time zone name")
    caller = {}
    for name, key in _CALLER_FIELDS.items():
        value = call.get(name)
        if not isinstance(value, _TEXT):
            raise _bad_field(name, value, "text or null")
        caller[key] = value
    facts["caller"] = caller
    return {"id": rec_id, "device": device, "call": facts}


def event_document(event: str, facts: dict[str, Any], *, include_caller: bool) -> dict[str, Any]:
    """The document one target is sent about ``event``, from ``call_facts``; the caller only if it wants it."""
    call = dict(facts["call"])
    if not include_caller:
        del call["caller"]
    return {"event": event, "id": facts["id"], "device": facts["device"], "call": call}


def sample_call(device: str = "linerec-test", now: float | None = None) -> dict[str, Any]:
    """A made-up answered call, for the ``test`` event that checks every target end to end."""
    t = time.time() if now is None else now
    start = iso_utc(t - 95)
    return {
        "id": new_recording_id(t - 95),
        "device": device,
        "line": "line1",
        "started_at": start,
        "answered_at": iso_utc(t - 88),
        "ended_at": iso_utc(t),
        "duration_s": 88.0,
        "answered": True,
        "hangup_cause": "remote",
        "ring_count": 2,
        "caller_number": "5550100",
        "caller_name": "LINEREC TEST",
        "caller_absent": None,
    }


def stored_document(payload: str) -> dict[str, Any] | None:
    """The event document of an outbox row, or None if it is not one this module wrote."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("event") not in ALL_EVENTS:
        return None
    call = doc.get("call")
    texts = (doc.get("id"), doc.get("device"))
    if not all(isinstance(v, str) for v in texts) or not isinstance(call, dict):
        return None
    caller = call.get("caller", {})
    return doc if isinstance(caller, dict) and all(isinstance(v, _TEXT) for v in caller.values()) else None


def iso_utc(t: float) -> str:
    """``t`` as the documents and reports write a time: ISO 8601 in UTC with a Z, whole seconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _printable(value: object, limit: int = 80) -> str:
    """``value`` as one line of text: caller ID comes off the phone line, so anyone can put anything in it."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _caller_text(caller: Mapping[str, Any]) -> str:
    number, name, absent = (_printable(caller.get(k) or "") for k in ("number", "name", "absent"))
    if number and name:
        return f"{number} ({name})"
    if number or name:
        return str(number or name)
    if absent:
        return _ABSENCE.get(absent, f"an unknown number ({absent})")
    return "an unknown number"


def _local_time(started: object, zone_name: str | None) -> str:
    if not isinstance(started, str):
        return "unknown"
    try:
        when = datetime.fromisoformat(started)
    except ValueError:
        return started
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    zone = zone_info(zone_name) if zone_name else None
    if zone is not None and not when.utcoffset():
        when = when.astimezone(zone)
    return f"{when:%a %d %b %Y %H:%M:%S} {when.tzname() or 'UTC'}"


def _duration(seconds: object) -> str:
    total = round(seconds) if isinstance(seconds, int | float) and math.isfinite(seconds) else 0
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def render_notice(doc: Mapping[str, Any], *, timezone: str | None = None) -> tuple[str, str]:
    """The title and plain-text body of a notice about the event document ``doc``."""
    call, event, device = doc["call"], doc["event"], _printable(doc["device"])
    who = _caller_text(call["caller"]) if "caller" in call else None
    duration = _duration(call.get("duration_s"))
    answered = bool(call.get("answered"))
    if event == "missed":
        title = f"Missed call from {who}" if who else f"Missed call on {device}"
    elif event == "recording":
        title = f"Call recorded: {who}, {duration}" if who else f"Call recorded on {device}, {duration}"
    else:
        title = "linerec test notice"
    lines = ["This is a test notice from linerec about a made-up call."] if event == "test" else []
    lines.append("Answered call, recorded." if answered else "Missed call: it rang and was not answered.")
    lines.append(f"When: {_local_time(call.get('started_at'), call.get('timezone') or timezone)}")
    if who:
        lines.append(f"From: {who}")
    if answered:
        lines.append(f"Duration: {duration}")
    if call.get("ring_count") is not None:
        lines.append(f"Rings: {_printable(call['ring_count'])}")
    lines.append(f"Device: {device}, line {_printable(call.get('line') or '?')}")
    lines.append(f"Recording: {_printable(doc['id'])}")
    return title, "\n".join(lines)
