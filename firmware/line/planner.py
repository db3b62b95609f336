"""Laying scripted calls out in time: the stretches of a simulated line, their events and their sound.

The :class:`Planner` walks a script and yields one :class:`Segment` at a time (a
stretch of ring, quiet, talk, tone...) with the events that happen in it and the
:class:`Layer` sounds that start in it. Nothing is planned further ahead than
the reader needs, which keeps memory flat and lets a call the recorder answers
itself wait for the recorder to go off-hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.callerid import fsk_callerid_audio
from firmware.dsp.dtmf import generate_dtmf
from firmware.line.base import (
    CallerId,
    CallerIdReceived,
    LineEvent,
    LoopDrop,
    OffHook,
    OnHook,
    PolarityReversal,
    RingEnd,
    RingStart,
    ScriptError,
    ToneDetected,
)
from firmware.line.script import ScriptedCall
from firmware.line.simaudio import CAS_ALERT, CAS_ALERT_CALL_WAITING, Tone, level, tone_for
from firmware.line.speech import VoiceSource

__all__ = ["Layer", "Planner", "Segment", "TimelineEntry"]

# The audio path hears little on-hook while the ring voltage is on the line.
RING_NOISE_BELOW_DB = 20.0
# A ring detector merges bursts closer than this into one ring (the UK double ring).
RING_MERGE_GAP_S = 0.64
# Caller ID is decoded this long after the first ring ends (sent from 0.5 s on, ~0.3 s long).
CALLER_ID_DELAY_S = 0.8
# Caller ID before ringing (ETSI EN 300 659-1, BT SIN 227): the polarity reversal leads
# the alert by >= 100 ms, the data follows the alert by >= 45 ms, the ring the data by >= 200 ms.
ALERT_AFTER_REVERSAL_S = 0.12
DATA_AFTER_ALERT_S = 0.06
RING_AFTER_DATA_S = 0.3
DTMF_DATA_AFTER_REVERSAL_S = 0.25
# FSK caller ID on the wire: 1200 baud, seizure and mark bits, then 10 bits a byte (8N1).
FSK_BAUD = 1200
FSK_SEIZURE_BITS = 300
FSK_MARK_BITS = 80
# DTMF caller ID: 70 ms of tone and 70 ms of pause a digit.
DTMF_DIGIT_S = 0.14
# The phone is picked up this far into the silence after a ring.
ANSWER_DELAY_S = 0.5
# After the far end hangs up, the local phone goes down this much later.
LOCAL_HANGUP_AFTER_CPC_S = 1.0
LOCAL_HANGUP_AFTER_REVERSAL_S = 3.0
LONG_SILENCE_S = 2.0
# A missed call leaves the line idle this long after its last ring: longer than the
# usual ring timeout, so the call is over before the next one starts ringing.
MISSED_CALL_SETTLE_S = 10.0
# A caller who reaches the recorder starts talking this long after it goes off-hook.
MACHINE_MESSAGE_AFTER_S = 1.0
# Shorter than the 1.3 s of dial tone that makes a detector call the far end gone.
DIAL_TONE_S = 1.0
TRAILING_IDLE_S = 1.0
# Caller ID data on the line: Bell 202 / V.23 transmit at about -13 dBm, a little over the talk level.
CALLER_ID_DBFS = -16.0
DEFAULT_NOISE_DBFS = -60.0


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One stretch of the script: seconds since the epoch, and what the line carries then."""

    t_start: float
    t_end: float
    # "idle", "caller-id", "ring", "ring-off", "pause", "talk", "silence", "loop-open",
    # "hangup", "busy-tone", "dial-tone" or "greeting".
    kind: str


@dataclass(slots=True)
class Layer:
    """A sound added on top of the line noise, from frame ``start`` for ``frames`` frames.

    ``render(offset, n)`` gives ``n`` samples from ``offset`` frames into the sound.
    """

    start: int
    frames: int
    render: Callable[[int, int], NDArray[np.float64]]

    @property
    def end(self) -> int:
        return self.start + self.frames


