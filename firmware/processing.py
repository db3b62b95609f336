"""The chain a call's audio goes through before it is encoded: clean, trim, reduce noise, level.

Captured line audio, as it streams:

1. :class:`~firmware.dsp.filters.LineCleaner` takes out DC, rumble and mains
   hum (``audio.clean``);
2. :class:`~firmware.dsp.vad.Trimmer` keeps the speech with some padding and
   compresses long silences to a short gap (``audio.trim``); its segments, in
   the original time, are the recording's trim map;
3. optionally :class:`~firmware.dsp.filters.NoiseReducer` and
   :class:`~firmware.dsp.filters.Leveller` make the kept audio easier to listen
   to (``audio.noise_reduction``, ``audio.normalise``).

The untrimmed original (``audio.keep_original``) and the crash journal take the
audio as captured, before any of this: evidence is not filtered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware.config import AudioSettings
from firmware.dsp.filters import Leveller, LineCleaner, NoiseReducer
from firmware.dsp.vad import Trimmer, TrimSettings


class AudioChain:
    """Turns captured blocks into the audio of the recording, and says what it did."""

    def __init__(self, settings: AudioSettings, sample_rate: int) -> None:
        self._settings = settings
        self._rate = sample_rate
        s = settings
        self._cleaner = LineCleaner(sample_rate, highpass_hz=s.highpass_hz, mains_hz=s.mains) if s.clean else None
        self._trimmer = (
            Trimmer(
                sample_rate,
                TrimSettings(
                    aggressiveness=s.vad_aggressiveness,
                    frame_ms=s.vad_frame_ms,
                    pad_before_ms=s.pad_before_ms,
                    pad_after_ms=s.pad_after_ms,
                    min_silence_ms=s.min_silence_ms,
                ),
            )
            if s.trim
            else None
        )
        self._reducer = NoiseReducer(sample_rate) if s.noise_reduction else None
        self._leveller = Leveller(sample_rate, target_lufs=s.normalise_lufs) if s.normalise else None
        self.input_frames = 0
        # The reducer and the leveller give their output this late; the first samples out
        # are their empty pipelines, dropped so that the recording keeps the trim map's times.
        self._latency = sum(p.latency_frames for p in (self._reducer, self._leveller) if p is not None)
        self._skip = self._latency

    def reset(self) -> None:
        """Start a new recording."""
        for part in (self._cleaner, self._trimmer, self._reducer, self._leveller):
            if part is not None:
                part.reset()
        self.input_frames = 0
        self._skip = self._latency

    def process(self, block: NDArray[np.int16]) -> NDArray[np.int16]:
        """The recording's audio for one captured block (it may be shorter, or empty, while trimming)."""
        self.input_frames += len(block)
        out = block
        if self._cleaner is not None:
            out = self._cleaner.process(out)
        if self._trimmer is not None:
            out = self._trimmer.feed(out)
        return self._polish(out)

    def flush(self) -> NDArray[np.int16]:
        """What the chain still holds at the end of the call."""
        out = self._trimmer.flush() if self._trimmer is not None else np.zeros(0, np.int16)
        out = self._polish(out)
        for part in (self._reducer, self._leveller):
            if part is not None:
                tail = part.flush()
                # What the reducer let out at the end still goes through the leveller.
                if part is self._reducer and self._leveller is not None:
                    tail = self._leveller.process(tail)
                out = np.concatenate([out, self._skipped(tail)])
        return out

    def _polish(self, out: NDArray[np.int16]) -> NDArray[np.int16]:
        if self._reducer is not None:
            out = self._reducer.process(out)
        if self._leveller is not None:
            out = self._leveller.process(out)
        return self._skipped(out)

    def _skipped(self, out: NDArray[np.int16]) -> NDArray[np.int16]:
        if self._skip:
            dropped = min(self._skip, len(out))
            self._skip -= dropped
            out = out[dropped:]
        return out

    def facts(self) -> dict[str, Any]:
        """What the manifest says about the processing and the trim (times in seconds of the original)."""
        duration = round(self.input_frames / self._rate, 3)
        if self._trimmer is not None:
            trim_map = [[round(a, 3), round(b, 3)] for a, b in self._trimmer.segments]
            speech = [[round(a, 3), round(b, 3)] for a, b in self._trimmer.speech]
        else:
            trim_map = [[0.0, duration]] if self.input_frames else []
            speech = []
        s = self._settings
        return {
            "trimmed": self._trimmer is not None,
            "trim_map": trim_map,
            "speech": speech,
            "processing": {
                "highpass_hz": s.highpass_hz if s.clean else None,
                "mains_hz": self._cleaner.mains_hz if self._cleaner is not None else None,
                "vad": (
                    {
                        "aggressiveness": s.vad_aggressiveness,
                        "frame_ms": s.vad_frame_ms,
                        "pad_before_ms": s.pad_before_ms,
                        "pad_after_ms": s.pad_after_ms,
                        "min_silence_ms": s.min_silence_ms,
                    }
                    if s.trim
                    else None
                ),
                "noise_reduction": s.noise_reduction,
                "normalise_lufs": s.normalise_lufs if s.normalise else None,
            },
        }
