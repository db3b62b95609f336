"""The picture of a call: its envelope, the speech kept, the consent notice, keypad digits and bookmarks, as SVG.

Times in the manifest (the trim map, the VAD's speech, DTMF digits, consent
notice offsets) are seconds of the call as captured, pre-roll included. The
player plays the trimmed recording, where the kept segments follow one another
without the silences between them, so :func:`to_trimmed` moves a captured time
onto that timeline (a time inside a cut lands where the cut is). For the
untrimmed original the captured times are used as they are.

Reading the envelope decodes the whole recording once, a block at a time;
drawing is pure: :func:`render` takes values and returns the SVG text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from agent.samples import SampleReader

COLUMNS = 600
WIDTH = 1200
HEIGHT = 160
_TOP = 24  # room for the markers' letters above the envelope
Span = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Marks:
    """What the picture shows besides the envelope, in seconds of the audio played."""

    duration_s: float
    speech: tuple[Span, ...] = ()  # shaded
    cuts: tuple[float, ...] = ()  # where the trim joined two kept segments
    notices: tuple[tuple[float, float, str], ...] = ()  # start, length, what was played
    dtmf: tuple[tuple[float, str], ...] = ()  # when, which digit
    bookmarks: tuple[tuple[float, str], ...] = ()


def envelope(reader: SampleReader, columns: int = COLUMNS) -> list[float]:
    """The peak level (0..1) of each of ``columns`` equal slices of the recording."""
    import numpy as np  # noqa: PLC0415  (the agent loads numpy only for audio work)

    total = reader.frames
    if total <= 0:
        return []
    peaks = np.zeros(columns)
    done = 0
    for block in reader.blocks(0, total):
        level = np.abs(block.astype(np.int32).reshape(len(block), -1)[:, 0])
        where = ((done + np.arange(len(block))) * columns) // total
        np.maximum.at(peaks, where, level)
        done += len(block)
    return [round(float(p) / 32768.0, 4) for p in peaks]


def _spans(value: object) -> list[Span]:
    out: list[Span] = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, int | float) for x in item):
                start, end = float(item[0]), float(item[1])
                if end > start >= 0:
                    out.append((start, end))
    return sorted(out)


def to_trimmed(t: float, kept: Sequence[Span]) -> float:
    """A captured time on the trimmed recording's timeline (kept segments laid end to end)."""
    if not kept:
        return t
    before = 0.0
    for start, end in kept:
        if t < start:
            return before
        if t <= end:
            return before + t - start
        before += end - start
    return before


def marks_of(
    manifest_audio: dict[str, Any] | None,
    consent: dict[str, Any] | None,
    bookmarks: Sequence[tuple[float, str]],
    *,
    duration_s: float,
    trimmed: bool,
) -> Marks:
    """The marks of a call from its manifest's ``audio``, its consent evidence and its bookmarks."""
    audio = manifest_audio or {}
    kept = _spans(audio.get("trim_map")) if audio.get("trimmed") else []

    def place(t: float) -> float:
        return min(max(to_trimmed(t, kept) if trimmed else t, 0.0), duration_s)

    speech_raw = _spans(audio.get("speech")) or kept
    speech = tuple((place(a), place(b)) for a, b in speech_raw)
    cuts: tuple[float, ...] = ()
    if trimmed and kept:
        edges, total = [], 0.0
        for start, end in kept[:-1]:
            total += end - start
            edges.append(total)
        cuts = tuple(edges)
    notices: list[tuple[float, float, str]] = []
    for notice in (consent or {}).get("notices") or []:
        if isinstance(notice, dict) and isinstance(notice.get("offset_s"), int | float):
            start = place(float(notice["offset_s"]))
            length = float(notice.get("duration_s") or 0.0)
            notices.append((start, min(length, duration_s - start), str(notice.get("id") or notice.get("kind"))))
    digits: list[tuple[float, str]] = []
    for digit in audio.get("dtmf") or []:
        if isinstance(digit, dict) and isinstance(digit.get("start_s"), int | float):
            digits.append((place(float(digit["start_s"])), str(digit.get("digit", "?"))[:1]))
    return Marks(
        duration_s=duration_s,
        speech=speech,
        cuts=cuts,
        notices=tuple(notices),
        dtmf=tuple(digits),
        bookmarks=tuple((min(max(t, 0.0), duration_s), label) for t, label in bookmarks),
    )


def render(peaks: Sequence[float], marks: Marks) -> str:
    """The SVG picture: speech shaded, envelope, notice (N), digits (their key) and bookmarks (a flag)."""
    duration = marks.duration_s if marks.duration_s > 0 else 1.0

    def x(t: float) -> str:
        return f"{t / duration * WIDTH:.1f}"

    mid, half = (_TOP + HEIGHT) / 2, (HEIGHT - _TOP) / 2 - 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'data-duration="{marks.duration_s:.3f}" role="img" aria-label="waveform">',
        f'<rect class="bg" x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#f6f7f9"/>',
    ]
    for start, end in marks.speech:
        width = max((end - start) / duration * WIDTH, 1.0)
        parts.append(
            f'<rect class="speech" x="{x(start)}" y="{_TOP}" width="{width:.1f}" height="{HEIGHT - _TOP}" '
            f'fill="#d8ecd9"><title>speech {start:.1f}-{end:.1f} s</title></rect>'
        )
    for start, length, what in marks.notices:
        width = max(length / duration * WIDTH, 2.0)
        parts.append(
            f'<rect class="notice" x="{x(start)}" y="{_TOP}" width="{width:.1f}" height="{HEIGHT - _TOP}" '
            f'fill="#fbe3b8" fill-opacity="0.8"><title>consent notice {escape(what)} at {start:.1f} s</title></rect>'
            f'<text x="{x(start)}" y="16" font-size="14" fill="#a15c00">N</text>'
        )
    if peaks:
        step = WIDTH / len(peaks)
        path = " ".join(
            f"M{(i + 0.5) * step:.1f} {mid - max(p, 0.004) * half:.1f}V{mid + max(p, 0.004) * half:.1f}"
            for i, p in enumerate(peaks)
        )
        parts.append(f'<path class="envelope" d="{path}" stroke="#345" stroke-width="{max(step * 0.7, 0.5):.2f}"/>')
    for t in marks.cuts:
        parts.append(f'<line class="cut" x1="{x(t)}" x2="{x(t)}" y1="{_TOP}" y2="{HEIGHT}" stroke="#9aa"/>')
    for t, digit in marks.dtmf:
        parts.append(
            f'<g class="dtmf"><title>keypad {escape(digit)} at {t:.2f} s</title>'
            f'<line x1="{x(t)}" x2="{x(t)}" y1="{_TOP}" y2="{HEIGHT}" stroke="#7a3cc4"/>'
            f'<text x="{x(t)}" y="16" font-size="14" fill="#7a3cc4">{escape(digit)}</text></g>'
        )
    for t, label in marks.bookmarks:
        parts.append(
            f'<g class="bookmark"><title>{escape(label)} at {t:.1f} s</title>'
            f'<line x1="{x(t)}" x2="{x(t)}" y1="{_TOP - 6}" y2="{HEIGHT}" stroke="#c0392b" stroke-width="2"/>'
            f'<path d="M{x(t)} {_TOP - 6}h10l-4 5l4 5h-10z" fill="#c0392b"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
