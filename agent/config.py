"""The agent's settings: ``/etc/linerec/agent.toml`` read into frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.wire.broker import BrokerSettings
from firmware.wire.settings import Table, broker_settings, check_sections, load_toml

DEFAULT_PATH = Path("/etc/linerec/agent.toml")
SECTIONS = ("agent", "mqtt")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """``[agent]``: the archive identity and where recordings are kept."""

    identity: Path = Path("/etc/linerec/identity.txt")
    archive_dir: Path = Path("/var/lib/linerec-agent/archive")
    database: Path | None = None  # default: <archive_dir>/index.sqlite
    client_id: str = "linerec-agent"
    # What one device may send: sustained kB/s and a burst in kB (agent/ratelimit.py).
    rate_limit_kb_s: int = 65536
    rate_burst_kb: int = 131072

    @property
    def database_path(self) -> Path:
        """The SQLite index."""
        return self.database or self.archive_dir / "index.sqlite"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """All of the agent's settings."""

    agent: AgentSettings = field(default_factory=AgentSettings)
    mqtt: BrokerSettings = field(default_factory=BrokerSettings)


def load(path: Path = DEFAULT_PATH) -> AgentConfig:
    """Read and check the agent config file."""
    return parse(load_toml(path), path)


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
    )
    if not settings.client_id:
        raise t.fail("client_id", settings.client_id, "a non-empty MQTT client id")
    t.done()
    return AgentConfig(agent=settings, mqtt=broker_settings(data, source))
