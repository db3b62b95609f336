"""``[web]``: where the review app listens, its cookie and its session and sign-in limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.wire.settings import Table


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSettings:
    """``[web]`` of agent.toml."""

    listen: str = "127.0.0.1"  # an IP address; put a TLS proxy in front for anything but loopback
    port: int = 8080
    # Secure cookies are sent over HTTPS only; set false only for plain HTTP on loopback (tests, a local look).
    cookie_secure: bool = True
    session_idle_s: int = 1800  # a session unused this long ends
    session_absolute_s: int = 43200  # and every session ends this long after sign-in
    max_failures: int = 5  # wrong passwords in a row that lock an account
    lockout_s: int = 900  # for this long
    page_size: int = 50  # calls per page of the call list
    live_status: bool = True  # the devices page follows the broker's status messages itself ([mqtt])

    @property
    def address(self) -> str:
        """``host:port`` as a person writes it (IPv6 in brackets)."""
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"{host}:{self.port}"


def parse_web(data: dict[str, Any], source: Path | str = "<config>") -> WebSettings:
    """Check ``[web]`` and build the WebSettings."""
    t = Table(data, "web", source)
    d = WebSettings()
    listen = t.get("listen", str, d.listen)
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise t.fail("listen", listen, "an IP address such as 127.0.0.1 or ::1") from None
    settings = WebSettings(
        listen=listen,
        port=t.integer("port", d.port, 1, 65535),
        cookie_secure=t.get("cookie_secure", bool, d.cookie_secure),
        session_idle_s=t.integer("session_idle_s", d.session_idle_s, 60, 86400),
        session_absolute_s=t.integer("session_absolute_s", d.session_absolute_s, 300, 7 * 86400),
        max_failures=t.integer("max_failures", d.max_failures, 1, 100),
        lockout_s=t.integer("lockout_s", d.lockout_s, 10, 86400),
        page_size=t.integer("page_size", d.page_size, 5, 500),
        live_status=t.get("live_status", bool, d.live_status),
    )
    if settings.session_idle_s > settings.session_absolute_s:
        shown = settings.session_idle_s
        raise t.fail("session_idle_s", shown, f"at most session_absolute_s ({settings.session_absolute_s})")
    t.done()
    return settings
