"""Who is asking and may they: the session cookie, roles, CSRF tokens, and the headers on every answer.

* Every route but ``/login``, ``/static/*`` and ``/healthz`` calls :func:`signed_in`:
  without a live session a page (a GET that accepts HTML) is sent to ``/login``,
  anything else gets 401.
* :func:`allowed` checks the role's permission (``agent.web.users.can``): 403.
* Every POST calls :func:`checked_form`: the session's CSRF token must come in the
  ``csrf`` form field or the ``X-CSRF-Token`` header, else 403. The sign-in form,
  which has no session yet, uses a double-submit cookie instead (:data:`LOGIN_COOKIE`).
* :class:`SecurityHeaders` adds the Content-Security-Policy (this origin only, no
  inline script or style), nosniff, no referrer, no framing, and ``no-store``
  on everything but the static files.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData, MutableHeaders

from agent.errors import AgentError
from agent.web.users import Session, can

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from agent.web.context import WebContext

SESSION_COOKIE = "linerec_session"
LOGIN_COOKIE = "linerec_login"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_FIELDS = 50
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self';"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


class Refused(AgentError):
    """A request the app will not carry out; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SignInNeeded(Refused):
    """No live session: a page goes to the sign-in form, anything else gets 401."""

    def __init__(self) -> None:
        super().__init__(401, "sign in first")


def web(request: Request) -> WebContext:
    """The app's shared state."""
    found: WebContext = request.app.state.web
    return found


def signed_in(request: Request) -> Session:
    """The request's live session; SignInNeeded without one."""
    token = request.cookies.get(SESSION_COOKIE)
    found = web(request).users.session(token) if token else None
    if found is None:
        raise SignInNeeded
    request.state.session = found
    return found


def allowed(session: Session, permission: str) -> None:
    """Refused (403) unless the session's role has ``permission``."""
    if not can(session.user.role, permission):
        msg = f"the {session.user.role} role may not {permission}"
        raise Refused(403, msg)


def user(request: Request, permission: str) -> Session:
    """The live session of a user whose role has ``permission``."""
    session = signed_in(request)
    allowed(session, permission)
    return session


async def checked_form(request: Request, session: Session) -> FormData:
    """The posted form, once its CSRF token (field or header) is the session's; Refused (403) otherwise."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    field = form.get("csrf")
    token = request.headers.get(CSRF_HEADER) or (field if isinstance(field, str) else None)
    if not web(request).users.check_csrf(session, token):
        msg = "the form's security token is missing or out of date; reload the page and try again"
        raise Refused(403, msg)
    return form


def login_token_ok(request: Request, form: FormData) -> bool:
    """Whether the sign-in form carries the token its cookie holds (double submit; there is no session yet)."""
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    field = form.get("csrf")
    return bool(cookie) and isinstance(field, str) and hmac.compare_digest(cookie.encode(), field.encode())


def wants_html(request: Request) -> bool:
    """Whether the request is a browser asking for a page."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def cookie_options(request: Request) -> dict[str, Any]:
    """How the app's cookies are set: HttpOnly, SameSite=Strict, Secure as configured, for the whole site."""
    return {"httponly": True, "samesite": "strict", "secure": web(request).cfg.web.cookie_secure, "path": "/"}


class SecurityHeaders:
    """ASGI middleware adding the security headers to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)
