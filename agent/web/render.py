"""Pages from the templates, and the answers for refused or failed requests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from agent.audit import AuditError
from agent.errors import ArchiveError, NotFound
from agent.web.guard import Refused, SignInNeeded, wants_html
from agent.web.users import can
from firmware.wire.errors import LinerecError

if TYPE_CHECKING:
    from starlette.requests import Request

TEMPLATES = Path(__file__).with_name("templates")


def templates() -> Jinja2Templates:
    """The app's templates (autoescaped)."""
    return Jinja2Templates(directory=str(TEMPLATES))


def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """The template ``template`` filled in, with the session (if any) and what its role may do."""
    session = getattr(request.state, "session", None)
    role = session.user.role if session is not None else ""
    context = {"session": session, "may": lambda permission: bool(role) and can(role, permission), **values}
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, template, context, status_code=status
    )
    return response


def _status(exc: Exception) -> int:
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ArchiveError | AuditError):
        return 500
    return 400


async def refused(request: Request, exc: Exception) -> Response:
    """The answer to a request the app refused or could not carry out: a page for browsers, else text."""
    if isinstance(exc, SignInNeeded):
        if wants_html(request):
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse(
            "sign in first\n", status_code=401, headers={"WWW-Authenticate": 'Cookie realm="linerec"'}
        )
    status = _status(exc)
    message = str(exc) if isinstance(exc, LinerecError) else "the request cannot be carried out"
    if status == 500:
        message = f"the server cannot do this now: {message}"
    if "text/html" in request.headers.get("accept", ""):
        return page(request, "error.html", status=status, status_code=status, message=message)
    return PlainTextResponse(message + "\n", status_code=status)
