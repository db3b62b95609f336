"""Sound for the simulated line: call-progress and alert tones, line noise and mains hum.

Everything here is made a block at a time from the absolute frame number, so a
tone of any length costs no memory and stays phase-continuous across blocks.
Levels are RMS in dBFS (0 dBFS is a full-scale int16 square wave's RMS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CAS_ALERT",
    "CAS_ALERT_CALL_WAITING",
    "HUM_DBFS",
    "TONE_COUNTRIES",
    "Tone",
    "hum",
    "level",
    "tone_for",
]

_FULL_SCALE = 32767.0
# Mains hum picked up by a long line run next to power wiring.
HUM_DBFS = -40.0
TONE_DBFS = -24.0
CAS_DBFS = -20.0


def level(dbfs: float) -> float:
    """The RMS sample value of a signal at ``dbfs``."""
    return _FULL_SCALE * math.pow(10.0, dbfs / 20.0)


@dataclass(frozen=True, slots=True)
class Tone:
    """A tone: frequencies summed to ``dbfs`` RMS while on, gated by on/off seconds.

    ``pattern`` alternates on and off seconds, starting with on; an empty pattern
    is a continuous tone. With ``repeat`` the pattern cycles for as long as the
    tone is played; without, the tone is silent once the pattern is over.
    """

    freqs: tuple[float, ...]
    pattern: tuple[float, ...] = ()
    repeat: bool = True
    dbfs: float = TONE_DBFS

    @property
    def duration_s(self) -> float:
        """How long one pass of the pattern lasts (0 for a continuous tone)."""
        return sum(self.pattern)

    def render(self, offset: int, n: int, rate: int) -> NDArray[np.float64]:
        """Samples ``offset`` .. ``offset + n`` of the tone, counted from its start."""
        index = np.arange(offset, offset + n, dtype=np.float64)
        # Each component gets an equal share of the power, so the sum is at `dbfs`.
        amplitude = level(self.dbfs) * math.sqrt(2.0 / len(self.freqs))
        out = np.zeros(n, dtype=np.float64)
        for freq in self.freqs:
            out += np.sin(2.0 * np.pi * freq * index / rate)
        return out * amplitude * self._gate(index / rate)

    def _gate(self, seconds: NDArray[np.float64]) -> NDArray[np.float64]:
        if not self.pattern:
            return np.ones_like(seconds)
        period = self.duration_s
        phase = np.mod(seconds, period) if self.repeat else seconds
        edges = np.cumsum(self.pattern)
        # An even-numbered slot of the pattern (0, 2, ...) is "on".
        slot = np.searchsorted(edges, phase, side="right")
        gate: NDArray[np.float64] = (slot % 2 == 0).astype(np.float64)
        return gate


def hum(offset: int, n: int, rate: int, hz: float) -> NDArray[np.float64]:
    """Mains hum at ``hz`` and HUM_DBFS, counted from frame 0 of the line."""
    index = np.arange(offset, offset + n, dtype=np.float64)
    return level(HUM_DBFS) * math.sqrt(2.0) * np.sin(2.0 * np.pi * hz * index / rate)


# Dual-tone alert signal (2130 + 2750 Hz): 88-110 ms before on-hook caller ID
# (ETSI EN 300 659, BT SIN 227); 75-85 ms as the CAS of caller ID on call waiting.
CAS_ALERT = Tone((2130.0, 2750.0), (0.1,), repeat=False, dbfs=CAS_DBFS)
CAS_ALERT_CALL_WAITING = Tone((2130.0, 2750.0), (0.08,), repeat=False, dbfs=CAS_DBFS)

# Call-progress tones by country: ITU-T E.180 Supplement 2, Asterisk indications.conf.
# Only the tones the simulated line plays: dial, busy and the call-waiting alert.
_EUROPE = MappingProxyType(
    {
        "dial": Tone((425.0,)),
        "busy": Tone((425.0,), (0.5, 0.5)),
        "call-waiting": Tone((425.0,), (0.2, 0.2, 0.2), repeat=False),
    }
)
_NORTH_AMERICA = MappingProxyType(
    {
        "dial": Tone((350.0, 440.0)),
        "busy": Tone((480.0, 620.0), (0.5, 0.5)),
        "call-waiting": Tone((440.0,), (0.3,), repeat=False),
    }
)
_TONES: MappingProxyType[str, MappingProxyType[str, Tone]] = MappingProxyType(
    {
        "US": _NORTH_AMERICA,
        "CA": _NORTH_AMERICA,
        "GB": MappingProxyType(
            {
                "dial": Tone((350.0, 440.0)),
                "busy": Tone((400.0,), (0.375, 0.375)),
                "call-waiting": Tone((400.0,), (0.1,), repeat=False),
            }
        ),
        "DE": MappingProxyType({**_EUROPE, "busy": Tone((425.0,), (0.48, 0.48))}),
        "FR": MappingProxyType({**_EUROPE, "dial": Tone((440.0,)), "busy": Tone((440.0,), (0.5, 0.5))}),
        "NL": _EUROPE,
        "IT": _EUROPE,
        "ES": MappingProxyType({**_EUROPE, "busy": Tone((425.0,), (0.2, 0.2))}),
        "AU": MappingProxyType({**_EUROPE, "dial": Tone((413.0, 438.0)), "busy": Tone((425.0,), (0.375, 0.375))}),
        "JP": MappingProxyType({**_EUROPE, "dial": Tone((400.0,)), "busy": Tone((400.0,), (0.5, 0.5))}),
    }
)
TONE_COUNTRIES = tuple(_TONES)


def tone_for(country: str | None, name: str) -> Tone:
    """The ``name`` tone ("dial", "busy", "call-waiting") of ``country``.

    No country means North America; a country without its own row gets the
    ITU-recommended 425 Hz tones most of Europe uses.
    """
    plan = _TONES.get("US" if country is None else country.upper(), _EUROPE)
    return plan[name]
