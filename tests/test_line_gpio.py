"""The GPIO line backend on gpiozero's MockFactory, driven by real optocoupler pulse trains on virtual time."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from numpy.typing import NDArray

from firmware import calls
from firmware.config import GpioSettings, LineSettings, default_gpio
from firmware.line.base import (
    BackendHealth,
    LineError,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    PolarityReversal,
    RingEnd,
    RingStart,
)
from firmware.line.cadence import load_cadences
from firmware.line.clock import SimClock
from firmware.line.detect import POLARITY_DEBOUNCE_S
from firmware.line.gpio import ClockedSilence, GpioLine
from tests.support.optoline import LineDriver, OptoLine, PinChange

T0 = 1_700_000_000.0
GPIO = default_gpio()
LINE = LineSettings()
CADENCES = load_cadences()
E = TypeVar("E")
SIM_HINT = '(use device.line = "sim" to try linerec without hardware)'


@dataclasses.dataclass
class Rig:
    factory: MockFactory
    clock: SimClock
    audio: ClockedSilence
    line: GpioLine
    opto: OptoLine
    driver: LineDriver

    def play(self, until: float) -> list[LineEvent]:
        """Schedule what the OptoLine wrote so far and run the line until ``until``."""
        self.driver.schedule(self.opto.changes)
        self.opto.changes.clear()
        self.driver.run_until(until)
        return self.driver.events()

    def pin(self, number: int) -> object:
        return self.factory.pin(number)


def make_rig(gpio: GpioSettings = GPIO, ring_hz: float = 20.0, seed: int = 0) -> Rig:
    factory = MockFactory()
    clock = SimClock(T0)
    audio = ClockedSilence(clock=clock, seed=seed)
    line = GpioLine(gpio=gpio, line=LINE, audio=audio, clock=clock, pin_factory=factory)
    return Rig(
        factory, clock, audio, line, OptoLine(gpio, ring_hz=ring_hz, seed=seed), LineDriver(line, factory, clock)
    )


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = make_rig()
    yield made
    made.line.close()


def of(events: list[LineEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# -- rings -------------------------------------------------------------------------


@pytest.mark.parametrize("ring_hz", [20.0, 25.0])
@pytest.mark.parametrize("key", sorted(CADENCES))
def test_six_rings_of_every_cadence_are_six_rings_with_the_cadence_named(key: str, ring_hz: float) -> None:
    rig = make_rig(ring_hz=ring_hz, seed=len(key))
    try:
        end = rig.opto.rings(T0 + 0.5, CADENCES[key], 6)
        events = rig.play(end + 1.0)
    finally:
        rig.line.close()
    starts, ends = of(events, RingStart), of(events, RingEnd)
    assert len(starts) == len(ends) == 6
    assert [e.cadence for e in ends] == [None] + [key] * 5
    assert starts[0].t == pytest.approx(T0 + 0.5, abs=0.001)


def test_ring_input_active_high_boards_ring_too() -> None:
    rig = make_rig(gpio=dataclasses.replace(GPIO, ring_active_high=True, offhook_active_high=True))
    try:
        end = rig.opto.rings(T0 + 0.5, CADENCES["DE"], 2)
        rig.opto.off_hook(end)
        events = rig.play(end + 1.0)
    finally:
        rig.line.close()
    assert [type(e) for e in events] == [RingStart, RingEnd, RingStart, RingEnd, OffHook]


@pytest.mark.parametrize(("ms", "pulses"), [(1, 1), (10, 1), (30, 3), (49, 4), (49, 1)])
def test_glitches_shorter_than_glitch_ms_never_ring(rig: Rig, ms: float, pulses: int) -> None:
    for n in range(10):
        rig.opto.glitch(T0 + 0.3 + n * 0.7, ms, pulses)
    assert rig.play(T0 + 9.0) == []


def test_the_led_blinks_ringing_only_while_the_bell_rings(rig: Rig) -> None:
    rig.opto.rings(T0 + 0.5, CADENCES["US"], 1)
    assert rig.line.led_state == "idle"
    rig.play(T0 + 1.5)
    assert rig.line.led_state == "ringing"
    rig.play(T0 + 4.0)
    assert rig.line.led_state == "idle"


# -- hook, loop drops, polarity ------------------------------------------------------------


def test_picking_up_and_hanging_up_are_off_hook_and_on_hook(rig: Rig) -> None:
    rig.opto.off_hook(T0 + 1.0, bounces=3)
    rig.opto.on_hook(T0 + 4.0, bounces=2)
    events = rig.play(T0 + 6.0)
    assert events == [OffHook(T0 + 1.0), OnHook(T0 + 4.0)]


def test_the_led_shows_recording_while_off_hook(rig: Rig) -> None:
    rig.opto.off_hook(T0 + 1.0)
    rig.play(T0 + 1.5)
    assert rig.line.led_state == "recording"
    assert rig.pin(GPIO.led_pin).state  # type: ignore[attr-defined]


def test_a_500_ms_cpc_is_a_loop_drop(rig: Rig) -> None:
    rig.opto.off_hook(T0 + 1.0)
    rig.opto.loop_open(T0 + 3.0, 500)
    events = rig.play(T0 + 5.0)
    assert events == [OffHook(T0 + 1.0), LoopDrop(pytest.approx(T0 + 3.5), pytest.approx(0.5))]


@pytest.mark.parametrize("ms", [40, 150])
def test_short_loop_opens_do_not_end_the_call(rig: Rig, ms: int) -> None:
    rig.opto.off_hook(T0 + 1.0)
    rig.opto.loop_open(T0 + 3.0, ms)
    assert rig.play(T0 + 5.0) == [OffHook(T0 + 1.0)]


def test_a_polarity_reversal_is_an_event_and_opens_the_caller_id_window(rig: Rig) -> None:
    rig.opto.polarity(T0 + 1.0, reversed=True)
    assert rig.play(T0 + 1.2) == [PolarityReversal(T0 + 1.0)]
    assert rig.line.caller_id_window
    rig.play(T0 + 1.0 + LINE.pre_ring_window_s + 0.1)
    assert not rig.line.caller_id_window


def test_the_hook_relay_follows_set_hook(rig: Rig) -> None:
    relay = rig.pin(GPIO.hook_relay_pin)
    assert not relay.state  # type: ignore[attr-defined]
    rig.line.set_hook(True)
    assert relay.state  # type: ignore[attr-defined]
    assert rig.line.off_hook
    assert rig.line.led_state == "recording"
    rig.line.set_hook(False)
    assert not relay.state  # type: ignore[attr-defined]


def test_close_releases_the_relay_and_ends_the_line(rig: Rig) -> None:
    rig.line.set_hook(True)
    rig.line.close()
    rig.line.close()
    assert rig.line.read_block() is None
    assert not rig.line.health().healthy
    with pytest.raises(LineError, match="closed"):
        rig.line.set_hook(True)


# -- latency, in injected time ------------------------------------------------------------


def test_events_arrive_within_one_block_of_being_decidable(rig: Rig) -> None:
    block_s = rig.driver.block_s
    rig.opto.rings(T0 + 0.5, CADENCES["US"], 1)
    ring_edges = [(c.t, not c.high) for c in rig.opto.changes]  # active low
    rig.opto.off_hook(T0 + 7.013)
    rig.opto.polarity(T0 + 9.007, reversed=True)
    rig.play(T0 + 10.0)
    seen = {type(e): (at, e) for at, e in rig.driver.delivered()}

    first = ring_edges[0][0]
    qualified = first + LINE.ring_qualify_ms / 1000
    # The ring is decidable at the first moment its pulses span ring_qualify_ms while the input is active.
    rises = [t for t, active in ring_edges if active]
    falls = [t for t, active in ring_edges if not active]
    inside = any(r <= qualified <= f for r, f in zip(rises, falls, strict=True))
    decidable = qualified if inside else min(r for r in rises if r > qualified)
    at, start = seen[RingStart]
    assert start.t == first
    assert 0 <= at - decidable <= block_s

    at, _ = seen[OffHook]
    assert 0 <= at - (T0 + 7.013 + LINE.offhook_debounce_ms / 1000) <= block_s
    at, _ = seen[PolarityReversal]
    assert 0 <= at - (T0 + 9.007 + POLARITY_DEBOUNCE_S) <= block_s


def test_events_of_different_inputs_come_in_the_order_they_were_decided(rig: Rig) -> None:
    # Ring pulses at 38.5 Hz from T0+0.49: the input is idle at +250 ms, so the ring is decided by the
    # rise at T0+0.75. The polarity reversal at T0+0.721 settles at T0+0.741, earlier in the same block.
    for k in range(20):
        rise = T0 + 0.49 + 0.026 * k
        rig.opto.changes += [PinChange(rise, GPIO.ring_pin, False), PinChange(rise + 0.01, GPIO.ring_pin, True)]
    rig.opto.polarity(T0 + 0.721, reversed=True)
    rig.play(T0 + 0.8)
    delivered = rig.driver.delivered()
    assert [e for _, e in delivered] == [PolarityReversal(T0 + 0.721), RingStart(T0 + 0.49)]
    assert delivered[0][0] == delivered[1][0] == pytest.approx(T0 + 0.76)


# -- audio and health ---------------------------------------------------------------------


class FlakyAudio(ClockedSilence):
    """Clocked silence whose reads fail while ``broken`` is set."""

    broken = False

    def read(self, frames: int) -> NDArray[np.int16]:
        if self.broken:
            msg = "device unplugged"
            raise OSError(msg)
        return super().read(frames)


def test_a_failing_sound_card_is_ill_health_and_a_fault_led_but_the_line_goes_on() -> None:
    factory, clock = MockFactory(), SimClock(T0)
    audio = FlakyAudio(clock=clock)
    line = GpioLine(gpio=GPIO, line=LINE, audio=audio, clock=clock, pin_factory=factory)
    try:
        assert line.health().healthy
        audio.broken = True
        block = line.read_block()
        assert block is not None
        assert block.events == (
            BackendHealth(T0 + 0.02, healthy=False, detail="the audio source failed: device unplugged"),
        )
        assert len(block.audio) == line.block_frames
        assert not line.health().healthy
        assert line.led_state == "fault"
        # The clock still moves a block per read, so the loop does not spin.
        assert line.read_block() is not None
        assert clock.now() == pytest.approx(T0 + 0.04)
        audio.broken = False
        block = line.read_block()
        assert block is not None
        assert [(e.healthy, e.detail) for e in block.events] == [(True, "ok")]  # type: ignore[union-attr]
        assert line.led_state == "idle"
    finally:
        line.close()


def test_play_goes_to_the_audio_source(rig: Rig) -> None:
    rig.line.play(np.zeros(800, dtype=np.int16))
    assert rig.audio.played_frames == 800
    with pytest.raises(LineError, match="int16 mono"):
        rig.line.play(np.zeros(800, dtype=np.float32))


def test_led_states_are_checked(rig: Rig) -> None:
    rig.line.set_led("fault")
    assert rig.line.led_state == "fault"
    with pytest.raises(ValueError, match="LED state 'party' is not one of idle, ringing, recording, fault"):
        rig.line.set_led("party")


def test_blocks_are_contiguous_and_paced_by_the_audio_source(rig: Rig) -> None:
    blocks = rig.driver.run_until(T0 + 1.0)
    assert len(blocks) == 50
    assert [b.t for b in blocks] == pytest.approx([T0 + 0.02 * n for n in range(50)])
    assert all(b.audio.dtype == np.int16 and len(b.audio) == 160 for b in blocks)


# -- no GPIO -----------------------------------------------------------------------------


def test_no_pin_library_on_this_machine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if any(Path("/dev").glob("gpiochip*")):
        pytest.skip("this machine has a GPIO chip")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    with pytest.raises(LineError) as caught:
        GpioLine(gpio=GPIO, line=LINE, audio=ClockedSilence(clock=SimClock(T0)), clock=SimClock(T0))
    text = str(caught.value)
    assert text.startswith("GPIO is not available: gpiozero found no pin library (Unable to load any default pin")
    assert "native: " in text
    assert text.endswith(f"this machine is not a Raspberry Pi with the linerec board {SIM_HINT}")


def test_an_unknown_pin_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "nosuchlib")
    monkeypatch.setattr(Device, "pin_factory", None)
    with pytest.raises(LineError) as caught:
        GpioLine(gpio=GPIO, line=LINE, audio=ClockedSilence(clock=SimClock(T0)), clock=SimClock(T0))
    assert str(caught.value) == (
        "GPIO is not available: gpiozero found no pin library (Unable to find pin factory 'nosuchlib'); "
        f"this machine is not a Raspberry Pi with the linerec board {SIM_HINT}"
    )


def test_a_pin_library_without_a_gpio_chip_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A pin library loaded, but the kernel's GPIO device is missing (or hidden from the service).
    monkeypatch.setattr(Device, "pin_factory", object())
    monkeypatch.setattr("firmware.line.gpio.DEV_DIR", tmp_path)
    with pytest.raises(LineError) as caught:
        GpioLine(gpio=GPIO, line=LINE, audio=ClockedSilence(clock=SimClock(T0)), clock=SimClock(T0))
    assert str(caught.value) == (
        f"GPIO is not available: there is no {tmp_path}/gpiochip* device; "
        f"this machine is not a Raspberry Pi with the linerec board {SIM_HINT}"
    )


def test_a_pin_already_in_use_is_named(rig: Rig) -> None:
    with pytest.raises(LineError, match=f"^GPIO{GPIO.ring_pin} cannot be used: .*check the \\[gpio\\] pins"):
        GpioLine(gpio=GPIO, line=LINE, audio=ClockedSilence(clock=rig.clock), clock=rig.clock, pin_factory=rig.factory)
    # The failed line let go of what it had taken: the first line still works.
    rig.opto.off_hook(T0 + 0.5)
    assert rig.play(T0 + 1.0) == [OffHook(T0 + 0.5)]


# -- one whole call through the state machine ---------------------------------------------------


def test_a_call_rung_answered_and_cut_by_cpc_is_one_answered_call_ended_by_loop_drop(rig: Rig) -> None:
    gb = CADENCES["GB"]
    rig.opto.rings(T0 + 1.0, gb, 3)
    answer = T0 + 1.0 + 2 * gb.period_s + 1.5  # in the silence after the third ring
    rig.opto.off_hook(answer, bounces=3)
    rig.opto.loop_open(answer + 20.0, 500)
    rig.opto.on_hook(answer + 21.5)
    rig.driver.schedule(rig.opto.changes)

    policy = calls.CallPolicy()
    call, ended = calls.IDLE, []
    while rig.clock.now() < answer + 25.0:
        block = rig.driver.step()
        for event in block.events:
            call, actions = calls.step(call, event, policy)
            ended += [a for a in actions if isinstance(a, calls.CallEnded)]
        call, actions = calls.tick(call, block.t + rig.driver.block_s, policy)
        ended += [a for a in actions if isinstance(a, calls.CallEnded)]

    assert len(ended) == 1
    done = ended[0].call
    assert done.answered
    assert done.ring_count == 3
    assert done.answered_at == answer
    assert done.hangup_cause is calls.HangupCause.REMOTE_LOOP_DROP
    assert done.ended_at == pytest.approx(answer + 20.5)
    assert call == calls.IDLE
