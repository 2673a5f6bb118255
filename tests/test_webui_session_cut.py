"""
The page's own connection, the one its password logged in, goes with the
web session too: when the session ends behind the page's back (a logout
from a page that tells no tab), the daemon logs that connection out.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator

import pytest
from playwright.sync_api import expect

import webui_services
from test_webui import ALICE, DaemonProcess, Pages, browser, log_in, needs_chromium, pages_on, webui_daemon  # noqa: F401

#: What the daemon logs when it logs out a connection of a web session that ended.
CUT = re.compile(rf"<Session {ALICE[0]}@.*> logged out: web session \d+ ended")


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with webui_daemon("mjwebcut", {ALICE: [webui_services.USER_ROLE]}) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def cuts(daemon: DaemonProcess) -> int:
    return sum(1 for line in list(daemon.output) if CUT.search(line))


@needs_chromium
def test_the_connection_the_password_logged_in_goes_with_the_session(daemon: DaemonProcess, pages: Pages) -> None:
    page = pages()
    log_in(page, ALICE)
    before = cuts(daemon)
    # A page of the same browser with no script of ours: no tab hears of this logout.
    other = page.context.new_page()
    other.goto("/static/favicon.svg")
    status = other.evaluate(
        "fetch('/_session/logout', {method: 'POST', headers: {'X-Requested-With': 'test'}}).then(r => r.status)"
    )
    assert status == 200
    deadline = time.monotonic() + 10
    while cuts(daemon) == before:
        assert time.monotonic() < deadline, "the page's connection was not logged out:\n" + "".join(daemon.output[-20:])
        time.sleep(0.05)


@pytest.fixture(scope="module")
def quick_daemon() -> Iterator[DaemonProcess]:
    """
    A daemon that closes a connection not logged in after 2 s (30 by default).
    """
    with webui_daemon("mjwebcut2", {ALICE: [webui_services.USER_ROLE]}, config="[limits]\nlogin_timeout = 2\n") as running:
        yield running


@needs_chromium
def test_a_page_logged_out_by_the_daemon_shows_the_login_form(browser: Any, quick_daemon: DaemonProcess) -> None:  # noqa: F811
    with pages_on(browser, quick_daemon.url) as pages:
        page = pages()
        log_in(page, ALICE)
        other = page.context.new_page()
        other.goto("/static/favicon.svg")
        status = other.evaluate(
            "fetch('/_session/logout', {method: 'POST', headers: {'X-Requested-With': 'test'}}).then(r => r.status)"
        )
        assert status == 200
        # Logged out by the daemon, the connection is closed at the login timeout; the page leaves the stale list.
        expect(page.locator("#login-error")).to_have_text("You were logged out: log in again.", timeout=15_000)
        expect(page.locator("body")).to_have_attribute("data-auth", "out")
