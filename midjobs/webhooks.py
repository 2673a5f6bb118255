"""
One webhook of C{[notify] webhooks}: where to POST a job's end, with which
key to sign it, and for which jobs.
"""

from __future__ import annotations

import os
from typing import Mapping

import attrs
import hyperlink

__all__ = ["FINAL_STATES", "Webhook", "webhooks_from_config"]

#: The states a job ends in; a webhook is told of those it lists.
FINAL_STATES = ("SUCCESS", "FAILED", "ABORTED")

#: Seconds one delivery (connecting, the request and its response) may take by default.
DEFAULT_TIMEOUT = 10.0

_KEYS = frozenset({"url", "secret", "secret_file", "methods", "states", "timeout"})


@attrs.frozen
class Webhook:
    """
    A URL told of the ends of some jobs.

    @ivar url: the C{http://} or C{https://} URL the notifications are
        POSTed to, without the user name and password it was configured
        with (those travel as HTTP basic authentication).
    @ivar secret: the HMAC key each notification is signed with.
    @ivar methods: the job methods whose ends it is told of (empty: all).
    @ivar states: the final states it is told of.
    @ivar timeout: seconds one delivery may take (connecting, sending and
        reading the response) before it counts as failed.
    @ivar username: the user name of the URL's basic authentication, if any.
    @ivar password: its password.
    """

    url: str
    secret: bytes = attrs.field(repr=False)
    methods: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset(FINAL_STATES)
    timeout: float = DEFAULT_TIMEOUT
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def wants(self, method: str, state: str) -> bool:
        """
        Whether this webhook is told that a job of C{method} ended C{state}.
        """
        return state in self.states and (not self.methods or method in self.methods)

    @property
    def display_url(self) -> str:
        """
        The URL as logs show it: no credentials, no query, no fragment (a
        token in a query string stays out of the logs).
        """
        return display_url(self.url)

    @property
    def auth(self) -> tuple[str, str] | None:
        """
        The basic authentication (user name, password) for treq's C{auth=}, if any.
        """
        if self.username is None:
            return None
        return (self.username, self.password or "")


def display_url(url: str) -> str:
    """
    C{url} without its user information, query and fragment.
    """
    try:
        parsed = hyperlink.URL.from_text(url)
    except (hyperlink.URLParseError, ValueError):
        return "<invalid URL>"
    return parsed.replace(userinfo="", query=(), fragment="").to_text()


def _url(value: object, key: str) -> tuple[str, str | None, str | None]:
    """
    The URL of C{value} without credentials, and the user name and password it held.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}.url must be a non-empty string")
    try:
        parsed = hyperlink.URL.from_text(value)
    except (hyperlink.URLParseError, ValueError) as e:
        raise ValueError(f"{key}.url is not a URL: {e}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"{key}.url must be an http:// or https:// URL, not {display_url(value)!r}")
    if not parsed.host:
        raise ValueError(f"{key}.url names no host: {display_url(value)!r}")
    username = password = None
    if parsed.userinfo:
        username, _, password = parsed.userinfo.partition(":")
    return parsed.replace(userinfo="").to_text(), username, password if username is not None else None


def _secret(table: Mapping[str, object], key: str) -> bytes:
    if ("secret" in table) == ("secret_file" in table):
        raise ValueError(f"{key} needs either a secret or a secret_file (the key its notifications are signed with)")
    if "secret" in table:
        secret = table["secret"]
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"{key}.secret must be a non-empty string")
        return secret.encode("utf-8")
    path = table["secret_file"]
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"{key}.secret_file must be an absolute path")
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as e:
        raise ValueError(f"{key}.secret_file: cannot read {path}: {e.strerror}") from None
    secret = data.strip()
    if not secret or len(data) > 64 * 1024:
        raise ValueError(f"{key}.secret_file: {path} must hold a key of 1 byte to 64 KiB")
    return secret


def _names(value: object, key: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings")
    return frozenset(value)


def _webhook(table: object, key: str) -> Webhook:
    if not isinstance(table, dict):
        raise ValueError(f"{key} must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"{key}: unknown key {unknown[0]} (known: {', '.join(sorted(_KEYS))})")
    if "url" not in table:
        raise ValueError(f"{key} needs a url")
    url, username, password = _url(table["url"], key)
    methods = _names(table.get("methods", []), f"{key}.methods")
    states = _names(table.get("states", list(FINAL_STATES)), f"{key}.states")
    if not states or not states <= set(FINAL_STATES):
        raise ValueError(f"{key}.states must list some of {', '.join(FINAL_STATES)}")
    timeout = table.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise ValueError(f"{key}.timeout must be a number of seconds above 0 and at most 3600")
    return Webhook(
        url=url,
        secret=_secret(table, key),
        methods=methods,
        states=states,
        timeout=float(timeout),
        username=username,
        password=password,
    )


def webhooks_from_config(value: object, key: str) -> tuple[Webhook, ...]:
    """
    The webhooks of C{[notify] webhooks}: a list of tables (C{[[notify.webhooks]]}).

    @param key: how the error messages name the setting.
    @raise ValueError: one is not valid, or two share a URL.
    """
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of tables ([[notify.webhooks]])")
    webhooks = tuple(_webhook(table, f"{key}[{index}]") for index, table in enumerate(value))
    urls = [webhook.url for webhook in webhooks]
    for url in urls:
        if urls.count(url) > 1:
            raise ValueError(f"{key}: the URL {display_url(url)!r} is listed twice")
    return webhooks
