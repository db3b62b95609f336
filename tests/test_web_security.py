"""The review app refuses what it must, over real HTTP against uvicorn: sessions, CSRF, roles, paths, ranges."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.routing import Mount, Route

from agent.audit import Action, AuditLog
from agent.web.app import app_routes
from agent.web.audio import wav_header
from agent.web.cli_users import users_path
from agent.web.guard import cookie_options
from agent.web.routes_auth import OPEN_PATHS
from agent.web.users import UserStore
from firmware.wire import age
from tests.support.web import PASSWORD, Site, running_site

PAGE = {"Accept": "text/html"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("web-security")) as running:
        yield running


def signed_in(site: Site, name: str) -> dict[str, str]:
    answer, jar = site.sign_in(name)
    assert answer.status == 303, answer.status
    return jar


def csrf_of(site: Site, jar: dict[str, str], rec_id: str) -> str:
    _, body = site.request("GET", f"/calls/{rec_id}", cookies=jar)
    found = re.search(rb'name="csrf" value="([^"]+)"', body)
    assert found is not None
    return found.group(1).decode()


def entries(site: Site, **filters: Any) -> list[Any]:
    log = AuditLog(site.cfg.agent.audit_log_path, None)
    try:
        return list(log.entries(**filters))
    finally:
        log.close()


def concrete(path: str, site: Site) -> str:
    return path.replace("{rec_id}", site.calls["acme"]).replace("{hold_id:int}", "1")


def every_route(site: Site) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, with real parameters; the static mount aside."""
    found = []
    for route in app_routes():
        if isinstance(route, Mount):
            assert route.path == "/static"
            continue
        assert isinstance(route, Route)
        found += [(method, concrete(route.path, site)) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


# --- sessions --------------------------------------------------------------------------------


def test_every_route_but_sign_in_and_health_refuses_a_request_without_a_session(site: Site) -> None:
    checked = 0
    for method, path in every_route(site):
        if path in OPEN_PATHS:
            continue
        for cookies in ({}, {"linerec_session": "forged-token"}):
            answer, body = site.request(method, path, cookies=cookies, form={} if method == "POST" else None)
            assert answer.status == 401, (method, path, answer.status)
            assert b"sign in first" in body
        checked += 1
    assert checked >= 14  # the list is the app's own: a route added later is checked too


def test_a_page_asked_for_without_a_session_goes_to_the_sign_in_form(site: Site) -> None:
    answer, _ = site.request("GET", f"/calls/{site.calls['acme']}", headers=PAGE, cookies={})
    assert (answer.status, answer.getheader("location")) == (303, "/login")
    answer, body = site.request("GET", "/login", headers=PAGE, cookies={})
    assert answer.status == 200
    assert b'name="password"' in body


def test_the_health_check_answers_without_a_session_and_says_nothing_else(site: Site) -> None:
    answer, body = site.request("GET", "/healthz", cookies={})
    assert (answer.status, body) == (200, b"ok\n")


def test_the_session_cookie_is_httponly_strict_and_for_the_whole_site(site: Site) -> None:
    answer, _ = site.sign_in("rita")
    [cookie] = [c for c in answer.headers.get_all("set-cookie") or [] if c.startswith("linerec_session=")]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # this site sets cookie_secure = false: plain HTTP on loopback


def test_cookies_are_secure_unless_the_config_says_otherwise(site: Site) -> None:
    secure = dataclasses.replace(site.cfg, web=dataclasses.replace(site.cfg.web, cookie_secure=True))
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(web=SimpleNamespace(cfg=secure))))
    assert cookie_options(request) == {"httponly": True, "samesite": "strict", "secure": True, "path": "/"}
    assert type(site.cfg.web)().cookie_secure is True


def test_a_locked_out_account_stays_locked_even_with_the_right_password(site: Site) -> None:
    with UserStore(users_path(site.cfg)) as users:
        users.add("lena", "reviewer", PASSWORD)
    for _ in range(3):  # max_failures = 3 in this site's agent.toml
        answer, jar = site.sign_in("lena", "not the password at all")
        assert answer.status == 401
        assert "linerec_session" not in jar
    answer, jar = site.sign_in("lena")
    assert answer.status == 401
    assert "linerec_session" not in jar
    answer, jar = site.sign_in("lena")
    assert answer.status == 401
    assert "linerec_session" not in jar
    failed = entries(site, actor="lena", action=Action.LOGIN_FAILED)
    assert len(failed) == 5
    assert "locked" in failed[-1].details["reason"]
    assert entries(site, actor="lena", action=Action.LOGIN) == []


