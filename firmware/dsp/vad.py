"""Voice-activity trimming: keep a call's speech whole and cut its long silences down to short gaps.

webrtcvad marks each 10, 20 or 30 ms VAD frame as speech or not. A silence (a run
of non-speech frames) no longer than ``min_silence_ms`` is kept whole; a longer
one is compressed, not deleted: the ``pad_after_ms`` that follow the speech
before it and the ``pad_before_ms`` that precede the speech after it are kept
and meet as one short gap. At the start and the end of a call only one of the
two pads exists, and a call with no speech at all keeps nothing unless it is no
longer than ``min_silence_ms``. A trailing part-frame takes the decision of the
frame before it, so nothing inside a kept region is dropped.

The trim map (``segments``) lists the kept stretches in the original's time, so
a moment of the trimmed audio can be found in the full recording
(:func:`to_original`). "Frames" in ``input_frames``, ``output_frames`` and
``held_frames`` count samples, as soundfile does; the 10-30 ms slices the VAD
judges are always called VAD frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import webrtcvad
from numpy.typing import ArrayLike, NDArray

__all__ = ["VAD_RATES", "TrimResult", "TrimSettings", "Trimmer", "to_original", "trim"]

VAD_RATES = (8000, 16000, 32000, 48000)
MAX_PAD_MS = 10_000
MAX_MIN_SILENCE_MS = 60_000


def _check_whole(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        msg = f"{name} must be a whole number of milliseconds from {low} to {high}, not {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True)
class TrimSettings:
    """How hard the VAD listens and how much silence stays around the speech it finds."""

    aggressiveness: int = 2
    frame_ms: int = 30
    pad_before_ms: int = 300
    pad_after_ms: int = 500
    min_silence_ms: int = 2000

    def __post_init__(self) -> None:
        if isinstance(self.aggressiveness, bool) or self.aggressiveness not in (0, 1, 2, 3):
            msg = f"aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness!r}"
            raise ValueError(msg)
        if isinstance(self.frame_ms, bool) or self.frame_ms not in (10, 20, 30):
            msg = f"frame_ms must be 10, 20 or 30 (the frame lengths webrtcvad takes), not {self.frame_ms!r}"
            raise ValueError(msg)
        _check_whole("pad_before_ms", self.pad_before_ms, 0, MAX_PAD_MS)
        _check_whole("pad_after_ms", self.pad_after_ms, 0, MAX_PAD_MS)
        _check_whole("min_silence_ms", self.min_silence_ms, 0, MAX_MIN_SILENCE_MS)


@dataclass(frozen=True, eq=False)
class TrimResult:
    """A trimmed recording and its trim map."""

    audio: NDArray[np.int16]
    segments: list[tuple[float, float]]
    speech: list[tuple[float, float]]
    input_s: float
    output_s: float


class _Tail:
    """The most recent samples written, up to a fixed capacity, in a buffer that never grows."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._buffer = np.zeros(2 * capacity, dtype=np.int16)
        self._end = self._length = 0

    def __len__(self) -> int:
        return self._length

    def clear(self) -> None:
        self._end = self._length = 0

    def extend(self, samples: NDArray[np.int16]) -> None:
        n, cap = len(samples), self._capacity
        if n >= cap:
            self._buffer[:cap] = samples[n - cap :]
            self._end = self._length = cap
            return
        if self._end + n > 2 * cap:
            # Moving the newest samples to the front costs at most `cap` copies per
            # `cap` samples written, so the buffer stays fixed at twice the capacity.
            keep = min(self._length, cap - n)
            self._buffer[:keep] = self._buffer[self._end - keep : self._end]
            self._end = self._length = keep
        self._buffer[self._end : self._end + n] = samples
        self._end += n
        self._length = min(self._length + n, cap)

    def last(self, n: int) -> NDArray[np.int16]:
        n = min(n, self._length)
        return self._buffer[self._end - n : self._end]


