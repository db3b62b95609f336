"""Wall-clock latency of the GPIO line: from a pin edge to the line event the call state machine reads.

:func:`gpio_edge_latency` runs a :class:`GpioLine` on gpiozero's ``MockFactory``
in real time (a :class:`RealtimeClock` and a :class:`ClockedSilence` paced by
it, standing in for the sound card), with a second thread playing the ring
optocoupler into the mock pin the way gpiozero's own threads deliver real
edges. It measures, with ``time.perf_counter``, how long after the
``drive_low()`` that qualifies a ring the :class:`RingStart` comes out of
``read_block()``. A real-time ``read_block`` hands an event on as soon as an
edge decides it, without waiting for the end of the audio block.

:func:`gpiozero_callback_latency` is the peer: how long gpiozero itself takes
from a mock pin's edge to a ``when_activated`` callback, the least any code on
gpiozero can take. Neither prints anything.
"""

from __future__ import annotations

import random
import threading
import time

from gpiozero.pins.mock import MockFactory

from firmware.config import LineSettings, default_gpio
from firmware.line.base import RingEnd, RingStart
from firmware.line.clock import RealtimeClock
from firmware.line.gpio import ClockedSilence, GpioLine

# Pulses 26 ms apart, 10 ms wide: at ring_qualify_ms (200 ms) the input is idle, so the
# ring is decided by one known edge, the rise of pulse QUALIFYING_PULSE at 208 ms.
PULSE_PERIOD_S = 0.026
PULSE_WIDTH_S = 0.010
QUALIFYING_PULSE = 8
PULSES = QUALIFYING_PULSE + 2
# Short ring timings keep each trial under half a second; the code path is the same.
BENCH_LINE = LineSettings(ring_qualify_ms=200, ring_end_ms=200)


def _pulse_train(pin: object, phase_s: float, drive_times: list[float]) -> None:
    """Play one ring burst into the mock pin (active low), noting when each pulse's drive_low() began."""
    time.sleep(phase_s)
    start = time.perf_counter()
    for k in range(PULSES):
        rise = start + k * PULSE_PERIOD_S
        time.sleep(max(0.0, rise - time.perf_counter()))
        drive_times.append(time.perf_counter())
        pin.drive_low()  # type: ignore[attr-defined]
        time.sleep(max(0.0, rise + PULSE_WIDTH_S - time.perf_counter()))
        pin.drive_high()  # type: ignore[attr-defined]


def gpio_edge_latency(n: int, *, block_ms: int = 20, seed: int = 0) -> list[float]:
    """Seconds from the ring pin's qualifying ``drive_low()`` to its RingStart out of ``read_block()``, n times.

    Each trial starts its pulses at a random phase of the audio block.
    """
    rng = random.Random(seed)
    gpio = default_gpio()
    factory = MockFactory()
    clock = RealtimeClock()
    line = GpioLine(
        gpio=gpio,
        line=BENCH_LINE,
        audio=ClockedSilence(clock=clock, seed=seed),
        clock=clock,
        pin_factory=factory,
        block_ms=block_ms,
    )
    pin = factory.pin(gpio.ring_pin)
    latencies: list[float] = []
    try:
        for _ in range(n):
            drive_times: list[float] = []
            phase = rng.uniform(0.0, block_ms / 1000)
            player = threading.Thread(target=_pulse_train, args=(pin, phase, drive_times), daemon=True)
            player.start()
            seen_at = None
            while True:
                block = line.read_block()
                assert block is not None
                if any(isinstance(e, RingStart) for e in block.events):
                    seen_at = time.perf_counter()
                if any(isinstance(e, RingEnd) for e in block.events):
                    break
            player.join()
            assert seen_at is not None
            latencies.append(seen_at - drive_times[QUALIFYING_PULSE])
    finally:
        line.close()
    return latencies


def gpiozero_callback_latency(n: int) -> list[float]:
    """Seconds from a mock pin's ``drive_low()`` to gpiozero calling ``when_activated``, n times."""
    from gpiozero import DigitalInputDevice  # noqa: PLC0415

    factory = MockFactory()
    device = DigitalInputDevice(default_gpio().ring_pin, pull_up=True, pin_factory=factory)
    pin = factory.pin(default_gpio().ring_pin)
    seen: list[float] = []
    device.when_activated = lambda: seen.append(time.perf_counter())
    latencies: list[float] = []
    try:
        for _ in range(n):
            before = len(seen)
            start = time.perf_counter()
            pin.drive_low()
            latencies.append(seen[before] - start)
            pin.drive_high()
    finally:
        device.close()
    return latencies
