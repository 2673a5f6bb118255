"""
The client's address, as seen through the reverse proxies the daemon trusts.

Behind a reverse proxy every connection comes from the proxy.  A proxy
listed in C{[http] trusted_proxies} tells who its client is in an
C{X-Forwarded-For} or C{Forwarded} header, appending the address of its own
peer to what it received.  Only the right end of that list is the trusted
proxies' word: the rest is whatever the client sent.  L{client_address}
walks it from the right, past every address that is itself a trusted proxy,
and stops at the first one that is not: that is the client.

A peer that is not a trusted proxy is the client, whatever headers it sends.

The daemon's own proxies should send one of the two headers only (HAProxy's
C{option forwardfor} and nginx's C{$proxy_add_x_forwarded_for} send
C{X-Forwarded-For}): if both come, C{X-Forwarded-For} is the one read.

This module is below the HTTP and WebSocket layers: both resolve their
peers with it, so a token's origin, the login throttle and the logs agree.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Callable, Iterable, Sequence, Union

from twisted.internet.address import IPv4Address, IPv6Address

__all__ = ["HeaderGetter", "Network", "client_address", "proxy_networks"]

#: An IPv4 or IPv6 network; a single address is a network of one.
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Returns the value of a request header, given its name in lower case
#: (C{"x-forwarded-for"}), or L{None} if there is none; several headers of
#: the same name are joined with commas.
HeaderGetter = Callable[[str], Union[str, bytes, None]]

_IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@lru_cache(maxsize=16)
def proxy_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """
    The networks of C{proxies} (C{settings.trusted_proxies}: addresses or
    networks such as C{"10.0.0.1"}, C{"10.1.0.0/16"}, C{"::1"}).

    @raise ValueError: one of them is neither.
    """
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def client_address(peer: object, header: HeaderGetter, trusted: Sequence[Network]) -> object:
    """
    The address of the client behind C{peer}.

    @param peer: the connection's peer (an L{IPv4Address}, L{IPv6Address},
        or any other address, which is returned as it is).
    @param header: reads a request header (see L{HeaderGetter}).
    @param trusted: the networks of the trusted proxies (L{proxy_networks}).
    @return: C{peer} itself if it is no trusted proxy or its headers name no
        usable address; else an address of the same kind (port 0 unless the
        header gave one) for the right-most forwarded address that is not a
        trusted proxy, or the left-most one if all of them are.
    """
    if not trusted or not isinstance(peer, (IPv4Address, IPv6Address)):
        return peer
    host = _ip(peer.host)
    if host is None or not _is_trusted(host, trusted):
        return peer
    chain = _forwarded_chain(header)
    found: tuple[_IPAddress, int] | None = None
    for entry in reversed(chain):
        if entry is None:
            # Not an address ("unknown", an obfuscated name, garbage): the
            # hop to its right is the last one known.
            break
        found = entry
        if not _is_trusted(entry[0], trusted):
            break
    if found is None:
        return peer
    address, port = found
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return IPv4Address("TCP", str(address.ipv4_mapped), port)
        return IPv6Address("TCP", str(address), port)
    return IPv4Address("TCP", str(address), port)


def _is_trusted(address: _IPAddress, trusted: Iterable[Network]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in trusted)


def _ip(text: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _forwarded_chain(header: HeaderGetter) -> list[tuple[_IPAddress, int] | None]:
    """
    The forwarded addresses, left to right, from C{X-Forwarded-For} or else
    C{Forwarded}; L{None} for an entry that is no address.
    """
    x_forwarded_for = _text(header("x-forwarded-for"))
    if x_forwarded_for is not None:
        return [_node(item.strip()) for item in x_forwarded_for.split(",")]
    forwarded = _text(header("forwarded"))
    if forwarded is None:
        return []
    chain: list[tuple[_IPAddress, int] | None] = []
    for element in _split_outside_quotes(forwarded, ","):
        node: tuple[_IPAddress, int] | None = None
        for pair in _split_outside_quotes(element, ";"):
            name, equals, value = pair.strip().partition("=")
            if equals and name.strip().lower() == "for":
                node = _node(value.strip().strip('"'))
        chain.append(node)
    return chain


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for character in text:
        if character == '"':
            quoted = not quoted
        if character == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return parts


def _node(text: str) -> tuple[_IPAddress, int] | None:
    """
    An address with an optional port: C{1.2.3.4}, C{1.2.3.4:80}, C{::1},
    C{[::1]} or C{[::1]:80}.
    """
    port = 0
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            return None
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        elif rest:
            return None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    else:
        host = text
    address = _ip(host)
    if address is None or port > 65535:
        return None
    return address, port
