"""
Makes C{twistd midjobs} run the midjobs daemon.
"""

from twisted.application.service import ServiceMaker

midjobs = ServiceMaker(
    "midjobs",
    "midjobs.tap",
    "A daemon for long-running jobs: JSON-RPC over WebSocket, uploads and downloads.",
    "midjobs",
)
