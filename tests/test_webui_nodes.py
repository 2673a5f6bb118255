"""
The node of each job in the web task manager (issue 16: "Find any job fast",
with the node of issue 13's cluster), in Debian's chromium against real
C{twistd -n midjobs} processes.

A daemon named C{delta} whose store holds jobs of the nodes C{alpha},
C{beta} and C{gamma} (C{webui_nodes_history.py}) shows a Node column, sorts
on it and filters by node through C{core.get_jobs} (C{["node", "=", name]},
kept in the URL); a daemon alone with jobs of its own shows no Node column;
two nodes on PostgreSQL are listed on the cluster line with their state and
running jobs.  The screenshots of the cluster line are saved with
C{MIDJOBS_SCREENSHOTS} set (see C{test_webui.py}).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webui_nodes_history as history
import webui_services
from test_webui import (  # noqa: F401 (browser is a fixture)
    ADMIN,
    ALICE,
    PHONE,
    DaemonProcess,
    Pages,
    RpcConnection,
    browser,
    log_in,
    needs_chromium,
    pages_on,
    row,
    screenshot,
    webui_daemon,
)
from test_webui_list import cells, ids, n, wait_for_rows

from midjobs.query import filter_list, validate_options
from midjobs.store._sqlquery import translate

from cluster_nodes import Node, NodeStarter, cluster_nodes  # noqa: F401 (fixture)

pytest_plugins = ["postgres_server"]

#: Jobs in the store before the daemon starts (ids 1 to PAST), of L{history.NODES}.
PAST = 400
#: The daemon's own node.
HERE = "delta"
PAGE = 100


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    now = time.time()

    def fill(state: Path) -> None:
        history.fill_history(state, PAST, now)

    users = {ADMIN: ["FULL_ADMIN"], ALICE: [webui_services.USER_ROLE]}
    with webui_daemon("mjwebn", users, config=f'[cluster]\nnode = "{HERE}"\n', before_start=fill) as running:
        yield running


@pytest.fixture
def pages(browser: Any, daemon: DaemonProcess) -> Iterator[Pages]:  # noqa: F811
    with pages_on(browser, daemon.url) as made:
        yield made


def past_of(node: str) -> list[int]:
    """
    The past jobs of C{node}, newest first.
    """
    return [i for i in range(PAST, 0, -1) if history.node_of(i) == node]


# -- The query -------------------------------------------------------------------


def test_a_node_condition_is_answered_by_sql_with_filter_lists_answer() -> None:
    """
    C{node} is copied to the store's column C{job_node} (the record's node,
    on both engines): the condition goes to SQL, whose answer is
    C{filter_list}'s (the daemon's test below, and tests/test_sql_query.py).
    """
    options = validate_options({"order_by": ["-id"]})
    sql = translate([["node", "=", "beta"], ["state", "=", "FAILED"]], options)
    assert sql.where == "WHERE job_node = ? AND state = ?" and sql.params == ("beta", "FAILED")
    assert sql.residual is None
    records = [history.record(i, 30, 0.0) for i in range(1, 31)]
    kept = [i for i in range(1, 31) if history.node_of(i) == "beta"]
    assert filter_list(records, [["node", "=", "beta"]], {"select": ["id"]}) == [{"id": i} for i in kept]


def test_the_daemon_filters_and_sorts_by_node(daemon: DaemonProcess) -> None:
    beta = daemon.call(ADMIN, "core.get_jobs", [["node", "=", "beta"]], {"order_by": ["-id"], "select": ["id"]})
    assert [j["id"] for j in beta] == past_of("beta")
    assert daemon.call(ADMIN, "core.get_jobs", [["node", "=", "beta"]], {"count": True}) == len(past_of("beta"))
    ordered = daemon.call(ADMIN, "core.get_jobs", [["id", "<=", PAST]], {"order_by": ["-node", "id"], "select": ["id"]})
    # Node names Z to A (gamma, beta, alpha), each node's jobs oldest first.
    by_node = sorted(range(1, PAST + 1), key=lambda i: (-history.NODES.index(history.node_of(i)), i))
    assert [j["id"] for j in ordered] == by_node


# -- The list --------------------------------------------------------------------


@needs_chromium
def test_the_node_column_sorts_and_filters_through_the_url(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    total = int(daemon.call(ADMIN, "core.get_jobs", [], {"count": True}))
    header = page.get_by_role("columnheader", name="Node", exact=True)
    expect(header).to_be_visible()
    wait_for_rows(page, PAST)
    shown = ids(page)
    assert cells(page, "c-node") == [history.node_of(i) for i in shown]
    # A daemon alone in its cluster: no cluster line; the filter offers its node and those of its history.
    expect(page.locator("#cluster")).to_be_hidden()
    node_filter = page.get_by_label("Node", exact=True)
    expect(node_filter.locator("option")).to_have_text(["All nodes", "alpha", "beta", "delta", "gamma"])

    # Sort by node: A to Z on the first click, then Z to A.
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    expect(page).to_have_url(re.compile(r"#jobs\?sort=node$"))
    expected = [j["id"] for j in daemon.call(
        ADMIN, "core.get_jobs", [], {"order_by": ["node", "id"], "limit": PAGE, "select": ["id"]}
    )]  # fmt: skip
    wait_for_rows(page, expected[0])
    assert ids(page) == expected
    assert set(cells(page, "c-node")) == {"alpha"}
    header.get_by_role("button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    wait_for_rows(page, past_of("gamma")[0])
    assert ids(page) == past_of("gamma")[:PAGE]

    # The filter: a query to the daemon, in the URL, in the title.
    node_filter.select_option("beta")
    expect(page).to_have_url(re.compile(r"#jobs\?node=beta&sort=-node$"))
    beta = past_of("beta")
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(len(beta))} jobs matching")
    wait_for_rows(page, beta[0])
    assert ids(page) == beta[:PAGE]
    assert set(cells(page, "c-node")) == {"beta"}
    expect(page).to_have_title("Jobs on beta · midjobs")
    # The summary counts the jobs of the list's node, and its links keep it.
    summary = page.get_by_role("navigation", name="At a glance")
    expect(summary.locator("#summary-scope")).to_have_text("On beta:")
    expect(summary.get_by_role("link", name=re.compile("running"))).to_have_attribute(
        "href", "#jobs?state=RUNNING&node=beta&sort=-node"
    )
    page.get_by_role("button", name="Next page").click()
    wait_for_rows(page, beta[PAGE])
    assert ids(page) == beta[PAGE:2 * PAGE]

    # A shared link: state and node together.
    page.goto("/#jobs?state=FAILED&node=gamma")
    expect(node_filter).to_have_value("gamma")
    expect(page.locator("#filter-state")).to_have_value("FAILED")
    failed = daemon.call(
        ADMIN, "core.get_jobs", [["state", "=", "FAILED"], ["node", "=", "gamma"]],
        {"order_by": ["-id"], "select": ["id"]},
    )  # fmt: skip
    assert 0 < len(failed) < PAGE
    expect(page.locator("#jobs-count")).to_have_text(f"{len(failed)} of {n(total)} jobs")
    wait_for_rows(page, failed[0]["id"])
    assert ids(page) == [j["id"] for j in failed]
    expect(page).to_have_title("Failed jobs on gamma · midjobs")

    # A job's view names its node.
    row(page, failed[0]["id"]).get_by_role("link").click()
    expect(page.locator("#job-node")).to_have_text("gamma")
    page.go_back()
    page.get_by_role("button", name="Clear filters").click()
    expect(page).to_have_url(re.compile(r"#jobs$"))
    expect(node_filter).to_have_value("")


@needs_chromium
def test_new_jobs_show_their_node_and_follow_the_node_filter(daemon: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    page.goto("/#jobs?node=beta")
    expect(page.locator("#jobs-count")).to_have_text(f"1–100 of {n(len(past_of('beta')))} jobs matching")
    # A job of this daemon: not one of beta's.
    quiet = daemon.call(ADMIN, "core.job_test", {"description": "Not on beta"})
    running = daemon.call(ADMIN, "core.job_test", {"sleep": 120, "description": "Running on delta"})
    try:
        page.get_by_label("Node", exact=True).select_option(HERE)
        expect(page).to_have_url(re.compile(rf"#jobs\?node={HERE}$"))
        wait_for_rows(page, running)
        assert ids(page)[:2] == [running, quiet]
        assert set(cells(page, "c-node")) == {HERE}
        summary = page.get_by_role("navigation", name="At a glance")
        expect(summary.locator("#summary-scope")).to_have_text(f"On {HERE}:")
        expect(summary.get_by_role("link", name=re.compile("running"))).to_have_text("1 running")
        # The running job is this daemon's: beta has none running.
        page.get_by_label("Node", exact=True).select_option("beta")
        expect(summary.locator("#summary-scope")).to_have_text("On beta:")
        expect(summary.get_by_role("link", name=re.compile("running"))).to_have_text("0 running")
        wait_for_rows(page, past_of("beta")[0])
        assert running not in ids(page)
        # A new job of this daemon does not come into beta's list; it does into delta's.
        later = daemon.call(ADMIN, "core.job_test", {"description": "Later, on delta"})
        page.get_by_label("Node", exact=True).select_option(HERE)
        wait_for_rows(page, later)
        expect(row(page, later).locator(".c-node")).to_have_text(HERE)
    finally:
        daemon.call(ADMIN, "core.job_abort", running)


@needs_chromium
def test_a_user_who_may_not_list_the_nodes(daemon: DaemonProcess, pages: Pages) -> None:
    """
    C{cluster.nodes} is for administrators: a plain user's page does without
    it (no error), and knows no other node than its own jobs'.
    """
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ALICE)
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#filter-node-field")).to_be_hidden()
    expect(page.locator("#cluster")).to_be_hidden()


# -- A daemon alone --------------------------------------------------------------


@needs_chromium
def test_a_daemon_alone_shows_no_node_column(browser: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    with webui_daemon("mjwebn1", {ADMIN: ["FULL_ADMIN"]}) as alone, pages_on(browser, alone.url) as pages:
        (node,) = alone.call(ADMIN, "cluster.nodes")
        job = alone.call(ADMIN, "core.job_test", {"description": "Here"})
        assert alone.call(ADMIN, "core.get_jobs", [["node", "=", node["name"]]], {"select": ["id"]}) == [{"id": job}]
        page = pages()
        log_in(page, ADMIN)
        wait_for_rows(page, job)
        expect(page.get_by_role("columnheader", name="Started by", exact=True)).to_be_visible()
        expect(page.locator(".jobs-head .c-node")).to_be_hidden()
        expect(row(page, job).locator(".c-node")).to_be_hidden()
        expect(page.locator("#filter-node-field")).to_be_hidden()
        expect(page.locator("#cluster")).to_be_hidden()
        expect(page.locator("#summary-scope")).to_be_hidden()
        row(page, job).get_by_role("link").click()
        expect(page.locator("#job-node")).to_have_text(node["name"])


# -- A cluster -------------------------------------------------------------------


def _local_call(node: Node, method: str, *params: Any) -> Any:
    """
    C{method} on C{node} over its UNIX socket, as its administrator.
    """
    connection = RpcConnection(socket.socket(socket.AF_UNIX), str(node.socket_path))
    try:
        return connection.call(method, *params)
    finally:
        connection.close()


@needs_chromium
def test_the_cluster_line_lists_the_nodes(
    browser: Any, postgres_database: str, cluster_nodes: NodeStarter
) -> None:
    from playwright.sync_api import expect

    n1, n2 = cluster_nodes("n1", "n2", database_url=postgres_database)
    _local_call(n1, "user.create", {"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    running = _local_call(n2, "core.job_test", {"sleep": 120, "description": "Running on n2"})
    with pages_on(browser, n1.http_url) as pages:
        page = pages()
        log_in(page, ADMIN)
        line = page.get_by_role("region", name="Cluster of 2 nodes")
        expect(line.locator(".cluster-node")).to_have_text([
            re.compile(r"^n1 Online 0 running$"), re.compile(r"^n2 Online 1 running$"),
        ])  # fmt: skip
        wait_for_rows(page, running)
        expect(row(page, running).locator(".c-node")).to_have_text("n2")
        screenshot(page, "cluster")

        line.locator('[data-node="n2"]').get_by_role("link", name=re.compile("running")).click()
        expect(page).to_have_url(re.compile(r"#jobs\?state=RUNNING&node=n2$"))
        wait_for_rows(page, running)
        assert ids(page) == [running]
        expect(line.get_by_role("link", name="Jobs of node n2")).to_have_attribute("aria-current", "true")
        phone = pages(PHONE)
        log_in(phone, ADMIN)
        phone.goto("/#jobs?node=n2")
        wait_for_rows(phone, running)
        # The rows are cards: every cell, the node's too, within its card.
        assert phone.evaluate("""() => [...document.querySelectorAll('#jobs-body .jobs-row')].every(tr => {
            const card = tr.getBoundingClientRect();
            return [...tr.children].every(c => c.getBoundingClientRect().right <= card.right + 0.5);
        })""")
        screenshot(phone, "cluster-phone", full_page=True)

        # A node that stopped is listed offline, with when it was last seen.
        _local_call(n2, "core.job_abort", running)
        n2.stop()
        expect(line.locator('[data-node="n2"]')).to_have_text(
            re.compile(r"^n2 Offline 0 running last seen "), timeout=40_000
        )
        expect(line.locator('[data-node="n1"]')).to_have_text(re.compile(r"^n1 Online"))
