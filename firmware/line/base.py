"""The one interface every way onto the phone line implements, and the events a line reports.

A backend turns a phone line into a stream of :class:`LineBlock` values: a fixed
number of audio frames plus the line events (rings, caller ID, hook changes, loop
drops) that happened while those frames were captured. Everything above the
backend (call state machine, capture, consent, recording) is the same code for the
GPIO board, the voice modem and the simulated line.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import numpy as np
from numpy.typing import NDArray

from firmware.wire.errors import LinerecError

__all__ = [
    "AudioSource",
    "BackendHealth",
    "CallerId",
    "CallerIdReceived",
    "LineBackend",
    "LineBlock",
    "LineError",
    "LineEvent",
    "LoopDrop",
    "OffHook",
    "OnHook",
    "PolarityReversal",
    "RingEnd",
    "RingStart",
    "ScriptError",
    "ToneDetected",
    "ToneDetector",
    "frames_per_block",
]


class LineError(LinerecError, RuntimeError):
    """The line, or the program or device behind it, failed while it was in use."""


class ScriptError(LinerecError, ValueError):
    """A scripted call for the simulated line asks for something a phone line cannot do."""


@dataclass(frozen=True, slots=True)
class CallerId:
    """Who is calling, as the exchange said it (or did not say it)."""

    number: str | None
    name: str | None
    # 'O' unavailable, 'P' private (withheld); None when the number is present.
    number_absent: str | None
    name_absent: str | None
    # How it arrived: "bell202-mdmf", "bell202-sdmf", "etsi-v23", "dtmf", "sim".
    standard: str
    # The message bytes as received; empty when the standard has no such message.
    raw: bytes = b""

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, with the raw message as a hex string."""
        return {
            "number": self.number,
            "name": self.name,
            "number_absent": self.number_absent,
            "name_absent": self.name_absent,
            "standard": self.standard,
            "raw": self.raw.hex(),
        }


# Every event carries `t`: seconds on the backend's clock, based on the UTC epoch.


@dataclass(frozen=True, slots=True)
class RingStart:
    """A ring burst began."""

    t: float


@dataclass(frozen=True, slots=True)
class RingEnd:
    """A ring burst ended; ``t`` is its end and ``duration_s`` its length.

    ``cadence`` names the ring cadence (a key of ``firmware/data/cadences.toml``,
    e.g. ``"US"`` or ``"GB"``) once enough bursts have been measured to tell.
    """

    t: float
    duration_s: float
    cadence: str | None = None


@dataclass(frozen=True, slots=True)
class CallerIdReceived:
    """A caller ID message was received and decoded."""

    t: float
    caller_id: CallerId


@dataclass(frozen=True, slots=True)
class OffHook:
    """The local phone was picked up: the call is answered (or an outgoing call starts)."""

    t: float


@dataclass(frozen=True, slots=True)
class OnHook:
    """The local phone was hung up."""

    t: float


@dataclass(frozen=True, slots=True)
class LoopDrop:
    """The exchange opened the loop (CPC): the far end hung up.

    ``t`` is when the loop closed again, the moment the drop could be measured,
    and ``duration_s`` how long it was open.
    """

    t: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class PolarityReversal:
    """The line's DC polarity flipped (answer, disconnect, or caller ID before ringing)."""

    t: float


@dataclass(frozen=True, slots=True)
class ToneDetected:
    """A call-progress or alert tone was recognised on the line.

    ``tone`` is one of :data:`TONES`: ``busy``, ``reorder`` and ``dial`` mean the
    far end has gone; ``call-waiting`` is the alert of a second incoming call and
    must not end the call in progress; ``cas`` is the dual-tone alert that comes
    before on-hook caller ID data.
    """

    t: float
    tone: str


TONES = ("busy", "reorder", "dial", "ringback", "howler", "sit", "call-waiting", "cas")


class ToneDetector(Protocol):
    """Listens to the line's audio for call-progress and alert tones.

    The device feeds it every block of a call in progress; it returns the tones
    it recognised, each when its cadence has been confirmed.
    """

    def feed(self, t: float, audio: NDArray[np.int16]) -> list[ToneDetected]:
        """Take the block of audio that starts at ``t``; return tones recognised by its end."""
        ...

    def reset(self) -> None:
        """Forget what was heard: a new call starts."""
        ...


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """The backend's own view of whether it can still hear and drive the line."""

    t: float
    healthy: bool
    detail: str


