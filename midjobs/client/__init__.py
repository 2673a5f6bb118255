"""
The midjobs client: a Twisted WebSocket (JSON-RPC 2.0) client for the daemon::

    d = connect("ws+unix:///var/lib/midjobs/midjobs.sock")
    d.addCallback(lambda client: client.call_job("core.job_test", {"sleep": 1}))

L{upload} and L{download} move files through the daemon's HTTP routes with treq.
Over TLS (C{wss://}, C{https://}) the server's certificate is verified
against the system's authorities, or those of a C{ca_file}; C{insecure}
turns the verification off.

The wire contract is C{docs/protocol.rst}; C{midclt} is the command line tool on top.
"""

from ._client import Client, connect
from ._errors import (
    ClientCallError,
    ClientConnectFailed,
    ClientConnectionLost,
    ClientError,
    ClientValidationErrors,
    JobAborted,
    JSONRPCError,
)
from ._download import DownloadError, download
from ._endpoint import ClientTLSError
from ._types import EventCallback, JobCallback, JobRecord
from ._upload import UploadError, UploadFile, upload

__all__ = [
    "connect",
    "upload",
    "download",
    "UploadError",
    "UploadFile",
    "DownloadError",
    "Client",
    "ClientError",
    "ClientConnectFailed",
    "ClientTLSError",
    "ClientConnectionLost",
    "ClientCallError",
    "ClientValidationErrors",
    "JSONRPCError",
    "JobAborted",
    "EventCallback",
    "JobCallback",
    "JobRecord",
]
