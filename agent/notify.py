"""Notices and CRM webhooks about new recordings and missed calls, delivered through a durable outbox.

Two kinds of target, both set in the agent's config file::

    [notify]                      # notices through apprise (e-mail, Telegram, Slack, ntfy, Matrix...)
    urls = ["mailto://user:pass@mail.example.org?to=owner@example.org", "tgram://token/chat"]
    events = ["recording", "missed"]
    attach_audio = false          # attach the decrypted audio to "recording" notices
    attach_format = "flac"        # or "wav"
    attach_max_mb = 20            # bigger audio is left out, and the notice says so
    include_caller = true         # caller number, name or absence reason in notices
    timezone = "Europe/London"    # for times shown in notices, unless the call carries its own
    outbox = "/var/lib/linerec-agent/notify.sqlite"  # default: notify-outbox.sqlite beside the archive index
    keep_delivered_days = 30      # delivered entries are then pruned; failed ones are kept
    max_attempts = 10             # retry policy of the notices (webhooks have their own)
    backoff_s = 30
    backoff_max_s = 3600

    [[webhook]]                   # one table per CRM endpoint
    url = "https://crm.example.org/hooks/linerec"   # user:password@ in it is sent as Basic auth
    secret_file = "/etc/linerec/webhook.key"        # the HMAC key; mode 0600 or stricter
    events = ["recording", "missed"]
    include_caller = true
    timeout_s = 10
    max_attempts = 10
    backoff_s = 30
    backoff_max_s = 3600
    # ca_file = "/etc/linerec/crm-ca.pem"          # for a CRM behind a private certificate authority

A webhook gets a signed JSON ``POST``: its body, its headers and the HMAC signature a
receiver checks are described in ``agent.webhook``.

Every delivery (one per target and event) is a row in the outbox, an SQLite file in WAL
mode readable by its owner only, before ``enqueue`` returns; a worker thread sends what
is due, after a restart too. A 2xx answer is success. 408, 429, 5xx, a timeout or a
failed connection is tried again after ``backoff_s * 2**n`` seconds (n counts the
failures before the latest, the result is capped at ``backoff_max_s``, and up to half
again is added as jitter) or after what ``Retry-After`` asks (also capped); any other
answer, redirects included, fails the delivery at once. After ``max_attempts`` the
delivery is marked ``failed``, logged, and kept. A notice counts as sent when apprise
says the service took it; apprise also spaces out sends to one service by a few seconds.
Logs and reports name a target by its URL with passwords and tokens left out.

The parts live in modules of their own: ``agent.notify_settings`` reads the settings,
``agent.notify_event`` makes the event document and a notice's text, ``agent.webhook``
calls a CRM and ``agent.outbox`` keeps the deliveries. This module's ``Notifier`` ties
them together and sends notices through apprise; the names callers need from the others
can be imported from here too.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from agent.notify_event import (
    ALL_EVENTS,
    NotifyError,
    call_facts,
    event_document,
    render_notice,
    sample_call,
    stored_document,
)
from agent.notify_settings import (
    ATTACH_FORMATS,
    EVENTS,
    NotifySettings,
    RetryPolicy,
    WebhookSettings,
    apprise_label,
    load_apprise,
    parse_notify,
)
from agent.outbox import IDLE_S, STATUSES, Delivery, Outbox, OutboxError, Outcome, target_key
from agent.webhook import WebhookTarget
from firmware.wire.errors import ConfigError, LinerecError

if TYPE_CHECKING:
    from agent.archive import Archive, CallRow
    from firmware.wire.age import Identity

__all__ = [
    "ALL_EVENTS",
    "ATTACH_FORMATS",
    "EVENTS",
    "STATUSES",
    "Attacher",
    "Delivery",
    "Notifier",
    "NotifyError",
    "NotifySettings",
    "OutboxError",
    "RetryPolicy",
    "WebhookSettings",
    "archive_attacher",
    "parse_notify",
    "render_notice",
    "sample_call",
]

log = logging.getLogger("linerec.agent.notify")

Attacher = Callable[[str, Path], Path]  # (recording id, empty temp dir) -> decrypted audio file in that dir


class _Target(Protocol):
    """What the notifier needs of a target: its names, the events it wants, its retry policy and a way to send."""

    key: str
    label: str
    events: tuple[str, ...]
    include_caller: bool
    retry: RetryPolicy

    def send(self, delivery_id: str, doc: dict[str, Any], now: float) -> Outcome: ...


class _AppriseTarget:
    """One apprise URL: a notice for a person, with the audio attached if asked."""

    def __init__(self, url: str, settings: NotifySettings, attach: Attacher | None) -> None:
        self._apprise_module = load_apprise()
        self.key = target_key("apprise", url)
        self.label = apprise_label(url) or url.split("://", 1)[0] + "://..."
        self.events = settings.events
        self.include_caller = settings.include_caller
        self.retry = settings.retry
        self._settings = settings
        self._attach = attach
        asset = self._apprise_module.AppriseAsset(app_id="linerec", app_desc="linerec call recorder")
        self._apprise = self._apprise_module.Apprise(asset=asset)
        if not self._apprise.add(url):
            msg = f"apprise cannot use the notice URL {self.label}"
            raise ConfigError(msg)

    def send(self, delivery_id: str, doc: dict[str, Any], now: float) -> Outcome:
        title, body = render_notice(doc, timezone=self._settings.timezone)
        with tempfile.TemporaryDirectory(prefix="linerec-notice-") as tmp:
            audio, note = self._audio(doc, Path(tmp))
            attachment = None
            if audio is not None:
                attachment = self._apprise_module.AppriseAttachment()
                attachment.add(str(audio))
            result = self._apprise.notify(
                body=body + (f"\n\n{note}" if note else ""),
                title=title,
                body_format=self._apprise_module.NotifyFormat.TEXT,
                attach=attachment,
            )
        if result:
            return Outcome(ok=True)
        return Outcome(ok=False, error="the service did not take the notice (the apprise log lines say why)")

    def _audio(self, doc: dict[str, Any], tmp: Path) -> tuple[Path | None, str | None]:
        """The decrypted audio to attach, or None and a line for the notice saying why not."""
        if not self._settings.attach_audio or doc["event"] != "recording" or not doc["call"].get("answered"):
            return None, None
        if self._attach is None:
            return None, "The audio is not attached: this agent was started without a way to decrypt it."
        try:
            path = Path(self._attach(doc["id"], tmp))
            inside = path.resolve().is_relative_to(tmp.resolve())
            size = path.stat().st_size if inside else 0
        except (LinerecError, OSError) as exc:
            log.warning("cannot attach the audio of %s: %s", doc["id"], exc)
            return None, f"The audio could not be attached: {exc}"
        if not inside:
            log.warning("the audio of %s was made outside its temporary folder; not attached", doc["id"])
            return None, "The audio could not be attached."
        if size > self._settings.attach_max_mb * 1024 * 1024:
            mb = self._settings.attach_max_mb
            return None, f"The audio ({size / 1024**2:.1f} MB) is over attach_max_mb ({mb} MB), so it is not attached."
        return path, None


def archive_attacher(archive: Archive, identities: Sequence[Identity], fmt: str = "flac") -> Attacher:
    """An attacher that decrypts a recording from ``archive`` into the notice's temp folder as ``fmt``."""
    if fmt not in ATTACH_FORMATS:
        msg = f"attach format {fmt!r} is not one of {', '.join(ATTACH_FORMATS)}"
        raise NotifyError(msg)

    def attach(rec_id: str, directory: Path) -> Path:
        from agent.export import export  # noqa: PLC0415  (audio libraries load only when audio is attached)

        row = archive.get(rec_id)
        target = directory / f"{rec_id}.{fmt}"
        export(Path(row.path), target, identities)
        return target

    return attach


