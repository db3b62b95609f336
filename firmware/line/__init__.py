"""Ways onto the phone line: one ``LineBackend`` interface, one module per hardware path.

:func:`open_backend` builds the one the device's settings name. A device set up
for the board or a modem never falls back to the simulated line: missing
hardware is a clear :class:`~firmware.line.base.LineError`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware.config import DeviceConfig
    from firmware.line.base import LineBackend


def open_backend(config: DeviceConfig) -> LineBackend:
    """The line backend ``device.line`` asks for, not yet started."""
    # Each path imports only what it needs: no gpiozero on a modem setup, no PortAudio on the sim.
    block_ms = config.audio.block_ms
    rate = config.audio.sample_rate
    if config.device.line == "gpio":
        from firmware.capture import SoundCard  # noqa: PLC0415
        from firmware.line.gpio import GpioLine  # noqa: PLC0415

        device = config.gpio.audio_device
        card = SoundCard(
            device=int(device) if device is not None and device.isdigit() else device,
            sample_rate=rate,
            block_frames=rate * block_ms // 1000,
        )
        # The board first: no GPIO is the first thing to tell a person on the wrong machine.
        line = GpioLine(gpio=config.gpio, line=config.line, audio=card, block_ms=block_ms)
        try:
            card.start()
        except BaseException:
            line.close()
            raise
        return line
    if config.device.line == "modem":
        from firmware.line.modem import ModemLine  # noqa: PLC0415

        return ModemLine(settings=config.modem, sample_rate=rate, block_ms=block_ms)
    from firmware.line.clock import RealtimeClock  # noqa: PLC0415
    from firmware.line.sim import SimLine, demo_calls  # noqa: PLC0415

    script = [demo_calls()[i % 3] for i in range(config.sim.calls)]
    if script:
        script[0] = dataclasses.replace(script[0], gap_before_s=script[0].gap_before_s + config.sim.idle_before_s)
    clock = RealtimeClock() if config.sim.realtime else None
    return SimLine(script, sample_rate=rate, block_ms=block_ms, clock=clock, seed=config.sim.seed)
