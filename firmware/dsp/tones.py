"""Call-progress and alert tones: which one the line carries, and when it started and ended.

Audio is cut into 20 ms frames. A frame is labelled with the frequency set of the
country's tone plan that holds nearly all of its energy, measured as the energy in
the span of sinusoids across each frequency's tolerance band, over the frame and
over the 40 ms ending with it (which tells 440 Hz from 480 Hz); Goertzel probes
check that every frequency of the set is there. Speech and noise spread their
energy, so their frames stay unlabelled. Runs of equal labels become bursts, timed
to a few milliseconds from the energy of their edge frames, and bursts are matched
against each tone's on/off cadence. The table of tones lives in
``firmware/data/tones.toml`` with its sources and review date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from firmware.dsp.toneplan import TonePlan, ToneSpec, load_tone_plan
from firmware.line.base import ToneDetected

__all__ = [
    "CallProgressDetector",
    "ToneEvent",
    "TonePlan",
    "ToneSpec",
    "detect_tones",
    "generate_tone",
    "load_tone_plan",
]

_FULL_SCALE = 32767.0
FRAME_S = 0.02
# Share of a frame's energy the tone's frequencies must hold for the frame to count.
DOMINANCE = 0.9
# Each frequency of a set must hold at least this share of the set's energy per frequency.
COMPONENT_SHARE = 0.4
# Probe spacing for checking that every frequency of a set is there.
_PROBE_STEP_HZ = 10.0


@dataclass(frozen=True, slots=True)
class ToneEvent:
    """One stretch of a recognised tone, in seconds from the start of the audio (or epoch seconds)."""

    tone: str
    start_s: float
    end_s: float

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"tone": self.tone, "start_s": self.start_s, "end_s": self.end_s}


class _FrameAnalyser:
    """Labels 20 ms frames with the plan's frequency set that dominates them."""

    def __init__(self, plan: TonePlan, sample_rate: int) -> None:
        self.n = round(FRAME_S * sample_rate)
        self.rate = sample_rate
        self.tolerance = plan.frequency_tolerance
        freqs = sorted({f for group in plan.groups for f in group})
        probes: list[float] = []
        owner: list[int] = []
        for i, f in enumerate(freqs):
            span = f * plan.frequency_tolerance
            count = max(1, math.ceil(span / _PROBE_STEP_HZ))
            probes += [f + span * k / count for k in range(-count, count + 1)]
            owner += [i] * (2 * count + 1)
        self.n_probes = len(probes)
        self.starts = np.searchsorted(np.asarray(owner), np.arange(len(freqs)))
        self.members = [np.asarray([freqs.index(f) for f in g]) for g in plan.groups]
        self.sizes = np.asarray([len(g) for g in plan.groups], dtype=np.float64)
        self.spreads = plan.spreads
        self.short = self._subspaces(plan.groups, self.n)
        self.long = self._subspaces(plan.groups, 2 * self.n)
        arg = 2.0 * np.pi * np.arange(2 * self.n)[:, None] * np.asarray(probes)[None, :] / sample_rate
        self.probe_basis = np.hstack([np.cos(arg), np.sin(arg)])
        scale = (_FULL_SCALE**2) * self.n
        self.min_energy = scale * 10 ** (plan.min_dbfs / 10)
        self.max_energy = scale * 10 ** (plan.max_dbfs / 10)

    def _subspaces(
        self, groups: tuple[tuple[float, ...], ...], length: int
    ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        """Per set, an orthonormal basis of its frequency bands over ``length`` samples, side by side."""
        t = np.arange(length)[:, None] / self.rate
        spaces, starts, at = [], [], 0
        for group, spread in zip(groups, self.spreads, strict=True):
            # Sinusoids across each frequency's tolerance band, widened by a modulated tone's
            # sidebands; their span is the set's subspace, so two close tones (or a carrier and
            # its sidebands) are measured together without counting their overlap twice. Without
            # the sidebands a deeply modulated tone falls short of DOMINANCE in every other frame.
            step = 0.3 * self.rate / length
            half = [f * self.tolerance + spread for f in group]
            count = [max(2, math.ceil(h / step)) for h in half]
            band = [f + h * k / c for f, h, c in zip(group, half, count, strict=True) for k in range(-c, c + 1)]
            arg = 2.0 * np.pi * t * np.asarray(band)[None, :]
            u, sv, _ = np.linalg.svd(np.hstack([np.cos(arg), np.sin(arg)]), full_matrices=False)
            space = u[:, sv > 0.05 * sv[0]]
            spaces.append(space)
            starts.append(at)
            at += space.shape[1]
        return np.hstack(spaces), np.asarray(starts)

    def analyse(
        self, frames: NDArray[np.float64], before: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Per frame: the label (-1 for none) and each set's energy in the frame.

        Which set is judged over 40 ms (the frame and the one ``before`` it), which
        resolves tones 40 Hz apart (440 vs 480 Hz); the frame's own 20 ms must be
        dominated by the set too, which keeps burst edges sharp.
        """
        windows = np.hstack([np.vstack([before[None, :], frames[:-1]]), frames])
        share20, groups20 = self._share(frames, self.short)
        share40, _ = self._share(windows, self.long)
        ok = (share20 >= DOMINANCE) & (share40 >= DOMINANCE) & self._all_there(windows)
        total = np.einsum("ij,ij->i", frames, frames)
        ok &= ((total >= self.min_energy) & (total <= self.max_energy))[:, None]
        best = np.argmax(np.where(ok, share40, -1.0), axis=1)
        labels = np.where(ok.any(axis=1), best, -1).astype(np.int64)
        return labels, groups20

    def _share(
        self, windows: NDArray[np.float64], bases: tuple[NDArray[np.float64], NDArray[np.intp]]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each set's share of the windows' energy, and that energy."""
        total = np.einsum("ij,ij->i", windows, windows)
        groups = np.add.reduceat((windows @ bases[0]) ** 2, bases[1], axis=1)
        return groups / np.maximum(total, 1e-9)[:, None], groups

    def _all_there(self, windows: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether every frequency of each set holds its part of the set's energy."""
        proj = windows @ self.probe_basis
        half = self.n_probes
        power = proj[:, :half] ** 2 + proj[:, half:] ** 2
        per_freq = np.maximum.reduceat(power, self.starts, axis=1)
        weakest = np.stack([per_freq[:, m].min(axis=1) for m in self.members], axis=1)
        summed = np.stack([per_freq[:, m].sum(axis=1) for m in self.members], axis=1)
        ok: NDArray[np.bool_] = weakest * self.sizes >= COMPONENT_SHARE * summed
        return ok


@dataclass(slots=True)
class _Run:
    group: int
    start: float
    end: float


@dataclass(slots=True)
class _Span:
    start: float
    end: float
    first_run: int


class _CadenceMatcher:
    """Turns per-frame labels into bursts and bursts into tones, a frame at a time."""

    def __init__(self, plan: TonePlan, frame_s: float) -> None:
        self.plan = plan
        self.t_frame = frame_s
        self.group_of = [[plan.groups.index(s) for s in tone.steps] for tone in plan.tones]
        self.confirm = [self._confirm_count(tone) for tone in plan.tones]
        self.reset()

    def _confirm_count(self, tone: ToneSpec) -> int:
        """Bursts that confirm a repeating tone: a cycle and the next burst, and more than any alert it resembles."""
        count = len(tone.ons) + 1
        for alert in (t for t in self.plan.tones if t.once and set(t.steps) == set(tone.steps)):
            if all(any(tone.fits(on, mine) for mine in tone.ons) for on in alert.ons):
                count = max(count, len(alert.ons) + 1)
        return count

    def reset(self) -> None:
        self.runs: list[_Run] = []
        self.finished: list[ToneEvent] = []
        self.open: dict[int, _Span] = {}
        self.pending: dict[int, tuple[float, float, float]] = {}
        self.cur = -1
        self.cur_frames: list[tuple[float, list[float]]] = []
        self.before: list[float] | None = None
        self.held: tuple[float, int, list[float]] | None = None
        self.last_label = -1
        self.run_t = 0.0
        self.run_prev = 0.0

    def frame(self, t: float, label: int, energy: list[float], out: list[ToneDetected]) -> None:
        """Take one frame; a lone unlabelled frame between two equal labels is taken as a glitch."""
        held, self.held = self.held, (t, label, energy)
        if held is None:
            return
        ht, hl, he = held
        if hl == -1 and label != -1 and label == self.last_label:
            hl = label
        self.last_label = hl
        self._step(ht, hl, he, out)

    def flush(self, out: list[ToneDetected]) -> None:
        """End of the audio: settle the last frame, the last burst and alerts awaiting their guard."""
        if self.held is not None:
            ht, hl, he = self.held
            self.held = None
            self._step(ht, hl, he, out)
            self._step(ht + self.t_frame, -1, [0.0] * len(self.plan.groups), out)
        for i in list(self.pending):
            self._confirm_once(i, math.inf, out)
        for i in list(self.open):
            self._close(i)

    def _step(self, t: float, label: int, energy: list[float], out: list[ToneDetected]) -> None:
        if label != self.cur:
            if self.cur != -1:
                self._end_run(energy, out)
            self.cur = label
            self.cur_frames = []
            if label != -1:
                self._start_run(t)
        if label != -1:
            self.cur_frames.append((t, energy))
        self.before = energy
        now = t + self.t_frame
        if label != -1:
            self._continuous(now, out)
        for i in list(self.pending):
            self._confirm_once(i, now, out)
        for i, span in list(self.open.items()):
            tone = self.plan.tones[i]
            if (
                tone.cadence
                and label not in self.group_of[i]
                and now - span.end > max(tone.cadence[1::2]) * (1 + tone.tolerance) + tone.tolerance_s
            ):
                self._close(i)

    def _start_run(self, t: float) -> None:
        # Another burst of an alert's tone inside its guard time: it was part of something longer.
        for i in list(self.pending):
            if self.group_of[i][-1] == self.cur:
                del self.pending[i]
        self.run_t = t
        self.run_prev = self.before[self.cur] if self.before is not None else 0.0

    def _fraction(self, e: float, level: float) -> float:
        return math.sqrt(min(1.0, max(0.0, e / level))) if level > 0 else 0.0

    def _end_run(self, after: list[float], out: list[ToneDetected]) -> None:
        g, frames = self.cur, self.cur_frames
        levels = sorted(e[g] for _, e in (frames[1:-1] if len(frames) > 2 else frames))
        level = levels[len(levels) // 2]
        first, last = self._fraction(frames[0][1][g], level), self._fraction(frames[-1][1][g], level)
        start = frames[0][0] + self.t_frame * (1.0 - first)
        if first > 0.9:
            start -= self.t_frame * self._fraction(self.run_prev, level)
        end = frames[-1][0] + self.t_frame * last
        if last > 0.9:
            end += self.t_frame * self._fraction(after[g], level)
        self.runs.append(_Run(g, start, end))
        if len(self.runs) > 64:
            del self.runs[:32]
            for span in self.open.values():
                span.first_run = max(0, span.first_run - 32)
        now = frames[-1][0] + 2 * self.t_frame
        for i, tone in enumerate(self.plan.tones):
            if g not in self.group_of[i] or not tone.cadence:
                continue
            if tone.once:
                self._once(i)
            else:
                self._repeating(i, now, out)
        for i, span in list(self.open.items()):
            if not self.plan.tones[i].cadence and self.group_of[i][0] == g:
                span.start, span.end = start, end
                self._close(i)

    def _continuous(self, now: float, out: list[ToneDetected]) -> None:
        for i, tone in enumerate(self.plan.tones):
            started = not tone.cadence and self.group_of[i][0] == self.cur and i not in self.open
            if started and now - self.run_t >= tone.min_s:
                self.open[i] = _Span(self.run_t, now, len(self.runs))
                out.append(ToneDetected(now, tone.name))

    def _chain(self, i: int) -> tuple[int, int]:
        """Bursts in a row, ending with the latest, that follow tone ``i``'s cadence: (count, first index)."""
        tone, groups, runs = self.plan.tones[i], self.group_of[i], self.runs
        n = len(tone.ons)
        best = (0, len(runs))
        for phase in range(n):
            k, j = 0, len(runs) - 1
            while j >= 0:
                step = (phase - k) % n
                run = runs[j]
                if run.group != groups[step] or not tone.fits(run.end - run.start, tone.ons[step]):
                    break
                k += 1
                if j == 0 or not tone.fits(
                    run.start - runs[j - 1].end, tone.cadence[(2 * ((phase - k) % n) + 1) % len(tone.cadence)]
                ):
                    break
                j -= 1
            if k > best[0]:
                best = (k, len(runs) - k)
        return best

    def _repeating(self, i: int, now: float, out: list[ToneDetected]) -> None:
        tone = self.plan.tones[i]
        count, first = self._chain(i)
        span = self.open.get(i)
        if span is not None:
            if count and first <= span.first_run:
                span.end = self.runs[-1].end
                return
            self._close(i)
        if count >= self.confirm[i]:
            self.open[i] = _Span(self.runs[first].start, self.runs[-1].end, first)
            out.append(ToneDetected(now, tone.name))

    def _once(self, i: int) -> None:
        tone, groups, runs = self.plan.tones[i], self.group_of[i], self.runs
        n = len(groups)
        if len(runs) < n:
            return
        chain = runs[-n:]
        for k, run in enumerate(chain):
            if run.group != groups[k] or not tone.fits(run.end - run.start, tone.ons[k]):
                return
            if k and not tone.fits(run.start - chain[k - 1].end, tone.cadence[2 * k - 1]):
                return
        earlier = [r for r in runs[:-n] if r.group == groups[0]]
        if earlier and chain[0].start - earlier[-1].end < tone.guard_s:
            return
        self.pending[i] = (chain[0].start, chain[-1].end, chain[-1].end + tone.guard_s)

    def _confirm_once(self, i: int, now: float, out: list[ToneDetected]) -> None:
        start, end, deadline = self.pending[i]
        if now >= deadline or math.isinf(now):
            del self.pending[i]
            out.append(ToneDetected(min(now, deadline), self.plan.tones[i].name))
            self.finished.append(ToneEvent(self.plan.tones[i].name, start, end))

    def _close(self, i: int) -> None:
        span = self.open.pop(i)
        self.finished.append(ToneEvent(self.plan.tones[i].name, span.start, span.end))

    def events(self) -> list[ToneEvent]:
        spans = self.finished + [ToneEvent(self.plan.tones[i].name, s.start, s.end) for i, s in self.open.items()]
        return sorted(spans, key=lambda e: (e.start_s, e.tone))


@cache
def _analyser(country: str, sample_rate: int) -> _FrameAnalyser:
    """The frame analyser of a plan and rate; building its bases takes longer than a minute of audio."""
    return _FrameAnalyser(load_tone_plan(country), sample_rate)


def _as_float(audio: NDArray[np.int16] | NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    return np.nan_to_num(x, nan=0.0, posinf=_FULL_SCALE, neginf=-_FULL_SCALE)


class CallProgressDetector:
    """Hears call-progress and alert tones in a call's audio, block by block (a ToneDetector).

    Audio is int16, or float in int16 units. Each tone is reported once, when its
    cadence is confirmed: a continuous tone after its minimum length, a repeating
    one after a cycle and the next burst, an alert after it has ended.
    """

    def __init__(self, country: str = "US", sample_rate: int = 8000) -> None:
        if not 4000 <= sample_rate <= 192000:
            msg = f"sample_rate {sample_rate!r} must be 4000..192000 Hz"
            raise ValueError(msg)
        self.plan = load_tone_plan(country)
        self.sample_rate = sample_rate
        self._analyser = _analyser(self.plan.country, sample_rate)
        self._matcher = _CadenceMatcher(self.plan, self._analyser.n / sample_rate)
        self._buffer = np.zeros(0, dtype=np.float64)
        self._last = np.zeros(self._analyser.n, dtype=np.float64)
        self._t = 0.0

    def feed(self, t: float, audio: NDArray[np.int16] | NDArray[np.float64]) -> list[ToneDetected]:
        """Take the block of audio that starts at ``t``; return tones confirmed by its end."""
        x = _as_float(audio)
        if not len(self._buffer):
            self._t = t
        self._buffer = np.concatenate([self._buffer, x])
        n = self._analyser.n
        whole = len(self._buffer) // n
        out: list[ToneDetected] = []
        if whole:
            self._frames(self._buffer[: whole * n].reshape(whole, n), out)
            self._buffer = self._buffer[whole * n :]
            self._t += whole * n / self.sample_rate
        return out

    def _frames(self, frames: NDArray[np.float64], out: list[ToneDetected]) -> None:
        labels, energy = self._analyser.analyse(frames, self._last)
        self._last = frames[-1].copy()
        step = self._analyser.n / self.sample_rate
        frame = self._matcher.frame
        for k, (label, e) in enumerate(zip(labels.tolist(), energy.tolist(), strict=True)):
            frame(self._t + k * step, label, e, out)

    def finish(self) -> list[ToneDetected]:
        """The audio has ended: settle what the last frames and guards were waiting for."""
        out: list[ToneDetected] = []
        self._matcher.flush(out)
        return out

    def reset(self) -> None:
        """Forget what was heard: a new call starts."""
        self._matcher.reset()
        self._buffer = np.zeros(0, dtype=np.float64)
        self._last = np.zeros(self._analyser.n, dtype=np.float64)

    def events(self) -> list[ToneEvent]:
        """Tone spans heard so far, including one still sounding (ending at its latest burst)."""
        return self._matcher.events()


def detect_tones(
    audio: NDArray[np.int16] | NDArray[np.float64], sample_rate: int, *, country: str = "US"
) -> list[ToneEvent]:
    """Every tone span in a whole recording, in seconds from its start."""
    detector = CallProgressDetector(country, sample_rate)
    detector.feed(0.0, audio)
    detector.finish()
    return detector.events()


def generate_tone(
    tone: str,
    *,
    country: str,
    sample_rate: int,
    seconds: float,
    level_dbfs: float = -15.0,
    detune: float = 0.0,
    modulation_depth: float = 1.0,
    phase: float = 0.0,
) -> NDArray[np.float64]:
    """``seconds`` of ``country``'s ``tone`` at ``level_dbfs`` RMS while on, as float in int16 units.

    A repeating cadence cycles; an alert sent once is followed by silence.
    ``detune`` shifts every frequency by that fraction, as an exchange off nominal would.
    A tone the plan gives a ``modulation_hz`` is amplitude-modulated at that rate to
    ``modulation_depth`` (1.0: the level swings down to nothing; 2.0: the carrier and both
    sidebands equally strong), starting ``phase`` radians into the swing.
    """
    spec = load_tone_plan(country).tone(tone)
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    amplitude = _FULL_SCALE * 10 ** (level_dbfs / 20)
    if not spec.cadence:
        slots = [(0.0, seconds, spec.steps[0])]
    else:
        slots, at = [], 0.0
        while at < seconds:
            for k, freqs in enumerate(spec.steps):
                slots.append((at, at + spec.ons[k], freqs))
                at += spec.ons[k] + (spec.cadence[2 * k + 1] if 2 * k + 1 < len(spec.cadence) else 0.0)
            if spec.once:
                break
    for begin, end, freqs in slots:
        on = (t >= begin) & (t < end)
        wave = sum(np.sin(2.0 * np.pi * f * (1.0 + detune) * t[on]) for f in freqs)
        out[on] = amplitude * math.sqrt(2.0 / len(freqs)) * np.asarray(wave)
    if spec.modulation_hz:
        swing = 1.0 + modulation_depth * np.cos(2.0 * np.pi * spec.modulation_hz * t + phase)
        out *= swing / math.sqrt(1.0 + modulation_depth**2 / 2.0)
    return out
