"""
POST /_upload over HTTP/2: curl --http2 against a TLS listener (ALPN h2).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from midjobs.config import Settings

from conftest import ADMIN, RunningDaemon
from test_tls import Pki, admin, https_url, pki  # noqa: F401  (fixtures)

MiB = 1024 * 1024


@pytest.fixture
def settings(settings: Settings, pki: Pki) -> Settings:  # noqa: F811
    """
    The test daemon listens with TLS (see test_tls), with the upload test services.
    """
    return attrs.evolve(
        settings,
        listen=("ssl:0:interface=127.0.0.1",),
        tls_certificate=str(pki.certificate),
        tls_private_key=str(pki.private_key),
        plugins=(*settings.plugins, "upload_services"),
    )


async def curl2(pki: Pki, *args: str) -> tuple[str, int, Any]:
    """
    curl over HTTP/2; the HTTP version, the status and the answer (JSON's, decoded).
    """
    out, err, code = await getProcessOutputAndValue(
        "curl",
        ["-sS", "--http2", "--cacert", str(pki.ca), "-w", "\n%{http_version} %{http_code}", *args],
        reactor=reactor,
    )
    assert code == 0, err.decode()
    body, _, tail = out.decode().rpartition("\n")
    version, status = tail.split()
    return version, int(status), json.loads(body) if body.startswith("{") else body


@pytest_twisted.ensureDeferred
async def test_upload_over_http2(daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    content = os.urandom(5 * MiB + 7)
    path = tmp_path / "h2.bin"
    path.write_bytes(content)
    data = json.dumps({"method": "upload.hash", "params": []})
    version, status, body = await curl2(
        pki, "-u", ":".join(ADMIN), "-F", f"data={data}", "-F", f"file=@{path}", f"{https_url(daemon)}/_upload"
    )
    assert (version, status) == ("2", 200), body
    job = daemon.middleware.jobs.get(body["job_id"])
    await job.wait()
    assert job.result == [["h2.bin", "application/octet-stream", hashlib.sha256(content).hexdigest(), len(content)]]


@pytest_twisted.ensureDeferred
async def test_upload_over_http2_with_expect(daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "x"
    path.write_bytes(b"x" * MiB)
    data = json.dumps({"method": "upload.hash", "params": []})
    args = ["-H", "Expect: 100-continue", "-F", f"data={data}", "-F", f"file=@{path}", f"{https_url(daemon)}/_upload"]
    version, status, body = await curl2(pki, "-u", ":".join(ADMIN), *args)
    assert (version, status) == ("2", 200), body
    version, status, body = await curl2(pki, "-u", "admin:wrong", *args)
    assert (version, status, body) == ("2", 401, {"error": "Invalid credentials"})


@pytest_twisted.ensureDeferred
async def test_http2_refusals(daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    version, status, body = await curl2(pki, "-F", "data={}", "-F", "file=@/dev/null", f"{https_url(daemon)}/_upload")
    assert (version, status, body) == ("2", 401, {"error": "Authentication required"})
    version, status, body = await curl2(
        pki, "-u", ":".join(ADMIN), "--data-binary", "x" * 1000, f"{https_url(daemon)}/_health"
    )
    assert (version, status, body) == ("2", 413, {"error": "This route takes no request body"})
    version, status, _ = await curl2(pki, f"{https_url(daemon)}/_health")
    assert (version, status) == ("2", 200)
