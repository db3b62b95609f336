"""Audio to and from the line through a sound card, with sounddevice (PortAudio).

The capture callback runs at real-time priority: it only copies the block into a
bounded queue and counts the blocks it had to drop when nobody read in time.
Everything else (encoding, encryption, files) happens in the reader's thread.
Playback works the other way round: :meth:`SoundCard.play` queues audio and the
output callback copies it out block by block, sending silence when there is none.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.line.base import LineError

log = logging.getLogger("linerec.capture")


class SoundCard:
    """An :class:`~firmware.line.base.AudioSource` on a sound card's line in and line out."""

    def __init__(
        self,
        *,
        device: str | int | None,
        sample_rate: int,
        block_frames: int,
        queue_blocks: int = 100,
        playback: bool = True,
    ) -> None:
        self.sample_rate = sample_rate
        self.block_frames = block_frames
        self.overflows = 0  # blocks dropped because the reader fell behind
        self.driver_overflows = 0  # blocks the sound card itself reported lost
        self._device = device
        self._playback = playback
        self._blocks: queue.Queue[NDArray[np.int16]] = queue.Queue(maxsize=queue_blocks)
        self._out: deque[NDArray[np.int16]] = deque()
        self._out_lock = threading.Lock()
        self._input: Any = None
        self._output: Any = None

    def start(self) -> None:
        """Open the card and start capturing (and playing silence until there is something to play)."""
        import sounddevice as sd  # noqa: PLC0415  (PortAudio is needed only when a card is used)

        device, rate = self._device, self.sample_rate
        streams: dict[str, Any] = {
            "device": device,
            "samplerate": rate,
            "channels": 1,
            "dtype": "int16",
            "blocksize": self.block_frames,
        }
        try:
            self._input = sd.InputStream(callback=self._captured, **streams)
            if self._playback:
                self._output = sd.OutputStream(callback=self._playing, **streams)
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            msg = f"sound device {device if device is not None else '(default)'} cannot run at {rate} Hz: {exc}"
            raise LineError(msg) from None
        self._input.start()
        if self._output is not None:
            self._output.start()

    def _captured(self, indata: NDArray[np.int16], _frames: int, _time: Any, status: Any) -> None:
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
        """The next ``frames`` captured samples; blocks until the card delivers them."""
        if frames != self.block_frames:
            msg = f"read {frames} frames from a sound card opened for blocks of {self.block_frames}"
            raise ValueError(msg)
        try:
            return self._blocks.get(timeout=max(1.0, 20 * frames / self.sample_rate))
        except queue.Empty:
            msg = "the sound card stopped delivering audio"
            raise LineError(msg) from None

    def play(self, audio: NDArray[np.int16]) -> None:
        """Queue audio to the line out."""
        if self._output is None:
            msg = "this sound card was opened for capture only"
            raise LineError(msg)
        with self._out_lock:
            self._out.append(np.ascontiguousarray(audio, dtype=np.int16))

    @property
    def playing(self) -> bool:
        """True while queued audio has not all gone out."""
        with self._out_lock:
            return bool(self._out)

    def close(self) -> None:
        """Stop and close both streams; safe to call more than once."""
        for stream in (self._input, self._output):
            if stream is not None:
                stream.stop()
                stream.close()
        self._input = self._output = None
