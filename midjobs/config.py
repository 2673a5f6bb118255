"""
The daemon's settings: embedded defaults, overridden by a TOML file, overridden by the command line.

``etc/midjobs.toml`` shows every key with its default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

import attrs
from twisted.internet.endpoints import quoteStringArgument

from .logs import LEVELS
from .origins import Origin
from .paths import SOCKET_NAME, default_state_dir
from .webhooks import Webhook, webhooks_from_config


__all__ = ["ConfigError", "Settings", "DEFAULT_LISTEN", "LOG_FORMATS"]

DEFAULT_LISTEN = "tcp:6000:interface=127.0.0.1"


def _quote(argument: str) -> str:
    """
    C{argument} escaped for a field of an endpoint string.
    """
    quoted: str = quoteStringArgument(argument)  # type: ignore[no-untyped-call]  # not annotated in Twisted
    return quoted


class ConfigError(ValueError):
    """
    The configuration file cannot be read or holds a bad value.
    """


def _str_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings")
    return tuple(value)


def _positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer")
    return value


def _positive_number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigError(f"{key} must be a positive number")
    return float(value)


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _str(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string")
    return value


def _absolute_path(value: object, key: str) -> str:
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
        raise ConfigError(f"{key} must be an absolute path")
    return os.path.normpath(value)


def _absolute_paths(value: object, key: str) -> tuple[str, ...]:
    paths = _str_list(value, key)
    if not paths or not all(os.path.isabs(p) and "\0" not in p for p in paths):
        raise ConfigError(f"{key} must be a non-empty list of absolute paths")
    return tuple(os.path.normpath(p) for p in paths)


def _addresses(value: object, key: str) -> tuple[str, ...]:
    addresses = _str_list(value, key)
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {address!r} is no IP address or network") from None
    return addresses


#: The formats of the daemon's log (C{[daemon] log_format}).
LOG_FORMATS = ("text", "json")


def _log_format(value: object, key: str) -> str:
    if not isinstance(value, str) or value not in LOG_FORMATS:
        raise ConfigError(f"{key} must be one of {', '.join(LOG_FORMATS)}")
    return value


def _log_level(value: object, key: str) -> str:
    if not isinstance(value, str) or value not in LEVELS:
        raise ConfigError(f"{key} must be one of {', '.join(LEVELS)}")
    return value


def _origins(value: object, key: str) -> tuple[str, ...]:
    try:
        return tuple(str(Origin.parse(origin)) for origin in _str_list(value, key))
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


#: The schemes of a C{[database] url}: PostgreSQL's.
DATABASE_SCHEMES = ("postgresql", "postgres")


def database_url(value: object, key: str) -> str:
    """
    C{value}, a PostgreSQL connection URL (C{postgresql://} or
    C{postgres://}).  Its error never repeats the URL, which may hold a
    password.
    """
    if not isinstance(value, str) or urllib.parse.urlsplit(value).scheme.lower() not in DATABASE_SCHEMES:
        raise ConfigError(f"{key} must be a postgresql:// or postgres:// URL")
    return value


def display_url(url: str) -> str:
    """
    A database URL as logs may show it: C{postgresql://user@host:port/database}
    (as L{midjobs.store.pg.safe_url} shows it too), without its password or
    query (which may hold one).
    """
    parts = urllib.parse.urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"postgresql://{user}{host}{port}{parts.path}"


#: A node name: what C{[cluster] node} and C{--node} accept.
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")


def node_name(value: object, key: str) -> str:
    """
    C{value}, a node name: 1 to 63 letters, digits, C{.}, C{_} or C{-}.
    """
    if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
        raise ConfigError(f"{key} must be 1 to 63 letters, digits, '.', '_' or '-'")
    return value


def _node_timeout(value: object, key: str) -> float:
    timeout = _positive_number(value, key)
    if not timeout > 1:
        raise ConfigError(f"{key} must be a number of seconds above 1")
    return timeout


def _advertise(value: object, key: str) -> str:
    if not isinstance(value, str) or urllib.parse.urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"{key} must be an http:// or https:// URL")
    parts = urllib.parse.urlsplit(value)
    if not parts.hostname:
        raise ConfigError(f"{key} must name a host")
    return value


def _default_node() -> str:
    """
    The host name, as a node name: cut at 63 characters, and any
    character a node name may not hold replaced by C{-}.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63] or "localhost"


def _webhooks(value: object, key: str) -> tuple[Webhook, ...]:
    try:
        return webhooks_from_config(value, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


#: Each known key: its TOML table, name, the Settings field it sets, and its check.
_KEYS = {
    ("daemon", "listen"): ("listen", _str_list),
    ("daemon", "socket"): ("socket", _str),
    ("daemon", "state_dir"): ("state_dir", _str),
    ("daemon", "plugins"): ("plugins", _str_list),
    ("daemon", "log_level"): ("log_level", _log_level),
    ("jobs", "keep_finished"): ("keep_finished_jobs", _positive_int),
    ("jobs", "threads"): ("threads", _positive_int),
    ("jobs", "history"): ("job_history", _bool),
    ("jobs", "keep_days"): ("keep_days", _positive_int),
    ("jobs", "keep_records"): ("keep_records", _positive_int),
    ("filesystem", "roots"): ("filesystem_roots", _absolute_paths),
    ("tls", "certificate"): ("tls_certificate", _absolute_path),
    ("tls", "private_key"): ("tls_private_key", _absolute_path),
    ("http", "allowed_origins"): ("allowed_origins", _origins),
    ("auth", "login_attempts"): ("login_attempts", _positive_int),
    ("auth", "login_window"): ("login_window", _positive_int),
    ("auth", "login_cooldown"): ("login_cooldown", _positive_int),
    ("auth", "session_lifetime"): ("session_lifetime", _positive_int),
    ("auth", "session_idle_timeout"): ("session_idle_timeout", _positive_int),
    ("http", "trusted_proxies"): ("trusted_proxies", _addresses),
    ("filesystem", "allow_hard_links"): ("allow_hard_links", _bool),
    ("daemon", "log_format"): ("log_format", _log_format),
    ("metrics", "listen"): ("metrics_listen", _str),
    ("jobs", "drain_timeout"): ("drain_timeout", _positive_int),
    ("jobs", "default_timeout"): ("default_timeout", _positive_int),
    ("limits", "connections"): ("max_connections", _positive_int),
    ("limits", "connections_per_address"): ("max_connections_per_address", _positive_int),
    ("limits", "login_timeout"): ("login_timeout", _positive_int),
    ("limits", "header_timeout"): ("header_timeout", _positive_int),
    ("limits", "idle_timeout"): ("idle_timeout", _positive_int),
    ("limits", "subscriptions"): ("max_subscriptions", _positive_int),
    ("limits", "event_queue"): ("max_event_queue", _positive_int),
    ("limits", "tokens_per_user"): ("max_tokens_per_user", _positive_int),
    ("limits", "jobs_per_user"): ("max_jobs_per_user", _positive_int),
    ("limits", "token_attrs"): ("max_token_attrs", _positive_int),
    ("limits", "history_queries"): ("max_history_queries", _positive_int),
    ("notify", "webhooks"): ("webhooks", _webhooks),
    ("notify", "outbox"): ("notify_outbox", _positive_int),
    ("notify", "deliveries"): ("notify_deliveries", _positive_int),
    ("notify", "attempts"): ("notify_attempts", _positive_int),
    ("notify", "retry_for"): ("notify_retry_for", _positive_int),
    ("notify", "retry_delay"): ("notify_retry_delay", _positive_number),
    ("notify", "retry_max_delay"): ("notify_retry_max_delay", _positive_number),
    ("database", "url"): ("database_url", database_url),
    ("database", "pool_size"): ("database_pool_size", _positive_int),
    ("cluster", "node"): ("node", node_name),
    ("cluster", "advertise"): ("advertise", _advertise),
    ("cluster", "node_timeout"): ("node_timeout", _node_timeout),
    ("cluster", "id_block"): ("id_block", _positive_int),
}


def _endpoint_fields(description: str) -> list[tuple[str, str | None]]:
    """
    The fields of a Twisted endpoint string, each C{(text, None)} or, for a
    keyword argument, C{(name, value)}, read as
    L{twisted.internet.endpoints.serverFromString} does: fields split at
    C{:}, a keyword before the first C{=} of a field, and a backslash
    escapes the next character.
    """
    fields: list[tuple[str, str | None]] = []
    name, value, escaped = "", None, False
    for char in description:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
            continue
        elif char == ":":
            fields.append((name, value))
            name, value = "", None
            continue
        elif char == "=" and value is None:
            value = ""
            continue
        if value is None:
            name += char
        else:
            value += char
    fields.append((name, value))
    return fields


#: The endpoint types L{Settings.advertise_url} makes a URL of: their
#: scheme, and where the interface comes among their positional arguments
#: (the parsers of L{twisted.internet.endpoints}).
_URL_SCHEMES = {"tcp": ("http", 1), "tcp6": ("http", 2), "ssl": ("https", 5)}


def _listener_url(description: str, bound: int | None = None) -> str | None:
    """
    The URL of the TCP or TLS listener C{description} (C{None} for another
    kind): its interface, or the host name for every interface, and its
    port, or C{bound}, the port it got, if given (for port 0).
    """
    fields = _endpoint_fields(description)
    kind = _URL_SCHEMES.get(fields[0][0].lower())
    if kind is None:
        return None
    scheme, at = kind
    positional = [name for name, value in fields[1:] if value is None]
    keywords = {name: value for name, value in fields[1:] if value is not None}
    port = keywords.get("port", positional[0] if positional else None)
    if port is None:
        return None
    if bound is not None:
        port = str(bound)
    interface = keywords.get("interface", positional[at] if len(positional) > at else "")
    try:
        address = ipaddress.ip_address(interface) if interface else None
    except ValueError:
        address = None
    if not interface or (address is not None and address.is_unspecified):
        host = socket.gethostname()
    elif address is not None and address.version == 6:
        host = f"[{interface}]"
    else:
        host = interface
    return f"{scheme}://{host}:{port}"


def _endpoint_keywords(description: str) -> tuple[str, set[str]]:
    """
    The type of a Twisted endpoint string and the names of its keyword arguments.
    """
    fields = _endpoint_fields(description)
    return fields[0][0], {name for name, value in fields[1:] if value is not None}


@attrs.frozen
class Settings:
    """
    Everything the daemon reads at start.

    @ivar listen: Twisted server endpoint strings, one listener each.
    @ivar socket: the local UNIX socket (default C{<state_dir>/midjobs.sock}).
    @ivar state_dir: where the daemon keeps its database, job logs and socket.
    @ivar plugins: Python modules whose C{Service} classes are loaded.
    @ivar keep_finished_jobs: how many finished jobs stay listed.
    @ivar threads: the most thread jobs (and other blocking calls) running at once.
    @ivar job_history: keep job history in the database, so that finished
        jobs, their results and logs outlive a restart.
    @ivar keep_days: how many days finished jobs stay in the history.
    @ivar keep_records: the most jobs the history holds.
    @ivar filesystem_roots: the directories C{filesystem.*} may touch, as
        configured; empty for the default (see L{filesystem_root_paths}).
    @ivar tls_certificate: the PEM file of the certificate for C{ssl:}
        listeners that name no files (see L{listen_endpoints}).
    @ivar tls_private_key: the PEM file of its private key (default: the
        certificate's file, which then holds both).
    @ivar allowed_origins: the web origins (C{https://host[:port]}) whose
        pages may open the WebSocket, besides the daemon's own.
    @ivar login_attempts: failed logins from one address, or for one user
        name, within C{login_window} seconds, after which further attempts
        fail at once for C{login_cooldown} seconds.
    @ivar login_window: see C{login_attempts}.
    @ivar login_cooldown: see C{login_attempts}.
    @ivar session_lifetime: seconds a web session (the task manager's login,
        L{midjobs.auth.web_sessions}) lasts from its login, whatever its use.
    @ivar session_idle_timeout: seconds a web session lasts without use.
    @ivar log_format: C{"text"} (the default) or C{"json"}: one JSON object a line.
    @ivar metrics_listen: an endpoint string on which C{/metrics} is served
        without credentials, besides the daemon's listeners (where it needs
        them); none by default.
    @ivar drain_timeout: seconds running jobs may take to finish once the
        daemon is asked to stop, before they are aborted.
    @ivar default_timeout: seconds a job may run before it is aborted, for
        methods that set no C{timeout} of their own; none by default.
    @ivar trusted_proxies: the addresses or networks of reverse proxies whose
        C{X-Forwarded-For} or C{Forwarded} header names the client's address.
    @ivar allow_hard_links: C{filesystem.*} reads regular files with more
        than one hard link (refused by default: a link may lead out of a root).
    @ivar max_connections: TCP and TLS connections open at once; the UNIX
        socket is not counted, so it always answers.
    @ivar max_connections_per_address: of those, from one source address.
    @ivar login_timeout: seconds a WebSocket may stay open without logging in.
    @ivar header_timeout: seconds an HTTP request may take to send its headers.
    @ivar idle_timeout: seconds an idle keep-alive HTTP connection stays open.
    @ivar max_subscriptions: subscriptions one connection may hold.
    @ivar max_event_queue: bytes of events queued for one connection that is
        not reading; past it the connection is closed.
    @ivar max_tokens_per_user: live tokens one user may hold.
    @ivar max_jobs_per_user: unfinished jobs one user may have on this node.
    @ivar max_token_attrs: bytes of the JSON attributes of one token.
    @ivar max_history_queries: history queries one user may have running at
        once, over all their connections; more wait their turn.
    @ivar webhooks: the URLs told of jobs' ends (L{midjobs.notify.Webhook}s).
    @ivar notify_outbox: the most notifications pending in the outbox; past
        it the oldest are dropped.
    @ivar notify_deliveries: the most deliveries under way at once.
    @ivar notify_attempts: attempts after which a notification is given up.
    @ivar notify_retry_for: seconds after which a failing notification is
        given up.
    @ivar notify_retry_delay: seconds from a failed first attempt to the
        second; each wait is twice the one before...
    @ivar notify_retry_max_delay: ...up to this many seconds.
    @ivar config_file: the absolute path of the TOML file these settings
        were read from, if any (C{config.save} backs it up).
    @ivar database_url: the PostgreSQL database (a C{postgresql://} URL)
        the daemon shares with the other nodes of its cluster; C{None} (the
        default) for SQLite in C{state_dir}.  It may hold a password: show
        L{database_display} instead.
    @ivar database_pool_size: the most connections to that database at once.
    @ivar node: the daemon's name in its cluster, unique among the nodes
        (default: the host name); the C{node} of its jobs' records.
    @ivar advertise: the URL at which the other nodes reach this one; by
        default from the first TCP or TLS listener (L{advertise_url}).
    @ivar node_timeout: seconds without a heartbeat after which a node
        counts as gone.
    @ivar id_block: how many job ids a node takes from the shared sequence
        at a time.
    @ivar migrate_only: create or migrate the database, then exit
        (C{--migrate-only}).
    """

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    socket: str | None = None
    state_dir: str = attrs.field(factory=default_state_dir)
    plugins: tuple[str, ...] = ()
    keep_finished_jobs: int = 1000
    threads: int = 32
    job_history: bool = True
    keep_days: int = 30
    keep_records: int = 100000
    log_level: str = "info"
    filesystem_roots: tuple[str, ...] = ()
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    login_attempts: int = 5
    login_window: int = 60
    login_cooldown: int = 60
    session_lifetime: int = 12 * 3600
    session_idle_timeout: int = 3600
    log_format: str = "text"
    metrics_listen: str | None = None
    drain_timeout: int = 30
    default_timeout: int | None = None
    trusted_proxies: tuple[str, ...] = ()
    allow_hard_links: bool = False
    max_connections: int = 1000
    max_connections_per_address: int = 200
    login_timeout: int = 30
    header_timeout: int = 30
    idle_timeout: int = 300
    max_subscriptions: int = 100
    max_event_queue: int = 8 * 1024 * 1024
    max_tokens_per_user: int = 1000
    max_jobs_per_user: int = 1000
    max_token_attrs: int = 4096
    max_history_queries: int = 2
    webhooks: tuple[Webhook, ...] = ()
    notify_outbox: int = 10000
    notify_deliveries: int = 4
    notify_attempts: int = 100
    notify_retry_for: int = 24 * 3600
    notify_retry_delay: float = 1.0
    notify_retry_max_delay: float = 600.0
    config_file: str | None = None
    # Out of the repr: it may hold a password.
    database_url: str | None = attrs.field(default=None, repr=False)
    database_pool_size: int = 8
    node: str = attrs.field(factory=_default_node)
    advertise: str | None = None
    node_timeout: float = 15.0
    id_block: int = 16
    migrate_only: bool = False

    @property
    def database_display(self) -> str:
        """
        The job database as logs show it: C{postgresql://user@host:port/db}
        without the password, or the SQLite file in C{state_dir}.
        """
        if self.database_url is None:
            return os.path.join(self.state_dir, "midjobs.db")
        return display_url(self.database_url)

    def advertise_url(self, bound: Mapping[str, int] | None = None) -> str | None:
        """
        The URL at which the other nodes reach this one: L{advertise}, or
        made from the first TCP or TLS listener (C{https} for C{ssl:}), with
        its interface, or the host name when it listens on every one;
        C{None} if it has neither.

        @param bound: the port each listener got, by its endpoint string,
            once they listen (one asked for port 0 gets another).
        """
        if self.advertise is not None:
            return self.advertise
        for description in self.listen:
            url = _listener_url(description, (bound or {}).get(description))
            if url is not None:
                return url
        return None

    @property
    def socket_path(self) -> str:
        return self.socket or os.path.join(self.state_dir, SOCKET_NAME)

    @property
    def socket_endpoint(self) -> str:
        """
        The endpoint string of the UNIX socket (without its options).
        """
        return f"unix:{_quote(self.socket_path)}"

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def filesystem_root_paths(self) -> tuple[str, ...]:
        """
        The directories C{filesystem.*} may touch: C{filesystem_roots}, or
        C{<state_dir>/files} when none are configured.
        """
        return self.filesystem_roots or (os.path.join(self.state_dir, "files"),)

    def listen_endpoints(self) -> tuple[str, ...]:
        """
        The endpoint strings to listen on: L{listen}, with each C{ssl:} one
        completed from the configuration.  One that names neither
        C{privateKey} nor C{certKey} gets L{tls_private_key} and
        L{tls_certificate}; one that names only C{certKey} gets
        L{tls_private_key}.  One that names C{privateKey} is left as it is
        (without C{certKey}, its file holds the certificate too).

        @raise ConfigError: an C{ssl:} endpoint lacks a file that is not
            configured either.
        """
        return tuple(self._with_tls(description) for description in self.listen)

    def _with_tls(self, description: str) -> str:
        kind, keywords = _endpoint_keywords(description)
        if kind.lower() != "ssl" or "privateKey" in keywords:
            return description
        if "certKey" in keywords:
            if self.tls_private_key is None:
                raise ConfigError(
                    f"the listener {description} names a certKey but no privateKey: add privateKey= "
                    "to it, or set [tls] private_key in the configuration (or --tls-private-key)"
                )
            return f"{description}:privateKey={_quote(self.tls_private_key)}"
        if self.tls_certificate is None:
            raise ConfigError(
                f"the listener {description} needs a TLS certificate: set [tls] certificate "
                "and private_key in the configuration, or give --tls-certificate and --tls-private-key"
            )
        key = _quote(self.tls_private_key or self.tls_certificate)
        return f"{description}:privateKey={key}:certKey={_quote(self.tls_certificate)}"

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Settings:
        """
        Settings from a TOML file, defaults for what it leaves out.

        @raise ConfigError: the file is missing, not TOML, or has an unknown
            key or a bad value.
        """
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"Cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        return attrs.evolve(cls().updated_from(document, str(path)), config_file=os.path.abspath(path))

    def updated_from(self, document: Mapping[str, object], source: str = "configuration") -> Settings:
        # Field names come from _KEYS at run time, each value from its field's check.
        changes: dict[str, Any] = {}
        for table, values in document.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{table}] must be a table")
            for name, value in values.items():
                if (table, name) not in _KEYS:
                    raise ConfigError(f"{source}: unknown key {table}.{name}")
                field, check = _KEYS[(table, name)]
                changes[field] = check(value, f"{source}: {table}.{name}")
        return attrs.evolve(self, **changes)

    def with_overrides(self, **changes: Any) -> Settings:
        """
        These settings with the command line's values (those not C{None}) on top.
        """
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})
