"""
A bare JSON-RPC 2.0 echo server over Autobahn on Twisted: the baseline of
C{bench/jobs.py}.

Each text message is parsed as a JSON-RPC request and answered with
C{{"jsonrpc": "2.0", "id": <its id>, "result": <its params>}}: the least a
JSON-RPC server over an Autobahn WebSocket does for a call (frame in, JSON
parse, JSON serialise, frame out), with nothing behind it.

    python bench/echo_server.py --port 9000 [--interface 127.0.0.1]

It listens on C{interface:port} (127.0.0.1 by default; port 0 picks a free
port), prints C{listening <port>} once it accepts connections, and runs until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol


class EchoRpcProtocol(WebSocketServerProtocol):
    """
    One connection: every request is answered at once with its own params.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = json.loads(payload)
        except ValueError as e:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": str(e)}}
        else:
            if not isinstance(request, dict):
                reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid request"}}
            elif "id" not in request:
                return  # a notification: never answered
            else:
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": request.get("params", [])}
        self.sendMessage(json.dumps(reply).encode("utf-8"), isBinary=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: 0, any free port)")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    factory = WebSocketServerFactory()
    factory.protocol = EchoRpcProtocol
    port = reactor.listenTCP(args.port, factory, interface=args.interface)  # type: ignore[attr-defined]
    print(f"listening {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
