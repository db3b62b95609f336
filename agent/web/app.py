"""The review web app: a Starlette application over the archive, and ``linerec-agent serve``, which runs it.

Pages are server-rendered Jinja templates; the little JavaScript there is
(the player and waveform, the devices table) is in ``static/``, served from
here, so the app works on a box without internet and under a CSP that allows
this origin only. What each route does, and who may use it, is in the
``routes_*`` modules; the checks they all make are in ``agent.web.guard``.

Device status: the ingest daemon (``linerec-agent run``) keeps each device's
retained MQTT status in the index; the devices page polls the index through a
small JSON endpoint, so this process needs no broker and keeps working while
the broker is down.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from agent.web import routes_admin, routes_auth, routes_calls, routes_media, routes_users
from agent.web.guard import Refused, SecurityHeaders
from agent.web.render import refused, templates
from firmware.wire.errors import LinerecError

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.web.context import WebContext

log = logging.getLogger("linerec.agent.web")
STATIC = Path(__file__).with_name("static")


def app_routes() -> list[BaseRoute]:
    """Every route of the app (the security tests walk this list)."""
    return [
        *routes_auth.routes(),
        *routes_calls.routes(),
        *routes_media.routes(),
        *routes_admin.routes(),
        *routes_users.routes(),
        Mount("/static", app=StaticFiles(directory=str(STATIC), follow_symlink=False), name="static"),
    ]


def create_app(ctx: WebContext) -> Starlette:
    """The app serving ``ctx``'s archive; ``ctx`` stays the caller's to close."""
    app = Starlette(
        routes=app_routes(),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={Refused: refused, LinerecError: refused},
    )
    app.state.web = ctx
    app.state.templates = templates()
    return app


def open_context(cfg: AgentConfig) -> WebContext:
    """The archive, audit log, users and identities that ``cfg`` names, opened for the app."""
    from agent.archive import Archive  # noqa: PLC0415
    from agent.audit import AuditLog  # noqa: PLC0415
    from agent.keyring import load_identities  # noqa: PLC0415
    from agent.web.cli_users import users_path  # noqa: PLC0415
    from agent.web.context import WebContext  # noqa: PLC0415
    from agent.web.users import UserStore  # noqa: PLC0415

    identities = load_identities(cfg)
    archive = Archive(cfg.agent.archive_dir, cfg.agent.database_path)
    try:
        audit = AuditLog(cfg.agent.audit_log_path, cfg.agent.audit_key_path)
        users = UserStore(
            users_path(cfg),
            max_failures=cfg.web.max_failures,
            lockout_s=cfg.web.lockout_s,
            idle_s=cfg.web.session_idle_s,
            absolute_s=cfg.web.session_absolute_s,
        )
    except BaseException:
        archive.close()
        raise
    return WebContext(cfg=cfg, archive=archive, audit=audit, users=users, identities=identities)


def serve(cfg: AgentConfig, actor: str) -> int:
    """Run the app under uvicorn on ``[web] listen:port`` until SIGTERM or SIGINT; logs go to stderr."""
    import uvicorn  # noqa: PLC0415

    from agent.audit import Action  # noqa: PLC0415

    ctx = open_context(cfg)
    if cfg.web.live_status:
        from agent.web.live import LiveStatus  # noqa: PLC0415

        ctx.live = LiveStatus(cfg.mqtt, f"{cfg.agent.client_id}-web")
        ctx.live.start()
    try:
        if not cfg.web.cookie_secure and cfg.web.listen not in ("127.0.0.1", "::1"):
            log.warning(
                "web.cookie_secure is false on %s: session cookies will cross the network in the clear", cfg.web.address
            )
        ctx.record(actor, Action.SERVE, None, {"listen": cfg.web.address})
        log.info("web review on http://%s", cfg.web.address)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(ctx),
                host=cfg.web.listen,
                port=cfg.web.port,
                log_config=None,  # the agent's own logging (stderr, one format)
                server_header=False,
                access_log=False,  # the audit log records who asked for what; journald need not hold caller numbers
                proxy_headers=False,
            )
        )
        server.run()
    finally:
        if ctx.live is not None:
            ctx.live.stop()
        ctx.close()
    return 0
