"""
The web task manager: its files as the daemon serves them, and the page in a
real headless browser (Debian's C{chromium}, driven by Playwright's sync API)
against a real C{twistd -n midjobs} subprocess.

The browser tests wait on conditions (Playwright's C{expect} and
C{wait_for_function}), never on fixed sleeps.  They take screenshots of the
main views; with C{MIDJOBS_SCREENSHOTS} set to a directory (such as
C{docs/_static/screenshots}, for C{docs/webui.rst}) they are saved there.
"""

from __future__ import annotations

import base64
import html.parser
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

import webui_services
from chromium import CHROMIUM, CHROMIUM_ARGS
from conftest import subprocess_env

from midjobs.web import STATIC_DIR

#: Where screenshots are saved (none are saved without it).
SCREENSHOTS = os.environ.get("MIDJOBS_SCREENSHOTS")
BIN = Path(sys.executable).parent
#: How long a browser expectation may take (the machine may be busy with other tests).
TIMEOUT_MS = 30_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

ADMIN = ("admin", "s3cret-pass")
ALICE = ("alice", "alice-pass")
BOB = ("bob", "bob-pass")

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


# -- The daemon, as a subprocess -------------------------------------------------


class DaemonProcess:
    """
    C{twistd -n midjobs} with its own state directory, a filesystem root, and
    the test plugins; its TCP port is read from its log.  Another one started
    on the same C{base} finds the state (users, job history) the last one left.

    @param config: more TOML for the configuration file (other sections than C{[filesystem]}).
    """

    def __init__(self, base: Path, socket_path: Path, *plugins: str, config: str = "") -> None:
        self.base = base
        self.root = base / "root"
        self.root.mkdir(exist_ok=True)
        self.socket = socket_path
        config_file = base / "midjobs.toml"
        config_file.write_text(f'[filesystem]\nroots = ["{self.root}"]\n{config}')
        argv = [
            str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "midjobs",
            "--config", str(config_file),
            "--state-dir", str(base / "state"),
            "--listen", "tcp:0:interface=127.0.0.1",
            "--socket", str(socket_path),
            *(arg for plugin in plugins for arg in ("--plugin", plugin)),
        ]  # fmt: skip
        env = {**subprocess_env(), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            argv, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.output: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or not self.port:
            self.stop()
            raise RuntimeError("twistd did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.output.append(line)
            match = re.search(r"Listening on tcp:0\S* \(IPv4Address\(.*?port=(\d+)\)\)", line)
            if match:
                self.port = int(match.group(1))
            if "midjobs is ready" in line:
                self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, user: tuple[str, str] | None, method: str, *params: Any) -> Any:
        """
        Call C{method} as midclt would: over TCP logged in as C{user}, else
        over the UNIX socket (where this process's uid is an administrator).
        A job method returns the job id at once.
        """
        if user is None:
            connection = RpcConnection(socket.socket(socket.AF_UNIX), str(self.socket))
        else:
            connection = RpcConnection(socket.socket(socket.AF_INET), ("127.0.0.1", self.port))
        try:
            if user is not None:
                assert connection.call("auth.login", *user) is True, user
            return connection.call(method, *params)
        finally:
            connection.close()

    def create_user(self, user: tuple[str, str], roles: list[str]) -> None:
        self.call(None, "user.create", {"username": user[0], "password": user[1], "roles": roles})

    def kill(self) -> None:
        """
        End the daemon at once (C{SIGKILL}): nothing is recorded on the way out.
        """
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)


