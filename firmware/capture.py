"""Audio to and from the line through a sound card, with sounddevice (PortAudio).

The capture callback runs at real-time priority: it only copies the block into a
bounded queue and counts the blocks it had to drop when nobody read in time.
Everything else (resampling, encoding, encryption, files) happens in the
reader's thread. Playback works the other way round: :meth:`SoundCard.play`
queues audio and the output callback copies it out block by block, sending
silence when there is none.

Many USB sound cards run only at 44.1 or 48 kHz. When the card refuses the
line's rate, it is opened at a rate it does run at and the audio is resampled
with soxr: captured audio in :meth:`SoundCard.read`, played audio in
:meth:`SoundCard.play`, never in a callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.line.base import LineError

log = logging.getLogger("linerec.capture")

# Rates to open a card at when it refuses the line's own, best first: whole
# ratios to 8 and 16 kHz, then the CD rate some cards are stuck at.
CARD_RATES = (48000, 44100, 16000)
RESAMPLE_QUALITY = "HQ"  # soxr's 20-bit quality: far below the line's own noise


@dataclass(frozen=True, slots=True)
class Device:
    """One PortAudio device, as :func:`choose_device` needs to know it."""

    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int

    @property
    def label(self) -> str:
        """How messages name the device: its index and its name."""
        return f"{self.index} {self.name!r}"


def choose_device(devices: Sequence[Device], wanted: str | int) -> Device:
    """The input device that ``wanted`` names, by index or as sounddevice matches names.

    A name matches a device when its words appear, in order and ignoring case,
    in "<device name>, <host API name>"; when several match, one whose name is
    exactly ``wanted`` wins. Anything else is a :class:`LineError` that lists
    the input devices there are, so a person can pick one.
    """
    inputs = [d for d in devices if d.inputs > 0]
    listing = ", ".join(d.label for d in inputs) or "none"
    if isinstance(wanted, int):
        found = [d for d in devices if d.index == wanted]
        if not found:
            msg = f"sound device {wanted} not found; input devices: {listing}"
            raise LineError(msg)
        if found[0].inputs == 0:
            msg = f"sound device {found[0].label} has no input; input devices: {listing}"
            raise LineError(msg)
        return found[0]
    words = wanted.lower().split()
    matches = [d for d in inputs if _words_in_order(words, f"{d.name}, {d.hostapi}".lower())]
    exact = [d for d in matches if d.name.lower() == wanted.lower()]
    if len(matches) == 1 or len(exact) == 1:
        return (exact or matches)[0]
    if not matches:
        msg = f"sound device {wanted!r} not found; input devices: {listing}"
        raise LineError(msg)
    several = ", ".join(d.label for d in matches)
    msg = f"sound device {wanted!r} matches several input devices: {several}; give its index or a longer name"
    raise LineError(msg)


def _soxr() -> Any:
    # Only cards that cannot run at the line's rate need the resampler.
    import soxr  # type: ignore[import-untyped]  # noqa: PLC0415

    return soxr


def _words_in_order(words: list[str], text: str) -> bool:
    pos = 0
    for word in words:
        pos = text.find(word, pos)
        if pos < 0:
            return False
        pos += len(word)
    return True


class SoundCard:
    """An :class:`~firmware.line.base.AudioSource` on a sound card's line in and line out.

    ``device`` is a PortAudio device index or (part of) its name, as in
    :func:`choose_device`; ``None`` is the default input device. Audio is int16
    mono at ``sample_rate`` (8000 or 16000) whatever rate the card runs at
    (``card_rate`` once started).

    Lost audio is counted in blocks: ``overflows`` when the reader fell behind
    and the queue was full, ``driver_overflows`` when PortAudio reported that
    the card itself lost input. :meth:`take_overflows` gives the blocks lost
    since it was last called, for one recording's manifest.
    """

    def __init__(
        self,
        *,
        device: str | int | None,
        sample_rate: int,
        block_frames: int,
        queue_blocks: int = 100,
        playback: bool = True,
    ) -> None:
        if block_frames <= 0:
            msg = f"block_frames {block_frames!r} must be a positive number of frames"
            raise ValueError(msg)
        self.sample_rate = sample_rate
        self.block_frames = block_frames
        self.card_rate = sample_rate
        self.overflows = 0  # blocks dropped because the reader fell behind
        self.driver_overflows = 0  # blocks the sound card itself reported lost
        self._taken = 0
        self._device = device
        self._playback = playback
        self._blocks: queue.Queue[NDArray[np.int16]] = queue.Queue(maxsize=queue_blocks)
        self._pending: NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        self._down: Any = None  # soxr.ResampleStream from the card's rate, when it differs
        self._card_block_s = block_frames / sample_rate
        self._out: deque[NDArray[np.int16]] = deque()
        self._out_lock = threading.Lock()
        self._input: Any = None
        self._output: Any = None
        # When the capture callback last ran (monotonic): the watchdog's sign that the card still delivers.
        self._captured_at = time.monotonic()

    def start(self) -> None:
        """Open the card and start capturing (and playing silence until there is something to play)."""
        import sounddevice as sd  # noqa: PLC0415  (PortAudio is needed only when a card is used)

        device = self._find_device(sd)
        rate = self._choose_rate(sd, device)
        block = round(self.block_frames * rate / self.sample_rate)
        streams: dict[str, Any] = {
            "device": device.index,
            "samplerate": rate,
            "channels": 1,
            "dtype": "int16",
            "blocksize": block,
        }
        try:
            self._input = sd.InputStream(callback=self._captured, **streams)
            if self._playback:
                self._output = sd.OutputStream(callback=self._playing, **streams)
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            msg = f"sound device {device.label} cannot be opened at {rate} Hz: {exc}"
            raise LineError(msg) from None
        self.card_rate = rate
        self._card_block_s = block / rate
        self._captured_at = time.monotonic()
        if rate != self.sample_rate:
            self._down = _soxr().ResampleStream(rate, self.sample_rate, 1, dtype="int16", quality=RESAMPLE_QUALITY)
            log.info("sound device %s runs at %d Hz; resampling to %d Hz", device.label, rate, self.sample_rate)
        self._input.start()
        if self._output is not None:
            self._output.start()

    def _find_device(self, sd: Any) -> Device:
        hostapis = [api["name"] for api in sd.query_hostapis()]
        devices = [
            Device(d["index"], d["name"], hostapis[d["hostapi"]], d["max_input_channels"], d["max_output_channels"])
            for d in sd.query_devices()
        ]
        wanted = self._device
        if wanted is None:
            try:
                wanted = int(sd.query_devices(kind="input")["index"])
            except (sd.PortAudioError, ValueError) as exc:
                listing = ", ".join(d.label for d in devices if d.inputs > 0) or "none"
                msg = f"there is no default sound device ({exc}); input devices: {listing}"
                raise LineError(msg) from None
        found = choose_device(devices, wanted)
        if self._playback and found.outputs == 0:
            msg = f"sound device {found.label} has no output to play to the line"
            raise LineError(msg)
        return found

    def _choose_rate(self, sd: Any, device: Device) -> int:
        """The line's rate if the card runs at it, else the first of :data:`CARD_RATES` it runs at."""
        tried = [self.sample_rate, *(r for r in CARD_RATES if r != self.sample_rate)]
        first_error = ""
        for rate in tried:
            try:
                sd.check_input_settings(device=device.index, samplerate=rate, channels=1, dtype="int16")
                if self._playback:
                    sd.check_output_settings(device=device.index, samplerate=rate, channels=1, dtype="int16")
            except (sd.PortAudioError, ValueError) as exc:
                first_error = first_error or str(exc)
                continue
            return rate
        others = ", ".join(str(r) for r in tried[1:-1]) + f" or {tried[-1]}"
        msg = (
            f"sound device {device.label} cannot run at {self.sample_rate} Hz, "
            f"nor at {others} Hz to resample from: {first_error}"
        )
        raise LineError(msg)

    def _captured(self, indata: NDArray[np.int16], _frames: int, _time: Any, status: Any) -> None:
        self._captured_at = time.monotonic()
        if status.input_overflow:
            self.driver_overflows += 1
        try:
            self._blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.overflows += 1

    def _playing(self, outdata: NDArray[np.int16], frames: int, _time: Any, _status: Any) -> None:
        filled = 0
        with self._out_lock:
            while filled < frames and self._out:
                head = self._out[0]
                take = min(frames - filled, len(head))
                outdata[filled : filled + take, 0] = head[:take]
                filled += take
                if take == len(head):
                    self._out.popleft()
                else:
                    self._out[0] = head[take:]
        outdata[filled:, 0] = 0

    def read(self, frames: int) -> NDArray[np.int16]:
        """The next ``frames`` captured samples at ``sample_rate``; blocks until the card delivers them."""
        if frames <= 0:
            msg = f"read {frames!r} frames: must be a positive number"
            raise ValueError(msg)
        # A card that stalls for many blocks is broken, not slow.
        timeout = max(1.0, 20 * self._card_block_s)
        parts = [self._pending] if len(self._pending) else []
        have = len(self._pending)
        while have < frames:
            try:
                block = self._blocks.get(timeout=timeout)
            except queue.Empty:
                msg = "the sound card stopped delivering audio"
                raise LineError(msg) from None
            if self._down is not None:
                block = self._down.resample_chunk(block)
            parts.append(block)
            have += len(block)
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self._pending = joined[frames:]
        return joined[:frames]

    def capture_age(self) -> float | None:
        """Seconds since the card last delivered a block; None while it is not capturing."""
        if self._input is None:
            return None
        return time.monotonic() - self._captured_at

    def take_overflows(self) -> int:
        """Blocks lost (reader behind or card overrun) since the last call, e.g. during one recording."""
        total = self.overflows + self.driver_overflows
        lost, self._taken = total - self._taken, total
        return lost

    def play(self, audio: NDArray[np.int16]) -> None:
        """Queue int16 mono audio at ``sample_rate`` to the line out.

        Each call is resampled to the card's rate as a whole piece (a greeting, a
        notice), so its end is not held back in a resampler waiting for more.
        """
        if self._output is None:
            msg = "this sound card was opened for capture only"
            raise LineError(msg)
        out = np.ascontiguousarray(audio, dtype=np.int16)
        if self.card_rate != self.sample_rate and len(out):
            out = _soxr().resample(out, self.sample_rate, self.card_rate, quality=RESAMPLE_QUALITY)
        with self._out_lock:
            self._out.append(out)

    @property
    def playing(self) -> bool:
        """True while queued audio has not all been handed to the card."""
        with self._out_lock:
            return bool(self._out)

    def wait_played(self, timeout: float) -> bool:
        """Wait until all queued audio has left the card; False if it had not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        # Polling keeps the output callback free of anything that could wake (and so block on) a waiter.
        while self.playing:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        latency = float(self._output.latency) if self._output is not None else 0.0
        time.sleep(max(0.0, min(latency, deadline - time.monotonic())))
        return True

    def close(self) -> None:
        """Stop and close both streams; safe to call more than once."""
        for stream in (self._input, self._output):
            if stream is not None:
                stream.stop()
                stream.close()
        self._input = self._output = None