def test_signing_in_and_failing_to_are_audited_with_the_address(site: Site) -> None:
    signed_in(site, "ada")
    site.sign_in("ada", "wrong password here")
    [*_, ok] = entries(site, actor="ada", action=Action.LOGIN)
    [*_, failed] = entries(site, actor="ada", action=Action.LOGIN_FAILED)
    assert ok.details == {"remote": "127.0.0.1", "role": "admin"}
    assert failed.details == {"remote": "127.0.0.1", "reason": "wrong user name or password"}


def test_signing_out_ends_the_session(site: Site) -> None:
    jar = signed_in(site, "rita")
    token = csrf_of(site, jar, site.calls["acme"])
    answer, _ = site.request("POST", "/logout", form={"csrf": token}, cookies=jar)
    assert answer.status == 303
    answer, _ = site.request("GET", "/calls", cookies=jar)
    assert answer.status == 401


# --- CSRF ------------------------------------------------------------------------------------


def test_every_post_without_the_sessions_csrf_token_is_refused(site: Site) -> None:
    jar = signed_in(site, "ada")
    posts = [path for method, path in every_route(site) if method == "POST" and path not in OPEN_PATHS]
    assert len(posts) >= 6
    rid = site.calls["acme"]
    form = {"text": "x", "tags": "x", "at_s": "1", "label": "x", "reason": "x", "start": "0", "end": "1"}
    for path in posts:
        for token in ({}, {"csrf": "wrong"}, {"csrf": ""}):
            answer, _ = site.request("POST", path, form={**form, **token}, cookies=jar)
            assert answer.status == 403, (path, token, answer.status)
        answer, _ = site.request("POST", path, form=form, headers={"X-CSRF-Token": "forged"}, cookies=jar)
        assert answer.status == 403, path
    _, page = site.request("GET", f"/calls/{rid}", cookies=jar)
    assert b"No notes." in page  # nothing a refused post asked for was done
    answer, _ = site.request("GET", "/calls", cookies=jar)
    assert answer.status == 200  # the refused logout left the session alone


def test_a_post_with_the_token_in_the_header_is_accepted(site: Site) -> None:
    jar = signed_in(site, "rita")
    rid = site.calls["clinic"]
    token = csrf_of(site, jar, rid)
    answer, _ = site.request(
        "POST", f"/calls/{rid}/tags", form={"tags": "header-ok"}, headers={"X-CSRF-Token": token}, cookies=jar
    )
    assert answer.status == 303
    _, page = site.request("GET", f"/calls/{rid}", cookies=jar)
    assert b"header-ok" in page


def test_the_sign_in_form_needs_its_own_token(site: Site) -> None:
    answer, _ = site.request("POST", "/login", form={"name": "ada", "password": PASSWORD}, cookies={})
    assert answer.status == 403
    answer, _ = site.request(
        "POST", "/login", form={"name": "ada", "password": PASSWORD, "csrf": "a"}, cookies={"linerec_login": "b"}
    )
    assert answer.status == 403


# --- paths -----------------------------------------------------------------------------------

