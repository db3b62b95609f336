"""The audit log (auditors and admins), devices with their live status and the retention policy (admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.audit import ACTIONS, Action
from agent.purge import plan
from agent.web.guard import user, web
from agent.web.render import page

if TYPE_CHECKING:
    from starlette.requests import Request

    from agent.web.context import WebContext

AUDIT_SHOWN = 200
PLAN_SHOWN = 50
PLAN_COUNTED = 10_000


async def audit_page(request: Request) -> Response:
    """``GET /audit``: the newest entries, optionally of one actor or action; reading it is itself recorded."""
    session = user(request, "audit")
    ctx = web(request)
    actor = request.query_params.get("actor") or None
    action = request.query_params.get("action") or None
    if action is not None and action not in ACTIONS:
        action = None
    text = request.query_params.get("before", "")
    before = int(text) if text.isdigit() and len(text) <= 18 else None
    filters = {k: v for k, v in (("actor", actor), ("action", action), ("before", before)) if v}
    ctx.record(session.user.name, Action.AUDIT, None, {"view": "web", **filters})
    entries = list(
        ctx.audit.entries(actor=actor, action=action, before=before, limit=AUDIT_SHOWN + 1, newest_first=True)
    )
    older = None
    if len(entries) > AUDIT_SHOWN:
        entries = entries[:AUDIT_SHOWN]
        query = {k: v for k, v in (("actor", actor), ("action", action)) if v}
        older = "/audit?" + urlencode({**query, "before": entries[-1].seq})
    return page(
        request,
        "audit.html",
        entries=entries,
        actions=sorted(ACTIONS),
        actor=actor or "",
        action=action or "",
        older_url=older,
    )


def device_states(ctx: WebContext) -> list[dict[str, Any]]:
    """Every enrolled device with its newest status: live from the broker if one came, else as ingest stored it."""
    out = []
    for device in ctx.archive.devices():
        status, seen, source = device["status"] or {}, device["last_seen"], "stored"
        live = ctx.live.latest(device["id"]) if ctx.live is not None else None
        if live is not None:
            when = datetime.fromtimestamp(live[0], UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            seen, status, source = when, live[1], "live"
        out.append(
            {
                "id": device["id"],
                "enrolled_at": device["enrolled_at"],
                "last_seen": seen,
                "source": source,
                "state": status.get("state", "unknown"),
                "online": status.get("state") == "online",
                "spool_depth": status.get("spool_depth"),
                "spool_bytes": status.get("spool_bytes"),
                "disk_free_bytes": status.get("disk_free_bytes"),
                "firmware_version": status.get("firmware_version"),
            }
        )
    return out


async def devices_page(request: Request) -> Response:
    """``GET /devices``: the devices table (kept current by ``/static/devices.js``)."""
    session = user(request, "admin")
    ctx = web(request)
    ctx.record(session.user.name, Action.LIST, None, {"view": "devices"})
    return page(request, "devices.html", devices=device_states(ctx))


async def devices_json(request: Request) -> Response:
    """``GET /devices/status.json``: what the devices page polls every few seconds."""
    user(request, "admin")
    return JSONResponse({"devices": device_states(web(request))})


async def retention_page(request: Request) -> Response:
    """``GET /retention``: the policy classes and what a purge run now would delete (a dry run)."""
    session = user(request, "admin")
    ctx = web(request)
    ctx.record(session.user.name, Action.LIST, None, {"view": "retention"})
    settings = ctx.cfg.retention
    now = datetime.fromtimestamp(ctx.archive.now(), UTC)
    due = [(row, decision) for row, decision in islice(plan(ctx.archive, settings, now), PLAN_COUNTED + 1)]
    return page(
        request,
        "retention.html",
        settings=settings,
        due=due[:PLAN_SHOWN],
        due_count=min(len(due), PLAN_COUNTED),
        more=len(due) > PLAN_COUNTED,
        now=now,
    )


def routes() -> list[Route]:
    """This module's routes."""
    return [
        Route("/audit", audit_page, methods=["GET"]),
        Route("/devices", devices_page, methods=["GET"]),
        Route("/devices/status.json", devices_json, methods=["GET"]),
        Route("/retention", retention_page, methods=["GET"]),
    ]
