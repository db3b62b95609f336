"""The ``[notify]`` table and ``[[webhook]]`` array of the agent's config, checked once and held frozen.

The keys, their defaults and what they do are listed in ``agent.notify``. Apprise is
imported only when notice URLs are set, to check that it can use them.
"""

from __future__ import annotations

import os
import ssl
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.wire.errors import ConfigError
from firmware.wire.settings import Table

EVENTS = ("recording", "missed")
ATTACH_FORMATS = ("flac", "wav")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one target is tried."""

    max_attempts: int = 10
    backoff_s: float = 30.0
    backoff_max_s: float = 3600.0

    def delay(self, failures: int, jitter: float) -> float:
        """Seconds to wait after ``failures`` failed tries; ``jitter`` in [0, 1) spreads retries apart."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(failures - 1, 60))
        return min(self.backoff_max_s, base * (1.0 + jitter / 2.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """One ``[[webhook]]``: a CRM endpoint told about calls with signed JSON."""

    url: str = field(repr=False)  # may hold a password
    secret: bytes = field(repr=False)
    events: tuple[str, ...] = EVENTS
    include_caller: bool = True
    timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ca_file: Path | None = None

    @property
    def label(self) -> str:
        """The URL without user, password or query: safe to log."""
        return url_label(self.url)


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifySettings:
    """``[notify]`` and the ``[[webhook]]`` tables."""

    urls: tuple[str, ...] = field(default=(), repr=False)  # apprise URLs hold tokens and passwords
    events: tuple[str, ...] = EVENTS
    attach_audio: bool = False
    attach_format: str = "flac"
    attach_max_mb: int = 20
    include_caller: bool = True
    timezone: str | None = None
    outbox: Path | None = None
    keep_delivered_days: int = 30
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    webhooks: tuple[WebhookSettings, ...] = ()

    @property
    def enabled(self) -> bool:
        """Whether anything is to be told at all."""
        return bool(self.urls or self.webhooks)

    def outbox_path(self, archive_dir: Path) -> Path:
        """The outbox file: as set, or beside the archive index."""
        return self.outbox or archive_dir / "notify-outbox.sqlite"


def parse_notify(data: dict[str, Any], source: Path | str = "<config>") -> NotifySettings:
    """Check the ``[notify]`` table and ``[[webhook]]`` array of a parsed agent config."""
    t = Table(data, "notify", source)
    defaults = NotifySettings()
    urls = _apprise_urls(t)
    zone = t.optional("timezone", str)
    if zone is not None and zone_info(zone) is None:
        raise t.fail("timezone", zone, "an IANA time zone name such as 'Europe/London'")
    settings = NotifySettings(
        urls=urls,
        events=_events(t),
        attach_audio=t.get("attach_audio", bool, defaults.attach_audio),
        attach_format=t.choice("attach_format", ATTACH_FORMATS, defaults.attach_format),
        attach_max_mb=t.integer("attach_max_mb", defaults.attach_max_mb, 1, 1024),
        include_caller=t.get("include_caller", bool, defaults.include_caller),
        timezone=zone,
        outbox=t.path("outbox", None),
        keep_delivered_days=t.integer("keep_delivered_days", defaults.keep_delivered_days, 1, 3650),
        retry=_retry(t),
        webhooks=_webhooks(data.get("webhook", []), source),
    )
    t.done()
    return settings


def _events(t: Table) -> tuple[str, ...]:
    value = t.get("events", list, list(EVENTS))
    if not value or len(set(map(repr, value))) != len(value) or any(v not in EVENTS for v in value):
        raise t.fail("events", value, "a non-empty list of 'recording', 'missed' without repeats")
    return tuple(value)


def _retry(t: Table) -> RetryPolicy:
    defaults = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=t.integer("max_attempts", defaults.max_attempts, 1, 100),
        backoff_s=t.number("backoff_s", defaults.backoff_s, 0.01, 3600),
        backoff_max_s=t.number("backoff_max_s", defaults.backoff_max_s, 0.01, 86400),
    )
    if policy.backoff_max_s < policy.backoff_s:
        allowed = f"a number no smaller than backoff_s ({policy.backoff_s:g})"
        raise t.fail("backoff_max_s", policy.backoff_max_s, allowed)
    return policy


def _apprise_urls(t: Table) -> tuple[str, ...]:
    urls = t.get("urls", list, [])
    for n, url in enumerate(urls):
        if not isinstance(url, str) or not url.strip():
            raise t.fail(f"urls[{n}]", url, "a service URL as text")
        if apprise_label(url) is None:
            shown = url.split("://", 1)[0] + "://..." if "://" in url else "a text without '://'"
            raise t.fail(f"urls[{n}]", shown, "a URL of a service apprise knows, such as mailto:// or tgram://")
        if url in urls[:n]:
            raise t.fail(f"urls[{n}]", apprise_label(url), "each URL once")
    return tuple(urls)


def _webhooks(raw: object, source: Path | str) -> tuple[WebhookSettings, ...]:
    if not isinstance(raw, list):
        msg = f"{source}: webhook is {raw!r}; expected an array of tables written as [[webhook]]"
        raise ConfigError(msg)
    hooks: list[WebhookSettings] = []
    for n, entry in enumerate(raw):
        t = Table({f"webhook[{n}]": entry}, f"webhook[{n}]", source)
        defaults = WebhookSettings(url="", secret=b"")
        hook = WebhookSettings(
            url=_webhook_url(t),
            secret=_secret(t),
            events=_events(t),
            include_caller=t.get("include_caller", bool, defaults.include_caller),
            timeout_s=t.number("timeout_s", defaults.timeout_s, 0.1, 300),
            retry=_retry(t),
            ca_file=t.path("ca_file", None),
        )
        if hook.ca_file is not None:
            try:
                ssl.create_default_context(cafile=hook.ca_file)
            except (OSError, ssl.SSLError):
                raise t.fail("ca_file", str(hook.ca_file), "a readable PEM file of certificate authorities") from None
        if any(h.url == hook.url for h in hooks):
            raise t.fail("url", hook.label, "each webhook URL once")
        t.done()
        hooks.append(hook)
    return tuple(hooks)


def _webhook_url(t: Table) -> str:
    url = t.require("url", str)
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:
        valid = False
    if not valid:
        raise t.fail("url", url_label(url), "an http:// or https:// URL with a host name")
    return url


def _secret(t: Table, key: str = "secret_file") -> bytes:
    path = t.path(key, None)
    if path is None:
        msg = f"{t.source}: {t.key(key)} is missing; it is required (a file holding the HMAC key)"
        raise ConfigError(msg)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise t.fail(key, str(path), "a regular file holding the HMAC key")
        with path.open("rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read(4097)
    except OSError as exc:
        raise t.fail(key, str(path), f"a readable file holding the HMAC key ({exc.strerror})") from None
    if mode & 0o077:
        raise t.fail(key, str(path), f"a file only its owner can read (it has mode {mode:04o}; chmod 600 it)")
    secret = data.strip()
    if not 16 <= len(secret) <= 4096:
        raise t.fail(key, str(path), "a file holding 16 to 4096 bytes of secret")
    return secret


def zone_info(name: object) -> ZoneInfo | None:
    """The time zone called ``name``, or None when there is no such IANA zone."""
    if not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def url_label(url: str) -> str:
    """``scheme://host:port/path`` of a URL: no user, password, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    return f"{parts.scheme}://{host}{port}{parts.path}"


def load_apprise() -> ModuleType:
    """The apprise module, or ConfigError saying how to install it."""
    try:
        import apprise  # noqa: PLC0415  (an optional extra; only needed when notices are set)
    except ImportError:
        msg = "notify.urls needs the apprise package: install linerec[agent]"
        raise ConfigError(msg) from None
    return apprise


def apprise_label(url: str) -> str | None:
    """The privacy-safe form of an apprise URL (passwords and tokens masked), or None if apprise cannot use it."""
    plugin = load_apprise().Apprise.instantiate(url)
    if plugin is None:
        return None
    return str(plugin.url(privacy=True)).split("?", 1)[0]
