"""
C{twistd midjobs}: the command line of the daemon.
"""

from __future__ import annotations

import os
from twisted.application.service import IService
from twisted.python import usage

from .config import ConfigError, Settings
from .daemon import Daemon
from .logs import LEVELS


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


class Options(usage.Options):
    """
    twistd midjobs [options]
    """

    synopsis = "[options]"
    longdesc = (
        "Run the midjobs daemon: JSON-RPC over a WebSocket at /api/current, "
        "uploads at /_upload and downloads at /_download, on every --listen "
        "endpoint and on the local UNIX socket; over TLS (HTTPS and WSS) on "
        "ssl: endpoints.  Command-line options win over "
        "the --config file, which wins over the embedded defaults."
    )
    optParameters = [
        ["socket", None, None, "The local UNIX socket (default: <state-dir>/midjobs.sock, mode 0600)."],
        [
            "state-dir",
            None,
            None,
            "Where the daemon keeps its database, job logs and socket "
            "(default: /var/lib/midjobs for root, else $XDG_STATE_HOME/midjobs or ~/.local/state/midjobs).",
        ],
        ["config", "c", None, "A TOML configuration file (see etc/midjobs.toml)."],
        [
            "tls-certificate",
            None,
            None,
            "The PEM certificate file for ssl: endpoints that name no files of their own.",
        ],
        [
            "tls-private-key",
            None,
            None,
            "The PEM private key of --tls-certificate (default: in the certificate's file).",
        ],
        [
            "log-level",
            None,
            None,
            "The least severe events to log: debug, info (default), warn, error or critical; "
            "debug adds every job's start and successful end.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["plugin"] = []

    def opt_listen(self, endpoint: str) -> None:
        """
        Listen on a Twisted server endpoint string; repeatable
        (default: tcp:6000:interface=127.0.0.1).  An ssl: endpoint serves HTTPS
        and WSS with --tls-certificate unless it names its own.
        """
        self["listen"].append(endpoint)

    def opt_plugin(self, module: str) -> None:
        """
        Load the Service classes of a Python module; repeatable.
        Modules named in the midjobs.services entry-point group load too.
        """
        self["plugin"].append(module)

    def settings(self) -> Settings:
        """
        The settings these options describe.
        """
        try:
            base = Settings.from_toml(self["config"]) if self["config"] else Settings()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        return base.with_overrides(
            listen=tuple(self["listen"]) or None,
            socket=self["socket"],
            state_dir=_absolute(self["state-dir"]),
            plugins=(*base.plugins, *self["plugin"]) if self["plugin"] else None,
            log_level=self["log-level"],
            tls_certificate=_absolute(self["tls-certificate"]),
            tls_private_key=_absolute(self["tls-private-key"]),
        )

    def postOptions(self) -> None:
        if self["log-level"] is not None and self["log-level"] not in LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(LEVELS)}")
        self.settings()


def makeService(options: Options) -> IService:
    """
    The daemon the options describe.
    """
    return Daemon(options.settings())