class Trimmer:
    """Trims a recording as it streams: speech goes out at once, silence once its length is known.

    Memory is bounded by the settings, not by the call: at most
    ``max(min_silence, pad_before)`` samples of a silence are held back (a longer
    silence is compressed, so only its last ``pad_before`` can still be needed),
    plus one part-filled VAD frame. So is the delay: a sample leaves ``feed`` at
    most ``min_silence_ms`` plus one frame after it came in.
    """

    def __init__(self, sample_rate: int, settings: TrimSettings | None = None) -> None:
        if sample_rate not in VAD_RATES:
            msg = f"webrtcvad takes audio at 8000, 16000, 32000 or 48000 Hz, not {sample_rate!r} Hz"
            raise ValueError(msg)
        self.settings = settings if settings is not None else TrimSettings()
        self.sample_rate = sample_rate
        s = self.settings
        self._frame = sample_rate * s.frame_ms // 1000
        self._pad_before = sample_rate * s.pad_before_ms // 1000
        self._pad_after = sample_rate * s.pad_after_ms // 1000
        self._min_silence = sample_rate * s.min_silence_ms // 1000
        self._capacity = max(self._min_silence, self._pad_before)
        self.reset()

    def reset(self) -> None:
        """Start a new recording."""
        self._vad = webrtcvad.Vad(self.settings.aggressiveness)
        self._pending = np.zeros(0, dtype=np.int16)
        self._held = _Tail(self._capacity)
        self._fed = 0  # samples fed, including the pending part-frame
        self._framed = 0  # samples already decided on
        self._in_speech: bool | None = None  # the decision of the last frame
        self._silence_start = 0
        self._heard_speech = False
        self._kept_to = 0  # everything before this has been decided and emitted or dropped
        self._segments: list[list[int]] = []
        self._speech: list[list[int]] = []
        self._output = 0
        self._out: list[NDArray[np.int16]] = []
        self._flushed = False

    @property
    def input_frames(self) -> int:
        """Samples fed so far."""
        return self._fed

    @property
    def output_frames(self) -> int:
        """Samples of trimmed audio handed out so far."""
        return self._output

    @property
    def held_frames(self) -> int:
        """Samples held back, waiting for a decision; never more than :attr:`max_held_frames`."""
        return len(self._held) + len(self._pending)

    @property
    def max_held_frames(self) -> int:
        """The most samples the trimmer ever holds back: its memory bound."""
        return self._capacity + self._frame - 1

    @property
    def segments(self) -> list[tuple[float, float]]:
        """The kept stretches in seconds of the original, adjacent ones merged."""
        return [(a / self.sample_rate, b / self.sample_rate) for a, b in self._segments]

    @property
    def speech(self) -> list[tuple[float, float]]:
        """The stretches webrtcvad took for speech, in seconds of the original, before any padding."""
        return [(a / self.sample_rate, b / self.sample_rate) for a, b in self._speech]

    def feed(self, block: ArrayLike) -> NDArray[np.int16]:
        """The kept audio that became final with ``block`` (int16 mono); often empty."""
        if self._flushed:
            msg = "feed() after flush(); call reset() to start a new recording"
            raise ValueError(msg)
        audio = np.asarray(block)
        if audio.dtype != np.int16 or audio.ndim != 1:
            msg = f"audio blocks must be 1-D int16 arrays, not {audio.ndim}-D {audio.dtype}"
            raise ValueError(msg)
        self._fed += len(audio)
        data = np.concatenate((self._pending, audio)) if len(self._pending) else audio
        count = len(data) // self._frame
        if count:
            self._decide(data[: count * self._frame], count)
        self._pending = data[count * self._frame :].copy()
        return self._take_output()

    def flush(self) -> NDArray[np.int16]:
        """The rest of the kept audio, once the recording has ended."""
        if not self._flushed:
            if len(self._pending):
                self._run(bool(self._in_speech), self._pending, self._framed)
                self._framed += len(self._pending)
                self._pending = np.zeros(0, dtype=np.int16)
            if not self._in_speech and self._framed - self._silence_start <= self._min_silence:
                self._emit(self._held.last(self._framed - self._kept_to), self._framed)
            self._held.clear()
            self._flushed = True
        return self._take_output()

    def _decide(self, data: NDArray[np.int16], count: int) -> None:
        raw = memoryview(data.astype("<i2", copy=False).tobytes())
        step, rate, is_speech = 2 * self._frame, self.sample_rate, self._vad.is_speech
        flags = np.fromiter((is_speech(raw[i : i + step], rate) for i in range(0, len(raw), step)), bool, count)
        # One call per run of equal decisions rather than per frame keeps the Python
        # work per hour of audio down to the number of words, not of frames.
        edges = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1).tolist(), count]
        for a, b in pairwise(edges):
            self._run(bool(flags[a]), data[a * self._frame : b * self._frame], self._framed + a * self._frame)
        self._framed += count * self._frame

    def _run(self, speech: bool, samples: NDArray[np.int16], start: int) -> None:
        if speech:
            self._on_speech(samples, start)
        else:
            self._on_silence(samples, start)
        self._in_speech = speech

    def _on_speech(self, samples: NDArray[np.int16], start: int) -> None:
        if not self._in_speech:
            gap = start - self._silence_start
            keep = start - self._kept_to if gap <= self._min_silence else self._pad_before
            keep = min(keep, start - self._kept_to)
            self._emit(self._held.last(keep), start)
            self._held.clear()
        self._emit(samples, start + len(samples))
        end = start + len(samples)
        if self._speech and self._speech[-1][1] == start:
            self._speech[-1][1] = end
        else:
            self._speech.append([start, end])
        self._heard_speech = True

    def _on_silence(self, samples: NDArray[np.int16], start: int) -> None:
        if self._in_speech is not False:
            self._silence_start = start
        # The pad after speech is kept whatever follows, so it need not wait.
        pad_end = self._silence_start + self._pad_after if self._heard_speech else start
        now = min(max(pad_end - start, 0), len(samples))
        if now:
            self._emit(samples[:now], start + now)
        self._held.extend(samples[now:])

    def _emit(self, samples: NDArray[np.int16], end: int) -> None:
        if not len(samples):
            return
        start = end - len(samples)
        if self._segments and self._segments[-1][1] == start:
            self._segments[-1][1] = end
        else:
            self._segments.append([start, end])
        self._out.append(samples.copy())
        self._output += len(samples)
        self._kept_to = end

    def _take_output(self) -> NDArray[np.int16]:
        out = np.concatenate(self._out) if self._out else np.zeros(0, dtype=np.int16)
        self._out = []
        return out