LineEvent = (
    RingStart
    | RingEnd
    | CallerIdReceived
    | OffHook
    | OnHook
    | LoopDrop
    | PolarityReversal
    | ToneDetected
    | BackendHealth
)


@dataclass(frozen=True, slots=True)
class LineBlock:
    """One block of line audio and the events that happened while it was captured."""

    # Time of the first sample of `audio` (or of the events, when there is no audio).
    t: float
    events: tuple[LineEvent, ...]
    # int16 mono at `backend.sample_rate`: `backend.block_frames` long, or empty when a
    # backend hands events on before the block's audio is complete (the audio follows).
    audio: NDArray[np.int16]


class AudioSource(Protocol):
    """Where a backend's audio comes from and goes to (a sound card, a modem's voice mode, a test)."""

    sample_rate: int

    def read(self, frames: int) -> NDArray[np.int16]:
        """Block until ``frames`` int16 mono samples have been captured, and return them."""
        ...

    def play(self, audio: NDArray[np.int16]) -> None:
        """Queue int16 mono audio to the line; never blocks for long."""
        ...

    def close(self) -> None:
        """Stop capturing and playing."""
        ...


def frames_per_block(sample_rate: int, block_ms: int) -> int:
    """Frames in a block of ``block_ms`` at ``sample_rate``; ValueError unless that is a whole number."""
    if not 1 <= block_ms <= 1000 or (sample_rate * block_ms) % 1000:
        msg = f"block_ms {block_ms!r} must be 1..1000 and a whole number of frames at {sample_rate} Hz"
        raise ValueError(msg)
    return sample_rate * block_ms // 1000


class LineBackend(abc.ABC):
    """A way onto one phone line.

    A backend MUST provide:

    * ``name``, ``sample_rate`` and ``block_frames`` (attributes or properties);
    * :meth:`read_block`: block until the next block of audio is complete and
      return it with the events that happened meanwhile (or return the events at
      once in a block without audio); return ``None`` once the line is gone for
      good (a simulated script has finished);
    * :meth:`set_hook`: take the line off-hook or put it back on-hook;
    * :meth:`play`: queue int16 mono audio at ``sample_rate`` to the line;
    * :meth:`close`: release the hardware; calling it twice is harmless.

    A backend MAY override:

    * :meth:`start`: open the hardware (the default does nothing);
    * :meth:`health`: report whether it still works (the default says it does);
    * :meth:`take_overflows`: say how many blocks of audio were lost since it was
      last asked (the default cannot tell, and says none);
    * :meth:`capture_age`: say how long ago its capture thread last delivered
      audio, for the watchdog (the default has no such thread, and says None).
      It is called from another thread, so it must not block or take a lock.

    Used as a context manager, a backend is started on entry and closed on exit.
    """

    name: str
    sample_rate: int
    block_frames: int

    def start(self) -> None:  # noqa: B027 - a deliberate optional hook, not an abstract method
        """Open the line; backends that need no set-up keep this no-op."""

    def health(self) -> BackendHealth:
        """Whether the backend can still hear and drive the line."""
        return BackendHealth(time.time(), healthy=True, detail="ok")

    def take_overflows(self) -> int:
        """Blocks of audio lost since the last call (the reader fell behind, or the card did)."""
        return 0

    def capture_age(self) -> float | None:
        """Seconds since the capture thread last delivered audio; None when the backend has no such thread."""
        return None

    @abc.abstractmethod
    def read_block(self) -> LineBlock | None:
        """The next block of audio and events, or None when the line is gone for good."""

    @abc.abstractmethod
    def set_hook(self, off_hook: bool) -> None:
        """Take the line off-hook (True) or put it back on-hook (False)."""

    @abc.abstractmethod
    def play(self, audio: NDArray[np.int16]) -> None:
        """Queue int16 mono audio at ``sample_rate`` to be sent down the line."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the line; safe to call more than once."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
