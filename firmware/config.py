"""The device's settings: ``/etc/linerec/device.toml`` read into frozen dataclasses.

Every setting has one name, used alike in the file, the code and the docs
(``examples/device.toml``). A bad file stops the device with one sentence that
names the key, the value found and what is allowed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from firmware.homeassistant import check_prefix
from firmware.line.cadence import cadence_for_country
from firmware.wire import age
from firmware.wire.broker import BrokerSettings
from firmware.wire.errors import AgeError, ConfigError, WireError
from firmware.wire.settings import Table, broker_settings, check_sections, load_toml
from firmware.wire.signing import parse_public_key, public_key_text
from firmware.wire.topics import check_device_id

DEFAULT_PATH = Path("/etc/linerec/device.toml")
LINES = ("gpio", "modem", "sim")
CODECS = ("flac", "opus", "wav")
SAMPLE_RATES = (8000, 16000)
Mains = Literal[50, 60, "auto"] | None


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
    opus_kbps: float = 16.0
    # Audio kept from before the off-hook edge, so that the first word is recorded.
    preroll_s: float = 1.0
    # How often the call journal reaches the disk; a crash loses at most this much.
    checkpoint_s: float = 1.0
    # Cleaning: high-pass and mains hum notches (50, 60, "auto" or None).
    clean: bool = True
    highpass_hz: float = 120.0
    mains: Mains = "auto"
    # VAD trimming: speech with padding; silences longer than min_silence_ms are compressed.
    trim: bool = True
    vad_aggressiveness: int = 2
    vad_frame_ms: int = 30
    pad_before_ms: int = 300
    pad_after_ms: int = 500
    min_silence_ms: int = 2000
    # Also keep the recording untrimmed and unfiltered, as captured (evidence grade).
    keep_original: bool = False
    noise_reduction: bool = False
    normalise: bool = False
    normalise_lufs: float = -20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveSettings:
    """``[archive]``: the age recipients every recording is encrypted to."""

    recipients: tuple[str, ...]
    # The agent's Ed25519 public key (`linerec-agent keys show-agent`). When set, recipients the
    # agent deploys and signs with it replace `recipients` (firmware/recipients.py); unset, only
    # `recipients` is used.
    agent_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UplinkSettings:
    """``[uplink]``: delivery to the agent."""

    chunk_size: int = 65536
    ack_timeout_s: float = 30.0
    pace_kb_s: float = 0.0  # most the recordings may take of the link, in kB/s; 0: as fast as it goes
    events_include_caller_id: bool = False
    homeassistant: bool = False  # publish Home Assistant MQTT discovery for this device
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSettings:
    """``[calls]``: timing of the call state machine and the answering machine."""

    ring_timeout_s: float = 8.0
    silence_timeout_s: float = 30.0  # remote hang-up by silence, when nothing better tells
    silence_threshold_dbfs: float = -45.0  # quieter blocks count as silence
    max_call_s: float = 4 * 3600.0
    polarity_hangup: bool = True  # a polarity reversal during a call means the far end hung up
    answering_machine: bool = False
    answer_after_rings: int = 4
    greeting: Path | None = None
    message_max_s: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LineSettings:
    """``[line]``: how the exchange behaves (ring cadence, loop-drop and debounce timings)."""

    country: str = "US"
    ring_qualify_ms: int = 250  # pulses for at least this long make a ring
    ring_end_ms: int = 640  # a ring ends after this long without pulses
    glitch_ms: int = 50  # shorter pulse trains are noise
    offhook_debounce_ms: int = 50
    cpc_ignore_ms: int = 50  # shorter loop opens are ignored
    cpc_min_ms: int = 250  # loop opens from cpc_min_ms to cpc_max_ms are a remote hang-up
    cpc_max_ms: int = 900
    pre_ring_window_s: float = 4.0  # after a polarity reversal, listen for caller ID this long


@dataclass(frozen=True, slots=True, kw_only=True)
class GpioSettings:
    """``[gpio]``: the line-interface board's pins (BCM numbers; defaults from the board's pin map)."""

    ring_pin: int
    offhook_pin: int
    polarity_pin: int
    hook_relay_pin: int
    led_pin: int
    ring_active_high: bool = False
    offhook_active_high: bool = False
    audio_device: str | None = None  # sounddevice name or index; None: the default device


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemSettings:
    """``[modem]``: a USB voice modem on a serial port."""

    port: str = "/dev/ttyACM0"
    baudrate: int = 115200
    country_code: str | None = None  # AT+GCI value, e.g. "B4" for the UK
    init_retries: int = 3
    command_timeout_s: float = 2.0
    watchdog_s: float = 30.0  # probe an idle modem this often; re-initialise it if it stays silent
    extension_pickup: bool = False  # the chipset reports another phone going off-hook


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    """``[sim]``: the simulated line (``device.line = "sim"``)."""

    calls: int = 3  # 0: a quiet line; `linerec run` then only delivers what the spool holds
    realtime: bool = False
    seed: int = 0
    idle_before_s: float = 0.0  # extra quiet line before the first call


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    """``[spool]``: when a filling SD card raises the alarm, and what is kept back for a call."""

    alert_free_mb: int = 500  # below this, the status and the LED say the disk is filling
    reserve_mb: int = 100  # below this, no new call is recorded, so the one in progress can finish


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentSettings:
    """``[consent]``: which notice each call gets (firmware/consent/)."""

    enabled: bool = True
    region: str | None = None  # the device's ISO 3166 region, e.g. "US-NY"; None: line.country
    language: str = "en"
    # (region, language): callers from a country or subdivision hear notices in its language
    languages: tuple[tuple[str, str], ...] = ()
    express_timeout_s: float = 10.0  # how long an express-consent question waits for 1 or 2
    beep: bool = True  # the periodic warning tone where the rule asks for it
    never_record: tuple[str, ...] = ()  # numbers or prefixes, international digits
    always_announce: tuple[str, ...] = ()
    # (language, rule or "question", file) for the owner's notices
    notices: tuple[tuple[str, str, Path], ...] = ()
    # [consent.rules.<REGION>] rows, as written (checked by firmware.consent.rules.load_rules)
    rules: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def rule_overrides(self) -> dict[str, dict[str, Any]]:
        """The owner's rule rows as load_rules takes them."""
        return {region: dict(cells) for region, cells in self.rules}

    def language_for(self, region: str | None) -> str:
        """The notices' language for a caller from ``region`` (its subdivision first, then its country)."""
        chosen = dict(self.languages)
        if region is not None:
            for key in (region, region.split("-", maxsplit=1)[0]):
                if key in chosen:
                    return chosen[key]
        return self.language

    def notice_files(self) -> dict[str, dict[str, Path]]:
        """The owner's notice files by language and rule."""
        files: dict[str, dict[str, Path]] = {}
        for language, rule, path in self.notices:
            files.setdefault(language, {})[rule] = path
        return files


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """All of the device's settings."""

    device: DeviceSettings
    audio: AudioSettings = field(default_factory=AudioSettings)
    archive: ArchiveSettings
    mqtt: BrokerSettings = field(default_factory=BrokerSettings)
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    line: LineSettings = field(default_factory=LineSettings)
    gpio: GpioSettings = field(default_factory=lambda: default_gpio())  # noqa: PLW0108  (defined below)
    modem: ModemSettings = field(default_factory=ModemSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)

    @property
    def consent_region(self) -> str:
        """The device's own region for consent rules."""
        return self.consent.region or self.line.country