TRAVERSALS = [
    "/static/../agent/config.py",
    "/static/../../pyproject.toml",
    "/static/%2e%2e/agent/config.py",
    "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/..%2f..%2fagent%2fconfig.py",
    "/static/..%5c..%5cpyproject.toml",
    "/static/%252e%252e/agent/config.py",
    "/static//etc/passwd",
    "/calls/..%2f..%2fagent.toml/audio",
    "/calls/%2e%2e/audio",
    "/calls/....%2f%2f/waveform.svg",
    "/calls/..%5cidentity.txt/audio",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_finds_no_file(site: Site, path: str) -> None:
    jar = signed_in(site, "ada")
    answer, body = site.request("GET", path, cookies=jar)
    assert answer.status in (400, 404), (path, answer.status)
    for secret in (b"from __future__", b"[project]", b"root:", b"AGE-SECRET-KEY", b"[agent]"):
        assert secret not in body


def test_a_recording_id_that_is_not_one_is_a_bad_request_and_an_unknown_one_not_found(site: Site) -> None:
    jar = signed_in(site, "rita")
    answer, body = site.request("GET", "/calls/..%20etc/audio", cookies=jar)
    assert answer.status == 400
    assert b"recording id" in body
    answer, _ = site.request("GET", "/calls/20990101T000000000Z-00000000/audio", cookies=jar)
    assert answer.status == 404


def test_static_files_are_served(site: Site) -> None:
    answer, body = site.request("GET", "/static/app.css", cookies={})
    assert answer.status == 200
    assert b"@media" in body


# --- headers and roles -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/calls", "/static/player.js", "/nowhere"])
def test_every_answer_carries_the_security_headers(site: Site, path: str) -> None:
    answer, _ = site.request("GET", path, cookies={})
    csp = answer.getheader("content-security-policy") or ""
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.getheader("x-content-type-options") == "nosniff"
    assert answer.getheader("referrer-policy") == "no-referrer"
    assert answer.getheader("x-frame-options") == "DENY"


def test_pages_hold_no_inline_script(site: Site) -> None:
    jar = signed_in(site, "ada")
    for path in ("/login", "/calls", f"/calls/{site.calls['acme']}", "/audit", "/devices", "/retention"):
        _, body = site.request("GET", path, cookies=jar)
        assert re.search(rb"<script(?![^>]*\bsrc=)", body) is None, path
        assert b" style=" not in body and b" onclick=" not in body, path


ADMIN_ONLY = ["/devices", "/devices/status.json", "/retention"]


def test_a_reviewer_cannot_open_admin_pages(site: Site) -> None:
    jar = signed_in(site, "rita")
    for path in [*ADMIN_ONLY, "/audit"]:
        answer, body = site.request("GET", path, headers=PAGE, cookies=jar)
        assert answer.status == 403, path
        assert b"Not allowed" in body
    rid = site.calls["acme"]
    token = csrf_of(site, jar, rid)
    answer, _ = site.request("POST", f"/calls/{rid}/holds", form={"csrf": token, "reason": "case 1"}, cookies=jar)
    assert answer.status == 403


def test_an_auditor_reads_the_audit_log_but_cannot_listen_annotate_or_export(site: Site) -> None:
    jar = signed_in(site, "otto")
    rid = site.calls["acme"]
    assert site.request("GET", "/audit", cookies=jar)[0].status == 200
    for path in (f"/calls/{rid}/audio", f"/calls/{rid}/waveform.svg", *ADMIN_ONLY):
        assert site.request("GET", path, cookies=jar)[0].status == 403, path
    _, page = site.request("GET", f"/calls/{rid}", cookies=jar)
    assert b"<audio" not in page
    token = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert token is not None
    for path, form in ((f"/calls/{rid}/notes", {"text": "x"}), (f"/calls/{rid}/export", {"start": "0"})):
        answer, _ = site.request("POST", path, form={**form, "csrf": token.group(1).decode()}, cookies=jar)
        assert answer.status == 403, path


def test_an_admin_opens_the_devices_and_retention_pages(site: Site) -> None:
    jar = signed_in(site, "ada")
    answer, body = site.request("GET", "/devices/status.json", cookies=jar)
    assert answer.status == 200
    assert b'"spool_depth":2' in body.replace(b" ", b"")
    answer, body = site.request("GET", "/retention", cookies=jar)
    assert answer.status == 200
    assert b"agent.toml" in body


# --- the audio stream ----------------------------------------------------------------------------


def plaintext(site: Site, rec_id: str) -> bytes:
    [path] = (site.cfg.agent.archive_dir).rglob(f"{rec_id}.flac.age")
    identity = site.cfg.agent.identity.read_text().splitlines()[-1]
    return age.decrypt_bytes(path.read_bytes(), [age.parse_identity(identity)])


@pytest.fixture(scope="module")
def listener(site: Site) -> dict[str, str]:
    return signed_in(site, "rita")


def test_the_whole_recording_is_served_with_ranges_offered_and_not_cached(site: Site, listener: dict[str, str]) -> None:
    rid = site.calls["bakery"]
    answer, body = site.request("GET", f"/calls/{rid}/audio", cookies=listener)
    assert answer.status == 200
    assert body == plaintext(site, rid)
    assert answer.getheader("accept-ranges") == "bytes"
    assert answer.getheader("content-type") == "audio/flac"
    assert answer.getheader("cache-control") == "no-store"
    assert int(answer.getheader("content-length") or 0) == len(body)


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-99", (0, 99)), ("bytes=1000-", (1000, None)), ("bytes=-100", (-100, None)), ("bytes=70000-70010", None)],
)
def test_a_byte_range_is_served_as_partial_content(
    site: Site, listener: dict[str, str], header: str, span: tuple[int, int | None] | None
) -> None:
    rid = site.calls["bakery"]
    whole = plaintext(site, rid)
    size = len(whole)
    first, last = span if span is not None else (70000, 70010)
    start = first % size
    end = size - 1 if last is None else min(last, size - 1)
    answer, body = site.request("GET", f"/calls/{rid}/audio", headers={"Range": header}, cookies=listener)
    assert answer.status == 206
    assert answer.getheader("content-range") == f"bytes {start}-{end}/{size}"
    assert body == whole[start : end + 1]


def test_a_range_past_the_end_is_not_satisfiable(site: Site, listener: dict[str, str]) -> None:
    rid = site.calls["bakery"]
    size = len(plaintext(site, rid))
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        answer, body = site.request("GET", f"/calls/{rid}/audio", headers={"Range": header}, cookies=listener)
        assert answer.status == 416, header
        assert answer.getheader("content-range") == f"bytes */{size}"
        assert body == b""


