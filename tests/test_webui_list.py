"""
The web task manager's job list over a large history (issue 16: "Find any
job fast", "History at any size", "At a glance"), in Debian's chromium
against a real C{twistd -n midjobs} whose store holds L{PAST} jobs written
before it started (C{webui_list_history.py}).

The daemon filters, sorts, pages and counts (C{core.get_jobs} with the
query language); the page holds one page of rows.  What the page shows is
checked against what the daemon answers to the same query.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webui_list_history as history
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

#: Jobs in the store before the daemon starts (ids 1 to PAST).
PAST = 1200
PAGE = 100


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    def fill(state: Path) -> None:
        history.fill_history(state, PAST, now=time.time())

    with webui_daemon("mjwebl", {ADMIN: ["FULL_ADMIN"]}, before_start=fill) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def count(daemon: DaemonProcess, filters: list[Any]) -> int:
    return int(daemon.call(ADMIN, "core.get_jobs", filters, {"count": True}))


def ids(page: Any) -> list[int]:
    return [
        int(i)
        for i in page.locator("#jobs-body .jobs-row").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
    ]


def cells(page: Any, column: str) -> list[str]:
    return [
        t.strip()
        for t in page.locator(f"#jobs-body .jobs-row .{column}").all_text_contents()
    ]


def wait_for_rows(page: Any, first: int | None = None) -> None:
    """
    Wait until the list is not busy (and, with C{first}, starts with that job).
    """
    page.wait_for_function(
        """first => {
            const table = document.querySelector('#jobs-table');
            if (table.getAttribute('aria-busy') === 'true') return false;
            const row = document.querySelector('#jobs-body .jobs-row');
            return first === null || (row !== null && Number(row.dataset.id) === first);
        }""",
        arg=first,
    )


def n(value: int) -> str:
    return f"{value:,}"


# -- History at any size ---------------------------------------------------------


@needs_chromium
def test_pages_through_the_whole_history(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    total = count(daemon, [])
    newest = daemon.call(ADMIN, "core.get_jobs", [], {"order_by": ["-id"], "limit": 1})[
        0
    ]["id"]
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(total)} jobs")
    wait_for_rows(page, newest)
    assert ids(page) == list(range(newest, newest - PAGE, -1))
    expect(page.locator("#jobs-page")).to_have_text(
        f"Page 1 of {(total + PAGE - 1) // PAGE}"
    )
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()

    page.get_by_role("button", name="Next page").click()
    expect(page).to_have_url(re.compile(r"#jobs\?page=2$"))
    wait_for_rows(page, newest - PAGE)
    assert ids(page) == list(range(newest - PAGE, newest - 2 * PAGE, -1))
    expect(page.locator("#jobs-count")).to_have_text(f"101–200 of {n(total)} jobs")
    expect(page).to_have_title("Jobs, page 2 · midjobs")
    # Next and previous ask from the ids shown (no offset): the same rows as the offsets give.
    page.get_by_role("button", name="Next page").click()
    wait_for_rows(page, newest - 2 * PAGE)
    assert ids(page) == list(range(newest - 2 * PAGE, newest - 3 * PAGE, -1))
    page.get_by_role("button", name="Previous page").click()
    expect(page).to_have_url(re.compile(r"#jobs\?page=2$"))
    wait_for_rows(page, newest - PAGE)
    assert ids(page) == list(range(newest - PAGE, newest - 2 * PAGE, -1))
    expect(page.locator("#jobs-count")).to_have_text(f"101–200 of {n(total)} jobs")
    # Oldest first, the same way.
    page.get_by_role("columnheader", name="ID").get_by_role("button").click()
    expect(page).to_have_url(re.compile(r"#jobs\?sort=id$"))
    wait_for_rows(page, 1)
    page.get_by_role("button", name="Next page").click()
    wait_for_rows(page, PAGE + 1)
    assert ids(page) == list(range(PAGE + 1, 2 * PAGE + 1))
    page.goto("/#jobs?page=2")

    # The last page, straight from the URL: the oldest jobs.
    last = (total + PAGE - 1) // PAGE
    page.goto(f"/#jobs?page={last}")
    wait_for_rows(page, total - (last - 1) * PAGE)
    assert ids(page)[-1] == 1
    expect(page.locator("#jobs-count")).to_have_text(
        f"{n((last - 1) * PAGE + 1)}–{n(total)} of {n(total)} jobs"
    )
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="First page").click()
    wait_for_rows(page, newest)
    expect(page).to_have_url(re.compile(r"#jobs$"))


# -- Filters, search, sort -------------------------------------------------------


@needs_chromium
def test_each_filter_is_a_query_to_the_daemon(
    daemon: DaemonProcess, pages: Pages
) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    total = count(daemon, [])

    # State: the past failures (2 of every 20).
    failed = count(daemon, [["state", "=", "FAILED"]])
    assert failed > PAGE
    page.locator("#filter-state").select_option("FAILED")
    expect(page.locator("#jobs-count")).to_have_text(
        f"1–100 of {n(failed)} jobs matching"
    )
    assert set(cells(page, "c-state")) == {"Failed"}
    # The error text of a failed job shows in the list.
    first = ids(page)[0]
    expect(row(page, first).locator(".row-error")).to_have_text(
        f"[EFAULT] disk {first % 7} broke"
    )
    expect(page).to_have_title("Failed jobs · midjobs")

    # Method, with the state still set.
    page.locator("#filter-method").select_option("replication.run")
    both = count(daemon, [["state", "=", "FAILED"], ["method", "=", "replication.run"]])
    assert 0 < both < PAGE
    expect(page.locator("#jobs-count")).to_have_text(f"{n(both)} of {n(total)} jobs")
    assert set(cells(page, "c-method")) == {"replication.run"}
    assert len(ids(page)) == both

    # Who started it.
    page.get_by_role("button", name="Clear filters").click()
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(total)} jobs")
    page.get_by_label("Started by").fill("alice")
    page.get_by_label("Started by").press("Enter")
    alices = count(daemon, [["credentials.data.username", "=", "alice"]])
    expect(page.locator("#jobs-count")).to_have_text(
        f"1–100 of {n(alices)} jobs matching"
    )
    assert set(cells(page, "c-user")) == {"alice"}

    # A time range: the jobs started in one day, five days before the newest past job.
    page.get_by_role("button", name="Clear filters").click()
    past = daemon.call(ADMIN, "core.get_jobs", [["id", "=", PAST]], {"get": True})
    end = datetime.datetime.fromtimestamp(
        past["time_started"]["$date"] / 1000
    ) - datetime.timedelta(days=5)
    start = end - datetime.timedelta(days=1)
    start, end = (
        start.replace(second=0, microsecond=0),
        end.replace(second=0, microsecond=0),
    )
    page.get_by_label("Started from").fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Started before").fill(end.strftime("%Y-%m-%dT%H:%M"))
    in_range = daemon.call(
        ADMIN,
        "core.get_jobs",
        [
            ["time_started", ">=", {"$date": int(start.timestamp() * 1000)}],
            ["time_started", "<", {"$date": int(end.timestamp() * 1000)}],
        ],
        {"order_by": ["-id"], "select": ["id"]},
    )
    assert 0 < len(in_range) < PAGE
    expect(page.locator("#jobs-count")).to_have_text(
        f"{len(in_range)} of {n(total)} jobs"
    )
    assert ids(page) == [j["id"] for j in in_range]


@needs_chromium
def test_search_across_method_description_error_and_arguments(
    daemon: DaemonProcess, pages: Pages
) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    search = page.get_by_label("Search descriptions")

    # The description (case does not matter).
    search.fill("PAST JOB 77")
    expect(page.locator("#jobs-count")).to_have_text(
        re.compile(r"^\d+ of [\d,]+ jobs$")
    )
    wait_for_rows(page, 779)
    assert set(ids(page)) == {77, *range(770, 780)}
    # The error.
    search.fill("disk 3 broke")
    errors = count(daemon, [["error", "~", "disk 3 broke"]])
    expect(page.locator("#jobs-count")).to_have_text(
        f"{n(errors)} of {n(count(daemon, []))} jobs"
    )
    # An argument.
    search.fill("tank/dataset42")
    expect(page.locator("#jobs-count")).to_have_text(re.compile(r"^24 of [\d,]+ jobs$"))
    assert all(i % 50 == 42 for i in ids(page))
    # The method.
    search.fill("cloudsync")
    expect(page.locator("#jobs-count")).to_have_text(
        re.compile(r"^1–100 of 240 jobs matching$")
    )
    assert set(cells(page, "c-method")) == {"cloudsync.sync"}
    # The text is taken literally, not as a regular expression.
    search.fill("job 1.")
    expect(page.locator("#jobs-empty")).to_have_text("No jobs match the filters.")
    search.fill("(")
    expect(page.locator("#jobs-empty")).to_have_text("No jobs match the filters.")
    search.fill("")
    expect(page.locator("#jobs-count")).to_have_text(
        re.compile(r"^1–100 of [\d,]+ jobs$")
    )


@needs_chromium
def test_sort_by_a_column(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    id_header = page.get_by_role("columnheader", name="ID")
    expect(id_header).to_have_attribute("aria-sort", "descending")

    method = page.get_by_role("columnheader", name="Method")
    method.get_by_role("button").click()
    expect(method).to_have_attribute("aria-sort", "ascending")
    expect(id_header).to_have_attribute("aria-sort", "none")
    expect(page).to_have_url(re.compile(r"#jobs\?sort=method$"))
    expected = daemon.call(
        ADMIN,
        "core.get_jobs",
        [],
        {"order_by": ["method", "id"], "limit": PAGE, "select": ["id"]},
    )
    wait_for_rows(page, expected[0]["id"])
    assert ids(page) == [j["id"] for j in expected]

    method.get_by_role("button").click()
    expect(method).to_have_attribute("aria-sort", "descending")
    expected = daemon.call(
        ADMIN,
        "core.get_jobs",
        [],
        {"order_by": ["-method", "-id"], "limit": PAGE, "select": ["id", "method"]},
    )
    wait_for_rows(page, expected[0]["id"])
    assert ids(page) == [j["id"] for j in expected]
    assert cells(page, "c-method") == [j["method"] for j in expected]

    user = page.get_by_role("columnheader", name="Started by", exact=True)
    user.get_by_role("button").click()
    expect(user).to_have_attribute("aria-sort", "ascending")
    expected = daemon.call(
        ADMIN,
        "core.get_jobs",
        [],
        {
            "order_by": ["credentials.data.username", "id"],
            "limit": PAGE,
            "select": ["id"],
        },
    )
    wait_for_rows(page, expected[0]["id"])
    assert ids(page) == [j["id"] for j in expected]
    assert set(cells(page, "c-user")) == {"admin"}


# -- The URL ---------------------------------------------------------------------


@needs_chromium
def test_the_url_keeps_filters_sort_and_page(
    daemon: DaemonProcess, pages: Pages
) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    page.locator("#filter-state").select_option("SUCCESS")
    page.locator("#filter-method").select_option("backup.run")
    started = page.get_by_role("columnheader", name="Started", exact=True)
    # Start times sort newest first on the first click, oldest first on the second.
    started.get_by_role("button").click()
    expect(started).to_have_attribute("aria-sort", "descending")
    started.get_by_role("button").click()
    expect(started).to_have_attribute("aria-sort", "ascending")
    page.get_by_role("button", name="Next page").click()
    expect(page).to_have_url(
        re.compile(r"#jobs\?state=SUCCESS&method=backup.run&sort=started&page=2$")
    )
    expected = daemon.call(
        ADMIN,
        "core.get_jobs",
        [["state", "=", "SUCCESS"], ["method", "=", "backup.run"]],
        {
            "order_by": ["time_started", "id"],
            "offset": PAGE,
            "limit": PAGE,
            "select": ["id"],
        },
    )
    wait_for_rows(page, expected[0]["id"])
    shown = ids(page)
    assert shown == [j["id"] for j in expected]
    title = page.title()
    assert title == "Successful jobs of backup.run, page 2 · midjobs"

    # A reload (and so a bookmark or a shared link) shows the same.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    wait_for_rows(page, shown[0])
    assert ids(page) == shown
    expect(page.locator("#filter-state")).to_have_value("SUCCESS")
    expect(page.locator("#filter-method")).to_have_value("backup.run")
    expect(
        page.get_by_role("columnheader", name="Started", exact=True)
    ).to_have_attribute("aria-sort", "ascending")
    expect(page).to_have_title(title)

    # Back from a job: the same list, scrolled where it was.
    target = shown[60]
    row(page, target).scroll_into_view_if_needed()
    top = page.evaluate(
        "id => document.querySelector(`.jobs-row[data-id='${id}']`).getBoundingClientRect().top",
        target,
    )
    assert page.evaluate("window.scrollY") > 500
    row(page, target).get_by_role("link").click()
    expect(page.locator("#job-method")).to_have_text("backup.run")
    expect(page).to_have_title(f"Job {target} · midjobs")
    page.go_back()
    expect(page).to_have_url(
        re.compile(r"#jobs\?state=SUCCESS&method=backup.run&sort=started&page=2$")
    )
    page.wait_for_function(
        """([id, top]) => {
            const tr = document.querySelector(`.jobs-row[data-id='${id}']`);
            return tr !== null && Math.abs(tr.getBoundingClientRect().top - top) < 2;
        }""",
        arg=[target, top],
    )
    expect(row(page, target)).to_have_class(re.compile(r"\bselected\b"))
    # Back again: the page before (the history goes through the lists seen).
    page.go_back()
    expect(page).to_have_url(
        re.compile(r"#jobs\?state=SUCCESS&method=backup.run&sort=started$")
    )
    wait_for_rows(page, daemon.call(
        ADMIN, "core.get_jobs", [["state", "=", "SUCCESS"], ["method", "=", "backup.run"]],
        {"order_by": ["time_started", "id"], "limit": 1, "select": ["id"]},
    )[0]["id"])  # fmt: skip


# -- At a glance, and live -------------------------------------------------------


@needs_chromium
def test_the_summary_counts_and_links(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    day_ago = {"$date": int((time.time() - 86400) * 1000)}
    failed = count(daemon, [["state", "=", "FAILED"], ["time_started", ">=", day_ago]])
    running = daemon.call(
        ADMIN, "core.job_test", {"sleep": 120, "description": "Running for the summary"}
    )
    try:
        summary = page.get_by_role("navigation", name="At a glance")
        expect(summary.get_by_role("link", name=re.compile("running"))).to_have_text(
            "1 running"
        )
        expect(summary.get_by_role("link", name=re.compile("waiting"))).to_have_text(
            "0 waiting"
        )
        expect(summary.get_by_role("link", name=re.compile("failed"))).to_have_text(
            f"{failed} failed in the last 24 h"
        )

        summary.get_by_role("link", name=re.compile("running")).click()
        expect(page).to_have_url(re.compile(r"#jobs\?state=RUNNING$"))
        expect(page.locator("#filter-state")).to_have_value("RUNNING")
        wait_for_rows(page, running)
        assert ids(page) == [running]

        summary.get_by_role("link", name=re.compile("failed")).click()
        expect(page).to_have_url(
            re.compile(r"#jobs\?state=FAILED&from=\d{4}-\d\d-\d\dT\d\d%3A\d\d$")
        )
        expect(page.locator("#filter-from")).not_to_have_value("")
        expect(page.locator("#jobs-count")).to_have_text(
            re.compile(rf"^{failed} of [\d,]+ jobs$")
        )

        # A job that fails now counts at once.
        daemon.call(ADMIN, "core.job_test", {"error": "Failed for the summary"})
        expect(summary.get_by_role("link", name=re.compile("failed"))).to_have_text(
            f"{failed + 1} failed in the last 24 h"
        )
    finally:
        daemon.call(ADMIN, "core.job_abort", running)
    expect(
        page.get_by_role("navigation", name="At a glance").get_by_role(
            "link", name=re.compile("running")
        )
    ).to_have_text("0 running")


@needs_chromium
def test_live_updates_on_the_visible_page(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    total = count(daemon, [])
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(total)} jobs")
    top = ids(page)[0]

    # A new job comes at the top of the first page; the count follows; the row follows the job.
    job = daemon.call(ADMIN, "webui.log_lines", 20, 0.05)
    wait_for_rows(page, job)
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(total + 1)} jobs")
    assert len(ids(page)) == PAGE
    assert ids(page)[1] == top
    expect(row(page, job).locator(".state")).to_have_text("Success")
    expect(row(page, job).locator(".pct")).to_have_text("100%")

    # With a filter, a new job that matches comes at the top; one that does not stays out.
    page.locator("#filter-state").select_option("FAILED")
    failed = count(daemon, [["state", "=", "FAILED"]])
    expect(page.locator("#jobs-count")).to_have_text(
        f"1–100 of {n(failed)} jobs matching"
    )
    quiet = daemon.call(ADMIN, "core.job_test", {"description": "Succeeds"})
    broken = daemon.call(
        ADMIN, "core.job_test", {"description": "Fails", "error": "Live failure"}
    )
    wait_for_rows(page, broken)
    expect(row(page, broken).locator(".row-error")).to_have_text(
        "[EFAULT] Live failure"
    )
    expect(page.locator("#jobs-count")).to_have_text(
        f"1–100 of {n(failed + 1)} jobs matching"
    )
    assert quiet not in ids(page)

    # On a later page the rows stay put; the count follows.
    page.get_by_role("button", name="Next page").click()
    wait_for_rows(page)
    expect(page.locator("#jobs-count")).to_have_text(
        f"101–{n(min(failed + 1, 200))} of {n(failed + 1)} jobs matching"
    )
    second = ids(page)
    daemon.call(ADMIN, "core.job_test", {"error": "Another failure"})
    expect(page.locator("#jobs-count")).to_have_text(
        f"101–{100 + len(second)} of {n(failed + 2)} jobs matching"
    )
    assert ids(page) == second
