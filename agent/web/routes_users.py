"""The users page (admins): add a user, change a role or a password, unlock, remove; as ``linerec-agent users``.

Every change is recorded as ``Action.USER`` with the user's name as the target and
what changed in the details (never the password), after the form has been checked
and before the store is changed. A change the page refuses (a bad name, role or
password, two passwords that differ, the last admin removed or demoted, an admin
removing themselves) changes nothing and comes back as the page with one line
saying why (status 400); a change carried out redirects to the list (POST,
redirect, GET). Changing a user's password or role ends that user's sessions.

The checks and the change run with no ``await`` between them, so two requests to
this process cannot both pass the last-admin check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from agent.audit import Action
from agent.errors import AgentError
from agent.web.guard import SESSION_COOKIE, checked_form, cookie_options, user, web
from agent.web.render import page
from agent.web.users import ROLES, AuthError, User, check_name, check_password, check_role

if TYPE_CHECKING:
    from starlette.datastructures import FormData
    from starlette.requests import Request

    from agent.web.context import WebContext
    from agent.web.users import Session

PATH = "/admin/users"
DONE = {
    "added": "added {name}",
    "role": "changed the role of {name}; their sessions have ended",
    "password": "set a new password for {name}; their sessions have ended",
    "unlocked": "unlocked {name}",
    "removed": "removed {name}",
}
Change = Callable[["WebContext", "Session", "FormData"], tuple[str, str]]


class ChangeRefused(AgentError, ValueError):
    """A change to the users the page will not make; its text is one line for the admin."""


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _new_password(form: FormData, name: str) -> str:
    password = _field(form, "password")
    if _field(form, "again") != password:
        msg = f"the two passwords typed for {name!r} differ; nothing was changed"
        raise ChangeRefused(msg)
    check_password(name, password)
    return password


def _target(ctx: WebContext, form: FormData) -> User:
    return ctx.users.get(_field(form, "name").strip())


def _only_admin(ctx: WebContext, target: User) -> bool:
    return target.role == "admin" and [u.name for u in ctx.users.users() if u.role == "admin"] == [target.name]


def _listing(
    request: Request, *, status: int = 200, error: str | None = None, values: dict[str, str] | None = None
) -> Response:
    message = None
    done = request.query_params.get("done")
    if error is None and done in DONE:
        try:
            message = DONE[done].format(name=check_name(request.query_params.get("name", "")))
        except AuthError:
            message = None
    return page(
        request,
        "users.html",
        status=status,
        users=web(request).users.users(),
        roles=ROLES,
        error=error,
        message=message,
        values=values or {"name": "", "role": "reviewer"},
    )


async def users_page(request: Request) -> Response:
    """``GET /admin/users``: every user with role, creation time, failed sign-ins and lock, and the forms."""
    session = user(request, "admin")
    web(request).record(session.user.name, Action.LIST, None, {"view": "users"})
    return _listing(request)


def _add(ctx: WebContext, session: Session, form: FormData) -> tuple[str, str]:
    name = check_name(_field(form, "name").strip())
    role = check_role(_field(form, "role"))
    if name in {u.name for u in ctx.users.users()}:
        msg = f"user {name!r} already exists"
        raise ChangeRefused(msg)
    password = _new_password(form, name)
    ctx.record(session.user.name, Action.USER, name, {"change": "add", "role": role, "via": "web"})
    ctx.users.add(name, role, password)
    return "added", name


def _role(ctx: WebContext, session: Session, form: FormData) -> tuple[str, str]:
    target = _target(ctx, form)
    role = check_role(_field(form, "role"))
    if role == target.role:
        msg = f"{target.name!r} already has the {role} role; nothing was changed"
        raise ChangeRefused(msg)
    if _only_admin(ctx, target):
        msg = f"{target.name!r} is the only admin; make another user admin first"
        raise ChangeRefused(msg)
    details = {"change": "role", "role": role, "was": target.role, "via": "web"}
    ctx.record(session.user.name, Action.USER, target.name, details)
    ctx.users.set_role(target.name, role)
    return "role", target.name


def _password(ctx: WebContext, session: Session, form: FormData) -> tuple[str, str]:
    target = _target(ctx, form)
    password = _new_password(form, target.name)
    ctx.record(session.user.name, Action.USER, target.name, {"change": "password", "via": "web"})
    ctx.users.set_password(target.name, password)
    return "password", target.name


def _unlock(ctx: WebContext, session: Session, form: FormData) -> tuple[str, str]:
    target = _target(ctx, form)
    if target.locked_until is None and target.failures == 0:
        msg = f"{target.name!r} is not locked and has no failed sign-ins; nothing was changed"
        raise ChangeRefused(msg)
    details = {"change": "unlock", "locked_until": target.locked_until, "failures": target.failures, "via": "web"}
    ctx.record(session.user.name, Action.USER, target.name, details)
    ctx.users.unlock(target.name)
    return "unlocked", target.name


def _remove(ctx: WebContext, session: Session, form: FormData) -> tuple[str, str]:
    target = _target(ctx, form)
    if _only_admin(ctx, target):
        msg = f"{target.name!r} is the only admin and cannot be removed"
        raise ChangeRefused(msg)
    if target.name == session.user.name:
        msg = "you cannot remove yourself; another admin can"
        raise ChangeRefused(msg)
    if _field(form, "confirm") != "yes":
        msg = f"tick the box to confirm removing {target.name!r}; nothing was changed"
        raise ChangeRefused(msg)
    ctx.record(session.user.name, Action.USER, target.name, {"change": "remove", "role": target.role, "via": "web"})
    ctx.users.remove(target.name)
    return "removed", target.name


async def _change(request: Request, change: Change) -> Response:
    session = user(request, "admin")
    form = await checked_form(request, session)
    ctx = web(request)
    try:
        done, name = change(ctx, session, form)
    except (AuthError, ChangeRefused) as exc:
        values = {"name": _field(form, "name")[:64], "role": _field(form, "role")} if change is _add else None
        return _listing(request, status=400, error=str(exc).splitlines()[0], values=values)
    if name == session.user.name and done in ("role", "password"):
        # The admin's own session ended with the change: back to the sign-in form.
        ctx.forget_session(session.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, **cookie_options(request))
        return response
    return RedirectResponse(str(URL(PATH).include_query_params(done=done, name=name)), status_code=303)


async def post_add(request: Request) -> Response:
    """``POST /admin/users``: a new user (name, role, the password typed twice)."""
    return await _change(request, _add)


async def post_role(request: Request) -> Response:
    """``POST /admin/users/role``: a user's new role; never the last admin's."""
    return await _change(request, _role)


async def post_password(request: Request) -> Response:
    """``POST /admin/users/password``: a user's new password, typed twice."""
    return await _change(request, _password)


async def post_unlock(request: Request) -> Response:
    """``POST /admin/users/unlock``: end a lock and forget the failed sign-ins."""
    return await _change(request, _unlock)


async def post_remove(request: Request) -> Response:
    """``POST /admin/users/remove``: remove a user (confirmed); never the last admin, nor oneself."""
    return await _change(request, _remove)


def routes() -> list[Route]:
    """This module's routes."""
    return [
        Route(PATH, users_page, methods=["GET"]),
        Route(PATH, post_add, methods=["POST"]),
        Route(f"{PATH}/role", post_role, methods=["POST"]),
        Route(f"{PATH}/password", post_password, methods=["POST"]),
        Route(f"{PATH}/unlock", post_unlock, methods=["POST"]),
        Route(f"{PATH}/remove", post_remove, methods=["POST"]),
    ]
