"""
Makes C{twistd midjobs} run the midjobs daemon.
"""

from twisted.application.service import ServiceMaker

midjobs = ServiceMaker(  # type: ignore[no-untyped-call]  # not annotated in Twisted
    "midjobs",
    "midjobs.tap",
    "A daemon for long-running jobs: JSON-RPC over WebSocket, uploads and downloads.",
    "midjobs",
)
