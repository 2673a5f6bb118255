"""
From a daemon URI to a Twisted client endpoint and the WebSocket URL to ask for.

Three schemes: C{ws://host[:port][/path]}, C{wss://host[:port][/path]} and
C{ws+unix:///path/to/midjobs.sock}.  The path defaults to C{/api/current};
over a UNIX socket it is always C{/api/current}.

Over TLS (C{wss://}, and C{https://} for the transfer helpers) the server's
certificate is verified against the system's certificate authorities, or
against those of a C{ca_file}, unless verification is turned off
(C{insecure}).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ._errors import ClientConnectFailed

if TYPE_CHECKING:
    # Twisted defines the interface of a trust root but exports it nowhere public.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = [
    "API_PATH",
    "ClientTLSError",
    "TLSPolicy",
    "client_endpoint",
    "tls_failure_reason",
    "tls_options",
    "trust_root",
]

API_PATH = "/api/current"

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class ClientTLSError(ClientConnectFailed):
    """
    The TLS handshake failed: most often, the server's certificate could not
    be verified.
    """


def tls_failure_reason(failure: Failure) -> str | None:
    """
    What went wrong with TLS, if C{failure} (the reason a connection was
    lost) is a TLS failure: OpenSSL's reasons, or that the certificate is
    not for the host.
    """
    from OpenSSL import SSL
    from service_identity import VerificationError

    error = failure.value
    if isinstance(error, VerificationError):
        return "the server's certificate is not for this host name"
    if isinstance(error, SSL.Error):
        reasons = [entry[-1] for entry in (error.args[0] if error.args else ()) if isinstance(entry, tuple)]
        return ", ".join(r for r in reasons if r) or str(error) or "the TLS handshake failed"
    return None


def trust_root(ca_file: str) -> IOpenSSLTrustRoot:
    """
    The certificates of the PEM file C{ca_file}, as the only authorities to
    trust.

    @raise ValueError: the file cannot be read or holds no certificate.
    """
    try:
        with open(ca_file, "rb") as f:
            blocks = _PEM_CERTIFICATE.findall(f.read())
    except OSError as e:
        raise ValueError(f"Cannot read the CA file {ca_file}: {e.strerror or e}") from None
    try:
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ValueError(f"The CA file {ca_file} holds a bad certificate: {e}") from None
    if not certificates:
        raise ValueError(f"The CA file {ca_file} holds no PEM certificate")
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]  # not annotated in Twisted
    return root


def tls_options(
    host: str, *, insecure: bool = False, ca_file: str | None = None, root: IOpenSSLTrustRoot | None = None
) -> IOpenSSLClientConnectionCreator:
    """
    How to make a TLS connection to C{host}.

    @param insecure: accept any certificate.
    @param ca_file: trust the certificate authorities of this PEM file
        instead of the system's.
    @param root: a L{trust_root} already read (then C{ca_file} is not read).
    @raise ValueError: C{ca_file} cannot be used.
    """
    if insecure:
        return ssl.CertificateOptions(verify=False)
    if root is None and ca_file is not None:
        root = trust_root(ca_file)
    if root is not None:
        return ssl.optionsForClientTLS(host, trustRoot=root)
    return ssl.optionsForClientTLS(host)


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """
    The TLS of a treq client's C{https://} connections: like a browser's,
    with a C{ca_file} or no verification (C{insecure}) as options.
    """

    def __init__(self, *, insecure: bool = False, ca_file: str | None = None) -> None:
        """
        @raise ValueError: C{ca_file} cannot be used.
        """
        self._insecure = insecure
        self._root = trust_root(ca_file) if ca_file is not None and not insecure else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return tls_options(hostname.decode("ascii"), insecure=self._insecure, root=self._root)


def client_endpoint(
    uri: str, reactor: IReactorTime, *, timeout: float = 30, insecure: bool = False, ca_file: str | None = None
) -> tuple[IStreamClientEndpoint, str]:
    """
    The endpoint that reaches C{uri}, and the C{ws://} or C{wss://} URL of the
    WebSocket resource (for the handshake's request line and C{Host}).

    @param reactor: the reactor that connects (over TCP or a UNIX socket)
        and keeps time.

    @param insecure: for C{wss://}, skip the server certificate verification.
    @param ca_file: for C{wss://}, a PEM file of the certificate authorities
        to trust instead of the system's.
    @raise ValueError: C{uri} is not one of the three forms, or C{ca_file}
        cannot be used.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "ws+unix":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ValueError(f"No socket path in {uri!r}")
        unix: IStreamClientEndpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)  # type: ignore[no-untyped-call]  # not annotated in Twisted
        return unix, f"ws://localhost{API_PATH}"
    if scheme not in ("ws", "wss"):
        raise ValueError(f"Unsupported URI scheme in {uri!r} (use ws://, wss:// or ws+unix://)")
    host = parts.hostname
    if not host:
        raise ValueError(f"No host in {uri!r}")
    try:
        port = parts.port or (443 if scheme == "wss" else 80)
    except ValueError:
        raise ValueError(f"Bad port in {uri!r}") from None
    path = parts.path if parts.path not in ("", "/") else API_PATH
    if parts.query:
        path = f"{path}?{parts.query}"
    netloc = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{netloc}:{port}{path}"
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if scheme == "wss":
        endpoint = wrapClientTLS(tls_options(host, insecure=insecure, ca_file=ca_file), endpoint)
    return endpoint, url
