"""
The web task manager's defects of issue 16, each shown in Debian's chromium
against a real C{twistd -n midjobs} (see C{test_webui.py} for the daemon,
the browser and the helpers).

The users: C{admin} (C{FULL_ADMIN}), C{reader} (C{READONLY_ADMIN}, and the
tests' C{WEBUI_USER} role so that he can start a job of his own) and
C{nobody} (no role at all).  The daemon closes a connection that has not
logged in after C{LOGIN_TIMEOUT} seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

import webui_services
from test_webui import (  # noqa: F401 (browser is a fixture)
    ADMIN,
    DaemonProcess,
    Pages,
    browser,
    pages_on,
    webui_daemon,
    log_in,
    needs_chromium,
    next_job,
    row,
)

READER = ("reader", "reader-pass")
NOBODY = ("nobody", "nobody-pass")
#: Seconds the daemon gives a connection to log in ([limits] login_timeout).
LOGIN_TIMEOUT = 3


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    users = {ADMIN: ["FULL_ADMIN"], READER: ["READONLY_ADMIN", webui_services.USER_ROLE], NOBODY: []}
    config = f"[limits]\nlogin_timeout = {LOGIN_TIMEOUT}\n"
    with webui_daemon("mjwebd", users, config=config) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def job_record(daemon: DaemonProcess, job_id: int) -> dict[str, Any]:
    return daemon.call(ADMIN, "core.get_jobs", [["id", "=", job_id]], {"get": True})


# 1. ---------------------------------------------------------------------------


@needs_chromium
def test_an_unknown_job_shows_nothing_of_the_job_seen_before(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    failed = daemon.call(ADMIN, "core.job_test", {"error": "Out of coffee"})
    page.goto(f"/#job/{failed}")
    expect(page.locator("#job-error")).to_contain_text("Out of coffee")
    expect(page.locator("#job-method")).to_have_text("core.job_test")

    page.goto("/#job/99999")
    expect(page.get_by_role("heading", name="Job 99999")).to_be_visible()
    expect(page.locator("#job-status")).to_have_text(re.compile("There is no job 99999"))
    # Nothing of the job before: no state, method, arguments, error nor traceback.
    for part in ["#job-state", "#job-method", "#job-arguments", "#job-error", "#job-traceback", "#job-abort"]:
        expect(page.locator(part)).to_be_hidden()

    # And back to a real job: all of it shows again.
    page.goto(f"/#job/{failed}")
    expect(page.locator("#job-method")).to_have_text("core.job_test")
    expect(page.locator("#job-state")).to_have_text("Failed")


# 2. and 6 (a non-abortable job says why) -----------------------------------------


@needs_chromium
def test_abort_is_offered_only_to_who_may_abort(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    admins = daemon.call(ADMIN, "core.job_test", {"sleep": 60, "description": "The admin's"})
    readers = daemon.call(READER, "webui.user_job", "The reader's", 60)
    unabortable = daemon.call(ADMIN, "webui.log_lines", 600, 0.1)
    try:
        page = pages()
        log_in(page, READER)
        # A read-only administrator sees the admin's job, and may not abort it: no button, and why.
        page.goto(f"/#job/{admins}")
        expect(page.locator("#job-state")).to_have_text("Running")
        expect(page.locator("#job-abort-note")).to_have_text(
            "Only admin, who started it, or a full administrator may abort this job."
        )
        expect(page.get_by_role("button", name="Abort job")).to_be_hidden()
        # His own job he may abort.
        page.goto(f"/#job/{readers}")
        expect(page.locator("#job-state")).to_have_text("Running")
        expect(page.locator("#job-abort-note")).to_be_hidden()
        page.get_by_role("button", name="Abort job").click()
        page.get_by_role("dialog").get_by_role("button", name="Abort job").click()
        expect(page.locator("#job-state")).to_have_text("Aborted")

        # A job whose method does not allow aborting: no button for anyone, and why.
        admin = pages()
        log_in(admin, ADMIN)
        admin.goto(f"/#job/{unabortable}")
        expect(admin.locator("#job-state")).to_have_text("Running")
        expect(admin.locator("#job-abort-note")).to_have_text(
            "This job cannot be aborted: webui.log_lines does not allow it."
        )
        expect(admin.get_by_role("button", name="Abort job")).to_be_hidden()
        # The admin may abort the admin's job (and the reader's, were it running).
        admin.goto(f"/#job/{admins}")
        expect(admin.get_by_role("button", name="Abort job")).to_be_visible()
    finally:
        daemon.call(ADMIN, "core.job_abort", admins)
        daemon.call(ADMIN, "core.job_abort", unabortable, {"force": True})


# 3. ---------------------------------------------------------------------------


@needs_chromium
def test_a_user_without_jobs_is_told_so(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, NOBODY)
    expect(page.locator("#jobs-count")).to_have_text("0 jobs")
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#jobs-empty")).to_contain_text("No jobs yet.")
    # No bare column headers.
    expect(page.locator("#jobs-table")).to_be_hidden()


# 4. ---------------------------------------------------------------------------


@needs_chromium
def test_forms_offer_only_methods_the_user_may_call_and_choose_none(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    # No role: no method to offer, and the forms say so instead of sending anything.
    page = pages()
    log_in(page, NOBODY)
    for view in ("upload", "download"):
        page.goto(f"/#{view}")
        assert page.locator(f"#{view}-method option").all_text_contents() == ["(none you may call)"]
        expect(page.locator(f"#{view}-method-doc")).to_contain_text("You may not call any method")
        expect(page.locator(f"#{view}-submit")).to_be_disabled()

    # A read-only administrator may download with the read-only filesystem.get, not config.save.
    reader = pages()
    log_in(reader, READER)
    reader.goto("/#download")
    offered = reader.locator("#download-method option").all_text_contents()
    assert "filesystem.get" in offered and "config.save" not in offered
    reader.goto("/#upload")
    assert reader.locator("#upload-method option").all_text_contents() == ["(none you may call)"]

    # An administrator sees them all, and none is chosen for him.
    admin = pages()
    log_in(admin, ADMIN)
    admin.goto("/#upload")
    expect(admin.locator("#upload-method")).to_have_value("")
    assert admin.locator("#upload-method option").first.text_content() == "Choose a method…"
    assert "filesystem.put" in admin.locator("#upload-method option").all_text_contents()
    admin.get_by_role("button", name="Upload", exact=True).click()
    expect(admin.locator("#upload-error")).to_have_text("Choose a method.")
    admin.goto("/#download")
    expect(admin.locator("#download-method")).to_have_value("")


# 5. ---------------------------------------------------------------------------


@needs_chromium
def test_a_job_without_a_percentage_has_a_moving_bar(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    job_id = daemon.call(ADMIN, "webui.silent", 60)
    try:
        expect(row(page, job_id).locator(".state")).to_have_text("Running")
        bar = row(page, job_id).locator("progress")
        page.wait_for_function(
            """id => document.querySelector(`#jobs-body .jobs-row[data-id="${id}"] progress`).matches(":indeterminate")""",
            arg=job_id,
        )
        expect(row(page, job_id).locator(".pct")).to_have_text("")
        assert bar.evaluate("bar => getComputedStyle(bar).animationName") != "none"
        page.goto(f"/#job/{job_id}")
        expect(page.locator("#job-progress progress")).to_have_js_property("position", -1)
        expect(page.locator("#job-progress .pct")).to_have_text("")
    finally:
        daemon.call(ADMIN, "core.job_abort", job_id)
    # Once it ended, the bar is a plain one again.
    expect(page.locator("#job-state")).to_have_text("Aborted")
    assert not page.locator("#job-progress progress").evaluate("bar => bar.matches(':indeterminate')")


# 6. ---------------------------------------------------------------------------


@needs_chromium
def test_abort_requested_goes_once_the_job_is_aborted(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    job_id = daemon.call(ADMIN, "webui.user_job", "To be aborted", 60)
    page.goto(f"/#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text("Running")
    page.get_by_role("button", name="Abort job").click()
    page.get_by_role("dialog").get_by_role("button", name="Abort job").click()
    expect(page.locator("#job-state")).to_have_text("Aborted")
    expect(page.locator("#job-status")).to_have_text(f"Job {job_id} was aborted.")
    expect(page.get_by_role("button", name="Abort job")).to_be_hidden()


@needs_chromium
def test_a_cancelled_upload_is_listed_as_aborted(daemon: DaemonProcess, pages: Pages, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    page = pages()
    log_in(page, ADMIN)
    page.goto("/#upload")
    page.locator("#upload-method").select_option("webui.slow_sink")
    page.get_by_label("Files (one to five)").set_input_files(str(big))
    page.get_by_role("button", name="Upload", exact=True).click()
    # Under way (the job reads slowly, so the upload stays in progress): cancel it.
    expect(page.locator("#upload-bytes-text")).to_contain_text(" of ")
    sinks = daemon.call(ADMIN, "core.get_jobs", [["method", "=", "webui.slow_sink"]], {"order_by": ["-id"]})
    while not sinks:
        sinks = daemon.call(ADMIN, "core.get_jobs", [["method", "=", "webui.slow_sink"]], {"order_by": ["-id"]})
    job_id = sinks[0]["id"]
    page.get_by_role("button", name="Cancel upload").click()
    expect(page.locator("#upload-error")).to_have_text("The upload was cancelled.")

    page.goto("/#jobs")
    expect(row(page, job_id).locator(".state")).to_have_text("Aborted")
    page.locator("#filter-state").select_option("ABORTED")
    expect(row(page, job_id)).to_be_visible()
    page.goto(f"/#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text("Aborted")
    expect(page.locator("#job-error")).to_contain_text("The client disconnected before the upload ended")
    # The daemon itself records it FAILED (ECONNABORTED): the page is the one that calls it aborted.
    assert job_record(daemon, job_id)["state"] == "FAILED"


# 7. ---------------------------------------------------------------------------


@needs_chromium
def test_downloading_a_missing_file_says_so_on_the_page(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    (daemon.root / "here.bin").write_bytes(b"here\n")
    page = pages()
    downloads: list[Any] = []
    page.on("download", lambda download: downloads.append(download))
    log_in(page, ADMIN)
    page.goto("/#download")
    page.locator("#download-method").select_option("filesystem.get")
    page.get_by_role("button", name="Edit as JSON").click()
    page.locator("#download-params").fill(f'["{daemon.root / "missing.bin"}"]')
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.locator("#download-error")).to_contain_text("The download failed")
    expect(page.locator("#download-error")).to_contain_text("ENOENT")
    expect(page.locator("#download-job .state")).to_have_text("Failed")
    # A file that is there still downloads, and only then does the browser save anything.
    page.locator("#download-params").fill(f'["{daemon.root / "here.bin"}"]')
    with page.expect_download() as info:
        page.get_by_role("button", name="Download", exact=True).click()
    assert Path(info.value.path()).read_bytes() == b"here\n"
    expect(page.locator("#download-error")).to_have_text("")
    assert len(downloads) == 1


# 8. ---------------------------------------------------------------------------


@needs_chromium
def test_a_waiting_job_shows_why_and_no_start(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    holder = daemon.call(ADMIN, "core.job_test", {"sleep": 60, "lock": "webui-lock"})
    waiting = daemon.call(ADMIN, "core.job_test", {"sleep": 1, "lock": "webui-lock"})
    try:
        line = row(page, waiting)
        expect(line.locator(".state")).to_have_text("Waiting")
        expect(line.locator(".progress-text")).to_have_text("Waiting for lock webui-lock")
        expect(line.locator(".c-start time")).to_have_text("")
        expect(line.locator(".c-duration")).to_have_text("")
        expect(line.locator("progress")).to_be_hidden()
        page.goto(f"/#job/{waiting}")
        expect(page.locator("#job-started")).to_have_text(re.compile(r"^Not yet \(queued \d{4}-\d\d-\d\d "))
        expect(page.locator("#job-duration")).to_have_text(re.compile(r"^Waiting for \d+ s$"))
        expect(page.locator("#job-progress .progress-text")).to_have_text("Waiting for lock webui-lock")
    finally:
        daemon.call(ADMIN, "core.job_abort", holder)
    # Once it runs: a start time, a duration, no reason to wait.
    expect(page.locator("#job-state")).to_have_text(re.compile("Running|Success"))
    expect(page.locator("#job-started")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(page.locator("#job-progress .progress-text")).not_to_have_text("Waiting for lock webui-lock")


@needs_chromium
def test_a_job_cut_off_by_a_restart_has_no_made_up_duration(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    first = DaemonProcess(tmp_path, tmp_path / "first.sock", "webui_services")
    try:
        first.create_user(ADMIN, ["FULL_ADMIN"])
        # Its record is durable before its id is answered.
        job_id = first.call(ADMIN, "core.job_test", {"sleep": 120, "description": "Cut off"})
    finally:
        first.kill()
    second = DaemonProcess(tmp_path, tmp_path / "second.sock", "webui_services")
    made = Pages(browser, second.url)
    try:
        assert job_record(second, job_id)["state"] == "ABORTED"
        page = made()
        log_in(page, ADMIN)
        line = row(page, job_id)
        expect(line.locator(".state")).to_have_text("Aborted")
        expect(line.locator(".c-duration")).to_have_text("unknown")
        expect(line.locator(".c-start time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d "))
        page.goto(f"/#job/{job_id}")
        expect(page.locator("#job-duration")).to_have_text("Unknown: the job was cut off when the daemon stopped")
        expect(page.locator("#job-finished")).to_contain_text("recorded the cut-off at its restart")
        expect(page.locator("#job-error")).to_have_text("The daemon stopped while this job was running")
    finally:
        made.close()
        second.stop()
    assert made.errors == []


# 9. ---------------------------------------------------------------------------


@needs_chromium
def test_follow_live_log_is_visibly_on_or_off(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    job_id = daemon.call(ADMIN, "webui.log_lines", 600, 0.1)
    try:
        page.goto(f"/#job/{job_id}")
        follow = page.get_by_role("button", name="Follow live log")
        expect(follow).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#job-follow-state")).to_have_text("On")
        on = follow.evaluate("b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).color]")
        follow.click()
        expect(follow).to_have_attribute("aria-pressed", "false")
        expect(page.locator("#job-follow-state")).to_have_text("Off")
        off = follow.evaluate("b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).color]")
        assert on[0] != off[0] and on[1] != off[1]
        follow.click()
        expect(follow).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#job-follow-state")).to_have_text("On")
    finally:
        daemon.call(ADMIN, "core.job_abort", job_id, {"force": True})


# The daemon's login timeout -------------------------------------------------------


@needs_chromium
def test_the_login_timeout_leaves_the_login_form_quiet(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("User name").fill(ADMIN[0])
    # The daemon closes the connection that did not log in: no banner, the form stays.
    expect(page.locator("body")).to_have_attribute("data-connection", "idle", timeout=(LOGIN_TIMEOUT + 20) * 1000)
    expect(page.locator("#connection")).to_be_hidden()
    expect(page.get_by_label("User name")).to_have_value(ADMIN[0])
    # Sending the form connects again, quietly.
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#connection")).to_be_hidden()
