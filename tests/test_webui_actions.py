"""
The web task manager's actions and progress of issue 16, in Debian's chromium
against a real C{twistd -n midjobs} (see C{test_webui.py} for the daemon, the
browser and the helpers): Abort asks first and says how it went; a full
administrator (and only one) may force the abort of a job that cannot be
aborted; a job that moves bytes shows its transfer figures as midclt does.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest

from test_webui import (  # noqa: F401 (browser is a fixture)
    ADMIN,
    DaemonProcess,
    Pages,
    browser,
    pages_on,
    webui_daemon,
    log_in,
    needs_chromium,
    row,
)

from midjobs.client._progress import transfer_text

READER = ("reader", "reader-pass")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with webui_daemon("mjwebact", {ADMIN: ["FULL_ADMIN"], READER: ["READONLY_ADMIN"]}) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def state_of(daemon: DaemonProcess, job_id: int) -> str:
    return daemon.call(ADMIN, "core.get_jobs", [["id", "=", job_id]], {"get": True})["state"]


# 1. Abort asks, and says how it went ----------------------------------------------


@needs_chromium
def test_abort_asks_for_confirmation_and_shows_the_outcome(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    job_id = daemon.call(ADMIN, "core.job_test", {"sleep": 60, "description": "Aborted after asking"})
    try:
        page = pages()
        log_in(page, ADMIN)
        page.goto(f"/#job/{job_id}")
        expect(page.locator("#job-state")).to_have_text("Running")
        # Cancelled with Escape: the job runs on.
        page.get_by_role("button", name="Abort job").click()
        dialog = page.get_by_role("dialog", name=f"Abort job {job_id}?")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("core.job_test")
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(page.get_by_role("button", name="Abort job")).to_be_focused()
        assert state_of(daemon, job_id) == "RUNNING"
        expect(page.locator("#job-status")).to_have_text("")

        # Confirmed with the keyboard alone: aborted, and the page says so.
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        page.keyboard.press("Tab")
        expect(dialog.get_by_role("button", name="Abort job")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#job-state")).to_have_text("Aborted")
        expect(page.locator("#job-status")).to_have_text(f"Job {job_id} was aborted.")
        expect(page.get_by_role("button", name="Abort job")).to_be_hidden()
    finally:
        daemon.call(ADMIN, "core.job_abort", job_id)


@needs_chromium
def test_a_refused_abort_shows_the_daemons_error(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    job_id = daemon.call(ADMIN, "core.job_test", {"sleep": 60})
    page = pages()
    log_in(page, ADMIN)
    page.goto(f"/#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text("Running")
    page.get_by_role("button", name="Abort job").click()
    dialog = page.get_by_role("dialog", name=f"Abort job {job_id}?")
    expect(dialog).to_be_visible()
    # While the question is asked, someone else aborts the job and deletes it.
    daemon.call(ADMIN, "core.job_abort", job_id)
    page.wait_for_function("id => !document.querySelector('#jobs-body .jobs-row[data-id=\"' + id + '\"] .state')"
                           " || document.querySelector('#job-state').textContent === 'Aborted'", arg=job_id)
    daemon.call(ADMIN, "core.job_delete", job_id)
    dialog.get_by_role("button", name="Abort job").click()
    expect(page.locator("#job-status")).to_have_text(
        re.compile(rf"^Could not abort: .*Job {job_id} does not exist")
    )


# 2. Force abort, for full administrators alone -------------------------------------


@needs_chromium
def test_force_abort_is_offered_to_full_administrators_only(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    unabortable = daemon.call(ADMIN, "webui.unabortable", 60)
    abortable = daemon.call(ADMIN, "core.job_test", {"sleep": 60})
    try:
        # A read-only administrator never sees it.
        reader = pages()
        log_in(reader, READER)
        reader.goto(f"/#job/{unabortable}")
        expect(reader.locator("#job-state")).to_have_text("Running")
        expect(reader.locator("#job-abort-note")).to_contain_text("cannot be aborted")
        expect(reader.get_by_role("button", name="Force abort")).to_have_count(0)
        expect(reader.locator("#job-force-abort")).to_be_hidden()

        admin = pages()
        log_in(admin, ADMIN)
        # Not on a job that can be aborted the ordinary way.
        admin.goto(f"/#job/{abortable}")
        expect(admin.get_by_role("button", name="Abort job")).to_be_visible()
        expect(admin.locator("#job-force-abort")).to_be_hidden()

        admin.goto(f"/#job/{unabortable}")
        expect(admin.locator("#job-state")).to_have_text("Running")
        expect(admin.get_by_role("button", name="Abort job")).to_be_hidden()
        admin.get_by_role("button", name="Force abort").click()
        dialog = admin.get_by_role("dialog", name=f"Force the abort of job {unabortable}?")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#confirm-risk")).to_contain_text("half done")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert state_of(daemon, unabortable) == "RUNNING"

        admin.get_by_role("button", name="Force abort").click()
        dialog.get_by_role("button", name="Force abort").click()
        expect(admin.locator("#job-state")).to_have_text("Aborted")
        expect(admin.locator("#job-status")).to_have_text(f"Job {unabortable} was aborted.")
        expect(admin.locator("#job-error")).to_have_text("Job aborted by force")
        expect(admin.locator("#job-force-abort")).to_be_hidden()
    finally:
        daemon.call(ADMIN, "core.job_abort", unabortable, {"force": True})
        daemon.call(ADMIN, "core.job_abort", abortable)


# 3. Bytes, rate and time left, as midclt shows them --------------------------------


@needs_chromium
def test_a_transfer_shows_bytes_rate_and_time_left(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    extra = {"bytes": 512 * MIB, "total_bytes": 1024 * MIB, "rate": 172 * MIB, "eta_seconds": 2.9}
    shown = "512 MiB of 1 GiB, 172 MiB/s, 3 s left"
    assert transfer_text(extra) == shown
    job_id = daemon.call(ADMIN, "webui.transfer", extra, 60)
    only_bytes = daemon.call(ADMIN, "webui.transfer", {"bytes": 1536}, 60)
    try:
        page = pages()
        log_in(page, ADMIN)
        expect(row(page, job_id).locator(".transfer")).to_have_text(shown)
        expect(row(page, only_bytes).locator(".transfer")).to_have_text("1.5 KiB")
        page.goto(f"/#job/{job_id}")
        expect(page.locator("#job-progress .transfer")).to_have_text(shown)
        expect(page.locator("#job-progress .pct")).to_have_text("50%")

        # The page writes every figure as midclt does.
        cases: list[Any] = [
            {"bytes": 0},
            {"bytes": 1023, "total_bytes": 1024},
            {"bytes": 1048575, "rate": 99.5 * 1024, "eta_seconds": 59.01},
            {"bytes": 12.34 * MIB, "total_bytes": 5 * 1024**4, "rate": 1.0, "eta_seconds": 3600},
            {"bytes": 3 * 1024**3, "eta_seconds": 3725},
            {"bytes": 7, "total_bytes": "many", "rate": -1, "eta_seconds": 0},
            {"total_bytes": 10},
            "not a dict",
        ]
        texts = page.evaluate(
            "async cases => (await import('/static/js/format.js')).transferText && "
            "Promise.all(cases.map(async c => (await import('/static/js/format.js')).transferText(c)))",
            cases,
        )
        assert texts == [transfer_text(case) or "" for case in cases]
    finally:
        daemon.call(ADMIN, "core.job_abort", job_id)
        daemon.call(ADMIN, "core.job_abort", only_bytes)
