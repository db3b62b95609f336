"""The users page, over real HTTP against uvicorn: admins add, re-role, re-password, unlock and remove users."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.routing import Route

from agent.audit import Action, AuditLog
from agent.web.app import app_routes
from agent.web.cli_users import users_path
from agent.web.users import User, UserStore
from tests.support.web import PASSWORD, Site, running_site

PAGE = {"Accept": "text/html"}
USERS = "/admin/users"
# Every password typed into the page by these tests; none may reach the audit log.
NEW_PASSWORDS = ("bea's first passphrase", "carl gets a new one 42", "mismatch number one!", "mismatch number two!")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("web-users")) as running:
        yield running


def signed_in(site: Site, name: str, password: str = PASSWORD) -> dict[str, str]:
    answer, jar = site.sign_in(name, password)
    assert answer.status == 303, answer.status
    return jar


def csrf_of(site: Site, jar: dict[str, str], path: str = USERS) -> str:
    answer, body = site.request("GET", path, cookies=jar)
    assert answer.status == 200, (path, answer.status)
    found = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert found is not None
    return found.group(1).decode()


def post(site: Site, jar: dict[str, str], path: str, **form: str) -> tuple[int, str, str]:
    """Post a form with the session's token; the status, the Location header and the body."""
    answer, body = site.request("POST", path, form={"csrf": csrf_of(site, jar), **form}, cookies=jar)
    return answer.status, answer.getheader("location") or "", body.decode()


def stored(site: Site) -> dict[str, User]:
    with UserStore(users_path(site.cfg)) as users:
        return {u.name: u for u in users.users()}


def add_directly(site: Site, name: str, role: str) -> None:
    with UserStore(users_path(site.cfg)) as users:
        users.add(name, role, PASSWORD)


def entries(site: Site, **filters: Any) -> list[Any]:
    log = AuditLog(site.cfg.agent.audit_log_path, None)
    try:
        return list(log.entries(**filters))
    finally:
        log.close()


