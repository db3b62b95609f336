"""A phone line for the GPIO backend's tests: the board's optocoupler outputs, edge by edge.

:class:`OptoLine` writes down what the board's inputs would do, as a
time-ordered list of :class:`PinChange` values: ring bursts as real
optocoupler pulse trains (two pulses per ring cycle, about half duty, with a
little seeded jitter), a phone going off-hook (with contact bounce if asked),
loop opens, polarity reversals and glitches.

:class:`LineDriver` plays those changes into gpiozero's ``MockFactory`` pins
under a :class:`~firmware.line.GpioLine` on a :class:`SimClock`: for each
block it sets the clock to each change's time and drives the pin, so the
backend's callbacks stamp the edge with the injected time, then calls
``read_block()``, whose :class:`ClockedSilence` moves the clock to the end of
the block. Nothing sleeps.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from firmware.config import GpioSettings
from firmware.line.base import LineBlock, LineEvent
from firmware.line.cadence import Cadence
from firmware.line.clock import SimClock
from firmware.line.gpio import GpioLine


@dataclass(frozen=True, order=True)
class PinChange:
    """Pin ``pin`` goes high (``high``) or low at ``t``."""

    t: float
    pin: int
    high: bool


def ring_pulses(
    start: float, on_s: float, *, ring_hz: float = 20.0, duty: float = 0.5, jitter_s: float = 0.0003, rng: random.Random
) -> list[tuple[float, bool]]:
    """(t, active) edges of one ring burst of ``on_s`` seconds: a pulse per half-cycle."""
    period = 1.0 / (2.0 * ring_hz)
    edges: list[tuple[float, bool]] = []
    for k in range(max(1, round(on_s / period))):
        rise = start + k * period + rng.uniform(0.0, jitter_s)
        fall = rise + duty * period + rng.uniform(-jitter_s, jitter_s)
        edges += [(rise, True), (fall, False)]
    return edges


def pattern_of(cadence: Cadence | Sequence[float]) -> tuple[float, ...]:
    """A cadence's on/off seconds, from a table entry or given directly."""
    return cadence.pattern if isinstance(cadence, Cadence) else tuple(cadence)


def cadence_pulses(
    start: float, cadence: Cadence | Sequence[float], rings: int, *, ring_hz: float = 20.0, seed: int = 0
) -> tuple[list[tuple[float, bool]], float]:
    """(t, active) edges of ``rings`` whole cadence cycles from ``start``, and when the last cycle ends."""
    rng = random.Random(seed)
    pattern = pattern_of(cadence)
    edges: list[tuple[float, bool]] = []
    t = start
    for _ in range(rings):
        for on_s, off_s in zip(pattern[::2], pattern[1::2], strict=True):
            edges += ring_pulses(t, on_s, ring_hz=ring_hz, rng=rng)
            t += on_s + off_s
    return edges, t


@dataclass
class OptoLine:
    """What the board's inputs do over time; see the module docstring."""

    gpio: GpioSettings
    ring_hz: float = 20.0
    seed: int = 0
    changes: list[PinChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _ring(self, t: float, active: bool) -> None:
        self.changes.append(PinChange(t, self.gpio.ring_pin, active == self.gpio.ring_active_high))

    def _loop(self, t: float, current: bool) -> None:
        self.changes.append(PinChange(t, self.gpio.offhook_pin, current == self.gpio.offhook_active_high))

    def rings(self, at: float, cadence: Cadence | Sequence[float], count: int) -> float:
        """``count`` whole cadence cycles from ``at``; returns when the last cycle's silence ends."""
        edges, end = cadence_pulses(at, cadence, count, ring_hz=self.ring_hz, seed=self._rng.randrange(2**32))
        for t, active in edges:
            self._ring(t, active)
        return end

    def glitch(self, at: float, ms: float, pulses: int = 1) -> None:
        """Noise on the ring input: ``pulses`` short pulses spread over ``ms`` milliseconds."""
        span = ms / 1000
        width = span / (2 * pulses - 1) if pulses > 1 else span
        for k in range(pulses):
            rise = at + 2 * k * width
            self._ring(rise, True)
            self._ring(rise + width, False)

    def off_hook(self, at: float, bounces: int = 0) -> None:
        """A phone is picked up: loop current starts, with ``bounces`` 1 ms contact bounces."""
        self._switch(at, current=True, bounces=bounces)

    def on_hook(self, at: float, bounces: int = 0) -> None:
        """The phone is put down: loop current stops."""
        self._switch(at, current=False, bounces=bounces)

    def _switch(self, at: float, *, current: bool, bounces: int) -> None:
        t = at
        for _ in range(bounces):
            self._loop(t, current)
            self._loop(t + 0.001, not current)
            t += 0.002
        self._loop(t, current)

    def loop_open(self, at: float, ms: float) -> float:
        """The loop current stops for ``ms`` milliseconds (a CPC open, or a hang-up and pick-up)."""
        self._loop(at, current=False)
        self._loop(at + ms / 1000, current=True)
        return at + ms / 1000

    def polarity(self, at: float, reversed: bool) -> None:
        """The line's polarity becomes reversed (True) or normal (False); the input is low when reversed."""
        self.changes.append(PinChange(at, self.gpio.polarity_pin, not reversed))


class LineDriver:
    """Plays pin changes into a MockFactory under a GpioLine on a SimClock; see the module docstring."""

    def __init__(self, line: GpioLine, factory: object, clock: SimClock) -> None:
        self.line = line
        self.factory = factory
        self.clock = clock
        self.block_s = line.block_frames / line.sample_rate
        self.blocks: list[LineBlock] = []
        self._pending: list[PinChange] = []

    def schedule(self, changes: Sequence[PinChange]) -> None:
        """Add pin changes to play; they may come in any order."""
        for change in changes:
            heapq.heappush(self._pending, change)

    def step(self) -> LineBlock:
        """Apply the changes due within the next block, then read that block."""
        end = self.clock.now() + self.block_s
        while self._pending and self._pending[0].t < end:
            change = heapq.heappop(self._pending)
            self.clock.sleep_until(change.t)
            pin = self.factory.pin(change.pin)  # type: ignore[attr-defined]
            if change.high:
                pin.drive_high()
            else:
                pin.drive_low()
        block = self.line.read_block()
        assert block is not None
        self.blocks.append(block)
        return block

    def run_until(self, t: float) -> list[LineBlock]:
        """Step blocks until the clock reaches ``t``; returns the blocks read."""
        blocks = []
        while self.clock.now() < t - 1e-6:  # epoch seconds carry about 0.2 us of rounding
            blocks.append(self.step())
        return blocks

    def events(self) -> list[LineEvent]:
        """Every event read so far, in order."""
        return [event for block in self.blocks for event in block.events]

    def delivered(self) -> list[tuple[float, LineEvent]]:
        """Every event read so far with the time its block ended (when the state machine saw it)."""
        return [(block.t + self.block_s, event) for block in self.blocks for event in block.events]
