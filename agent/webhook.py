"""Webhook calls to a CRM: building, signing and sending the JSON ``POST``, and what its answer means.

The webhook request is ``POST`` with ``Content-Type: application/json`` and this body
(UTF-8, keys sorted, no spaces)::

    {"event": "recording" | "missed" | "test",
     "id": "<recording id>", "device": "<device id>",
     "call": {"line": ..., "started_at": "<ISO 8601 UTC>", "answered_at": ..., "ended_at": ...,
              "duration_s": 12.5, "answered": true, "hangup_cause": ..., "ring_count": 3,
              "timezone": "<IANA zone, only when the device reported one>",
              "caller": {"number": ..., "name": ..., "absent": "P" | "O" | ...}},   # only with include_caller
     "sent_at": "<ISO 8601 UTC of this attempt, whole seconds>"}

A call field the archive holds no value for is left out. The ``test`` event (the
``linerec-agent notify test`` check) goes to every target and describes a made-up call.

and these headers:

* ``X-Linerec-Event``: the event;
* ``X-Linerec-Delivery``: an id that is the same on every retry of one delivery, so the
  receiver can drop a repeat (delivery is at least once: an answer lost on the way back
  means the request is sent again);
* ``X-Linerec-Timestamp``: the attempt's time in whole seconds since the Unix epoch;
* ``X-Linerec-Signature``: ``sha256=`` and the lowercase hex of HMAC-SHA256, keyed with the
  secret file's content (surrounding white space removed), over the bytes of the
  timestamp header, a ``.``, and the raw request body.

A receiver recomputes the HMAC over exactly those bytes, compares it in constant time,
and refuses a timestamp more than a few minutes from its own clock.

A 2xx answer is success. 408, 429, 5xx, a timeout or a failed connection is worth
another try, no sooner than ``Retry-After`` asks when the answer carries one; any
other answer, redirects included, fails the delivery at once. When the next try is
made is the notifier's business (``agent.notify``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import IO, Any

from agent import __version__
from agent.notify_event import iso_utc
from agent.notify_settings import WebhookSettings
from agent.outbox import Outcome, target_key

_RETRY_STATUS = (408, 429)
_MAX_REPLY = 65536  # of a webhook's answer body, read and dropped


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured: a POST must not turn into a GET somewhere else."""

    def redirect_request(  # noqa: PLR0917  (the signature of the method it overrides)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a count or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def classify(status: int, headers: Message, now: float) -> Outcome:
    """What an HTTP answer means for the delivery: done, worth another try, or failed for good."""
    if 200 <= status < 300:
        return Outcome(ok=True)
    error = f"it answered HTTP {status}"
    if status in _RETRY_STATUS or status >= 500:
        return Outcome(ok=False, error=error, retry_after=parse_retry_after(headers.get("Retry-After"), now))
    if 300 <= status < 400:
        error += ", a redirect: set the webhook url to the final address"
    return Outcome(ok=False, error=error, permanent=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _reason(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class WebhookTarget:
    """A CRM endpoint: signed JSON over HTTP(S)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.key = target_key("webhook", settings.url)
        self.label = settings.label
        self.events = settings.events
        self.include_caller = settings.include_caller
        self.retry = settings.retry
        self._settings = settings
        parts = urllib.parse.urlsplit(settings.url)
        netloc = parts.hostname or ""
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        netloc += f":{parts.port}" if parts.port else ""
        self._url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self._auth: dict[str, str] = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
            self._auth["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        context = ssl.create_default_context(cafile=settings.ca_file)
        self._opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))

    def send(self, delivery_id: str, doc: dict[str, Any], now: float) -> Outcome:
        stamp = str(int(now))
        body = json.dumps(
            {**doc, "sent_at": iso_utc(int(now))}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()
        digest = hmac.new(self._settings.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"linerec-agent/{__version__}",
            "X-Linerec-Event": str(doc.get("event")),
            "X-Linerec-Delivery": delivery_id,
            "X-Linerec-Timestamp": stamp,
            "X-Linerec-Signature": f"sha256={digest}",
            **self._auth,
        }
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")  # noqa: S310  (http(s) checked at load)
        try:
            with self._opener.open(request, timeout=self._settings.timeout_s) as response:
                response.read(_MAX_REPLY)
                return classify(response.status, response.headers, now)
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                return classify(exc.code, exc.headers, now)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            return Outcome(ok=False, error=f"the request failed: {_reason(exc)}")
