"""
C{twistd midjobs}: the command line of the daemon.
"""

from __future__ import annotations

import os

from twisted.application.service import IService
from twisted.python import usage

from .config import LOG_FORMATS, ConfigError, Settings, database_url, node_name
from .daemon import Daemon
from .logs import LEVELS, LogDestination, log_to, writes_to_journal
from .systemd import SystemdNotifier

#: twistd's C{--logger} for a log twistd's own text file cannot write.
_OBSERVER_FACTORY = "midjobs.logs.observer"


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
        [
            "log-format",
            None,
            None,
            "text (default) or json: one JSON object a line, with the fields of each event as keys. "
            "Under systemd (standard output is $JOURNAL_STREAM) lines carry their priority and text lines no time.",
        ],
        [
            "database",
            None,
            None,
            "A postgresql:// URL: the database this daemon shares with the other nodes of its cluster "
            "(default: SQLite in the state directory).  Prefer ~/.pgpass or $PGPASSWORD to a password in it.",
        ],
        [
            "node",
            None,
            None,
            "This daemon's name among the nodes of its cluster: 1 to 63 letters, digits, '.', '_' or '-' "
            "(default: the host name).",
        ],
    ]
    optFlags = [
        ["migrate-only", None, "Create or migrate the database's schema, then exit."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # not annotated in Twisted
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
            log_format=self["log-format"],
            tls_certificate=_absolute(self["tls-certificate"]),
            tls_private_key=_absolute(self["tls-private-key"]),
            database_url=self["database"],
            node=self["node"],
            migrate_only=True if self["migrate-only"] else None,
        )

    def postOptions(self) -> None:
        if self["log-level"] is not None and self["log-level"] not in LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(LEVELS)}")
        if self["log-format"] is not None and self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        try:
            if self["database"] is not None:
                database_url(self["database"], "--database")
            if self["node"] is not None:
                node_name(self["node"], "--node")
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        settings = self.settings()
        twistd = getattr(self, "parent", None)
        if twistd is not None:
            self._choose_log_observer(twistd, settings)

    def _choose_log_observer(self, twistd: usage.Options, settings: Settings) -> None:
        """
        Have twistd (whose options are C{twistd}, not yet turned into a
        runner) log with L{midjobs.logs.observer} when its own text file
        does not do: a JSON log, or the journal.  twistd's C{--logger} and
        C{--syslog} win.
        """
        if twistd.get("logger") is not None or twistd.get("syslog"):
            return
        logfile = twistd.get("logfile") or None
        to_stdout = logfile == "-" or (logfile is None and twistd.get("nodaemon"))
        if to_stdout and not twistd.get("nodaemon"):
            return  # twistd itself refuses: "Daemons cannot log to stdout".
        journal = bool(to_stdout) and writes_to_journal()
        if settings.log_format == "text" and not journal:
            return
        path = None if to_stdout else os.path.abspath(logfile or "twistd.log")
        log_to(LogDestination(format=settings.log_format, journal=journal, path=path))
        twistd["logger"] = _OBSERVER_FACTORY


def makeService(options: Options) -> IService:
    """
    The daemon the options describe; it tells systemd how it is when
    systemd asks (C{$NOTIFY_SOCKET}).
    """
    from twisted.internet import reactor

    return Daemon(options.settings(), reactor, systemd=SystemdNotifier.from_environment(reactor))
