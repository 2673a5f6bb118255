"""
The daemon over TLS: HTTPS and WSS on an C{ssl:} listener, with a test CA.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import signal
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from midjobs.client import ClientTLSError, DownloadError, UploadError, connect, download, upload
from midjobs.config import ConfigError, Settings
from midjobs.daemon import Daemon

from conftest import ADMIN, RunningDaemon
from test_midclt import midclt
from test_twistd import twistd


@attrs.frozen
class Pki:
    """
    A certificate authority and a server certificate it signed, as PEM files.

    @ivar ca: the CA certificate, for clients to trust.
    @ivar certificate: the server's certificate, for C{127.0.0.1} and C{localhost}.
    @ivar private_key: the server's private key.
    @ivar other_ca: another CA, which signed nothing of the server's.
    @ivar other_name: a certificate of the CA for C{other.invalid} only,
        with its private key in the same file.
    """

    ca: Path
    certificate: Path
    private_key: Path
    other_ca: Path
    other_name: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _server(ca_key: Any, ca: x509.Certificate, names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    """
    A server certificate for C{names} that C{ca} signed, and its private
    key, both PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(str(names[0].value)))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _pem(certificate), key_pem


def make_pki(directory: Path) -> Pki:
    """
    Write a test CA and server certificates into C{directory}.
    """
    ca_key, ca = _ca("midjobs test CA")
    _, other_ca = _ca("another test CA")
    pki = Pki(
        ca=directory / "ca.pem",
        certificate=directory / "server.pem",
        private_key=directory / "server.key",
        other_ca=directory / "other-ca.pem",
        other_name=directory / "other-name.pem",
    )
    pki.ca.write_bytes(_pem(ca))
    pki.other_ca.write_bytes(_pem(other_ca))
    certificate, key = _server(
        ca_key, ca, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    pki.certificate.write_bytes(certificate)
    pki.private_key.write_bytes(key)
    certificate, key = _server(ca_key, ca, [x509.DNSName("other.invalid")])
    pki.other_name.write_bytes(certificate + key)
    for path in (pki.private_key, pki.other_name):
        path.chmod(0o600)
    return pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: Any) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def settings(settings: Settings, pki: Pki) -> Settings:
    """
    The test daemon listens with TLS on its first listener, and without on
    a second one.
    """
    return attrs.evolve(
        settings,
        listen=("ssl:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        tls_certificate=str(pki.certificate),
        tls_private_key=str(pki.private_key),
    )


def wss_url(daemon: RunningDaemon) -> str:
    return f"wss://127.0.0.1:{daemon.port}/api/current"


def https_url(daemon: RunningDaemon) -> str:
    return f"https://127.0.0.1:{daemon.port}"


@pytest_twisted.async_yield_fixture
async def admin(daemon: RunningDaemon) -> AsyncIterator[tuple[str, str]]:
    await daemon.middleware.users.create({"username": ADMIN[0], "password": ADMIN[1], "roles": ["FULL_ADMIN"]})
    yield ADMIN


async def curl(*args: str) -> tuple[int, str, str]:
    """
    Run curl; return its exit code, stdout and stderr.
    """
    out, err, code = await getProcessOutputAndValue("curl", ["-sS", *args], reactor=reactor)
    return code, out.decode(), err.decode()


# -- the client library -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wss_client_with_ca_file(daemon: RunningDaemon, admin: Any, pki: Pki) -> None:
    client = await connect(wss_url(daemon), reactor=reactor, ca_file=str(pki.ca))
    try:
        assert await client.call("core.ping") == "pong"
        assert await client.login(*ADMIN)
        assert await client.call_job("core.job_test") is True
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_wss_client_insecure(daemon: RunningDaemon) -> None:
    client = await connect(wss_url(daemon), reactor=reactor, insecure=True)
    try:
        assert await client.call("core.ping") == "pong"
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_wss_client_verifies_the_certificate(daemon: RunningDaemon, pki: Pki) -> None:
    # Neither the system's authorities nor another CA vouch for the test certificate.
    for options in ({}, {"ca_file": str(pki.other_ca)}):
        with pytest.raises(ClientTLSError, match="certificate verify failed"):
            await connect(wss_url(daemon), reactor=reactor, **options)


@pytest_twisted.ensureDeferred
async def test_wss_client_verifies_the_host_name(settings: Settings, pki: Pki) -> None:
    # A daemon whose certificate, from the right CA, is for another name.
    service = Daemon(attrs.evolve(settings, tls_certificate=str(pki.other_name), tls_private_key=None), reactor)
    service.startService()
    await service.ready
    try:
        port = service.listeners[0].port.getHost().port
        with pytest.raises(ClientTLSError, match="not for this host name"):
            await connect(f"wss://127.0.0.1:{port}", reactor=reactor, ca_file=str(pki.ca))
        client = await connect(f"wss://127.0.0.1:{port}", reactor=reactor, insecure=True)
        assert await client.call("core.ping") == "pong"
        await client.close()
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_bad_ca_file(daemon: RunningDaemon, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        await connect(wss_url(daemon), reactor=reactor, ca_file=str(empty))
    with pytest.raises(ValueError, match="Cannot read the CA file"):
        await connect(wss_url(daemon), reactor=reactor, ca_file=str(tmp_path / "missing.pem"))


@pytest_twisted.ensureDeferred
async def test_treq_helpers_over_https(daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 4000)
    target = daemon.state_dir / "files" / "copy.bin"
    client = await connect(wss_url(daemon), reactor=reactor, ca_file=str(pki.ca))
    try:
        assert await client.login(*ADMIN)
        with source.open("rb") as f:
            await upload(
                https_url(daemon), "filesystem.put", [str(target)], [f],
                auth=ADMIN, ca_file=str(pki.ca), wait=client,
            )
        assert target.read_bytes() == source.read_bytes()
        # The WebSocket URI does as a base URL too.
        job_id, path = await client.call("core.download", "filesystem.get", [str(target)], "copy.bin")
        copy = tmp_path / "copy.bin"
        with copy.open("wb") as f:
            size = await download(wss_url(daemon), path, f, ca_file=str(pki.ca))
        assert size == source.stat().st_size and copy.read_bytes() == source.read_bytes()
        # Without the CA, neither helper trusts the daemon.
        with source.open("rb") as f:
            with pytest.raises(UploadError, match="TLS handshake failed: certificate verify failed"):
                await upload(https_url(daemon), "filesystem.put", [str(target)], [f], auth=ADMIN)
        job_id, path = await client.call("core.download", "filesystem.get", [str(target)], "copy.bin")
        with pytest.raises(DownloadError, match="TLS handshake failed: certificate verify failed"):
            await download(https_url(daemon), path, io.BytesIO())
        # Unless told not to check.
        assert await download(https_url(daemon), path, io.BytesIO(), insecure=True) == size
    finally:
        await client.close()


# -- curl and midclt --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_curl_upload_over_https(daemon: RunningDaemon, admin: Any, pki: Pki, tmp_path: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_bytes(b"over TLS\n" * 1000)
    target = daemon.state_dir / "files" / "data.txt"
    data = json.dumps({"method": "filesystem.put", "params": [str(target)]})
    code, out, err = await curl(
        # HTTP/1.1: over HTTP/2 see test_http2_upload.
        "--http1.1", "--cacert", str(pki.ca), "-u", f"{ADMIN[0]}:{ADMIN[1]}", "-D", "-",
        "-F", f"data={data}", "-F", f"file=@{source}", f"{https_url(daemon)}/_upload",
    )
    assert code == 0, err
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "strict-transport-security: max-age=31536000" in head.lower()
    job_id = json.loads(body)["job_id"]
    job = await daemon.middleware.jobs.get(job_id).wait()
    assert target.read_bytes() == source.read_bytes(), job
    # Without the CA, curl refuses the certificate.
    code, out, err = await curl(f"{https_url(daemon)}/_upload")
    assert code == 60, err


@pytest_twisted.ensureDeferred
async def test_midclt_wss(daemon: RunningDaemon, admin: Any, pki: Pki) -> None:
    login = ["-U", ADMIN[0], "-P", ADMIN[1]]
    out, err, code = await midclt("-u", wss_url(daemon), "--insecure", *login, "call", "core.job_test", "--job")
    assert (out, code) == ("True\n", 0), err
    out, err, code = await midclt("-u", wss_url(daemon), "--ssl-ca", str(pki.ca), *login, "call", "core.ping")
    assert (out, code) == ("pong\n", 0), err
    out, err, code = await midclt("-u", wss_url(daemon), *login, "call", "core.ping")
    assert code == 1 and out == ""
    assert err.startswith(f"Failed to connect to {wss_url(daemon)}: ") and "certificate verify failed" in err
    assert "--insecure" in err and len(err.splitlines()) == 1


# -- starting -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twistd_over_tls(tmp_path: Path, short_tmp: Path, pki: Pki) -> None:
    config = tmp_path / "midjobs.toml"
    config.write_text(
        f'[daemon]\nlisten = ["ssl:0:interface=127.0.0.1"]\n'
        f'[tls]\ncertificate = "{pki.certificate}"\nprivate_key = "{pki.private_key}"\n'
    )
    process = twistd(
        "--config", str(config), "--state-dir", str(tmp_path / "state"), "--socket", str(short_tmp / "s.sock"),
        # A second listener: twistd's readiness is read from a tcp: one.
        "--listen", "tcp:0:interface=127.0.0.1", "--listen", "ssl:0:interface=127.0.0.1",
        path=tmp_path,
    )
    await process.ready
    port = int(_ssl_port(process.output.decode()))
    out, err, code = await midclt("-u", f"wss://localhost:{port}", "--ssl-ca", str(pki.ca), "ping")
    assert (out, code) == ("pong\n", 0), err
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM


def _ssl_port(log: str) -> str:
    import re

    match = re.search(r"Listening on ssl:0\S* \(IPv4Address\(.*?port=(\d+)\)\)", log)
    assert match, log
    return match.group(1)


@pytest_twisted.ensureDeferred
async def test_ssl_listener_without_certificate(tmp_path: Path) -> None:
    process = twistd("--state-dir", str(tmp_path / "state"), "--listen", "ssl:0:interface=127.0.0.1", path=tmp_path)
    process.ready.addErrback(lambda failure: None)
    assert await process.ended == 1
    log = process.output.decode()
    lines = [line for line in log.splitlines() if "could not start" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "midjobs could not start: the listener ssl:0:interface=127.0.0.1 needs a TLS certificate: "
        "set [tls] certificate and private_key in the configuration, or give --tls-certificate and --tls-private-key"
    ), log
    assert "Traceback" not in log
    # Nothing was touched.
    assert not (tmp_path / "state").exists()


@pytest_twisted.ensureDeferred
async def test_unusable_certificate(tmp_path: Path, pki: Pki) -> None:
    for certificate, key, reason in [
        (tmp_path / "missing.pem", pki.private_key, f"No such file or directory ({tmp_path / 'missing.pem'})"),
        (pki.ca, pki.private_key, "Certificate public and private keys do not match."),
    ]:
        process = twistd(
            "--state-dir", str(tmp_path / "state"), "--listen", "ssl:0:interface=127.0.0.1",
            "--tls-certificate", str(certificate), "--tls-private-key", str(key),
            path=tmp_path,
        )
        process.ready.addErrback(lambda failure: None)
        assert await process.ended == 1
        log = process.output.decode()
        assert "midjobs could not start: cannot listen on ssl:0:interface=127.0.0.1:privateKey=" in log
        assert reason in log and "Traceback" not in log


@pytest_twisted.ensureDeferred
async def test_self_signed_certificate_from_the_docs(settings: Settings, tmp_path: Path) -> None:
    """
    The self-signed certificate docs/install.rst makes with openssl, its key
    in the same file, trusted by the client with its own file as the CA.
    """
    out, err, code = await getProcessOutputAndValue(
        "openssl",
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "825",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", "key.pem", "-out", "cert.pem",
        ],
        path=str(tmp_path),
        reactor=reactor,
    )
    assert code == 0, err
    combined = tmp_path / "midjobs.pem"
    combined.write_bytes((tmp_path / "cert.pem").read_bytes() + (tmp_path / "key.pem").read_bytes())
    service = Daemon(attrs.evolve(settings, tls_certificate=str(combined), tls_private_key=None), reactor)
    service.startService()
    await service.ready
    try:
        port = service.listeners[0].port.getHost().port
        out, err, code = await midclt("-u", f"wss://localhost:{port}", "--ssl-ca", str(tmp_path / "cert.pem"), "ping")
        assert (out, code) == ("pong\n", 0), err
    finally:
        await service.stopService()


# -- the configuration -------------------------------------------------------------


def test_ssl_endpoints_completed_from_the_configuration() -> None:
    settings = Settings(
        listen=(
            "ssl:6443",
            r"ssl:6444:interface=\:\:1",
            "ssl:6445:privateKey=/own/key.pem:certKey=/own/cert.pem",
            "ssl:6446:privateKey=/own/both.pem",
            "ssl:6447:certKey=/own/cert.pem",
            "tcp:6000",
        ),
        tls_certificate="/etc/midjobs/my cert:1.pem",
        tls_private_key="/etc/midjobs/key.pem",
    )
    cert = r"/etc/midjobs/my cert\:1.pem"
    assert settings.listen_endpoints() == (
        f"ssl:6443:privateKey=/etc/midjobs/key.pem:certKey={cert}",
        rf"ssl:6444:interface=\:\:1:privateKey=/etc/midjobs/key.pem:certKey={cert}",
        "ssl:6445:privateKey=/own/key.pem:certKey=/own/cert.pem",
        # Without certKey, the privateKey file holds both, as in Twisted.
        "ssl:6446:privateKey=/own/both.pem",
        "ssl:6447:certKey=/own/cert.pem:privateKey=/etc/midjobs/key.pem",
        "tcp:6000",
    )
    # The key defaults to the certificate's file.
    alone = Settings(listen=("ssl:6443",), tls_certificate="/c.pem")
    assert alone.listen_endpoints() == ("ssl:6443:privateKey=/c.pem:certKey=/c.pem",)
    # An ssl: endpoint that names its files needs no configuration.
    own = Settings(listen=("ssl:6446:privateKey=/own/both.pem",))
    assert own.listen_endpoints() == own.listen
    with pytest.raises(ConfigError, match="the listener ssl:6443 needs a TLS certificate"):
        Settings(listen=("ssl:6443",), tls_private_key="/k.pem").listen_endpoints()
    with pytest.raises(ConfigError, match="names a certKey but no privateKey"):
        Settings(listen=("ssl:6447:certKey=/own/cert.pem",), tls_certificate="/c.pem").listen_endpoints()


def test_tls_configuration(tmp_path: Path) -> None:
    config = tmp_path / "midjobs.toml"
    config.write_text('[tls]\ncertificate = "/etc/midjobs/cert.pem"\nprivate_key = "/etc/midjobs/key.pem"\n')
    settings = Settings.from_toml(config)
    assert (settings.tls_certificate, settings.tls_private_key) == ("/etc/midjobs/cert.pem", "/etc/midjobs/key.pem")
    config.write_text('[tls]\ncertificate = "cert.pem"\n')
    with pytest.raises(ConfigError, match="tls.certificate must be an absolute path"):
        Settings.from_toml(config)
