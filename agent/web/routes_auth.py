"""Signing in and out, and the health check (the only routes, with ``/static``, open without a session)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.audit import Action
from agent.web.guard import LOGIN_COOKIE, SESSION_COOKIE, checked_form, cookie_options, login_token_ok, signed_in, web
from agent.web.render import page
from agent.web.users import LoginRefused

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_NAME = 64
ANONYMOUS = "web:unknown"  # who the audit log says tried, when the name typed is not a possible user name


def _login_form(request: Request, status: int = 200, error: str | None = None, name: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", status=status, csrf=token, error=error, name=name)
    response.set_cookie(LOGIN_COOKIE, token, **cookie_options(request))
    return response


async def login_page(request: Request) -> Response:
    """``GET /login``: the sign-in form."""
    return _login_form(request)


def _actor(name: str) -> str:
    folded = name.strip().lower()
    ok = 0 < len(folded) <= MAX_NAME and all(c.isalnum() or c in "._-" for c in folded) and folded.isascii()
    return folded if ok else ANONYMOUS


async def login(request: Request) -> Response:
    """``POST /login``: a session cookie for the right name and password; the audit log records either way."""
    ctx = web(request)
    form = await request.form(max_files=0, max_fields=10)
    if not login_token_ok(request, form):
        return _login_form(request, 403, "the sign-in form was out of date; please try again")
    name, password = form.get("name"), form.get("password")
    name = name if isinstance(name, str) else ""
    password = password if isinstance(password, str) else ""
    remote = request.client.host if request.client else ""
    try:
        session = ctx.users.login(name, password, remote=remote)
    except LoginRefused as exc:
        ctx.record(_actor(name), Action.LOGIN_FAILED, None, {"remote": remote, "reason": str(exc)})
        return _login_form(request, 401, str(exc), name=name[:MAX_NAME])
    ctx.record(session.user.name, Action.LOGIN, None, {"remote": remote, "role": session.user.role})
    response = RedirectResponse("/calls", status_code=303)
    response.set_cookie(SESSION_COOKIE, session.token, **cookie_options(request))
    response.delete_cookie(LOGIN_COOKIE, **cookie_options(request))
    return response


async def logout(request: Request) -> Response:
    """``POST /logout``: end the session."""
    session = signed_in(request)
    await checked_form(request, session)
    ctx = web(request)
    ctx.record(session.user.name, Action.LOGOUT, None, {})
    ctx.users.logout(session.token)
    ctx.forget_session(session.token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, **cookie_options(request))
    return response


async def healthz(_request: Request) -> Response:
    """``GET /healthz``: the server answers (it says nothing else)."""
    return PlainTextResponse("ok\n")


OPEN_PATHS = ("/login", "/healthz")  # with /static, the paths a request without a session may use


def routes() -> list[Route]:
    """This module's routes."""
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