SECTIONS = (
    "device",
    "audio",
    "archive",
    "mqtt",
    "uplink",
    "calls",
    "line",
    "gpio",
    "modem",
    "sim",
    "consent",
    "spool",
)


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
        line=_line(Table(data, "line", source)),
        gpio=_gpio(Table(data, "gpio", source)),
        modem=_modem(Table(data, "modem", source)),
        consent=_consent(Table(data, "consent", source), data.get("line", {}).get("country", "US")),
        spool=_spool(Table(data, "spool", source)),
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
    result = AudioSettings(
        sample_rate=rate,
        block_ms=block_ms,
        codec=t.choice("codec", CODECS, "flac"),
        opus_kbps=t.number("opus_kbps", 16.0, 6.0, 64.0),
        preroll_s=t.number("preroll_s", 1.0, 0.0, 5.0),
        checkpoint_s=t.number("checkpoint_s", 1.0, 0.1, 1.5),
        clean=t.get("clean", bool, True),
        highpass_hz=t.number("highpass_hz", 120.0, 20.0, 0.05 * rate),
        mains=_mains(t),
        trim=t.get("trim", bool, True),
        vad_aggressiveness=t.integer("vad_aggressiveness", 2, 0, 3),
        vad_frame_ms=_one_of_ints(t, "vad_frame_ms", (10, 20, 30), 30),
        pad_before_ms=t.integer("pad_before_ms", 300, 0, 5000),
        pad_after_ms=t.integer("pad_after_ms", 500, 0, 5000),
        min_silence_ms=t.integer("min_silence_ms", 2000, 0, 60000),
        keep_original=t.get("keep_original", bool, False),
        noise_reduction=t.get("noise_reduction", bool, False),
        normalise=t.get("normalise", bool, False),
        normalise_lufs=t.number("normalise_lufs", -20.0, -60.0, -6.0),
    )
    t.done()
    return result


