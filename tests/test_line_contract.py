"""One contract, every way onto the line: sim, gpio (MockFactory + optocoupler pulses) and modem (pty simulator).

Each rig plays the same story on its backend, on injected time: six rings that
nobody answers. What the call state machine makes of the events must be the
same whatever the hardware: one missed call of exactly six rings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from firmware import calls
from firmware.config import LineSettings, ModemSettings, default_gpio
from firmware.line.base import LineBackend, LineBlock, LineEvent, RingStart
from firmware.line.cadence import cadence_for_country
from firmware.line.clock import SimClock
from firmware.line.gpio import ClockedSilence, GpioLine
from firmware.line.modem import ModemLine
from firmware.line.sim import ScriptedCall, SimLine
from tests.support.modem_sim import ModemDriver, ModemSim
from tests.support.optoline import LineDriver, OptoLine

T0 = 1_790_000_000.0
POLICY = calls.CallPolicy(ring_timeout_s=8.0)


@dataclass
class Rig:
    """A backend and a way to play six unanswered rings on it, collecting the blocks."""

    backend: LineBackend
    play_six_rings: Callable[[], list[LineBlock]]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def sim_rig() -> Rig:
    line = SimLine([ScriptedCall(country="US", rings=6, answered=False, talk=())], start_time=T0, seed=1)

    def play() -> list[LineBlock]:
        blocks = []
        while (block := line.read_block()) is not None:
            blocks.append(block)
        return blocks

    return Rig(line, play)


def gpio_rig() -> Rig:
    factory, clock = MockFactory(), SimClock(T0)
    gpio = default_gpio()
    line = GpioLine(gpio=gpio, line=LineSettings(), audio=ClockedSilence(clock=clock), clock=clock, pin_factory=factory)
    opto, driver = OptoLine(gpio, seed=1), LineDriver(line, factory, clock)

    def play() -> list[LineBlock]:
        end = opto.rings(T0 + 1.0, cadence_for_country("US"), 6)
        driver.schedule(opto.changes)
        return driver.run_until(end + POLICY.ring_timeout_s + 1.0)

    return Rig(line, play)


def modem_rig() -> Rig:
    modem = ModemSim()
    clock = SimClock(T0)
    line = ModemLine(settings=ModemSettings(port=modem.path, command_timeout_s=0.5), clock=clock)
    line.start()
    driver = ModemDriver(line, modem, clock)
    cadence = cadence_for_country("US")

    def play() -> list[LineBlock]:
        driver.run_for(1.0)
        # One RING per ring cycle, as the modem reports them; the test's clock moves between them.
        modem.ring(6, between=lambda: driver.run_for(cadence.period_s))
        driver.run_for(cadence.period_s + POLICY.ring_timeout_s)
        return driver.blocks

    return Rig(line, play, cleanup=[modem.close])


RIGS: dict[str, Callable[[], Rig]] = {"sim": sim_rig, "gpio": gpio_rig, "modem": modem_rig}


@pytest.fixture(params=sorted(RIGS))
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = RIGS[request.param]()
    try:
        yield made
    finally:
        made.backend.close()
        for undo in made.cleanup:
            undo()


def calls_from(blocks: list[LineBlock]) -> list[calls.Call]:
    call, ended = calls.IDLE, []
    for block in blocks:
        for event in block.events:
            call, actions = calls.step(call, event, POLICY)
            ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
        call, actions = calls.tick(call, block.t + len(block.audio) / 8000, POLICY)
        ended += [a.call for a in actions if isinstance(a, calls.CallEnded)]
    return ended


def test_six_unanswered_rings_are_one_missed_call_of_six_rings(rig: Rig) -> None:
    blocks = rig.play_six_rings()
    events: list[LineEvent] = [e for b in blocks for e in b.events]
    assert len([e for e in events if isinstance(e, RingStart)]) == 6
    [missed] = calls_from(blocks)
    assert (missed.ring_count, missed.answered, missed.hangup_cause) == (6, False, calls.HangupCause.UNANSWERED)


def test_blocks_carry_int16_audio_of_the_block_size_in_time_order(rig: Rig) -> None:
    blocks = rig.play_six_rings()
    assert blocks
    for block in blocks:
        assert block.audio.dtype == np.int16
        assert block.audio.ndim == 1
        assert len(block.audio) in (0, rig.backend.block_frames)
    starts = [b.t for b in blocks]
    assert starts == sorted(starts)
    # Audio covers the time it claims: block after block with no gap or overlap.
    with_audio = [b for b in blocks if len(b.audio)]
    step = rig.backend.block_frames / rig.backend.sample_rate
    assert np.allclose(np.diff([b.t for b in with_audio]), step, atol=1e-6)


def test_a_backend_is_healthy_takes_the_hook_and_closes_twice(rig: Rig) -> None:
    assert rig.backend.health().healthy
    rig.backend.set_hook(True)
    rig.backend.set_hook(False)
    rig.backend.close()
    rig.backend.close()