class RpcConnection:
    """
    A blocking JSON-RPC connection to the daemon, for the calls the tests
    make besides the page's (the page is what they test): the WebSocket
    handshake and text frames over a plain socket, as midclt sends them,
    without the second or more a midclt process takes to start.

    @param address: what C{sock} connects to.
    """

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.sock.settimeout(60)
        self.sock.connect(address)
        self.incoming = sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            b"GET /api/current HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = self.incoming.readline()
        assert status.startswith(b"HTTP/1.1 101 "), status
        while self.incoming.readline() not in (b"\r\n", b""):
            pass
        self.last_id = 0

    def _send(self, opcode: int, payload: bytes) -> None:
        # A client's frames are masked: a zero mask leaves the payload as it is.
        if len(payload) < 126:
            length = bytes([0x80 | len(payload)])
        elif len(payload) < 2**16:
            length = bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            length = bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + b"\0\0\0\0" + payload)

    def _text(self) -> bytes:
        """
        The payload of the next text frame (pings are Autobahn's to answer
        only when idle for long: none come during a call).
        """
        while True:
            first, second = self.incoming.read(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self.incoming.read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self.incoming.read(8))
            payload = self.incoming.read(size)
            if first & 0x0F == 0x1:
                return payload
            if first & 0x0F == 0x8:
                raise ConnectionError(f"closed by the daemon: {payload!r}")

    def call(self, method: str, *params: Any) -> Any:
        """
        The result of C{method}; an error answer fails the test.
        """
        self.last_id += 1
        request = {"jsonrpc": "2.0", "id": self.last_id, "method": method, "params": list(params)}
        self._send(0x1, json.dumps(request).encode())
        while True:
            message = json.loads(self._text())
            if message.get("id") == self.last_id:
                assert "error" not in message, (method, message["error"])
                return message["result"]

    def close(self) -> None:
        self._send(0x8, struct.pack("!H", 1000))
        self.incoming.close()
        self.sock.close()


@contextmanager
def webui_daemon(
    prefix: str,
    users: Mapping[tuple[str, str], list[str]],
    *,
    config: str = "",
    before_start: Callable[[Path], None] | None = None,
) -> Iterator[DaemonProcess]:
    """
    A daemon with the web test services and C{users} (credentials -> roles),
    in a temporary directory removed afterwards.  C{before_start} gets the
    state directory before the daemon starts.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if before_start is not None:
            before_start(base / "state")
        daemon = DaemonProcess(base, base / "s.sock", "webui_services", config=config)
        try:
            for credentials, roles in users.items():
                daemon.create_user(credentials, roles)
            yield daemon
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def webui() -> Iterator[DaemonProcess]:
    """
    One daemon for the module, with an administrator and two plain users.
    """
    users = {ADMIN: ["FULL_ADMIN"], ALICE: [webui_services.USER_ROLE], BOB: [webui_services.USER_ROLE]}
    with webui_daemon("mjweb", users) as daemon:
        yield daemon


# -- A relay that can cut connections, for the reconnection test -----------------


class Relay:
    """
    A TCP relay on 127.0.0.1 in front of the daemon.  L{cut} closes every
    connection through it and refuses new ones until L{restore}.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self.lock:
            self.open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        self.refusing = True
        with self.lock:
            sockets = list(self.open)
        for s in sockets:
            self._close(s)

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