def _mains(t: Table) -> Mains:
    value = t.get("mains_hz", object, "auto")
    choices: dict[object, Mains] = {50: 50, 60: 60, "auto": "auto", "off": None}
    if isinstance(value, bool) or not isinstance(value, int | str) or value not in choices:  # True == 1 is no Hz
        raise t.fail("mains_hz", value, '50, 60, "auto" or "off"')
    return choices[value]


def _one_of_ints(t: Table, key: str, allowed: tuple[int, ...], default: int) -> int:
    value = t.get(key, int, default)
    if value not in allowed:
        raise t.fail(key, value, ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}")
    return value


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
    agent_key = t.optional("agent_key", str)
    if agent_key is not None:
        try:
            agent_key = public_key_text(parse_public_key(agent_key))
        except WireError:
            allowed = "ed25519:<base64 of 32 bytes>, as `linerec-agent keys show-agent` prints it"
            raise t.fail("agent_key", agent_key, allowed) from None
    t.done()
    return ArchiveSettings(recipients=tuple(recipients), agent_key=agent_key)


def _uplink(t: Table) -> UplinkSettings:
    result = UplinkSettings(
        chunk_size=t.integer("chunk_size", 65536, 1024, 128 * 1024),
        ack_timeout_s=t.number("ack_timeout_s", 30.0, 1.0, 3600.0),
        pace_kb_s=t.number("pace_kb_s", 0.0, 0.0, 1_000_000.0),
        events_include_caller_id=t.get("events_include_caller_id", bool, False),
        homeassistant=t.get("homeassistant", bool, False),
        discovery_prefix=t.get("discovery_prefix", str, "homeassistant"),
    )
    try:
        check_prefix(result.discovery_prefix)
    except WireError:
        raise t.fail(
            "discovery_prefix", result.discovery_prefix, "MQTT topic levels of letters, digits, '_' or '-'"
        ) from None
    t.done()
    return result


def _calls(t: Table) -> CallSettings:
    d = CallSettings()
    result = CallSettings(
        ring_timeout_s=t.number("ring_timeout_s", d.ring_timeout_s, 2.0, 60.0),
        silence_timeout_s=t.number("silence_timeout_s", d.silence_timeout_s, 5.0, 3600.0),
        silence_threshold_dbfs=t.number("silence_threshold_dbfs", d.silence_threshold_dbfs, -90.0, -10.0),
        max_call_s=t.number("max_call_s", d.max_call_s, 60.0, 24 * 3600.0),
        polarity_hangup=t.get("polarity_hangup", bool, d.polarity_hangup),
        answering_machine=t.get("answering_machine", bool, d.answering_machine),
        answer_after_rings=t.integer("answer_after_rings", d.answer_after_rings, 1, 20),
        greeting=t.path("greeting", None),
        message_max_s=t.number("message_max_s", d.message_max_s, 10.0, 3600.0),
    )
    t.done()
    return result


def _line(t: Table) -> LineSettings:
    d = LineSettings()
    country = t.get("country", str, d.country).upper()
    try:
        cadence_for_country(country)
    except ConfigError:
        raise t.fail("country", country, "a country in firmware/data/cadences.toml, e.g. 'US' or 'GB'") from None
    result = LineSettings(
        country=country,
        ring_qualify_ms=t.integer("ring_qualify_ms", d.ring_qualify_ms, 100, 1000),
        ring_end_ms=t.integer("ring_end_ms", d.ring_end_ms, 200, 3000),
        glitch_ms=t.integer("glitch_ms", d.glitch_ms, 5, 200),
        offhook_debounce_ms=t.integer("offhook_debounce_ms", d.offhook_debounce_ms, 5, 500),
        cpc_ignore_ms=t.integer("cpc_ignore_ms", d.cpc_ignore_ms, 5, 200),
        cpc_min_ms=t.integer("cpc_min_ms", d.cpc_min_ms, 50, 2000),
        cpc_max_ms=t.integer("cpc_max_ms", d.cpc_max_ms, 100, 5000),
        pre_ring_window_s=t.number("pre_ring_window_s", d.pre_ring_window_s, 0.5, 30.0),
    )
    if not result.cpc_ignore_ms < result.cpc_min_ms < result.cpc_max_ms:
        raise t.fail("cpc_min_ms", result.cpc_min_ms, "cpc_ignore_ms < cpc_min_ms < cpc_max_ms")
    t.done()
    return result


