"""``linerec selftest``: can this device do its job? A checklist of the parts it needs.

Each check takes the device's settings and says ok, failed (with what to do), or
skipped (not needed on this line path). Nothing here changes the line: the hook
relay is never touched and the modem is only asked ``AT``.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.config import DeviceConfig
from firmware.wire.errors import LinerecError


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check: ``ok`` True, False (failed) or None (skipped)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        """The checklist line for a person."""
        mark = {True: " ok ", False: "FAIL", None: "skip"}[self.ok]
        return f"[{mark}] {self.name}: {self.detail}"


def check_line(config: DeviceConfig) -> Check:
    """The configured way onto the line answers."""
    name = f"line ({config.device.line})"
    if config.device.line == "sim":
        return Check(name, True, "simulated line, nothing to probe")
    try:
        if config.device.line == "gpio":
            return Check(name, True, _read_pins(config))
        return Check(name, True, _probe_modem(config))
    except (LinerecError, OSError, ValueError, RuntimeError) as exc:
        return Check(name, False, str(exc))


def _read_pins(config: DeviceConfig) -> str:
    from gpiozero import DigitalInputDevice  # noqa: PLC0415  (only the gpio path needs it)
    from gpiozero.exc import GPIOZeroError, PinFactoryFallback  # noqa: PLC0415

    g = config.gpio
    inputs = (
        ("ring", g.ring_pin, g.ring_active_high),
        ("off-hook sense", g.offhook_pin, g.offhook_active_high),
        ("polarity", g.polarity_pin, True),
    )
    levels = []
    try:
        # gpiozero warns once per driver it tries; the checklist line says what matters.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PinFactoryFallback)
            for label, pin, active_high in inputs:
                device = DigitalInputDevice(pin, pull_up=not active_high)
                try:
                    levels.append(f"{label} GPIO{pin}={'active' if device.value else 'idle'}")
                finally:
                    device.close()
    except (GPIOZeroError, OSError) as exc:
        msg = f"GPIO cannot be read ({exc}); is this a Raspberry Pi with the linerec board?"
        raise RuntimeError(msg) from None
    return ", ".join(levels)


def _probe_modem(config: DeviceConfig) -> str:
    import serial  # noqa: PLC0415

    m = config.modem
    try:
        with serial.serial_for_url(m.port, m.baudrate, timeout=m.command_timeout_s) as port:
            port.reset_input_buffer()
            port.write(b"AT\r")
            reply = port.read_until(b"OK\r\n", 256)
    except serial.SerialException as exc:
        msg = f"serial port {m.port} cannot be opened: {exc}"
        raise RuntimeError(msg) from None
    if b"ERROR" in reply:
        msg = f"the modem on {m.port} answered AT with ERROR"
        raise RuntimeError(msg)
    if b"OK" not in reply:
        msg = f"the modem on {m.port} did not answer AT within {m.command_timeout_s:g} s"
        raise RuntimeError(msg)
    return f"the modem on {m.port} answers AT"


def check_sound(config: DeviceConfig) -> Check:
    """The sound card exists and delivers mono audio at the line's rate (resampled if it must be)."""
    name = "sound device"
    if config.device.line != "gpio":
        return Check(name, None, f"audio comes from the {config.device.line} line")
    device = config.gpio.audio_device
    rate = config.audio.sample_rate
    try:
        from firmware.capture import SoundCard  # noqa: PLC0415

        wanted: Any = int(device) if device is not None and device.isdigit() else device
        card = SoundCard(device=wanted, sample_rate=rate, block_frames=rate // 50)
        try:
            card.start()
            card.read(rate // 50)
        finally:
            card.close()
    except (ImportError, OSError) as exc:
        return Check(name, False, f"PortAudio is not available ({exc}); install libportaudio2")
    except LinerecError as exc:
        return Check(name, False, str(exc))
    via = f", resampled from the card's {card.card_rate} Hz" if card.card_rate != rate else ""
    return Check(name, True, f"{device or 'the default device'} records and plays mono at {rate} Hz{via}")


def check_broker(config: DeviceConfig, timeout_s: float = 5.0) -> Check:
    """The MQTT broker accepts this device's connection."""
    name = f"broker {config.mqtt.address}"
    try:
        client = config.mqtt.client(f"linerec-{config.device.id}-selftest")
    except LinerecError as exc:
        return Check(name, False, str(exc))
    answered = threading.Event()
    result: dict[str, str] = {}

    def on_connect(_c: object, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        result["reason"] = str(reason)
        result["failed"] = "yes" if reason.is_failure else ""
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive_s)
        client.loop_start()
        if not answered.wait(timeout_s):
            return Check(name, False, f"no answer within {timeout_s:g} s")
    except OSError as exc:
        return Check(name, False, f"cannot connect: {exc.strerror or exc}")
    finally:
        client.disconnect()
        client.loop_stop()
    if result.get("failed"):
        return Check(name, False, f"refused the connection: {result['reason']}")
    return Check(name, True, "accepts the connection")


def check_keys(config: DeviceConfig) -> Check:
    """The device's signing key exists and is private; the archive recipients are set."""
    path = config.device.signing_key_path
    name = "keys"
    if not path.exists():
        return Check(name, False, f"no signing key at {path}; `linerec keys show` creates it")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name, False, f"signing key {path} has mode {mode:04o}; run chmod 600 {path}")
    count = len(config.archive.recipients)
    return Check(name, True, f"signing key {path} (0600), {count} archive recipient{'s' * (count != 1)}")


def check_spool(config: DeviceConfig) -> Check:
    """The spool folder takes a file and fsyncs it."""
    root = config.device.spool_dir
    name = "spool"
    probe = root / f".selftest-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"linerec selftest\n")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        free = os.statvfs(root)
    except OSError as exc:
        return Check(name, False, f"{root} is not writable: {exc.strerror or exc}")
    return Check(name, True, f"{root} is writable, {free.f_bavail * free.f_frsize / 1e9:.1f} GB free")


CHECKS: tuple[Callable[[DeviceConfig], Check], ...] = (check_line, check_sound, check_broker, check_keys, check_spool)


def run(config: DeviceConfig) -> list[Check]:
    """Every check, in the order a person would fix them."""
    return [check(config) for check in CHECKS]