# -- The browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Pages:
    """
    Makes browser pages, each in its own context (its own sessionStorage),
    and collects what they print as errors.
    """

    #: Console errors a test expects (set by the test): patterns.
    allowed: tuple[str, ...] = ()

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def __call__(self, viewport: dict[str, int] = DESKTOP, base_url: str | None = None) -> Any:
        context = self.browser.new_context(
            viewport=viewport, accept_downloads=True, base_url=base_url or self.base_url
        )
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        return page

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(re.search(p, message.text) for p in self.allowed):
            self.errors.append(f"console error: {message.text}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@contextmanager
def pages_on(browser: Any, url: str) -> Iterator[Pages]:
    """
    New pages on the daemon at C{url}; the test fails if any of them logged an error.
    """
    made = Pages(browser, url)
    yield made
    made.close()
    assert made.errors == []


@pytest.fixture
def pages(browser: Any, webui: DaemonProcess) -> Iterator[Pages]:
    with pages_on(browser, webui.url) as made:
        yield made


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    path = None
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        path = str(Path(SCREENSHOTS) / f"{name}.png")
    page.screenshot(path=path, full_page=full_page, animations="disabled")


def log_in(page: Any, user: tuple[str, str]) -> None:
    """
    Open the page and log in as C{user}; wait until the jobs are loaded.
    """
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def row(page: Any, job_id: int) -> Any:
    return page.locator(f'#jobs-body .jobs-row[data-id="{job_id}"]')


def next_job(page: Any, box: str, previous: str | None) -> str:
    """
    The id of the job the upload or download box C{box} follows, once it is
    another than C{previous}.
    """
    page.wait_for_function(
        """([box, previous]) => {
            const e = document.querySelector(box);
            return !e.hidden && e.dataset.jobId && e.dataset.jobId !== previous;
        }""",
        arg=[box, previous],
    )
    return page.locator(box).get_attribute("data-job-id")


def wait_for_download(page: Any, click: Callable[[], None]) -> tuple[str, bytes]:
    """
    Click, and return the name and the bytes of the file the browser saved.
    """
    with page.expect_download() as info:
        click()
    download = info.value
    path = download.path()
    return download.suggested_filename, Path(path).read_bytes()


# -- Served files ----------------------------------------------------------------


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class MarkupCheck(html.parser.HTMLParser):
    """
    Collects what the CSP would refuse: inline scripts, style attributes, event-handler attributes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self.in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        if "style" in names:
            self.problems.append(f"style attribute on <{tag}>")
        self.problems += [f"{name} on <{tag}>" for name in names if name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.problems.append("inline script text")


def test_page_and_assets_are_served(webui: DaemonProcess) -> None:
    status, headers, body = fetch(webui.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert '<script type="module" src="/static/js/main.js"></script>' in page
    check = MarkupCheck()
    check.feed(page)
    assert check.problems == []

    assets = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    assert {"index.html", "style.css", "favicon.svg", "js/main.js"} <= set(assets)
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
    for asset in assets:
        status, headers, content = fetch(f"{webui.url}/static/{asset}")
        assert status == 200, asset
        assert headers["Content-Type"].startswith(types[Path(asset).suffix]), asset
        assert content == (STATIC_DIR / asset).read_bytes()
        # Nothing is fetched from elsewhere (the SVG namespace is a name, not a fetch).
        text = content.decode().replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), asset
        # Every module a module imports is shipped.
        for imported in re.findall(r'from "\./([\w./-]+)"', text):
            assert f"js/{imported}" in assets, (asset, imported)

    # A browser revalidates (no-cache) and gets a 304 while its copy is current.
    status, headers, _ = fetch(f"{webui.url}/static/js/main.js")
    assert headers["Cache-Control"] == "no-cache"
    status, _, content = fetch(f"{webui.url}/static/js/main.js", {"If-None-Match": headers["ETag"]})
    assert (status, content) == (304, b"")

    # No listings, no way out of the directory.
    for path in ["/static/", "/static/js/", "/static/../pyproject.toml", "/static/%2e%2e/midjobs/__init__.py"]:
        status, _, _ = fetch(webui.url + path)
        assert status == 404, path


# -- The page in a browser -------------------------------------------------------


@needs_chromium
def test_log_in_watch_a_job_reload_and_log_out(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    page.goto("/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.get_by_label("User name")).to_be_focused()
    # A wrong password is refused (POST /_session answers 401, which the browser logs) and asked again.
    pages.allowed = (r"status of 401",)
    page.keyboard.type(ADMIN[0])
    page.keyboard.press("Tab")
    page.keyboard.type("wrong")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect(page.get_by_label("Password")).to_have_value("")
    screenshot(page, "login")

    # Keyboard only: type, Tab, Enter.
    page.get_by_label("User name").fill("")
    page.get_by_label("User name").focus()
    page.keyboard.type(ADMIN[0])
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN[1])
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    # The browser keeps a session cookie no script can read, never the password.
    stored = page.evaluate("JSON.stringify({...sessionStorage, ...localStorage, cookie: document.cookie})")
    assert ADMIN[1] not in stored and "midjobs_session" not in stored

    job_id = webui.call(ADMIN, "core.job_test", {"sleep": 3, "description": "Counting to three"})
    job = row(page, job_id)
    expect(job).to_be_visible()
    expect(job.locator(".c-method")).to_have_text("core.job_test")
    expect(job.locator(".c-desc")).to_have_text("Counting to three")
    # The bar moves (a value between the ends is seen), then reaches 100%.
    page.wait_for_function(
        """id => {
            const bar = document.querySelector(`#jobs-body .jobs-row[data-id="${id}"] progress`);
            return bar && bar.value > 0 && bar.value < 100;
        }""",
        arg=job_id,
    )
    expect(job.locator(".state")).to_have_text("Running")
    expect(job.locator(".pct")).to_have_text("100%")
    expect(job.locator(".state")).to_have_text("Success")
    expect(job.locator("progress")).to_have_js_property("value", 100)
    expect(job.locator(".c-start time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(job.locator(".c-duration")).to_have_text(re.compile(r"^[34] s$"))

    # More jobs for the picture and the filters.
    failed = webui.call(ADMIN, "core.job_test", {"description": "Meant to fail", "error": "Out of coffee"})
    running = webui.call(ADMIN, "core.job_test", {"sleep": 120, "description": "A long one"})
    logged = webui.call(ADMIN, "webui.log_lines", 5, 0.01)
    expect(row(page, failed).locator(".state")).to_have_text("Failed")
    expect(row(page, running).locator(".state")).to_have_text("Running")
    expect(row(page, logged).locator(".state")).to_have_text("Success")
    # Newest first.
    ids = [int(i) for i in page.locator("#jobs-body .jobs-row").evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert ids == sorted(ids, reverse=True)
    screenshot(page, "jobs")

    # Filters: by state, by method, and a search in descriptions.
    page.locator("#filter-state").select_option("FAILED")
    expect(row(page, failed)).to_be_visible()
    expect(row(page, job_id)).to_be_hidden()
    page.locator("#filter-state").select_option("")
    page.locator("#filter-method").select_option("webui.log_lines")
    expect(row(page, logged)).to_be_visible()
    expect(row(page, failed)).to_be_hidden()
    page.locator("#filter-method").select_option("")
    page.get_by_label("Search descriptions").fill("to THREE")
    expect(row(page, job_id)).to_be_visible()
    expect(row(page, running)).to_be_hidden()
    expect(page.locator("#jobs-count")).to_have_text(re.compile(r"^1 of \d+ jobs$"))
    page.get_by_label("Search descriptions").fill("")
    expect(row(page, running)).to_be_visible()

    # A reload logs back in with the token.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(row(page, job_id).locator(".state")).to_have_text("Success")
    expect(page.locator("#who-name")).to_have_text(ADMIN[0])

    # Logging out forgets the token: a reload shows the login form.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    webui.call(ADMIN, "core.job_abort", running)


@needs_chromium
def test_job_detail_and_abort(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    job_id = webui.call(ADMIN, "core.job_test", {"sleep": 60, "description": "Waiting to be aborted"})
    expect(row(page, job_id).locator(".state")).to_have_text("Running")
    # Keyboard: the row's link opens the job.
    page.get_by_role("link", name=f"Job {job_id}: details").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#job/{job_id}$"))
    expect(page.get_by_role("heading", name=f"Job {job_id}")).to_be_visible()
    expect(page.locator("#job-method")).to_have_text("core.job_test")
    expect(page.locator("#job-arguments")).to_contain_text('"sleep": 60')
    expect(page.locator("#job-state")).to_have_text("Running")
    page.get_by_role("button", name="Abort job").click()
    page.get_by_role("dialog").get_by_role("button", name="Abort job").click()
    expect(page.locator("#job-state")).to_have_text("Aborted")
    expect(page.get_by_role("button", name="Abort job")).to_be_hidden()
    expect(page.locator("#job-error-box")).to_be_visible()
    assert webui.call(ADMIN, "core.get_jobs", [["id", "=", job_id]], {"get": True})["state"] == "ABORTED"

    # A failed job: its error and traceback.
    failed = webui.call(ADMIN, "core.job_test", {"error": "Out of coffee"})
    page.goto(f"/#job/{failed}")
    expect(page.locator("#job-state")).to_have_text("Failed")
    expect(page.locator("#job-error")).to_contain_text("Out of coffee")
    page.get_by_text("Traceback", exact=True).click()
    expect(page.locator("#job-traceback")).to_contain_text("Traceback")
    screenshot(page, "job", full_page=True)

    # A successful one: its result.  Back to the list.
    done = webui.call(ADMIN, "webui.quick", 42)
    page.goto(f"/#job/{done}")
    expect(page.locator("#job-result")).to_have_text("42")
    page.get_by_role("link", name="All jobs").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_focused()


@needs_chromium
def test_follow_a_log_and_download_it(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    count = 60
    job_id = webui.call(ADMIN, "webui.log_lines", count, 0.1)
    page.goto(f"/#job/{job_id}")
    log = page.locator("#job-logs")
    # Lines show while the job still runs: the live log, not the excerpt at the end.
    page.wait_for_function(
        """() => document.querySelector("#job-logs").textContent.includes("line 2\\n")
              && document.querySelector("#job-state").dataset.state === "RUNNING" """
    )
    expect(page.get_by_role("button", name="Follow live log")).to_have_attribute("aria-pressed", "true")
    expect(log).to_contain_text(f"line {count - 1}\n")
    expect(page.locator("#job-state")).to_have_text("Success")
    expected = "".join(f"line {i}\n" for i in range(count))
    assert log.text_content() == expected

    name, content = wait_for_download(page, lambda: page.get_by_role("button", name="Download whole log").click())
    assert (name, content) == (f"job-{job_id}.log", expected.encode())


@needs_chromium
def test_upload_files(webui: DaemonProcess, pages: Pages, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = pages()
    log_in(page, ADMIN)
    page.get_by_role("link", name="Upload").click()
    expect(page.get_by_role("heading", name="Upload")).to_be_focused()
    methods = page.locator("#upload-method").locator("option").all_text_contents()
    assert "filesystem.put" in methods and "filesystem.put_files" in methods
    assert "filesystem.get" not in methods

    # One file to a path.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    page.locator("#upload-method").select_option("filesystem.put")
    page.get_by_role("button", name="Edit as JSON").click()
    page.locator("#upload-params").fill(json.dumps([str(webui.root / "big.bin")]))
    page.get_by_label("Files (one to five)").set_input_files(str(big))
    expect(page.locator("#upload-files-list")).to_contain_text("big.bin (5.0 MiB)")
    page.get_by_role("button", name="Upload", exact=True).click()
    first = next_job(page, "#upload-job", None)
    expect(page.locator("#upload-bytes-text")).to_contain_text("(100%)")
    expect(page.locator("#upload-job .state")).to_have_text("Success")
    expect(page.locator("#upload-job .progress-text")).to_have_text(f"{big.stat().st_size} bytes written")
    assert (webui.root / "big.bin").read_bytes() == big.read_bytes()
    screenshot(page, "upload", full_page=True)

    # Several files into a directory.
    (webui.root / "many").mkdir()
    files = []
    for i in range(3):
        path = tmp_path / f"file-{i}.txt"
        path.write_bytes(f"file {i}\n".encode() * (1000 * (i + 1)))
        files.append(path)
    page.locator("#upload-method").select_option("filesystem.put_files")
    page.locator("#upload-params").fill(json.dumps([str(webui.root / "many")]))
    page.get_by_label("Files (one to five)").set_input_files([str(p) for p in files])
    page.get_by_role("button", name="Upload", exact=True).click()
    next_job(page, "#upload-job", first)
    expect(page.locator("#upload-job .state")).to_have_text("Success")
    for path in files:
        assert (webui.root / "many" / path.name).read_bytes() == path.read_bytes()

    # Parameters that are not an array are refused before anything is sent.
    page.locator("#upload-params").fill('{"not": "an array"}')
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-error")).to_have_text(re.compile("must be a JSON array"))
    # A path the daemon refuses: the page says why (the browser logs the 412 itself).
    pages.allowed = (r"status of 412",)
    page.locator("#upload-method").select_option("filesystem.put")
    page.locator("#upload-params").fill(json.dumps(["/not/under/the/root"]))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-error")).to_contain_text("The daemon refused the upload (HTTP 412)")
    expect(page.locator("#upload-error")).to_contain_text("only paths under")


@needs_chromium
def test_download_a_file(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    content = os.urandom(3 * 1024 * 1024 + 7)
    (webui.root / "out.bin").write_bytes(content)
    page = pages()
    log_in(page, ADMIN)
    page.get_by_role("link", name="Download").click()
    methods = page.locator("#download-method").locator("option").all_text_contents()
    assert "filesystem.get" in methods and "filesystem.put" not in methods
    page.locator("#download-method").select_option("filesystem.get")
    page.get_by_role("button", name="Edit as JSON").click()
    page.locator("#download-params").fill(json.dumps([str(webui.root / "out.bin")]))
    page.get_by_label("Save as").fill("saved.bin")
    name, saved = wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert name == "saved.bin"
    assert saved == content
    expect(page.locator("#download-job .state")).to_have_text("Success")
    screenshot(page, "download")

    # Buffered: the file is fetched once the job has ended.
    page.get_by_label("Buffered").check()
    page.get_by_label("Save as").fill("buffered.bin")
    name, saved = wait_for_download(page, lambda: page.get_by_role("button", name="Download", exact=True).click())
    assert (name, saved) == ("buffered.bin", content)


@needs_chromium
def test_a_user_sees_only_their_own_jobs(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    alices = webui.call(ALICE, "webui.user_job", "Alice's")
    bobs = webui.call(BOB, "webui.user_job", "Bob's")
    alice, bob = pages(), pages()
    log_in(alice, ALICE)
    log_in(bob, BOB)
    expect(row(alice, alices).locator(".state")).to_have_text("Success")
    expect(row(bob, bobs).locator(".state")).to_have_text("Success")
    assert row(alice, bobs).count() == 0
    assert row(bob, alices).count() == 0

    # Live: Bob's new job shows on his page, never on Alice's.
    later = webui.call(BOB, "webui.user_job", "Bob's later", 1)
    expect(row(bob, later).locator(".state")).to_have_text("Success")
    mine = webui.call(ALICE, "webui.user_job", "Alice's later")
    expect(row(alice, mine).locator(".state")).to_have_text("Success")
    assert row(alice, later).count() == 0
    # Nor can she open it.
    alice.goto(f"/#job/{later}")
    expect(alice.locator("#job-status")).to_have_text(re.compile(f"There is no job {later}|Could not load"))
    expect(alice.locator("#job-method")).to_have_text("")


@needs_chromium
def test_phone_width(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    page = pages(viewport=PHONE)
    log_in(page, ADMIN)
    job_id = webui.call(ADMIN, "core.job_test", {"sleep": 120, "description": "Seen on a phone"})
    expect(row(page, job_id).locator(".state")).to_have_text("Running")
    # Nothing wider than the screen; the labels show beside the values.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(row(page, job_id).locator(".c-progress")).to_be_visible()
    page.locator("#jobs-body .jobs-row").nth(0).scroll_into_view_if_needed()
    screenshot(page, "phone")
    page.goto(f"/#job/{job_id}")
    expect(page.get_by_role("button", name="Abort job")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_role("button", name="Abort job").click()
    page.get_by_role("dialog").get_by_role("button", name="Abort job").click()
    expect(page.locator("#job-state")).to_have_text("Aborted")


def background_luminance(page: Any) -> float:
    """
    The relative luminance (0 black, 1 white) of the page's background (the root element's).
    """
    rgb = page.evaluate(
        "getComputedStyle(document.documentElement).backgroundColor.match(/[\\d.]+/g).slice(0, 3).map(Number)"
    )
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@needs_chromium
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_view_fits_a_phone(webui: DaemonProcess, pages: Pages, scheme: str) -> None:
    from playwright.sync_api import expect

    page = pages(viewport=PHONE)
    page.emulate_media(color_scheme=scheme)
    suffix = "phone" if scheme == "light" else "phone-dark"
    job_id = webui.call(ADMIN, "core.job_test", {"sleep": 120, "description": f"Seen on a {scheme} phone"})

    def fits(view: str) -> None:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], view
        luminance = background_luminance(page)
        assert (luminance < 0.2) if scheme == "dark" else (luminance > 0.8), (view, luminance)
        screenshot(page, f"{view}-{suffix}", full_page=True)

    page.goto("/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    fits("login")
    log_in(page, ADMIN)
    expect(row(page, job_id).locator(".state")).to_have_text("Running")
    if scheme == "dark":
        fits("jobs")  # the light one is test_phone_width's
    page.goto(f"/#job/{job_id}")
    expect(page.locator("#job-state")).to_have_text("Running")
    fits("job")
    page.get_by_role("link", name="Upload").click()
    expect(page.get_by_role("heading", name="Upload")).to_be_visible()
    fits("upload")
    page.get_by_role("link", name="Download").click()
    expect(page.get_by_role("heading", name="Download")).to_be_visible()
    fits("download")
    webui.call(ADMIN, "core.job_abort", job_id)


@needs_chromium
def test_reconnects_by_itself(webui: DaemonProcess, pages: Pages) -> None:
    from playwright.sync_api import expect

    relay = Relay(webui.port)
    try:
        # A lost connection makes the browser log failed WebSocket attempts.
        pages.allowed = (r"WebSocket connection to .* failed", r"ERR_CONNECTION_(RESET|CLOSED|REFUSED)")
        page = pages(base_url=f"http://127.0.0.1:{relay.port}")
        log_in(page, ADMIN)
        before = webui.call(ADMIN, "core.job_test", {"description": "Before the cut"})
        expect(row(page, before).locator(".state")).to_have_text("Success")

        relay.cut()
        expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
        expect(page.locator("#connection")).to_contain_text("Reconnecting")
        expect(page.get_by_role("button", name="Retry now")).to_be_visible()
        during = webui.call(ADMIN, "core.job_test", {"description": "While cut off"})

        relay.restore()
        expect(page.locator("body")).to_have_attribute("data-connection", "open")
        expect(page.locator("#connection")).to_be_hidden()
        # Logged back in with the token, the list caught up, and it is live again.
        expect(row(page, during).locator(".state")).to_have_text("Success")
        after = webui.call(ADMIN, "core.job_test", {"sleep": 1, "description": "After"})
        expect(row(page, after).locator(".state")).to_have_text("Success")
        expect(page.get_by_role("heading", name="Log in")).to_be_hidden()

        # A job's page across a cut: its state and its live log catch up.
        count = 60
        logged = webui.call(ADMIN, "webui.log_lines", count, 0.1)
        page.goto(f"/#job/{logged}")
        expect(page.locator("#job-logs")).to_contain_text("line 3\n")
        relay.cut()
        expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
        relay.restore()
        expect(page.locator("body")).to_have_attribute("data-connection", "open")
        expect(page.locator("#job-state")).to_have_text("Success")
        expect(page.locator("#job-logs")).to_contain_text(f"line {count - 1}\n")
        assert page.locator("#job-logs").text_content() == "".join(f"line {i}\n" for i in range(count))
        expect(page.locator("#job-result")).to_have_text(str(count))
    finally:
        relay.close()
