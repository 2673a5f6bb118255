"""
The bare Twisted HTTP server that C{bench/transfer.py} measures the daemon against.

    python bench/transfer_baseline.py [--port 0] [--interface 127.0.0.1]

It prints C{listening <port>} once it listens, then serves, on any path:

  - C{POST}: the body (any content type, e.g. C{curl -F}) is counted and
    dropped as it arrives: a L{server.Request} whose C{handleContentChunk}
    keeps nothing, so no body is buffered in memory or in a temporary file
    and nothing is parsed.  The answer, at the end of the body, is 200
    C{{"bytes": <body bytes>}}.
  - C{GET ?size=N}: N bytes of a preallocated random 1 MiB block, written by
    a push producer (one block per C{write}, as long as the transport does
    not pause it), with chunked transfer encoding: what the daemon does for a
    download, minus the job and the pipe in between.

This is the least a twisted.web server does to move the same bytes over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from io import BytesIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.web import server
from twisted.web.resource import Resource
from zope.interface import implementer

BLOCK = 1024 * 1024
_BLOCK_DATA = os.urandom(BLOCK)


class SinkRequest(server.Request):
    """
    A request whose body is counted, not kept.
    """

    # Never parse a form out of the (empty) content.
    _parsePOSTFormSubmission = False
    body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        # Instead of a BytesIO or a temporary file for the body: an empty
        # BytesIO that stays empty.
        self.content = BytesIO()
        self.body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:
        self.body_bytes += len(data)


@implementer(IPushProducer)
class BlockProducer:
    """
    Writes C{size} bytes to C{request}, one 1 MiB block per write, while not paused.
    """

    def __init__(self, request: server.Request, size: int) -> None:
        self.request = request
        self.left = size
        self.paused = False
        self.done = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0 and not self.done:
            n = min(BLOCK, self.left)
            self.left -= n
            self.request.write(_BLOCK_DATA if n == BLOCK else _BLOCK_DATA[:n])
        if self.left <= 0 and not self.done:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.done = True


class Root(Resource):
    isLeaf = True

    def render_POST(self, request: SinkRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"bytes": request.body_bytes}).encode()

    def render_GET(self, request: server.Request) -> Any:
        try:
            size = int((request.args or {})[b"size"][0])
        except (KeyError, IndexError, ValueError):
            request.setResponseCode(400)
            return b"give ?size=N\n"
        request.setHeader(b"Content-Type", b"application/octet-stream")
        producer = BlockProducer(request, size)
        request.registerProducer(producer, True)
        producer.resumeProducing()
        return server.NOT_DONE_YET


class QuietSite(server.Site):
    def log(self, request: Any) -> None:
        pass


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    site = QuietSite(Root())
    site.requestFactory = SinkRequest
    port = reactor.listenTCP(args.port, site, interface=args.interface)
    print(f"listening {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
