"""The call list (search with keyset pages), one call in full, and what reviewers add to it.

The list takes the same filters as ``linerec-agent search`` (through
``agent.index.Query``), newest first, a page at a time: the next page starts
after the last row shown, by ``(started_utc, id)``, so page 10 000 of a million
calls costs what page 1 does (no OFFSET).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agent import annotate, index
from agent.audit import Action
from agent.cli_calls import details
from agent.cli_common import Context, parse_when
from agent.errors import AgentError
from agent.schema import CALL_COLUMNS
from agent.web.guard import checked_form, user, web
from agent.web.render import page
from firmware.wire.errors import WireError
from firmware.wire.topics import check_recording_id

if TYPE_CHECKING:
    from starlette.datastructures import FormData, QueryParams
    from starlette.requests import Request

    from agent.archive import CallRow
    from agent.web.context import WebContext

FILTERS = ("caller", "name", "since", "until", "device", "min_duration", "max_duration", "tag", "note", "answered")


class BadRequest(AgentError, ValueError):
    """A request whose parameters cannot be used as given."""


def _text(params: QueryParams | FormData, name: str) -> str | None:
    value = params.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _seconds(params: QueryParams, name: str) -> float | None:
    text = _text(params, name)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        msg = f"{name.replace('_', ' ')} {text!r} is not a number of seconds"
        raise BadRequest(msg) from None


def query_of(params: QueryParams) -> index.Query:
    """The search the list's form asks for (dates without a zone are the server's local time)."""
    since, until = _text(params, "since"), _text(params, "until")
    answered = {"yes": True, "no": False}.get(_text(params, "answered") or "")
    tags = [t for t in (_text(params, "tag") or "").replace(",", " ").split() if t]
    return index.Query(
        caller=_text(params, "caller"),
        name=_text(params, "name"),
        since=parse_when("since", since) if since else None,
        until=parse_when("until", until, end=True) if until else None,
        device=_text(params, "device"),
        min_duration=_seconds(params, "min_duration"),
        max_duration=_seconds(params, "max_duration"),
        tags=tuple(tags),
        note=_text(params, "note"),
        answered=answered,
    )


def _cursor(started_utc: str, rec_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started_utc}|{rec_id}".encode()).decode().rstrip("=")


def _after(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    try:
        started, rec_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().split("|")
        check_recording_id(rec_id)
    except (ValueError, WireError):
        msg = "the page asked for does not exist; start again from the first page"
        raise BadRequest(msg) from None
    return started, rec_id


def page_of(
    ctx: WebContext, query: index.Query, after: tuple[str, str] | None, size: int
) -> tuple[list[CallRow], str | None]:
    """One page of calls, newest first, after the cursor; and the cursor of the next page, if there is one."""
    # The WHERE of the CLI's own search, so the web and the command line agree on what a filter means.
    source, params = index.where(ctx.archive, query)
    if after is not None:
        source += " AND " if " WHERE " in source else " WHERE "
        source += "(started_utc < ? OR (started_utc = ? AND id < ?))"
        params += [after[0], after[0], after[1]]
    sql = f"SELECT {CALL_COLUMNS}, started_utc AS _started {source} ORDER BY started_utc DESC, id DESC LIMIT ?"
    rows = ctx.archive.read(sql, (*params, size + 1))
    calls = []
    for raw in rows[:size]:
        values = dict(raw)
        values.pop("_started")
        calls.append(ctx.archive.row(values))
    more = _cursor(rows[size - 1]["_started"], rows[size - 1]["id"]) if len(rows) > size else None
    return calls, more


async def call_list(request: Request) -> Response:
    """``GET /calls``: the filter form and one page of calls."""
    session = user(request, "search")
    ctx = web(request)
    params = request.query_params
    values = {name: _text(params, name) or "" for name in FILTERS}
    try:
        query = query_of(params)
        after = _after(_text(params, "after"))
    except (AgentError, ValueError) as exc:
        return page(request, "calls.html", status=400, calls=[], error=str(exc), values=values, next_url=None)
    action = Action.LIST if query.empty else Action.SEARCH
    ctx.record(session.user.name, action, None, {"filters": query.filters(), "page": "next" if after else "first"})
    calls, more = page_of(ctx, query, after, ctx.cfg.web.page_size)
    next_url = (
        str(URL("/calls").include_query_params(**{k: v for k, v in values.items() if v}, after=more)) if more else None
    )
    return page(request, "calls.html", calls=calls, error=None, values=values, next_url=next_url)


def call_of(ctx: WebContext, rec_id: str) -> CallRow:
    """The archived call ``rec_id`` names; BadRequest for an id that is not one, NotFound if it is not archived."""
    try:
        check_recording_id(rec_id)
    except WireError as exc:
        raise BadRequest(str(exc)) from None
    return annotate.require_call(ctx.archive, rec_id)


async def call_page(request: Request) -> Response:
    """``GET /calls/{id}``: metadata, consent evidence, player, waveform, tags, notes, bookmarks, holds."""
    session = user(request, "search")
    ctx = web(request)
    row = call_of(ctx, request.path_params["rec_id"])
    ctx.record(session.user.name, Action.SHOW, row.id, {"via": "web"})
    shown = details(Context(Path("agent.toml"), session.user.name, _cfg=ctx.cfg, _archive=ctx.archive), row)
    marks = annotate.bookmarks_of(ctx.archive, row.id)
    return page(request, "call.html", row=row, shown=shown, bookmarks=marks, message=request.query_params.get("done"))


def _back(row: CallRow, done: str) -> RedirectResponse:
    return RedirectResponse(str(URL(f"/calls/{row.id}").include_query_params(done=done)), status_code=303)


async def post_tags(request: Request) -> Response:
    """``POST /calls/{id}/tags``: add the tags given (or remove them with ``remove``)."""
    session = user(request, "annotate")
    ctx = web(request)
    form = await checked_form(request, session)
    row = call_of(ctx, request.path_params["rec_id"])
    tags = [index.check_tag(t) for t in (_text(form, "tags") or "").replace(",", " ").split()]
    if not tags:
        msg = "give one or more tags, separated by spaces or commas"
        raise BadRequest(msg)
    how = "remove" if _text(form, "remove") else "add"
    ctx.record(session.user.name, Action.TAG, row.id, {how: tags})
    annotate.change_tags(ctx.archive, row.id, **{how: tags})
    return _back(row, "tags saved")


async def post_note(request: Request) -> Response:
    """``POST /calls/{id}/notes``: write a note."""
    session = user(request, "annotate")
    ctx = web(request)
    form = await checked_form(request, session)
    row = call_of(ctx, request.path_params["rec_id"])
    text = form.get("text")
    text = text if isinstance(text, str) else ""
    ctx.record(session.user.name, Action.NOTE, row.id, {"chars": len(text.strip())})
    annotate.add_note(ctx.archive, row.id, session.user.name, text)
    return _back(row, "note saved")


async def post_bookmark(request: Request) -> Response:
    """``POST /calls/{id}/bookmarks``: mark a moment (seconds) with a label; audited as a note with its time."""
    session = user(request, "annotate")
    ctx = web(request)
    form = await checked_form(request, session)
    row = call_of(ctx, request.path_params["rec_id"])
    at_text, label = _text(form, "at_s") or "", _text(form, "label") or ""
    try:
        at_s = float(at_text)
    except ValueError:
        msg = f"bookmark time {at_text!r} is not a number of seconds"
        raise BadRequest(msg) from None
    ctx.record(session.user.name, Action.BOOKMARK, row.id, {"at_s": round(at_s, 3), "chars": len(label)})
    annotate.add_bookmark(ctx.archive, row.id, session.user.name, at_s, label)
    return _back(row, "bookmark saved")


async def post_hold(request: Request) -> Response:
    """``POST /calls/{id}/holds``: an admin places a legal hold on the call."""
    session = user(request, "admin")
    ctx = web(request)
    form = await checked_form(request, session)
    row = call_of(ctx, request.path_params["rec_id"])
    reason = _text(form, "reason") or ""
    ctx.record(session.user.name, Action.HOLD, f"recording:{row.id}", {"reason": reason[:500], "via": "web"})
    annotate.place_hold(ctx.archive, kind="recording", value=row.id, reason=reason, by=session.user.name)
    return _back(row, "hold placed")


async def post_release(request: Request) -> Response:
    """``POST /holds/{id}/release``: an admin releases a hold."""
    session = user(request, "admin")
    ctx = web(request)
    form = await checked_form(request, session)
    hold_id: int = request.path_params["hold_id"]
    found = {h.id: h for h in annotate.holds(ctx.archive, include_released=True)}
    target = found[hold_id].target if hold_id in found else f"hold:{hold_id}"
    ctx.record(session.user.name, Action.RELEASE, target, {"hold": hold_id, "via": "web"})
    hold = annotate.release_hold(ctx.archive, hold_id, by=session.user.name)
    back = _text(form, "back")
    if hold.kind == "recording" and back == hold.value:
        return RedirectResponse(f"/calls/{hold.value}?done=hold+released", status_code=303)
    return RedirectResponse("/calls", status_code=303)


async def home(request: Request) -> Response:
    """``GET /``: the call list."""
    user(request, "search")
    return RedirectResponse("/calls", status_code=303)


def routes() -> list[Route]:
    """This module's routes."""
    return [
        Route("/", home, methods=["GET"]),
        Route("/calls", call_list, methods=["GET"]),
        Route("/calls/{rec_id}", call_page, methods=["GET"]),
        Route("/calls/{rec_id}/tags", post_tags, methods=["POST"]),
        Route("/calls/{rec_id}/notes", post_note, methods=["POST"]),
        Route("/calls/{rec_id}/bookmarks", post_bookmark, methods=["POST"]),
        Route("/calls/{rec_id}/holds", post_hold, methods=["POST"]),
        Route("/holds/{hold_id:int}/release", post_release, methods=["POST"]),
    ]
