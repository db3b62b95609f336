"""The review app in Chromium (Playwright): sign in, search, play, bookmark, note, export, roles, audit, a phone.

Screenshots of each step are saved under ``test-artifacts/web/`` (ignored by
git); the path is printed at the end of the module.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.web import PASSWORD, Site, running_site

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
ARGS = [
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("web-browser")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = [*ARGS, "--no-sandbox"] if os.geteuid() == 0 else ARGS
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        launched.close()
    # Printed past pytest's capture, at the end of the module's tests, so a reader sees where the pictures are.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nweb screenshots: {ARTIFACTS}")


def new_page(browser: Browser, site: Site, width: int = 1280, height: int = 900) -> Page:
    context = browser.new_context(
        base_url=site.base, viewport={"width": width, "height": height}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(page: Page, name: str) -> None:
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/calls$"))


def wait_until(page: Page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll ``expression`` in the page until it is true (wait_for_function evaluates strings, which the CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {expression}"
        page.wait_for_timeout(50)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_reviewer_signs_in_searches_plays_bookmarks_notes_and_exports(
    chromium: Browser, site: Site, tmp_path: Path
) -> None:
    page = new_page(chromium, site)
    sign_in(page, "rita")
    expect(page.locator("table.calls tbody tr")).to_have_count(5)  # the first page
    shot(page, "01-calls")

    page.fill("input[name=caller]", "212")
    page.click("text=Search")
    rows = page.locator("table.calls tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("ACME PLUMBING")
    shot(page, "02-search")

    rows.locator("a").click()
    expect(page.locator("h1")).to_contain_text("2125550142")
    page.evaluate("document.getElementById('player').play()")
    wait_until(page, "document.getElementById('player').currentTime > 0.5")
    page.evaluate("document.getElementById('player').pause()")
    played = page.evaluate("document.getElementById('player').currentTime")
    assert played > 0
    shot(page, "03-playing")

    page.click("#bookmark-now")
    at = float(page.input_value("#bookmark-at"))
    assert abs(at - played) < 0.2
    page.fill("input[name=label]", "the good answer")
    page.click("text=Add bookmark")
    expect(page.locator(".done")).to_have_text("bookmark saved")
    expect(page.locator(".bookmarks")).to_contain_text("the good answer")

    page.fill("textarea[name=text]", "Polite, and solved it on the first call.")
    page.click("text=Save note")
    expect(page.locator(".note")).to_contain_text("solved it on the first call")

    page.fill("#export input[name=start]", "1")
    page.fill("#export input[name=end]", "3.5")
    with page.expect_download() as download:
        page.click("#export button[type=submit]")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    info = sf.info(str(saved))
    assert (info.samplerate, info.frames) == (8000, 20000)  # 2.5 s
    shot(page, "04-annotated")
    page.context.close()


def test_clicking_the_waveform_seeks_the_player(chromium: Browser, site: Site) -> None:
    page = new_page(chromium, site)
    sign_in(page, "rita")
    page.goto(f"/calls/{site.calls['bakery']}")
    wave = page.locator("#waveform")
    expect(wave).to_be_visible()
    box = wave.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    wait_until(page, "document.getElementById('player').currentTime >= 2.9")
    page.context.close()


def test_a_reviewer_cannot_open_admin_pages(chromium: Browser, site: Site) -> None:
    page = new_page(chromium, site)
    sign_in(page, "rita")
    expect(page.locator("header nav")).not_to_contain_text("Devices")
    for path in ("/devices", "/retention", "/audit"):
        answer = page.goto(path)
        assert answer is not None
        assert answer.status == 403
        expect(page.locator("h1")).to_have_text("Not allowed")
    shot(page, "05-reviewer-refused")
    page.context.close()


def test_the_audit_log_shows_the_listen(chromium: Browser, site: Site) -> None:
    listener = new_page(chromium, site)
    sign_in(listener, "rita")
    listener.goto(f"/calls/{site.calls['clinic']}")
    listener.evaluate("document.getElementById('player').play()")
    wait_until(listener, "document.getElementById('player').currentTime > 0")
    listener.context.close()

    page = new_page(chromium, site)
    sign_in(page, "otto")
    page.goto("/audit?action=listen")
    row = page.locator("tr.action-listen", has_text=site.calls["clinic"])
    expect(row.first).to_contain_text("rita")
    shot(page, "06-audit-listen")
    page.context.close()


def test_an_admin_sees_devices_live_and_the_retention_plan(chromium: Browser, site: Site) -> None:
    page = new_page(chromium, site)
    sign_in(page, "ada")
    page.goto("/devices")
    expect(page.locator("tr[data-device] .state")).to_have_text("online")
    expect(page.locator("tr[data-device] .disk")).to_have_text("12.5 GB")
    shot(page, "07-devices")
    page.goto("/retention")
    expect(page.locator("#due-count")).to_contain_text("0 calls")
    shot(page, "08-retention")
    page.context.close()


def test_the_call_list_and_the_player_fit_a_phone(chromium: Browser, site: Site) -> None:
    page = new_page(chromium, site, 390, 844)
    sign_in(page, "rita")
    fits = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    assert page.evaluate(fits)
    shot(page, "09-phone-calls")
    page.goto(f"/calls/{site.calls['acme']}")
    expect(page.locator("#player")).to_be_visible()
    assert page.evaluate(fits)
    player = page.locator("#player").bounding_box()
    assert player is not None
    assert player["x"] >= 0
    assert player["x"] + player["width"] <= 390
    shot(page, "10-phone-call")
    page.context.close()
