"""The device's settings: ``/etc/linerec/device.toml`` read into frozen dataclasses.

Every setting has one name, used alike in the file, the code and the docs
(``examples/device.toml``). A bad file stops the device with one sentence that
names the key, the value found and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.wire import age
from firmware.wire.broker import BrokerSettings
from firmware.wire.errors import AgeError, WireError
from firmware.wire.settings import Table, broker_settings, check_sections, load_toml
from firmware.wire.topics import check_device_id

DEFAULT_PATH = Path("/etc/linerec/device.toml")
LINES = ("gpio", "modem", "sim")
CODECS = ("flac",)
SAMPLE_RATES = (8000, 16000)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSettings:
    """``[device]``: who this recorder is and where it keeps its state."""

    id: str
    line: str = "sim"
    line_name: str = "line1"
    state_dir: Path = Path("/var/lib/linerec")

    @property
    def signing_key_path(self) -> Path:
        """The device's Ed25519 key (created on first run, mode 0600)."""
        return self.state_dir / "signing.key"

    @property
    def spool_dir(self) -> Path:
        """The durable outbox."""
        return self.state_dir / "spool"


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioSettings:
    """``[audio]``: how calls are captured and encoded."""

    sample_rate: int = 8000
    block_ms: int = 20
    codec: str = "flac"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveSettings:
    """``[archive]``: the age recipients every recording is encrypted to."""

    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkSettings:
    """``[uplink]``: delivery to the agent."""

    chunk_size: int = 65536
    ack_timeout_s: float = 30.0
    events_include_caller_id: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSettings:
    """``[calls]``: timing of the call state machine."""

    ring_timeout_s: float = 8.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    """``[sim]``: the simulated line (``device.line = "sim"``)."""

    calls: int = 3
    realtime: bool = False
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """All of the device's settings."""

    device: DeviceSettings
    audio: AudioSettings = field(default_factory=AudioSettings)
    archive: ArchiveSettings
    mqtt: BrokerSettings = field(default_factory=BrokerSettings)
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    sim: SimSettings = field(default_factory=SimSettings)


SECTIONS = ("device", "audio", "archive", "mqtt", "uplink", "calls", "sim")


def load(path: Path = DEFAULT_PATH) -> DeviceConfig:
    """Read and check the device config file."""
    return parse(load_toml(path), path)


def parse(data: dict[str, Any], source: Path | str = "<config>") -> DeviceConfig:
    """Check a parsed TOML document and build the DeviceConfig."""
    check_sections(data, SECTIONS, source)
    return DeviceConfig(
        device=_device(Table(data, "device", source)),
        audio=_audio(Table(data, "audio", source)),
        archive=_archive(Table(data, "archive", source)),
        mqtt=broker_settings(data, source),
        uplink=_uplink(Table(data, "uplink", source)),
        calls=_calls(Table(data, "calls", source)),
        sim=_sim(Table(data, "sim", source)),
    )


def _device(t: Table) -> DeviceSettings:
    device_id = t.require("id", str)
    try:
        check_device_id(device_id)
    except WireError:
        raise t.fail("id", device_id, "1-63 lowercase letters, digits, '-' or '_'") from None
    line_name = t.get("line_name", str, "line1")
    if not line_name or len(line_name) > 32:
        raise t.fail("line_name", line_name, "a short name such as 'line1'")
    result = DeviceSettings(
        id=device_id,
        line=t.choice("line", LINES, "sim"),
        line_name=line_name,
        state_dir=t.path("state_dir", Path("/var/lib/linerec")) or Path("/var/lib/linerec"),
    )
    t.done()
    return result


def _audio(t: Table) -> AudioSettings:
    rate = t.get("sample_rate", int, 8000)
    if rate not in SAMPLE_RATES:
        raise t.fail("sample_rate", rate, "8000 or 16000")
    block_ms = t.get("block_ms", int, 20)
    if block_ms not in (10, 20, 30):
        raise t.fail("block_ms", block_ms, "10, 20 or 30")
    result = AudioSettings(sample_rate=rate, block_ms=block_ms, codec=t.choice("codec", CODECS, "flac"))
    t.done()
    return result


def _archive(t: Table) -> ArchiveSettings:
    recipients = t.require("recipients", list)
    if not recipients:
        raise t.fail("recipients", recipients, "at least one age recipient (age1...)")
    for item in recipients:
        try:
            if not isinstance(item, str):
                raise AgeError(str(item))
            age.parse_recipient(item)
        except AgeError:
            raise t.fail("recipients", item, "age recipients of the form age1...") from None
    t.done()
    return ArchiveSettings(recipients=tuple(recipients))


def _uplink(t: Table) -> UplinkSettings:
    result = UplinkSettings(
        chunk_size=t.integer("chunk_size", 65536, 1024, 128 * 1024),
        ack_timeout_s=t.number("ack_timeout_s", 30.0, 1.0, 3600.0),
        events_include_caller_id=t.get("events_include_caller_id", bool, False),
    )
    t.done()
    return result


def _calls(t: Table) -> CallSettings:
    result = CallSettings(ring_timeout_s=t.number("ring_timeout_s", 8.0, 2.0, 60.0))
    t.done()
    return result


def _sim(t: Table) -> SimSettings:
    result = SimSettings(
        calls=t.integer("calls", 3, 1, 1000),
        realtime=t.get("realtime", bool, False),
        seed=t.integer("seed", 0, 0, 2**31),
    )
    t.done()
    return result

