"""The line-interface board on the Raspberry Pi's GPIO header, as a line backend.

:class:`GpioLine` reads the board's three inputs through gpiozero (the ring
optocoupler, the loop sense and the polarity optocoupler), drives the hook
relay and the status LED, and takes its audio from an :class:`AudioSource`
(the USB sound card behind the isolation transformer).

gpiozero calls the edge callbacks in its own threads. They only stamp the edge
with the backend's clock and append it to a deque; everything else happens in
:meth:`GpioLine.read_block`, in the caller's thread, once the audio block has
been captured: the edges are fed in time order to the pure detectors of
:mod:`firmware.line.detect`, which turn them into line events. Reading the
audio is what paces the loop: a sound card blocks until the block is complete.

gpiozero picks the pin library itself (RPi.GPIO up to the Pi 4, lgpio on the
Pi 5) unless a ``pin_factory`` is given; tests give ``MockFactory()``. A machine
without the GPIO is a clear :class:`LineError`, never a silent fall-back to the
simulated line.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.config import GpioSettings, LineSettings
from firmware.line.base import (
    AudioSource,
    BackendHealth,
    LineBackend,
    LineBlock,
    LineError,
    LineEvent,
    OffHook,
    OnHook,
    frames_per_block,
)
from firmware.line.clock import Clock, RealtimeClock
from firmware.line.detect import HookSense, PolarityWatch, RingDetector
from firmware.wire.errors import ConfigError

__all__ = ["LED_STATES", "ClockedSilence", "GpioLine"]

log = logging.getLogger(__name__)

LED_STATES = ("idle", "ringing", "recording", "fault")
# Where the kernel's GPIO character devices live; a Pi always has /dev/gpiochip0.
DEV_DIR = Path("/dev")
# Fault: two short flashes a second, read from this cycle at one value per FAULT_STEP_S.
_FAULT_CYCLE = (1, 0, 1, 0, 0, 0, 0, 0, 0, 0)
_FAULT_STEP_S = 0.1

_NO_GPIO = (
    "GPIO is not available: {detail}; this machine is not a Raspberry Pi with the linerec board "
    '(use device.line = "sim" to try linerec without hardware)'
)

_RING, _HOOK, _POLARITY = "ring", "hook", "polarity"
_NO_AUDIO: NDArray[np.int16] = np.zeros(0, dtype=np.int16)


def _gpio_unavailable(detail: str) -> LineError:
    return LineError(_NO_GPIO.format(detail=detail))


def _gpiozero() -> Any:
    try:
        import gpiozero  # noqa: PLC0415 - only the gpio line needs it, and it is an optional extra
        import gpiozero.pins.mock  # noqa: PLC0415
    except ImportError:
        raise _gpio_unavailable("the gpiozero package is not installed (pip install 'linerec[device]')") from None
    return gpiozero


def _default_factory(gz: Any) -> Any:
    """gpiozero's own choice of pin library, or the reason there is none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gz.Device.ensure_pin_factory()
        except (gz.GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
            tried = [
                str(w.message).removeprefix("Falling back from ")
                for w in caught
                if issubclass(w.category, gz.PinFactoryFallback)
            ]
            detail = f"gpiozero found no pin library ({exc}"
            detail += f" {'; '.join(tried)})" if tried else ")"
            raise _gpio_unavailable(detail) from None
    for warning in caught:
        # gpiozero's own note on the pin library it settled for (the slow "native" one, say).
        log.warning("gpiozero: %s", warning.message)
    factory = gz.Device.pin_factory
    if not isinstance(factory, gz.pins.mock.MockFactory) and not any(DEV_DIR.glob("gpiochip*")):
        raise _gpio_unavailable(f"there is no {DEV_DIR}/gpiochip* device")
    return factory


class ClockedSilence:
    """An audio source without a sound card: near-silent blocks paced by a clock.

    Each :meth:`read` advances the stream by ``frames / sample_rate`` seconds
    and waits on the clock until then: at once on a :class:`SimClock`, in real
    time on a :class:`RealtimeClock`. If the reader falls more than a block
    behind real time, the backlog is dropped, as a sound card's overrun would.
    """

    def __init__(
        self, *, clock: Clock, sample_rate: int = 8000, noise_dbfs: float | None = -70.0, seed: int = 0
    ) -> None:
        if sample_rate <= 0:
            msg = f"sample_rate {sample_rate!r} must be a positive number of frames per second"
            raise ConfigError(msg)
        self.sample_rate = sample_rate
        self._clock = clock
        # Stream time counts frames from an origin, so that it does not drift by rounding.
        self._origin = clock.now()
        self._frames = 0
        self._rms = 0.0 if noise_dbfs is None else 32767.0 * 10 ** (noise_dbfs / 20)
        self._rng = np.random.default_rng(seed)
        self._closed = False
        self.played_frames = 0

    def read(self, frames: int) -> NDArray[np.int16]:
        """``frames`` samples of quiet noise, once the clock has reached their end."""
        if self._closed:
            msg = "the clocked audio source is closed"
            raise LineError(msg)
        duration = frames / self.sample_rate
        now = self._clock.now()
        if now - (self._stream_time() + duration) > duration:
            self._origin, self._frames = now - duration, 0
        self._frames += frames
        self._clock.sleep_until(self._stream_time())
        if self._rms == 0.0:
            return np.zeros(frames, dtype=np.int16)
        noise = np.rint(self._rng.standard_normal(frames) * self._rms)
        return np.clip(noise, -32768, 32767).astype(np.int16)

    def _stream_time(self) -> float:
        return self._origin + self._frames / self.sample_rate

    def play(self, audio: NDArray[np.int16]) -> None:
        """Count the frames; there is nowhere for them to go."""
        self.played_frames += len(audio)

    def close(self) -> None:
        """Later reads fail, as a closed sound card's would."""
        self._closed = True


class GpioLine(LineBackend):
    """The line-interface board: see the module docstring."""

    name = "gpio"

    def __init__(
        self,
        *,
        gpio: GpioSettings,
        line: LineSettings,
        audio: AudioSource,
        clock: Clock | None = None,
        pin_factory: Any = None,
        block_ms: int = 20,
    ) -> None:
        rate = audio.sample_rate
        try:
            self.block_frames = frames_per_block(rate, block_ms)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.sample_rate = rate
        self._block_s = self.block_frames / rate
        self._audio = audio
        self._clock: Clock = RealtimeClock() if clock is None else clock
        self._ring = RingDetector(line)
        self._hook = HookSense(line)
        # (t, input, level), appended by gpiozero's threads; deque appends are atomic.
        self._edges: deque[tuple[float, str, bool]] = deque()
        # Set by the edge callbacks, so a waiting read_block hands events on at once.
        self._edge_signal = threading.Event()
        self._next_block_due = -math.inf
        self._last_poll = -math.inf
        self._audio_error: str | None = None
        self._relay_on = False
        self._requested_led = "idle"
        self._led_shown: str | None = None
        self._closed = False
        self._devices: list[Any] = []
        self._open(gpio, line, pin_factory)
        self._show_led()

    # -- hardware ---------------------------------------------------------

    def _open(self, gpio: GpioSettings, line: LineSettings, pin_factory: Any) -> None:
        gz = _gpiozero()
        factory = _default_factory(gz) if pin_factory is None else pin_factory
        try:
            ring = self._input(gz, factory, gpio.ring_pin, pull_up=not gpio.ring_active_high)
            hook = self._input(gz, factory, gpio.offhook_pin, pull_up=not gpio.offhook_active_high)
            # The polarity optocoupler pulls its input low while the polarity is reversed.
            polarity = self._input(gz, factory, gpio.polarity_pin, pull_up=True)
            self._relay = self._output(gz, gz.DigitalOutputDevice, factory, gpio.hook_relay_pin)
            self._led = self._output(gz, gz.LED, factory, gpio.led_pin)
        except BaseException:
            self._release()
            raise
        self._polarity = PolarityWatch(line, reversed=bool(polarity.is_active))
        for device, kind in ((ring, _RING), (hook, _HOOK), (polarity, _POLARITY)):
            device.when_activated = self._callback(kind, level=True)
            device.when_deactivated = self._callback(kind, level=False)
        # Levels already present at start (a phone already off-hook) count as edges now;
        # an edge that raced in as well is the same level and changes nothing.
        now = self._clock.now()
        self._edges.append((now, _RING, bool(ring.is_active)))
        self._edges.append((now, _HOOK, bool(hook.is_active)))

    def _input(self, gz: Any, factory: Any, pin: int, *, pull_up: bool) -> Any:
        # No bounce_time: gpiozero would drop edges; debouncing belongs to the detectors.
        return self._device(pin, lambda: gz.DigitalInputDevice(pin, pull_up=pull_up, pin_factory=factory), gz)

    def _output(self, gz: Any, cls: Any, factory: Any, pin: int) -> Any:
        return self._device(pin, lambda: cls(pin, active_high=True, initial_value=False, pin_factory=factory), gz)

    def _device(self, pin: int, make: Any, gz: Any) -> Any:
        try:
            device = make()
        except (gz.BadPinFactory, ImportError) as exc:
            raise _gpio_unavailable(str(exc)) from None
        except (gz.GPIOZeroError, OSError, RuntimeError) as exc:
            msg = f"GPIO{pin} cannot be used: {exc}; check the [gpio] pins and that no other program holds them"
            raise LineError(msg) from None
        self._devices.append(device)
        return device

    def _callback(self, kind: str, *, level: bool) -> Any:
        edges, clock, signal = self._edges, self._clock, self._edge_signal

        def on_edge() -> None:
            # Runs in gpiozero's thread: stamp, queue and wake the reader, nothing more.
            edges.append((clock.now(), kind, level))
            signal.set()

        return on_edge

    def _release(self) -> None:
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()

    # -- LineBackend --------------------------------------------------------

    def take_overflows(self) -> int:
        """Blocks the sound card lost since the last call (a card that cannot tell says none)."""
        take = getattr(self._audio, "take_overflows", None)
        return int(take()) if take is not None else 0

    def capture_age(self) -> float | None:
        """Seconds since the sound card last delivered audio (None for a source without a capture thread)."""
        age = getattr(self._audio, "capture_age", None)
        return age() if age is not None else None

    def read_block(self) -> LineBlock | None:
        """The next block of audio, with the line events decided while it was captured.

        In real time, an edge that decides an event while the block is still being
        captured is handed on at once in a block without audio, so the call state
        machine hears of a ring or a hang-up within a millisecond, not at the end
        of the block; the audio follows in the next block.
        """
        if self._closed:
            return None
        while self._clock.wait(self._edge_signal, self._next_block_due):
            self._edge_signal.clear()
            now = self._clock.now()
            early = self._detect(now)
            if early:
                self._show_led()
                return LineBlock(now, tuple(early), _NO_AUDIO)
        events: list[LineEvent] = []
        try:
            audio = self._audio.read(self.block_frames)
            failure = None
        except Exception as exc:  # any sound card failure must show as ill health, not end the loop
            audio = np.zeros(self.block_frames, dtype=np.int16)
            failure = f"the audio source failed: {exc}"
            # Keep the pace of the blocks, so a source that fails at once does not spin the loop.
            start = self._clock.now() if math.isinf(self._last_poll) else self._last_poll
            self._clock.sleep_until(start + self._block_s)
        now = self._clock.now()
        if failure != self._audio_error:
            self._audio_error = failure
            events.append(self.health())
        events.extend(self._detect(now))
        self._show_led()
        self._next_block_due = now + self._block_s
        return LineBlock(now - self._block_s, tuple(events), audio)

    def _detect(self, now: float) -> list[LineEvent]:
        due: list[tuple[float, str, bool]] = []
        later: list[tuple[float, str, bool]] = []
        while self._edges:
            edge = self._edges.popleft()
            (due if edge[0] <= now else later).append(edge)
        self._edges.extendleft(reversed(later))
        events: list[LineEvent] = []
        for t, kind, level in sorted(due, key=lambda e: e[0]):
            # An edge stamped just before the last poll but queued after it is late, not in the past.
            t = max(t, self._last_poll)  # noqa: PLW2901
            # Bring every detector up to the edge first, so events come in the order they were decided.
            self._poll(t, events)
            if kind == _RING:
                events.extend(self._ring.edge(t, level))
            elif kind == _HOOK:
                events.extend(self._hook.edge(t, level))
            else:
                events.extend(self._polarity.edge(t, level))
        self._poll(now, events)
        self._last_poll = now
        return events

    def _poll(self, t: float, events: list[LineEvent]) -> None:
        for found in (self._ring.poll(t), self._hook.poll(t), self._polarity.poll(t)):
            events.extend(found)
            if any(isinstance(e, OffHook | OnHook) for e in found):
                self._polarity.set_on_hook(not (self._hook.off_hook or self._relay_on))

    def set_hook(self, off_hook: bool) -> None:
        """Close (True) or open (False) the hook relay: take the line off-hook or put it back."""
        if self._closed:
            msg = "the GPIO line is closed; the hook relay cannot be switched"
            raise LineError(msg)
        self._relay_on = off_hook
        if off_hook:
            self._relay.on()
        else:
            self._relay.off()
        self._polarity.set_on_hook(not (self._hook.off_hook or off_hook))
        self._show_led()

    def play(self, audio: NDArray[np.int16]) -> None:
        """Queue int16 mono audio to the line through the sound card."""
        if audio.dtype != np.int16 or audio.ndim != 1:
            msg = f"play() takes int16 mono audio, not {audio.dtype} with shape {audio.shape}"
            raise LineError(msg)
        self._audio.play(audio)

    def health(self) -> BackendHealth:
        """Healthy while the audio source delivers and the line is open."""
        now = self._clock.now()
        if self._closed:
            return BackendHealth(now, healthy=False, detail="the GPIO line is closed")
        if self._audio_error is not None:
            return BackendHealth(now, healthy=False, detail=self._audio_error)
        return BackendHealth(now, healthy=True, detail="ok")

    def close(self) -> None:
        """Put the line on-hook, darken the LED and release the pins and the audio source."""
        if self._closed:
            return
        self._closed = True
        self._relay_on = False
        self._relay.off()
        self._led.source = None
        self._led.off()
        self._release()
        self._audio.close()

    @property
    def caller_id_window(self) -> bool:
        """Whether on-hook caller ID may be arriving: within pre_ring_window_s of an on-hook polarity reversal."""
        return self._polarity.listening(self._clock.now())

    # -- the status LED -----------------------------------------------------

    @property
    def off_hook(self) -> bool:
        """Whether the line is off-hook: a phone on it, or the hook relay."""
        return self._hook.off_hook or self._relay_on

    @property
    def led_state(self) -> str:
        """What the LED shows: fault, ringing, recording (off-hook) or what :meth:`set_led` asked for."""
        if self._audio_error is not None or self._requested_led == "fault":
            return "fault"
        if self._ring.ringing:
            return "ringing"
        if self.off_hook:
            return "recording"
        return self._requested_led

    def set_led(self, state: str) -> None:
        """Ask the LED to show ``state`` (one of :data:`LED_STATES`) when the line has nothing more urgent to show."""
        if state not in LED_STATES:
            msg = f"LED state {state!r} is not one of {', '.join(LED_STATES)}"
            raise ValueError(msg)
        self._requested_led = state
        self._show_led()

    def _show_led(self) -> None:
        state = self.led_state
        if self._closed or state == self._led_shown:
            return
        self._led_shown = state
        led = self._led
        led.source = None
        if state == "idle":
            led.blink(on_time=0.1, off_time=2.9, background=True)  # a heartbeat: alive and waiting
        elif state == "ringing":
            led.blink(on_time=0.1, off_time=0.1, background=True)
        elif state == "recording":
            led.on()
        else:
            led.off()
            led.source_delay = _FAULT_STEP_S
            led.source = itertools.cycle(_FAULT_CYCLE)