def trim(audio: ArrayLike, sample_rate: int, settings: TrimSettings | None = None) -> TrimResult:
    """A whole recording trimmed; the same samples and map as :class:`Trimmer` gives when streaming."""
    trimmer = Trimmer(sample_rate, settings)
    kept = np.concatenate((trimmer.feed(audio), trimmer.flush()))
    return TrimResult(
        audio=kept,
        segments=trimmer.segments,
        speech=trimmer.speech,
        input_s=trimmer.input_frames / sample_rate,
        output_s=trimmer.output_frames / sample_rate,
    )


def to_original(t_trimmed: float, segments: list[tuple[float, float]]) -> float:
    """Where a moment of the trimmed audio (seconds from its start) lies in the original recording."""
    if t_trimmed < 0.0:
        msg = f"t_trimmed must be 0 s or later, not {t_trimmed} s"
        raise ValueError(msg)
    elapsed = 0.0
    for start, end in segments:
        if t_trimmed < elapsed + (end - start):
            return start + (t_trimmed - elapsed)
        elapsed += end - start
    if segments and t_trimmed <= elapsed + 1e-9:
        return segments[-1][1]
    msg = f"t_trimmed {t_trimmed} s is past the end of the trimmed audio ({elapsed:.3f} s)"
    raise ValueError(msg)