def test_one_listen_is_audited_per_play_not_per_range_request(site: Site) -> None:
    jar = signed_in(site, "rita")
    rid = site.calls["clinic"]
    before = len(entries(site, actor="rita", action=Action.LISTEN, target=rid))
    for header in ("bytes=0-", "bytes=5000-", "bytes=-2000", "bytes=100-200"):
        assert site.request("GET", f"/calls/{rid}/audio", headers={"Range": header}, cookies=jar)[0].status == 206
    listens = entries(site, actor="rita", action=Action.LISTEN, target=rid)
    assert len(listens) == before + 1
    assert listens[-1].details == {"audio": "trimmed", "via": "web"}


def test_the_waveform_marks_speech_the_notice_the_keypad_and_bookmarks(site: Site, listener: dict[str, str]) -> None:
    rid = site.calls["acme"]
    answer, body = site.request("GET", f"/calls/{rid}/waveform.svg", cookies=listener)
    assert answer.status == 200
    assert answer.getheader("content-type", "").startswith("image/svg+xml")
    svg = body.decode()
    # Speech 3.4-6.6 s as captured is 2.4-5.6 s of the recording (the trim cut 2.0-3.0 s away).
    assert "speech 2.4-5.6 s" in svg
    assert "keypad 5 at 3.00 s" in svg
    assert 'class="notice"' in svg
    assert 'class="cut" x1="400.0"' in svg  # 2.0 s of 6.0 s across 1200


# --- the list ----------------------------------------------------------------------------------


def test_the_call_list_pages_by_keyset_newest_first_without_repeats(site: Site) -> None:
    jar = signed_in(site, "rita")
    seen: list[str] = []
    path: str | None = "/calls"
    while path is not None:
        answer, body = site.request("GET", path, cookies=jar)
        assert answer.status == 200
        ids = re.findall(r'href="/calls/([0-9A-Za-z-]+)"', body.decode())
        assert len(ids) <= 5
        seen += ids
        found = re.search(r'rel="next" href="([^"]+)"', body.decode())
        path = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == len(set(seen)) == 9
    assert seen == sorted(seen, reverse=True)


def test_a_search_is_audited_with_its_filters(site: Site) -> None:
    jar = signed_in(site, "rita")
    answer, body = site.request("GET", "/calls?caller=212-555&answered=yes", cookies=jar)
    assert answer.status == 200
    assert re.findall(r'href="/calls/([0-9A-Za-z-]+)"', body.decode()) == [site.calls["acme"]]
    [*_, last] = entries(site, actor="rita", action=Action.SEARCH)
    assert last.details["filters"] == {"caller": "212-555", "answered": True}


def test_a_bad_filter_is_an_error_on_the_page_not_a_crash(site: Site) -> None:
    jar = signed_in(site, "rita")
    answer, body = site.request("GET", "/calls?since=yesterday-ish", cookies=jar)
    assert answer.status == 400
    assert b"is not a date" in body


# --- imports ------------------------------------------------------------------------------------


def test_the_command_line_loads_no_web_framework_until_serve() -> None:
    code = "import agent.cli, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    loaded = {m.split(".")[0] for m in __import__("json").loads(out.stdout)}
    assert loaded.isdisjoint({"starlette", "uvicorn", "jinja2", "multipart", "numpy", "soundfile"})


def test_a_segment_log_is_served_as_a_wav_whose_header_says_its_length() -> None:
    header = wav_header(8000, 16000)
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert int.from_bytes(header[40:44], "little") == 32000
    assert len(header) == 44


def test_the_audit_log_page_goes_back_to_older_entries_page_by_page(site: Site) -> None:
    log = AuditLog(site.cfg.agent.audit_log_path, site.cfg.agent.audit_key_path)
    try:
        made = [log.record("pager", Action.LIST, None, {"n": n}).seq for n in range(250)]
    finally:
        log.close()
    jar = signed_in(site, "otto")
    _, first = site.request("GET", "/audit?actor=pager", cookies=jar)
    shown = [int(n) for n in re.findall(rb'<tr class="action-list"><td>(\d+)</td>', first)]
    assert shown == made[::-1][:200]
    older = re.search(rb'<a rel="next" href="([^"]+)">Older entries', first)
    assert older is not None
    _, second = site.request("GET", older.group(1).decode().replace("&amp;", "&"), cookies=jar)
    rest = [int(n) for n in re.findall(rb'<tr class="action-list"><td>(\d+)</td>', second)]
    assert rest == made[::-1][200:]
    assert b"Older entries" not in second