@cache
def pin_map() -> dict[str, Any]:
    """The board's pin map (``firmware/data/pins.toml``), shared with the schematic."""
    text = resources.files("firmware.data").joinpath("pins.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def default_gpio() -> GpioSettings:
    """The [gpio] settings that match the open board as drawn."""
    pins, levels = pin_map()["pins"], pin_map()["levels"]
    return GpioSettings(
        ring_pin=pins["ring"],
        offhook_pin=pins["offhook_sense"],
        polarity_pin=pins["polarity"],
        hook_relay_pin=pins["hook_relay"],
        led_pin=pins["led"],
        ring_active_high=levels["ring_active_high"],
        offhook_active_high=levels["offhook_active_high"],
    )


def _gpio(t: Table) -> GpioSettings:
    d = default_gpio()
    names = ("ring_pin", "offhook_pin", "polarity_pin", "hook_relay_pin", "led_pin")
    pins = {name: t.integer(name, getattr(d, name), 0, 27) for name in names}
    if len(set(pins.values())) != len(pins):
        raise t.fail("ring_pin", pins, "five different BCM pins")
    result = GpioSettings(
        **pins,
        ring_active_high=t.get("ring_active_high", bool, d.ring_active_high),
        offhook_active_high=t.get("offhook_active_high", bool, d.offhook_active_high),
        audio_device=t.optional("audio_device", str),
    )
    t.done()
    return result


def _modem(t: Table) -> ModemSettings:
    d = ModemSettings()
    port = t.get("port", str, d.port)
    if not port:
        raise t.fail("port", port, "a serial device such as /dev/ttyACM0")
    country = t.optional("country_code", str)
    if country is not None and not (len(country) == 2 and all(c in "0123456789ABCDEF" for c in country.upper())):
        raise t.fail("country_code", country, "a two-digit hex T.35 country code, e.g. 'B4'")
    result = ModemSettings(
        port=port,
        baudrate=t.integer("baudrate", d.baudrate, 1200, 921600),
        country_code=country.upper() if country else None,
        init_retries=t.integer("init_retries", d.init_retries, 1, 20),
        command_timeout_s=t.number("command_timeout_s", d.command_timeout_s, 0.2, 30.0),
        watchdog_s=t.number("watchdog_s", d.watchdog_s, 2.0, 3600.0),
        extension_pickup=t.get("extension_pickup", bool, d.extension_pickup),
    )
    t.done()
    return result


def _sim(t: Table) -> SimSettings:
    result = SimSettings(
        calls=t.integer("calls", 3, 0, 1000),
        realtime=t.get("realtime", bool, False),
        seed=t.integer("seed", 0, 0, 2**31),
        idle_before_s=t.number("idle_before_s", 0.0, 0.0, 86400.0),
    )
    t.done()
    return result


def _consent(t: Table, country: object) -> ConsentSettings:
    # Imported here: the rule tables are read only when a config is checked.
    from firmware.consent.decision import check_numbers  # noqa: PLC0415
    from firmware.consent.rules import load_rules  # noqa: PLC0415

    rules = t.get("rules", dict, {})
    try:
        book = load_rules(rules)
        region = t.optional("region", str)
        where = t.key("region") if region is not None else "line.country"
        device_region = book.check_region(region if region is not None else str(country), where)
        never = check_numbers(t.get("never_record", list, []), key=t.key("never_record"), device_region=device_region)
        always = check_numbers(
            t.get("always_announce", list, []), key=t.key("always_announce"), device_region=device_region
        )
    except ConfigError as exc:
        raise ConfigError(f"{t.source}: {exc}") from None
    languages = []
    for where, language in sorted(t.get("languages", dict, {}).items()):
        if not isinstance(language, str) or not language:
            raise t.fail(f"languages.{where}", language, 'a language name such as "fr"')
        try:
            languages.append((book.check_region(where, t.key(f"languages.{where}")), language))
        except ConfigError as exc:
            raise ConfigError(f"{t.source}: {exc}") from None
    notices = []
    for language, by_rule in t.get("notices", dict, {}).items():
        if not isinstance(by_rule, dict):
            raise t.fail(f"notices.{language}", by_rule, 'a table of rule = "file"')
        for rule, path in by_rule.items():
            if not isinstance(path, str):
                raise t.fail(f"notices.{language}.{rule}", path, "the path of an audio file")
            notices.append((language, rule, t.relative(path)))
    result = ConsentSettings(
        enabled=t.get("enabled", bool, True),
        region=region,
        language=t.get("language", str, "en"),
        languages=tuple(languages),
        express_timeout_s=t.number("express_timeout_s", 10.0, 3.0, 60.0),
        beep=t.get("beep", bool, True),
        never_record=never,
        always_announce=always,
        notices=tuple(notices),
        rules=tuple((r, tuple(sorted(cells.items()))) for r, cells in sorted(rules.items()) if isinstance(cells, dict)),
    )
    t.done()
    return result


def _spool(t: Table) -> SpoolSettings:
    reserve = t.integer("reserve_mb", 100, 10, 100_000)
    alert = t.integer("alert_free_mb", 500, 10, 1_000_000)
    if alert < reserve:
        raise t.fail("alert_free_mb", alert, f"at least spool.reserve_mb ({reserve}), so the alarm comes first")
    t.done()
    return SpoolSettings(alert_free_mb=alert, reserve_mb=reserve)
