"""How strict the DTMF detector is: Q.24's limits during a call, looser ones for caller ID.

During a call a person talks, and a detector that hears digits in speech (talk-off) is
worse than one that misses a weak key press, so :data:`TALK` holds the detector to the
ITU-T Q.24 receiver limits and tight purity checks. On-hook caller ID has no speech to
fear: its digits are checked by their framing and pace, and the line may be long, noisy
and humming, so :data:`DATA` lets the detector listen deeper.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATA", "TALK", "DtmfLimits"]

# Accept a run whose tones lie within this fraction of nominal (Q.24: accept 1.5 %, reject 3.5 %).
FREQ_TOLERANCE = 0.02
# The row and column tones must hold this share of the energy of a run (speech spreads it),
# once each tone's power is corrected for its measured offset from the bin centre; a single
# frame, which may be only partly covered by the tone, needs FRAME_ENERGY_RATIO.
MIN_ENERGY_RATIO = 0.85
FRAME_ENERGY_RATIO = 0.6
# Other tones of the same group must be this far below the chosen one (rectangular window).
MIN_PEAK_RATIO_DB = 4.0
# A column tone's second harmonic must be this far below the tone. The rows' second
# harmonics (1394-1882 Hz) fall within one frame bin of a column tone, so only the
# energy ratio and the frequency check guard them.
MIN_HARMONIC_RATIO_DB = 12.0
# High group minus low group, dB (Q.24: accept +4 and -8).
MAX_TWIST_DB = 6.0
MIN_TWIST_DB = -10.0
# How steadily the phase advances over a run, 1.0 for a pure tone.
MIN_COHERENCE = 0.9


@dataclass(frozen=True, slots=True)
class DtmfLimits:
    """How sure the detector must be that a tone pair is a key press and not something else.

    Each field is one of the checks above; the defaults are :data:`TALK`'s.
    """

    energy_ratio: float = MIN_ENERGY_RATIO
    frame_energy_ratio: float = FRAME_ENERGY_RATIO
    peak_ratio_db: float = MIN_PEAK_RATIO_DB
    coherence: float = MIN_COHERENCE
    harmonic_ratio_db: float = MIN_HARMONIC_RATIO_DB
    freq_tolerance: float = FREQ_TOLERANCE
    max_twist_db: float = MAX_TWIST_DB
    min_twist_db: float = MIN_TWIST_DB
    # Energy below this frequency is not counted against the tones (0: all of it is).
    ignore_below_hz: float = 0.0


TALK = DtmfLimits()
DATA = DtmfLimits(
    energy_ratio=0.45,
    frame_energy_ratio=0.35,
    peak_ratio_db=2.0,
    coherence=0.6,
    # At low SNR this check sees noise in the harmonic's bin, and on-hook no voice talks.
    harmonic_ratio_db=6.0,
    # Exchanges send within 1.5 % (+ 5 Hz in Denmark); the margin is for noisy phase estimates.
    freq_tolerance=0.025,
    # Danish CLIP must accept 8 dB either way; noise moves the measured twist further.
    max_twist_db=10.0,
    min_twist_db=-12.0,
    # Mains hum (50/60 Hz and the next harmonics) on a poorly balanced line; no DTMF tone or
    # its sidelobes come near.
    ignore_below_hz=240.0,
)
