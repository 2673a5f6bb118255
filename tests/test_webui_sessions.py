"""
The web page's login in Chromium: a reload, a new tab and a restart of the
daemon keep it while the session lasts; a logout in one tab ends it in the
others, and the daemon itself logs out the page's connection when its session
ends; the browser keeps no password, and no secret a script can read.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from playwright.sync_api import expect

import webui_services
from test_webui import (  # noqa: F401 (browser is a fixture)
    ALICE,
    DaemonProcess,
    Pages,
    Relay,
    browser,
    log_in,
    needs_chromium,
    pages_on,
    webui_daemon,
)

#: What the browser logs while the daemon is away.
CONNECTION_ERRORS = (r"WebSocket connection to .* failed", r"ERR_CONNECTION_(RESET|CLOSED|REFUSED)")


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with webui_daemon("mjwebsess", {ALICE: [webui_services.USER_ROLE]}) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def stored(page: Any) -> str:
    """
    Everything the page's scripts can read of what the browser keeps.
    """
    return str(page.evaluate("JSON.stringify({...sessionStorage, ...localStorage, cookie: document.cookie})"))


def assert_logged_in(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who-name")).to_have_text(ALICE[0])
    expect(page.get_by_role("heading", name="Log in")).to_be_hidden()


def log_out_unheard(page: Any) -> None:
    """
    End the session of C{page}'s browser from another page of it that runs
    no script of ours: no tab hears of this logout.
    """
    other = page.context.new_page()
    other.goto("/static/favicon.svg")
    status = other.evaluate(
        "fetch('/_session/logout', {method: 'POST', headers: {'X-Requested-With': 'test'}}).then(r => r.status)"
    )
    assert status == 200
    other.close()


@needs_chromium
def test_reload_and_a_new_tab_keep_the_login(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ALICE)
    job_id = daemon.call(ALICE, "webui.user_job", "Opened in a new tab")
    # No password, and no session secret a script could read or send elsewhere.
    assert ALICE[1] not in stored(page) and "midjobs_session" not in stored(page)
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("midjobs_session", True, "Strict")

    page.reload()
    assert_logged_in(page)

    tab = page.context.new_page()
    tab.goto(f"/#job/{job_id}")
    expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    expect(tab.locator("#job-state")).to_have_text("Success")
    assert_logged_in(tab)
    assert ALICE[1] not in stored(tab)

    # Another browser (another context) has no session.
    stranger = pages()
    stranger.goto("/")
    expect(stranger.get_by_role("heading", name="Log in")).to_be_visible()


@needs_chromium
def test_logout_in_one_tab_logs_out_the_others(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    first = pages()
    log_in(first, ALICE)
    second = first.context.new_page()
    second.goto("/")
    assert_logged_in(second)

    first.get_by_role("button", name="Log out").click()
    expect(first.get_by_role("heading", name="Log in")).to_be_visible()
    expect(second.get_by_role("heading", name="Log in")).to_be_visible()
    expect(second.get_by_role("alert")).to_have_text("You logged out in another tab.")
    # The session is over on the daemon: a reload or a new tab asks again.
    second.reload()
    expect(second.get_by_role("heading", name="Log in")).to_be_visible()
    third = first.context.new_page()
    third.goto("/")
    expect(third.get_by_role("heading", name="Log in")).to_be_visible()
    assert first.context.cookies() == []


@needs_chromium
def test_once_the_session_has_ended_a_reload_asks_for_the_password(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ALICE)
    # The session ends behind the page's back (its idle timeout, a tab that did not hear the logout).
    log_out_unheard(page)
    page.reload()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


@needs_chromium
def test_a_restart_of_the_daemon_keeps_the_login(browser: Any, daemon: DaemonProcess) -> None:  # noqa: F811
    from playwright.sync_api import expect

    with webui_daemon("mjwebrestart", {ALICE: [webui_services.USER_ROLE]}) as first:
        relay = Relay(first.port)
        restarted: DaemonProcess | None = None
        try:
            with pages_on(browser, f"http://127.0.0.1:{relay.port}") as made:
                made.allowed = CONNECTION_ERRORS
                page = made()
                log_in(page, ALICE)
                first.stop()
                expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
                restarted = DaemonProcess(first.base, first.socket, "webui_services")
                relay.target = restarted.port
                page.get_by_role("button", name="Retry now").click()
                expect(page.locator("body")).to_have_attribute("data-connection", "open")
                expect(page.locator("#connection")).to_be_hidden()
                job_id = restarted.call(ALICE, "webui.user_job", "After the restart")
                expect(page.locator(f'#jobs-body .jobs-row[data-id="{job_id}"] .state')).to_have_text("Success")
                assert_logged_in(page)
                # A new tab too.
                tab = page.context.new_page()
                tab.goto(f"/#job/{job_id}")
                expect(tab.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
                assert_logged_in(tab)
        finally:
            relay.close()
            if restarted is not None:
                restarted.stop()


#: What the daemon logs when it logs out a connection of a web session that ended.
CUT = re.compile(rf"<Session {ALICE[0]}@.*> logged out: web session \d+ ended")


@pytest.fixture(scope="module")
def quick_daemon() -> Iterator[DaemonProcess]:
    """
    A daemon that closes a connection not logged in after 2 s (30 by default).
    """
    with webui_daemon("mjwebcut", {ALICE: [webui_services.USER_ROLE]}, config="[limits]\nlogin_timeout = 2\n") as running:
        yield running


@needs_chromium
def test_the_daemon_logs_out_the_page_when_its_session_ends(browser: Any, quick_daemon: DaemonProcess) -> None:  # noqa: F811
    with pages_on(browser, quick_daemon.url) as pages:
        page = pages()
        log_in(page, ALICE)
        log_out_unheard(page)
        # The daemon logs the page's connection out (the one the password logged in), then closes
        # it at the login timeout; the page leaves its stale list for the login form.
        expect(page.locator("#login-error")).to_have_text("You were logged out: log in again.", timeout=15_000)
        expect(page.locator("body")).to_have_attribute("data-auth", "out")
        assert any(CUT.search(line) for line in list(quick_daemon.output))
