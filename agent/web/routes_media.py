"""The audio of a call in the browser: the player's stream, the waveform picture, and snippet downloads.

``GET /calls/{id}/audio`` serves the decrypted recording with byte ranges
(``agent.web.audio``); the first request for a call's audio in a session is
audited as a listen (the player asks with ``preload="none"``, so that first
request is the play starting), the range requests that follow are not.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from agent import annotate, export, index
from agent.audit import Action
from agent.errors import AgentError, NotFound
from agent.web import waveform
from agent.web.audio import RangeNotSatisfiable, open_view, parse_range, stream
from agent.web.guard import checked_form, user, web
from agent.web.routes_calls import BadRequest, call_of
from firmware.wire.errors import WireError
from firmware.wire.manifest import verify_manifest

if TYPE_CHECKING:
    from starlette.requests import Request

    from agent.archive import CallRow
    from agent.web.context import WebContext

PLAYABLE = ("trimmed", "original")
DOWNLOAD_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg"}


def _choice(request: Request) -> str:
    choice = request.query_params.get("audio", "trimmed")
    if choice not in PLAYABLE:
        msg = f"audio {choice!r} is not one of {', '.join(PLAYABLE)}"
        raise BadRequest(msg)
    return choice


def _source(row: CallRow, choice: str) -> tuple[Path, str]:
    try:
        return export.source_of(row, choice)
    except AgentError as exc:
        raise NotFound(str(exc)) from None


async def audio(request: Request) -> Response:
    """``GET /calls/{id}/audio[?audio=original]``: the recording, whole (200) or a byte range (206, 416)."""
    session = user(request, "listen")
    ctx = web(request)
    row = call_of(ctx, request.path_params["rec_id"])
    source, which = _source(row, _choice(request))
    view = await run_in_threadpool(open_view, source, ctx.identities)
    try:
        span = parse_range(request.headers.get("range"), view.size)
    except RangeNotSatisfiable:
        view.close()
        return Response(status_code=416, headers={"Content-Range": f"bytes */{view.size}", "Accept-Ranges": "bytes"})
    if ctx.first_listen(session.token, f"{row.id}:{which}"):
        try:
            ctx.record(session.user.name, Action.LISTEN, row.id, {"audio": which, "via": "web"})
        except AgentError:
            view.close()
            raise
    first, last = span if span is not None else (0, view.size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1),
        "Content-Disposition": "inline",
    }
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{view.size}"
    if request.method == "HEAD" or view.size == 0:
        view.close()
        return Response(status_code=status, headers=headers, media_type=view.media_type)
    return StreamingResponse(stream(view, first, last), status_code=status, headers=headers, media_type=view.media_type)


def manifest_audio(ctx: WebContext, row: CallRow) -> dict[str, Any] | None:
    """The ``audio`` facts of the call's signed manifest, verified against its device's key; None if unreadable."""
    from firmware.wire import age  # noqa: PLC0415

    key = ctx.archive.device_key(row.device)
    if key is None:
        return None
    try:
        manifest = verify_manifest(age.decrypt_bytes(Path(row.manifest_path).read_bytes(), ctx.identities), key)
    except (OSError, WireError):
        return None
    return manifest.audio if manifest.recording_id == row.id else None


def _picture(ctx: WebContext, row: CallRow, choice: str) -> str:
    from agent.samples import open_samples  # noqa: PLC0415

    source, which = _source(row, choice)
    key = f"{row.id}:{which}"
    peaks = ctx.envelope(key)
    with open_samples(source, ctx.identities) as reader:
        duration = reader.frames / reader.rate if reader.rate else 0.0
        if peaks is None:
            peaks = waveform.envelope(reader)
            ctx.keep_envelope(key, peaks)
    marks = waveform.marks_of(
        manifest_audio(ctx, row),
        index.consent_evidence(ctx.archive, row.id),
        [(b.at_s, b.label) for b in annotate.bookmarks_of(ctx.archive, row.id)],
        duration_s=duration,
        trimmed=which == "trimmed",
    )
    return waveform.render(peaks, marks)


async def picture(request: Request) -> Response:
    """``GET /calls/{id}/waveform.svg``: the envelope with speech, notice, keypad and bookmark marks."""
    user(request, "listen")
    ctx = web(request)
    row = call_of(ctx, request.path_params["rec_id"])
    svg = await run_in_threadpool(_picture, ctx, row, _choice(request))
    return Response(svg, media_type="image/svg+xml")


def _time(form: Any, name: str) -> float | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return export.parse_time(value, name)


async def snippet(request: Request) -> Response:
    """``POST /calls/{id}/export``: a snippet (start, end, format, audio) as a download, made by ``agent.export``."""
    session = user(request, "export")
    ctx = web(request)
    form = await checked_form(request, session)
    row = call_of(ctx, request.path_params["rec_id"])
    fmt = form.get("format") or "wav"
    choice = form.get("audio") or "trimmed"
    if fmt not in DOWNLOAD_TYPES or choice not in export.CHOICES:
        msg = f"format {fmt!r} or audio {choice!r} is not one this app exports"
        raise BadRequest(msg)
    start, end = _time(form, "start"), _time(form, "end")
    source, which = export.source_of(row, str(choice))
    ctx.record(
        session.user.name,
        Action.EXPORT,
        row.id,
        {"audio": which, "start": start, "end": end, "format": fmt, "via": "web"},
    )
    folder = Path(tempfile.mkdtemp(prefix="linerec-web-export-"))
    target = folder / f"snippet.{fmt}"
    try:
        await run_in_threadpool(export.export, source, target, ctx.identities, start=start, end=end)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    span = f"_{start or 0:g}-{end:g}s" if end is not None else (f"_{start:g}s-end" if start else "")
    return FileResponse(
        target,
        media_type=DOWNLOAD_TYPES[str(fmt)],
        filename=f"{row.id}{span}.{fmt}",
        background=BackgroundTask(_remove, folder),
    )


def _remove(folder: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)


def routes() -> list[Route]:
    """This module's routes."""
    return [
        Route("/calls/{rec_id}/audio", audio, methods=["GET"]),
        Route("/calls/{rec_id}/waveform.svg", picture, methods=["GET"]),
        Route("/calls/{rec_id}/export", snippet, methods=["POST"]),
    ]