def error_line(body: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', body)
    assert found is not None, body
    return html.unescape(found.group(1))


def users_routes() -> list[tuple[str, str]]:
    found = []
    for route in app_routes():
        if isinstance(route, Route) and route.path.startswith(USERS):
            found += [(method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_the_users_routes_are_in_the_apps_route_table() -> None:
    assert set(users_routes()) == {
        ("GET", USERS),
        ("POST", USERS),
        ("POST", f"{USERS}/role"),
        ("POST", f"{USERS}/password"),
        ("POST", f"{USERS}/unlock"),
        ("POST", f"{USERS}/remove"),
    }


def test_an_admin_sees_every_user_and_a_nav_link_and_the_view_is_audited(site: Site) -> None:
    jar = signed_in(site, "ada")
    answer, body = site.request("GET", USERS, headers=PAGE, cookies=jar)
    assert answer.status == 200
    page = body.decode()
    assert '<a href="/admin/users">Users</a>' in page
    for name, role in (("ada", "admin"), ("rita", "reviewer"), ("otto", "auditor")):
        row = re.search(rf'<tr data-user="{name}">.*?</tr>', page, re.S)
        assert row is not None, name
        assert f'<td class="role">{role}</td>' in row.group(0)
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert " style=" not in page
    [*_, last] = entries(site, actor="ada", action=Action.LIST)
    assert last.details == {"view": "users"}


def test_an_admin_adds_a_user_who_can_then_sign_in(site: Site) -> None:
    jar = signed_in(site, "ada")
    status, location, _ = post(
        site, jar, USERS, name="Bea", role="reviewer", password=NEW_PASSWORDS[0], again=NEW_PASSWORDS[0]
    )
    assert (status, location) == (303, "/admin/users?done=added&name=bea")
    assert stored(site)["bea"].role == "reviewer"
    _, body = site.request("GET", location, cookies=jar)
    assert b'<p class="done" role="status">added bea</p>' in body
    signed_in(site, "bea", NEW_PASSWORDS[0])
    [*_, last] = entries(site, actor="ada", action=Action.USER)
    assert (last.target, last.details) == ("bea", {"change": "add", "role": "reviewer", "via": "web"})


def test_a_bad_new_user_is_refused_with_one_line_and_not_added(site: Site) -> None:
    jar = signed_in(site, "ada")
    cases = [
        ({"name": "dan", "role": "reviewer", "password": NEW_PASSWORDS[2], "again": NEW_PASSWORDS[3]}, "differ"),
        ({"name": "dan", "role": "reviewer", "password": "short", "again": "short"}, "too short"),
        ({"name": "dan", "role": "owner", "password": NEW_PASSWORDS[2], "again": NEW_PASSWORDS[2]}, "not one of"),
        ({"name": "dan smith", "role": "reviewer", "password": NEW_PASSWORDS[2], "again": NEW_PASSWORDS[2]}, "1-64"),
        ({"name": "rita", "role": "reviewer", "password": NEW_PASSWORDS[2], "again": NEW_PASSWORDS[2]}, "exists"),
    ]
    before = len(entries(site, action=Action.USER))
    for form, why in cases:
        status, _, body = post(site, jar, USERS, **form)
        assert status == 400, form
        line = error_line(body)
        assert why in line and "\n" not in line, (form, line)
    assert "dan" not in stored(site)
    assert "dan smith" not in stored(site)
    assert len(entries(site, action=Action.USER)) == before


def test_a_role_change_takes_effect_and_ends_the_users_sessions(site: Site) -> None:
    add_directly(site, "carl", "reviewer")
    carl = signed_in(site, "carl")
    jar = signed_in(site, "ada")
    status, location, _ = post(site, jar, f"{USERS}/role", name="carl", role="auditor")
    assert (status, location) == (303, "/admin/users?done=role&name=carl")
    assert stored(site)["carl"].role == "auditor"
    assert site.request("GET", "/calls", cookies=carl)[0].status == 401
    [*_, last] = entries(site, actor="ada", action=Action.USER, target="carl")
    assert last.details == {"change": "role", "role": "auditor", "was": "reviewer", "via": "web"}
    status, _, body = post(site, jar, f"{USERS}/role", name="carl", role="auditor")
    assert status == 400
    assert "already has the auditor role" in error_line(body)


def test_a_new_password_replaces_the_old_and_ends_the_users_sessions(site: Site) -> None:
    add_directly(site, "cleo", "reviewer")
    cleo = signed_in(site, "cleo")
    jar = signed_in(site, "ada")
    new = NEW_PASSWORDS[1]
    status, _, body = post(site, jar, f"{USERS}/password", name="cleo", password=new, again=new + "x")
    assert status == 400
    assert "differ" in error_line(body)
    assert site.request("GET", "/calls", cookies=cleo)[0].status == 200  # nothing changed yet
    status, location, _ = post(site, jar, f"{USERS}/password", name="cleo", password=new, again=new)
    assert (status, location) == (303, "/admin/users?done=password&name=cleo")
    assert site.request("GET", "/calls", cookies=cleo)[0].status == 401
    assert site.sign_in("cleo")[0].status == 401
    signed_in(site, "cleo", new)
    [*_, last] = entries(site, actor="ada", action=Action.USER, target="cleo")
    assert last.details == {"change": "password", "via": "web"}


def test_an_admin_unlocks_a_locked_account(site: Site) -> None:
    add_directly(site, "dora", "reviewer")
    for _ in range(3):  # max_failures = 3 in this site's agent.toml
        site.sign_in("dora", "not the password at all")
    assert stored(site)["dora"].locked_until is not None
    assert site.sign_in("dora")[0].status == 401
    jar = signed_in(site, "ada")
    _, body = site.request("GET", USERS, cookies=jar)
    row = re.search(rb'<tr data-user="dora">.*?</tr>', body, re.S)
    assert row is not None
    assert b'<td class="failures">3</td>' in row.group(0)
    assert b'action="/admin/users/unlock"' in row.group(0)
    status, location, _ = post(site, jar, f"{USERS}/unlock", name="dora")
    assert (status, location) == (303, "/admin/users?done=unlocked&name=dora")
    assert (stored(site)["dora"].locked_until, stored(site)["dora"].failures) == (None, 0)
    signed_in(site, "dora")
    [*_, last] = entries(site, actor="ada", action=Action.USER, target="dora")
    assert last.details["change"] == "unlock"
    assert last.details["failures"] == 3
    assert last.details["locked_until"] is not None
    status, _, body = post(site, jar, f"{USERS}/unlock", name="dora")
    assert status == 400
    assert "is not locked" in error_line(body)


def test_an_admin_removes_a_user_once_confirmed(site: Site) -> None:
    add_directly(site, "eve", "auditor")
    eve = signed_in(site, "eve")
    jar = signed_in(site, "ada")
    status, _, body = post(site, jar, f"{USERS}/remove", name="eve")
    assert status == 400
    assert "tick the box" in error_line(body)
    assert "eve" in stored(site)
    status, location, _ = post(site, jar, f"{USERS}/remove", name="eve", confirm="yes")
    assert (status, location) == (303, "/admin/users?done=removed&name=eve")
    assert "eve" not in stored(site)
    assert site.request("GET", "/calls", cookies=eve)[0].status == 401
    assert site.sign_in("eve")[0].status == 401
    [*_, last] = entries(site, actor="ada", action=Action.USER, target="eve")
    assert last.details == {"change": "remove", "role": "auditor", "via": "web"}
    status, _, body = post(site, jar, f"{USERS}/remove", name="eve", confirm="yes")
    assert status == 400
    assert "there is no user 'eve'" in error_line(body)


def test_the_last_admin_cannot_be_removed_or_demoted_and_no_admin_removes_themselves(site: Site) -> None:
    assert [u.name for u in stored(site).values() if u.role == "admin"] == ["ada"]
    jar = signed_in(site, "ada")
    before = len(entries(site, action=Action.USER))
    status, _, body = post(site, jar, f"{USERS}/remove", name="ada", confirm="yes")
    assert status == 400
    assert error_line(body) == "'ada' is the only admin and cannot be removed"
    for role in ("reviewer", "auditor"):
        status, _, body = post(site, jar, f"{USERS}/role", name="ada", role=role)
        assert status == 400
        assert error_line(body) == "'ada' is the only admin; make another user admin first"
    assert stored(site)["ada"].role == "admin"
    assert len(entries(site, action=Action.USER)) == before
    # With a second admin, ada still cannot remove herself; the other admin may demote her.
    add_directly(site, "fay", "admin")
    status, _, body = post(site, jar, f"{USERS}/remove", name="ada", confirm="yes")
    assert status == 400
    assert error_line(body) == "you cannot remove yourself; another admin can"
    fay = signed_in(site, "fay")
    status, _, _ = post(site, fay, f"{USERS}/role", name="ada", role="reviewer")
    assert status == 303
    status, _, body = post(site, fay, f"{USERS}/role", name="fay", role="reviewer")
    assert status == 400
    assert "only admin" in error_line(body)
    # Put things back: ada admin again, fay gone.
    assert post(site, fay, f"{USERS}/role", name="ada", role="admin")[0] == 303
    ada = signed_in(site, "ada")
    assert post(site, ada, f"{USERS}/remove", name="fay", confirm="yes")[0] == 303
    assert [u.name for u in stored(site).values() if u.role == "admin"] == ["ada"]


def test_an_admin_changing_their_own_password_is_sent_to_sign_in_again(site: Site) -> None:
    add_directly(site, "gus", "admin")
    gus = signed_in(site, "gus")
    new = NEW_PASSWORDS[1]
    status, location, _ = post(site, gus, f"{USERS}/password", name="gus", password=new, again=new)
    assert (status, location) == (303, "/login")
    assert site.request("GET", USERS, cookies=gus)[0].status == 401
    gus = signed_in(site, "gus", new)
    ada = signed_in(site, "ada")
    assert post(site, ada, f"{USERS}/remove", name="gus", confirm="yes")[0] == 303


def test_a_reviewer_and_an_auditor_get_403_on_every_users_route(site: Site) -> None:
    before = stored(site)
    for name in ("rita", "otto"):
        jar = signed_in(site, name)
        token = csrf_of(site, jar, "/calls")
        _, nav = site.request("GET", "/calls", cookies=jar)
        assert b"/admin/users" not in nav
        form = {"csrf": token, "name": "rita", "role": "admin", "password": "x" * 20, "again": "x" * 20}
        for method, path in users_routes():
            answer, body = site.request(
                method, path, headers=PAGE, form={**form, "confirm": "yes"} if method == "POST" else None, cookies=jar
            )
            assert answer.status == 403, (name, method, path, answer.status)
            assert b"Not allowed" in body
    assert stored(site) == before
    assert entries(site, actor="rita", action=Action.USER) == []
    assert entries(site, actor="otto", action=Action.USER) == []


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    add_directly(site, "hal", "reviewer")
    jar = signed_in(site, "ada")
    before = stored(site)
    audited = len(entries(site, action=Action.USER))
    form = {"name": "hal", "role": "auditor", "password": "y" * 20, "again": "y" * 20, "confirm": "yes"}
    for _, path in (r for r in users_routes() if r[0] == "POST"):
        for token in ({}, {"csrf": ""}, {"csrf": "forged"}):
            answer, _ = site.request("POST", path, form={**form, **token}, cookies=jar)
            assert answer.status == 403, (path, token, answer.status)
        answer, _ = site.request("POST", path, form=form, headers={"X-CSRF-Token": "forged"}, cookies=jar)
        assert answer.status == 403, path
    assert stored(site) == before
    assert len(entries(site, action=Action.USER)) == audited
    assert site.request("GET", USERS, cookies=jar)[0].status == 200


def test_the_audit_log_records_user_changes_and_never_a_password(site: Site) -> None:
    changes = entries(site, actor="ada", action=Action.USER)
    assert {e.details["change"] for e in changes} >= {"add", "role", "password", "unlock", "remove"}
    for entry in changes:
        assert set(entry.details) <= {"change", "role", "was", "locked_until", "failures", "via"}
    files = sorted(site.cfg.agent.audit_log_path.parent.glob(site.cfg.agent.audit_log_path.name + "*"))
    assert files
    raw = b"".join(path.read_bytes() for path in files)
    assert b"carl" in raw  # the bytes are readable as stored: a password would show
    for password in (*NEW_PASSWORDS, PASSWORD):
        assert password.encode() not in raw, password
        assert password.replace(" ", "+").encode() not in raw, password
