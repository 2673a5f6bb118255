"""
Over HTTP/2 a request need not carry a C{Content-Length}: its length is
unknown until its stream ends.  A route that takes no body answers such a
request as usual when no body comes (C{POST /_session/logout} and the others
the web page sends), and refuses with 413 a body that does come; the
connection's other streams go on.

curl --http2 and an C{h2} client against a TLS listener (ALPN h2), as in
L{test_http2_upload}.
"""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest_twisted
from twisted.internet import threads

from chromium import CHROMIUM, CHROMIUM_ARGS
from conftest import ADMIN, RunningDaemon
from test_http2_upload import curl2, settings  # noqa: F401 (fixture)
from test_tls import Pki, admin, https_url, pki  # noqa: F401 (fixtures)
from test_webui import needs_chromium

XHR = ("-H", "X-Requested-With: curl")
#: curl sends no Content-Length at all.
NO_LENGTH = ("-H", "Content-Length:")
REFUSED = {"error": "This route takes no request body"}


@pytest_twisted.ensureDeferred
async def test_small_routes_answer_a_request_without_a_length(
    daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path  # noqa: F811
) -> None:
    url = https_url(daemon)
    jar = str(tmp_path / "cookies")
    for unset in ((), NO_LENGTH):
        assert await curl2(pki, *XHR, *unset, "-X", "POST", f"{url}/_session/token") == ("2", 200, {"token": None})
        assert await curl2(pki, *XHR, *unset, "-X", "POST", f"{url}/_session/logout") == ("2", 200, {"ended": False})
        assert await curl2(pki, *XHR, *unset, "-X", "DELETE", f"{url}/_session") == ("2", 200, {"ended": False})
        assert await curl2(pki, *XHR, *unset, "-X", "POST", f"{url}/_session") == (
            "2", 400, {"error": "Log in with Authorization: Basic, Bearer or Token"}
        )  # fmt: skip
        # A login, a token and a logout of the session, none with a length.
        login = await curl2(pki, *XHR, *unset, "-X", "POST", "-u", ":".join(ADMIN), "-c", jar, f"{url}/_session")
        assert login == ("2", 200, {"username": ADMIN[0]})
        version, status, body = await curl2(pki, *XHR, *unset, "-X", "POST", "-b", jar, f"{url}/_session/token")
        assert (version, status, body["username"]) == ("2", 200, ADMIN[0]) and body["token"]
        logout = await curl2(pki, *XHR, *unset, "-X", "POST", "-b", jar, f"{url}/_session/logout")
        assert logout == ("2", 200, {"ended": True})


@pytest_twisted.ensureDeferred
async def test_a_body_that_comes_without_a_length_is_refused(
    daemon: RunningDaemon, admin: Any, pki: Pki  # noqa: F811
) -> None:
    url = https_url(daemon)
    for route in ("/_session/logout", "/_session/token", "/_health"):
        assert await curl2(pki, *XHR, *NO_LENGTH, "--data-binary", "x" * 5000, url + route) == ("2", 413, REFUSED)
    assert (await curl2(pki, f"{url}/_health"))[:2] == ("2", 200)


#: A request's body that is not sent: its stream stays open (it waits for C{100 Continue}).
HELD = b"held"


def _exchange(port: int, ca: str, requests: list[tuple[list[tuple[str, str]], bytes | None]]) -> list[tuple[int, bytes]]:
    """
    Send C{requests} (headers, and a body, L{None} for none or L{HELD}) on
    streams of one HTTP/2 connection at once; return each one's final status
    (0 after a C{100 Continue}, which no test expects) and body, in order.
    A body goes without a C{content-length}.
    """
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            streams = []
            for headers, body in requests:
                stream = connection.get_next_available_stream_id()
                connection.send_headers(stream, headers, end_stream=body is None)
                if body is not None and body is not HELD:
                    connection.send_data(stream, body, end_stream=True)
                streams.append(stream)
            tls.sendall(connection.data_to_send())
            statuses: dict[int, int] = {}
            bodies: dict[int, bytes] = {stream: b"" for stream in streams}
            ended: set[int] = set()
            while ended != set(streams):
                data = tls.recv(65536)
                if not data:
                    raise AssertionError(f"the connection closed; ended: {ended}")
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.InformationalResponseReceived):
                        statuses[event.stream_id] = 0
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        ended.add(event.stream_id)
                tls.sendall(connection.data_to_send())
            return [(statuses.get(stream, 0), bodies[stream]) for stream in streams]


@pytest_twisted.ensureDeferred
async def test_a_refused_body_leaves_the_other_streams_alone(daemon: RunningDaemon, admin: Any, pki: Pki) -> None:  # noqa: F811
    def request(method: str, path: str, *more: tuple[str, str]) -> list[tuple[str, str]]:
        return [(":method", method), (":path", path), (":scheme", "https"), (":authority", "127.0.0.1"),
                ("x-requested-with", "h2"), *more]  # fmt: skip

    login = ("authorization", "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    answers = await threads.deferToThread(
        _exchange,
        daemon.port,
        str(pki.ca),
        [
            (request("POST", "/_session/token"), b"x" * 3000),
            (request("POST", "/_session", login), None),
            (request("GET", "/_health"), None),
            (request("POST", "/_session/logout"), b""),
            # It says it has a body to send: refused at once, and not invited to send it.
            (request("POST", "/_session/logout", ("expect", "100-continue")), HELD),
        ],
    )
    assert answers[0] == answers[4] == (413, b'{"error": "This route takes no request body"}')
    assert [status for status, _ in answers[1:4]] == [200, 200, 200]


#: What the page's fetch sends, and what it is answered: [method, path, status, protocol].
_FETCHES = """async () => {
  const answers = [];
  for (const [method, path] of [["DELETE", "/_session"], ["POST", "/_session/logout"], ["OPTIONS", "/_session"]]) {
    const response = await fetch(path, {method, headers: {"X-Requested-With": "midjobs"}, cache: "no-store"});
    answers.push([method, path, response.status]);
  }
  return [answers, performance.getEntriesByType("resource").map((entry) => entry.nextHopProtocol)];
}"""


def _fetch_in_chromium(url: str) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_context(ignore_https_errors=True).new_page()
            page.goto(url + "/_health")
            return page.evaluate(_FETCHES)
        finally:
            chromium.close()


@needs_chromium
@pytest_twisted.ensureDeferred
async def test_chromiums_bodiless_requests_over_http2(daemon: RunningDaemon, pki: Pki) -> None:  # noqa: F811
    # Chromium sends a DELETE or an OPTIONS without a body with no Content-Length (a POST says 0).
    answers, protocols = await threads.deferToThread(_fetch_in_chromium, https_url(daemon))
    assert set(protocols) == {"h2"}
    assert answers == [["DELETE", "/_session", 200], ["POST", "/_session/logout", 200], ["OPTIONS", "/_session", 405]]
