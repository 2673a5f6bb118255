"""
POST /_upload over an in-memory connection (StringTransport) to the test
daemon's site: the request and its body cut at awkward places.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from midjobs.http import make_site
from midjobs.job import JobState

from conftest import RunningDaemon
from test_upload import (  # noqa: F401  (fixtures)
    BOUNDARY,
    END,
    admin,
    data_part,
    find_job,
    gate,
    part,
    request_head,
    settings,
    sha256,
    unwound,
)

PEER = IPv4Address("TCP", "127.0.0.1", 50000)


class Transport(StringTransport):
    """
    A StringTransport whose C{answered} fires once a whole answer was written.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.answered: Deferred[bytes] = Deferred()
        self.answered.addTimeout(30, reactor)

    def write(self, data: bytes) -> None:
        super().write(data)
        head, _, body = self.value().partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length and not self.answered.called:
            self.answered.callback(self.value())


def connect(daemon: RunningDaemon) -> tuple[Any, Transport]:
    channel = make_site(daemon.middleware).buildProtocol(PEER)
    transport = Transport()
    channel.makeConnection(transport)
    return channel, transport


@pytest_twisted.ensureDeferred
async def test_request_and_boundaries_split_across_reads(daemon: RunningDaemon, admin: Any) -> None:  # noqa: F811
    """
    Every read is a few bytes: the request line, the headers, the part
    headers and each boundary arrive in pieces.
    """
    content = os.urandom(20_000) + b"\r\n--" + BOUNDARY[:-1]  # almost a boundary, in the file
    body = data_part("upload.hash") + part("file", content, "split.bin") + END
    message = request_head(len(body)) + body
    for size in (1, 2, 3, 5, 7):
        channel, transport = connect(daemon)
        offset = 0
        while offset < len(message):
            channel.dataReceived(message[offset : offset + size])
            offset += size
            if offset < 2000:
                # Let the login and the job's start go on meanwhile.
                await unwound()
        head, _, payload = (await transport.answered).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), transport.value()
        job = daemon.middleware.jobs.get(json.loads(payload)["job_id"])
        await job.wait()
        assert job.result == [["split.bin", None, sha256(content), len(content)]]
        channel.connectionLost(Failure(ConnectionDone()))


@pytest_twisted.ensureDeferred
async def test_client_disconnecting_mid_part_in_memory(daemon: RunningDaemon, admin: Any, gate: Any) -> None:  # noqa: F811
    content = os.urandom(100_000)
    body = data_part("upload.gated", "gate") + part("file", content, "cut.bin") + END
    channel, transport = connect(daemon)
    channel.dataReceived(request_head(len(body)) + body[: len(body) // 2])
    pipe = await gate.started
    await unwound()
    channel.connectionLost(Failure(ConnectionLost("gone")))
    gate.allow(None)
    job = find_job(daemon, "upload.gated")
    await job.wait()
    assert job.state is JobState.FAILED
    assert job.error.startswith(
        "[ECONNABORTED] The client disconnected before the upload ended (in file 1 'cut.bin', "
    ), job.error
    assert pipe.failure is not None
    assert transport.value() == b"", "no answer to a client that is gone"