class Notifier:
    """Queues notices and webhook calls in the outbox and delivers them from a worker thread.

    Delivery is at least once: an attempt cut short by a crash or a stop counts as a
    failed try and is made again (with the same delivery id) when the outbox is next
    worked, by this process or the next one.
    """

    def __init__(
        self,
        settings: NotifySettings,
        outbox_path: Path,
        *,
        attach: Attacher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        targets: list[_Target] = [_AppriseTarget(url, settings, attach) for url in settings.urls]
        targets += [WebhookTarget(hook) for hook in settings.webhooks]
        self._targets = {target.key: target for target in targets}
        self._outbox = Outbox(Path(outbox_path))
        self._jitter = secrets.SystemRandom()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def enqueue(self, event: str, call: Mapping[str, Any]) -> list[str]:
        """Store one delivery per target that wants ``event`` about ``call``; their ids.

        ``call`` holds the fields of an archive row (``CallRow.to_json()``). Enqueueing the
        same event about the same recording again returns the deliveries already made.
        """
        if event not in ALL_EVENTS:
            msg = f"event {event!r} is not one of {', '.join(ALL_EVENTS)}"
            raise NotifyError(msg)
        facts = call_facts(call)
        rows = [
            (target.key, target.label, json.dumps(event_document(event, facts, include_caller=target.include_caller)))
            for target in self._targets.values()
            if event == "test" or event in target.events
        ]
        if not rows:
            return []
        self._check_open()
        ids = self._outbox.add(event, None if event == "test" else facts["id"], rows, self._clock())
        self._wake.set()
        return ids

    def notify_stored(self, row: CallRow) -> list[str]:
        """Tell the targets about a call just archived: ``recording`` if it was answered, else ``missed``."""
        return self.enqueue("recording" if row.answered else "missed", row.to_json())

    def deliveries(self, status: str | None = None) -> list[Delivery]:
        """Every delivery in the outbox, oldest first, or only those with ``status``."""
        if status is not None and status not in STATUSES:
            msg = f"delivery status {status!r} is not one of {', '.join(STATUSES)}"
            raise NotifyError(msg)
        self._check_open()
        return self._outbox.list(status)

    def start(self) -> None:
        """Prune old delivered entries and start sending what is pending (again, after a restart)."""
        self._check_open()
        if self._thread is not None and self._thread.is_alive():
            return
        pruned = self._outbox.prune(self._clock() - self.settings.keep_delivered_days * 86400)
        if pruned:
            log.info("pruned %d delivered notices older than %d days", pruned, self.settings.keep_delivered_days)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._work, name="linerec-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the worker after the attempt under way; whether it ended within ``timeout`` seconds."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the notifier is still in an attempt after %.0f s; leaving it to finish", timeout)
                return False
            self._thread = None
        if not self._closed:
            self._closed = True
            self._outbox.close()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending (each delivery delivered or failed); False if ``timeout`` ran out first."""
        self._check_open()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._outbox.count("pending"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the notifier of {self._outbox.path} has been stopped"
            raise OutboxError(msg)

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                delivery, wait = self._outbox.next_due(self._clock())
                if delivery is not None:
                    self._attempt(delivery)
            except OutboxError as exc:
                log.error("%s; trying again in %.0f s", exc, IDLE_S / 4)
                delivery, wait = None, IDLE_S / 4
            except Exception:  # the worker must outlive any one delivery
                log.exception("unexpected fault in the notifier; trying again in %.0f s", IDLE_S / 4)
                delivery, wait = None, IDLE_S / 4
            with self._changed:
                self._changed.notify_all()
            if delivery is None:
                self._wake.wait(wait)

    def _attempt(self, delivery: Delivery) -> None:
        now = self._clock()
        target = self._targets.get(delivery.target_key)
        if target is None:
            self._settle(delivery, "failed", delivery.attempts, "its target is no longer in the settings", now)
            return
        if delivery.attempts >= target.retry.max_attempts:  # the last attempt was cut short
            error = delivery.last_error or "the last attempt was cut short"
            self._settle(delivery, "failed", delivery.attempts, error, now)
            return
        doc = stored_document(delivery.payload)
        if doc is None:
            self._settle(delivery, "failed", delivery.attempts, "its stored document is not readable", now)
            return
        attempts = delivery.attempts + 1
        # Counted before it is made, so that an attempt a crash cuts short still counts.
        claim_until = now + target.retry.delay(attempts, self._jitter.random())
        self._outbox.update(
            delivery.id, status="pending", attempts=attempts, next_at=claim_until, error=delivery.last_error, now=now
        )
        try:
            outcome = target.send(delivery.id, doc, self._clock())
        except Exception as exc:  # a fault in one target must not end the worker
            log.exception("unexpected fault sending delivery %s to %s", delivery.id, target.label)
            outcome = Outcome(ok=False, error=f"unexpected {type(exc).__name__}")
        now = self._clock()
        if outcome.ok:
            self._settle(delivery, "delivered", attempts, None, now)
        elif outcome.permanent or attempts >= target.retry.max_attempts:
            self._settle(delivery, "failed", attempts, outcome.error, now)
        else:
            delay = target.retry.delay(attempts, self._jitter.random())
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, target.retry.backoff_max_s)
            self._outbox.update(
                delivery.id, status="pending", attempts=attempts, next_at=now + delay, error=outcome.error, now=now
            )
            log.warning(
                "%s %s to %s failed (attempt %d of %d): %s; next try in %.1f s",
                delivery.event,
                delivery.id,
                target.label,
                attempts,
                target.retry.max_attempts,
                outcome.error,
                delay,
            )

    def _settle(self, delivery: Delivery, status: str, attempts: int, error: str | None, now: float) -> None:
        self._outbox.update(delivery.id, status=status, attempts=attempts, next_at=now, error=error, now=now)
        if status == "delivered":
            log.info("%s %s delivered to %s (attempt %d)", delivery.event, delivery.id, delivery.target, attempts)
        else:
            log.error(
                "%s %s to %s gave up after %d attempts: %s; it stays in the outbox as failed",
                delivery.event,
                delivery.id,
                delivery.target,
                attempts,
                error,
            )