@dataclass(slots=True)
class Segment:
    """A stretch of the script in frames from the start, with its events and the sounds starting in it."""

    start: int
    frames: int
    kind: str
    noise_rms: float
    hum_hz: float | None = None
    events: list[tuple[int, LineEvent]] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.frames


def _data_seconds(caller_id: CallerId) -> float:
    """How long the caller ID message takes on the wire."""
    if caller_id.standard == "dtmf":
        return len(caller_id.raw) * DTMF_DIGIT_S
    return (FSK_SEIZURE_BITS + FSK_MARK_BITS + 10 * len(caller_id.raw)) / FSK_BAUD


class Planner:
    """Lays a script out in frames, one segment at a time.

    With ``measure_only`` the segments carry no sound, for a timeline of the script.
    A call answered by the recorder plays as unanswered unless :meth:`answer` is
    called while it rings.
    """

    def __init__(
        self,
        calls: Sequence[ScriptedCall],
        *,
        sample_rate: int,
        start_time: float,
        block_frames: int,
        seed: int,
        voice: VoiceSource,
        utterance_frames: dict[tuple[int, int], int],
        measure_only: bool,
    ) -> None:
        self._calls = calls
        self._rate = sample_rate
        self._t0 = start_time
        self._block = block_frames
        self._voice = voice
        self._utterance_frames = utterance_frames
        self._rng = np.random.default_rng([seed, 1])
        self._measure_only = measure_only
        self._noise_dbfs = DEFAULT_NOISE_DBFS
        self._hum_hz: float | None = None
        self._awaiting_answer = False
        self._answered_at: int | None = None
        self.cursor = 0

    # --- time and segments -----------------------------------------------------------

    def _t(self, frame: int) -> float:
        return self._t0 + frame / self._rate

    def _frames(self, seconds: float) -> int:
        return round(seconds * self._rate)

    def _segment(self, seconds: float, kind: str, *, quieter_db: float = 0.0, silent: bool = False) -> Segment:
        noise = 0.0 if silent else level(self._noise_dbfs - quieter_db)
        hum = None if silent else self._hum_hz
        segment = Segment(self.cursor, self._frames(seconds), kind, noise, hum)
        self.cursor = segment.end
        return segment

    def _tone(self, tone: Tone, start: int, frames: int) -> Layer:
        rate = self._rate
        return Layer(start, frames, lambda offset, n: tone.render(offset, n, rate))

    def _caller_id_sound(self, caller_id: CallerId, start: int, limit: int) -> Layer:
        """The caller ID as the exchange sends it: an FSK burst or DTMF digits, cut off at ``limit``."""
        if self._measure_only:
            sound = np.zeros(self._frames(_data_seconds(caller_id)))
        elif caller_id.standard == "dtmf":
            sound = generate_dtmf(caller_id.raw.decode("ascii"), self._rate, level_dbfs=CALLER_ID_DBFS) * 32768.0
        else:
            modulation = "v23" if caller_id.standard == "etsi-v23" else "bell202"
            burst = fsk_callerid_audio(
                caller_id.raw, standard=modulation, sample_rate=self._rate, level_dbfs=CALLER_ID_DBFS
            )
            sound = burst * 32767.0
        frames = max(0, min(len(sound), limit - start))
        return Layer(start, frames, lambda offset, n: sound[offset : offset + n])

    def answer(self, frame: int) -> bool:
        """The recorder went off-hook at ``frame``: True if a call was waiting for it to."""
        if not self._awaiting_answer:
            return False
        self._awaiting_answer = False
        self._answered_at = frame
        self.cursor = frame
        return True

    def segments(self) -> Iterator[Segment]:
        """Every segment of the script, in order, ending on a whole block."""
        for index, call in enumerate(self._calls):
            self._noise_dbfs, self._hum_hz = call.noise_dbfs, call.hum_hz
            yield self._segment(call.gap_before_s, "idle")
            if call.outgoing:
                yield from self._outgoing(index, call)
                continue
            if call.caller_id_timing == "before-ring":
                yield from self._caller_id_before_ring(call)
            if call.answered_by == "machine":
                yield from self._machine_call(index, call)
                continue
            yield from self._rings(call, answer=call.answered)
            if call.answered:
                yield from self._conversation(index, call)
        # Round the end up to a whole block, so the last block is full.
        tail = self._frames(TRAILING_IDLE_S)
        tail += -(self.cursor + tail) % self._block
        yield self._segment(tail / self._rate, "idle")

    # --- ringing and caller ID -------------------------------------------------------

    def _caller_id_before_ring(self, call: ScriptedCall) -> Iterator[Segment]:
        probe = call.caller_id(datetime.fromtimestamp(self._t(self.cursor), UTC))
        if probe is None:
            return  # a line without caller ID has no reason to reverse before ringing
        segment = Segment(self.cursor, 0, "caller-id", level(self._noise_dbfs), self._hum_hz)
        segment.events.append((segment.start, PolarityReversal(self._t(segment.start))))
        if probe.standard == "dtmf":
            data_start = segment.start + self._frames(DTMF_DATA_AFTER_REVERSAL_S)
        else:
            alert = segment.start + self._frames(ALERT_AFTER_REVERSAL_S)
            alert_frames = self._frames(CAS_ALERT.duration_s)
            segment.events.append((alert, ToneDetected(self._t(alert), "cas")))
            if not self._measure_only:
                segment.layers.append(self._tone(CAS_ALERT, alert, alert_frames))
            data_start = alert + alert_frames + self._frames(DATA_AFTER_ALERT_S)
        data_end = data_start + self._frames(_data_seconds(probe))
        caller_id = call.caller_id(datetime.fromtimestamp(self._t(data_end), UTC))
        if caller_id is not None and call.caller_id_audio:
            layer = self._caller_id_sound(caller_id, data_start, data_end + self._frames(RING_AFTER_DATA_S))
            data_end = layer.end
            segment.layers.append(layer)
        elif caller_id is not None:
            segment.events.append((data_end, CallerIdReceived(self._t(data_end), caller_id)))
        segment.frames = data_end + self._frames(RING_AFTER_DATA_S) - segment.start
        self.cursor = segment.end
        yield segment

    def _rings(self, call: ScriptedCall, *, answer: bool) -> Iterator[Segment]:
        """The rings; with ``answer`` the phone is picked up after the last one.

        Stops early once :meth:`answer` has been called.
        """
        pattern = call.ring_pattern
        pairs = list(zip(pattern[::2], pattern[1::2], strict=True))
        merge = call.country is not None
        rings_heard, ring_start = 0, None
        for cycle in range(1, call.rings + 1):
            for pair_index, (on_s, off_s) in enumerate(pairs):
                cycle_end = pair_index == len(pairs) - 1
                burst = self._segment(on_s, "ring", quieter_db=RING_NOISE_BELOW_DB)
                if ring_start is None:
                    ring_start, rings_heard = burst.start, rings_heard + 1
                    burst.events.append((burst.start, RingStart(self._t(burst.start))))
                if cycle_end or not merge or off_s >= RING_MERGE_GAP_S:
                    # A detector names the cadence once it has measured a whole cycle.
                    key = call.cadence_key if rings_heard >= 2 else None
                    seconds = (burst.end - ring_start) / self._rate
                    burst.events.append((burst.end, RingEnd(self._t(burst.end), seconds, key)))
                    ring_start = None
                yield burst
                if self._answered_at is not None:
                    return
                first, last = cycle_end and cycle == 1, cycle_end and cycle == call.rings
                yield self._after_burst(call, off_s, first=first, last=last, answer=answer)
                if self._answered_at is not None:
                    return
        if answer and call.rings == 0:
            yield self._off_hook_marker()

    def _after_burst(self, call: ScriptedCall, off_s: float, *, first: bool, last: bool, answer: bool) -> Segment:
        """The quiet after a burst: caller ID after the first ring, the answer or the give-up after the last."""
        if last and not answer:
            # The caller has given up: too late for the recorder to answer.
            self._awaiting_answer = False
            gap = self._segment(max(off_s, MISSED_CALL_SETTLE_S), "idle")
        else:
            seconds = min(off_s, ANSWER_DELAY_S) if last else off_s
            gap = self._segment(seconds, "ring-off", quieter_db=RING_NOISE_BELOW_DB)
        if first and call.caller_id_timing == "after-first-ring":
            cid_frame = gap.start + self._frames(CALLER_ID_DELAY_S)
            caller_id = call.caller_id(datetime.fromtimestamp(self._t(cid_frame), UTC))
            # Picking up before the data has arrived cuts it off, as on a real line.
            if caller_id is not None and call.caller_id_audio:
                gap.layers.append(self._caller_id_sound(caller_id, cid_frame, gap.end))
            elif caller_id is not None and cid_frame < gap.end:
                gap.events.append((cid_frame, CallerIdReceived(self._t(cid_frame), caller_id)))
        if last and answer:
            gap.events.append((gap.end, OffHook(self._t(gap.end))))
        return gap

    def _off_hook_marker(self) -> Segment:
        segment = self._segment(0.0, "pause")
        segment.events.append((segment.start, OffHook(self._t(segment.start))))
        return segment

    def _machine_call(self, index: int, call: ScriptedCall) -> Iterator[Segment]:
        """Rings until the recorder goes off-hook, then the caller leaves a message."""
        self._awaiting_answer = True
        yield from self._rings(call, answer=False)
        self._awaiting_answer = False
        if self._answered_at is None:
            return
        answered_at, self._answered_at = self._answered_at, None
        # The recorder knows it answered: no OffHook, and no OnHook when it hangs up.
        yield from self._conversation(index, call, answered_at=answered_at, machine=True)

    # --- the call --------------------------------------------------------------------

    def _outgoing(self, index: int, call: ScriptedCall) -> Iterator[Segment]:
        dial = self._segment(DIAL_TONE_S, "dial-tone")
        dial.events.append((dial.start, OffHook(self._t(dial.start))))
        if not self._measure_only:
            dial.layers.append(self._tone(tone_for(call.country, "dial"), dial.start, dial.frames))
        yield dial
        yield from self._conversation(index, call, answered_at=dial.start)

    def _conversation(
        self, index: int, call: ScriptedCall, *, answered_at: int | None = None, machine: bool = False
    ) -> Iterator[Segment]:
        answered_at = self.cursor if answered_at is None else answered_at
        waiting = None
        if call.call_waiting_at_s is not None:
            waiting = answered_at + self._frames(call.call_waiting_at_s)
        turns = len(call.talk)
        # A couple of long silences a third and two thirds of the way through.
        long_after = {turns // 3, (2 * turns) // 3} if turns >= 3 else set()
        # A person says hello at once; a caller who reached the recorder waits for its greeting.
        stretches = [self._segment(MACHINE_MESSAGE_AFTER_S, "greeting") if machine else self._segment(0.4, "pause")]
        for turn, (speaker, text) in enumerate(call.talk):
            stretches.append(self._talk(index, turn, speaker, text))
            if turn == turns - 1:
                break
            if turn + 1 in long_after:
                stretches.append(self._segment(LONG_SILENCE_S, "silence"))
            else:
                stretches.append(self._segment(float(self._rng.uniform(0.3, 0.8)), "pause"))
            # Hand over what is planned, so no more than one utterance is held at a time.
            yield from self._with_alert(stretches, call, waiting)
            stretches = []
        stretches.append(self._segment(0.5, "pause"))
        yield from self._with_alert(stretches, call, waiting)
        if waiting is not None and waiting >= self.cursor:
            talk_s = (self.cursor - answered_at) / self._rate
            msg = f"call_waiting_at_s {call.call_waiting_at_s} is after the conversation ends ({talk_s:.1f} s)"
            raise ScriptError(msg)
        yield from self._hang_up(call, local_phone=not machine)

    def _with_alert(self, stretches: list[Segment], call: ScriptedCall, waiting: int | None) -> Iterator[Segment]:
        for segment in stretches:
            if waiting is not None and segment.start <= waiting < segment.end:
                self._call_waiting(segment, call, waiting)
            yield segment

    def _call_waiting(self, segment: Segment, call: ScriptedCall, frame: int) -> None:
        """A second caller: the alert tone, and on North American lines the CAS for its caller ID."""
        alert = tone_for(call.country, "call-waiting")
        segment.events.append((frame, ToneDetected(self._t(frame), "call-waiting")))
        frames = self._frames(alert.duration_s)
        if not self._measure_only:
            segment.layers.append(self._tone(alert, frame, frames))
        if call.country in (None, "US", "CA"):
            cas = frame + frames
            segment.events.append((cas, ToneDetected(self._t(cas), "cas")))
            if not self._measure_only:
                cas_frames = self._frames(CAS_ALERT_CALL_WAITING.duration_s)
                segment.layers.append(self._tone(CAS_ALERT_CALL_WAITING, cas, cas_frames))

    def _hang_up(self, call: ScriptedCall, *, local_phone: bool) -> Iterator[Segment]:
        """How the call ends; the local phone's OnHook only if a person is on the line."""
        if call.hangup == "local":
            # The pause before has already run; the local phone goes down at its end.
            yield self._on_hook(self._segment(0.0, "pause"), local_phone=True)
            return
        if call.hangup == "remote":
            drop = self._segment(call.cpc_ms / 1000, "loop-open", silent=True)
            drop.events.append((drop.end, LoopDrop(self._t(drop.end), drop.frames / self._rate)))
            yield drop
            yield self._on_hook(self._segment(LOCAL_HANGUP_AFTER_CPC_S, "hangup"), local_phone=local_phone)
        elif call.hangup == "polarity":
            after = self._segment(LOCAL_HANGUP_AFTER_REVERSAL_S, "hangup")
            after.events.append((after.start, PolarityReversal(self._t(after.start))))
            yield self._on_hook(after, local_phone=local_phone)
        elif call.hangup == "tone":
            busy = self._segment(call.tone_s, "busy-tone")
            # The event stands in for the tone detector, which reports the tone as it starts.
            busy.events.append((busy.start, ToneDetected(self._t(busy.start), "busy")))
            if not self._measure_only:
                busy.layers.append(self._tone(tone_for(call.country, "busy"), busy.start, busy.frames))
            yield self._on_hook(busy, local_phone=local_phone)
        else:  # "silence": the far end is gone but the exchange says nothing
            yield self._on_hook(self._segment(call.silence_s, "hangup"), local_phone=local_phone)

    def _on_hook(self, segment: Segment, *, local_phone: bool) -> Segment:
        if local_phone:
            segment.events.append((segment.end, OnHook(self._t(segment.end))))
        return segment

    def _talk(self, index: int, turn: int, speaker: str, text: str) -> Segment:
        speech = self._voice.say(text, speaker, self._rate)
        known = self._utterance_frames.setdefault((index, turn), len(speech))
        if len(speech) != known:
            # A voice that is not quite deterministic must still match the timeline.
            speech = speech[:known] if len(speech) > known else np.pad(speech, (0, known - len(speech)))
        segment = Segment(self.cursor, known, "talk", level(self._noise_dbfs), self._hum_hz)
        self.cursor = segment.end
        if not self._measure_only:
            # The far end comes through the exchange a little quieter than the local phone.
            gain = 0.7 if speaker == "caller" else 1.0
            segment.layers.append(Layer(segment.start, known, _speech_render(speech, gain)))
        return segment


def _speech_render(speech: NDArray[np.int16], gain: float) -> Callable[[int, int], NDArray[np.float64]]:
    def render(offset: int, n: int) -> NDArray[np.float64]:
        part: NDArray[np.float64] = speech[offset : offset + n].astype(np.float64) * gain
        return part

    return render
