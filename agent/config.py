"""The agent's settings: ``/etc/linerec/agent.toml`` read into frozen dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.notify import NotifySettings, parse_notify
from agent.retention import RetentionSettings, parse_retention
from agent.web.settings import WebSettings, parse_web
from firmware.wire.broker import BrokerSettings
from firmware.wire.settings import Table, broker_settings, check_sections, load_toml

DEFAULT_PATH = Path("/etc/linerec/agent.toml")
SECTIONS = ("agent", "mqtt", "retention", "notify", "webhook", "web")
_REGION = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """``[agent]``: the archive identity, where recordings and the audit log are kept."""

    identity: Path = Path("/etc/linerec/identity.txt")
    archive_dir: Path = Path("/var/lib/linerec-agent/archive")
    database: Path | None = None  # default: <archive_dir>/index.sqlite
    client_id: str = "linerec-agent"
    # What one device may send: sustained kB/s and a burst in kB (agent/ratelimit.py).
    rate_limit_kb_s: int = 65536
    rate_burst_kb: int = 131072
    # The audit log and its key; both default to the folder that holds archive_dir (the state
    # directory), so that a purge of the archive folder never touches them.
    audit_log: Path | None = None  # default: <archive_dir>/../audit.sqlite
    audit_key: Path | None = None  # default: <archive_dir>/../audit.key
    # The country whose numbering plan caller IDs in national form follow (contacts and search by name).
    region: str = "US"

    @property
    def database_path(self) -> Path:
        """The SQLite index."""
        return self.database or self.archive_dir / "index.sqlite"

    @property
    def state_dir(self) -> Path:
        """The folder that holds the archive folder: the agent's own files that are not recordings."""
        return self.archive_dir.absolute().parent

    @property
    def audit_log_path(self) -> Path:
        """The audit log's SQLite file."""
        return self.audit_log or self.state_dir / "audit.sqlite"

    @property
    def audit_key_path(self) -> Path:
        """The audit log's HMAC key (its head checkpoint is this path with ``.head`` added)."""
        return self.audit_key or self.state_dir / "audit.key"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """All of the agent's settings."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    mqtt: BrokerSettings = field(default_factory=BrokerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    web: WebSettings = field(default_factory=WebSettings)


def load(path: Path = DEFAULT_PATH) -> AgentConfig:
    """Read and check the agent config file."""
    return parse(load_toml(path), path)


def _inside(path: Path, folder: Path) -> bool:
    resolved = path.resolve()
    return resolved == folder.resolve() or folder.resolve() in resolved.parents


def parse(data: dict[str, Any], source: Path | str = "<config>") -> AgentConfig:
    """Check a parsed TOML document and build the AgentConfig."""
    check_sections(data, SECTIONS, source)
    t = Table(data, "agent", source)
    defaults = AgentSettings()
    settings = AgentSettings(
        identity=t.path("identity", defaults.identity) or defaults.identity,
        archive_dir=t.path("archive_dir", defaults.archive_dir) or defaults.archive_dir,
        database=t.path("database", None),
        client_id=t.get("client_id", str, defaults.client_id),
        rate_limit_kb_s=t.integer("rate_limit_kb_s", defaults.rate_limit_kb_s, 16, 1024**2),
        rate_burst_kb=t.integer("rate_burst_kb", defaults.rate_burst_kb, 1024, 1024**2),
        audit_log=t.path("audit_log", None),
        audit_key=t.path("audit_key", None),
        region=t.get("region", str, defaults.region),
    )
    if not settings.client_id:
        raise t.fail("client_id", settings.client_id, "a non-empty MQTT client id")
    if not _REGION.fullmatch(settings.region):
        raise t.fail("region", settings.region, "a two-letter country code in capitals, such as US or GB")
    if _inside(settings.audit_key_path, settings.archive_dir):
        shown = str(settings.audit_key_path)
        raise t.fail("audit_key", shown, "a path outside agent.archive_dir, so that the archive folder never holds it")
    t.done()
    return AgentConfig(
        agent=settings,
        mqtt=broker_settings(data, source),
        retention=parse_retention(data, source),
        notify=parse_notify(data, source),
        web=parse_web(data, source),
    )
