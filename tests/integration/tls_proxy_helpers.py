"""Test-only network pieces: a throwaway PKI (``cryptography``) and a small forward proxy.

Both listen or point at loopback only. The proxy counts what it did so tests can prove that
calls went through it, and can demand ``Proxy-Authorization`` like a corporate proxy.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..loopback import LoopbackListener, http_response, read_head, response_head

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

# -- PKI ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost signed by it, a client
    certificate signed by it (key apart, and an encrypted copy of the key), and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    client_cert_and_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Generate every file of a ``Pki`` into ``folder``."""
    ca_key, ca_cert = _ca("Packly test CA")
    server_key, server_cert = _leaf("127.0.0.1", ca_key, ca_cert, server=True)
    client_key, client_cert = _leaf("packly-test-client", ca_key, ca_cert, server=False)
    _, other_ca_cert = _ca("Some other CA")
    files = {
        "ca": _cert_pem(ca_cert),
        "server_cert": _cert_pem(server_cert),
        "server_key": _key_pem(server_key),
        "client_cert": _cert_pem(client_cert),
        "client_key": _key_pem(client_key),
        "client_key_encrypted": _key_pem(client_key, b"a passphrase"),
        "client_cert_and_key": _cert_pem(client_cert) + _key_pem(client_key),
        "other_ca": _cert_pem(other_ca_cert),
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return Pki(**paths)


# -- a forward proxy ------------------------------------------------------------------------------


@dataclass
class ProxyCounts:
    connects: list[str] = field(default_factory=list)
    """Each ``CONNECT host:port`` tunnel opened (HTTPS through the proxy)."""
    plain: list[str] = field(default_factory=list)
    """Each plain-HTTP request forwarded (``GET http://host/path``: absolute-form)."""
    refused: int = 0
    """Requests answered 407 (missing or wrong ``Proxy-Authorization``)."""


class ForwardProxy:
    """An HTTP/1.1 forward proxy on 127.0.0.1, one thread per client connection.

    ``CONNECT`` opens a byte tunnel; an absolute-form request is forwarded with
    ``Connection: close`` (one request per connection, so each is counted). With
    ``credentials=(user, password)`` it answers 407 unless ``Proxy-Authorization`` matches.
    Only loopback targets are allowed. Connections are accepted and stopped by
    ``tests.loopback.LoopbackListener``, the raw test server's own machinery.
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.counts = ProxyCounts()
        self._expected = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else None
        )
        self._lock = threading.Lock()
        self._listener = LoopbackListener(self._serve, name="test-proxy")
        self.port = self._listener.port

    def url(self, user: str | None = None, password: str | None = None) -> str:
        userinfo = f"{user}:{password}@" if user is not None else ""
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._listener.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            head = read_head(client)
            if head is None:
                return
            if self._expected is not None and head.headers.get("proxy-authorization") != self._expected:
                with self._lock:
                    self.counts.refused += 1
                client.sendall(
                    http_response(
                        407,
                        headers={"Proxy-Authenticate": 'Basic realm="test"'},
                        reason="Proxy Authentication Required",
                    )
                )
                return
            if head.method == "CONNECT":
                host, port = head.target.rsplit(":", 1)
                upstream = self._listener.track(self._open(host, int(port)))
                with self._lock:
                    self.counts.connects.append(head.target)
                client.sendall(response_head(200, "Connection established", {}))
                if head.rest:
                    upstream.sendall(head.rest)
            else:
                _scheme, _, remainder = head.target.partition("://")
                authority, _, path = remainder.partition("/")
                host, _, port = authority.rpartition(":")
                upstream = self._listener.track(self._open(host, int(port or 80)))
                with self._lock:
                    self.counts.plain.append(f"{head.method} {head.target}")
                kept = [
                    f"{name}: {value}"
                    for name, value in head.fields
                    if name.lower() not in ("proxy-authorization", "proxy-connection", "connection")
                ]
                forwarded = "\r\n".join([f"{head.method} /{path} {head.version}", *kept, "Connection: close", "", ""])
                upstream.sendall(forwarded.encode("latin-1") + head.rest)
            self._pipe(client, upstream)
        except OSError:
            pass
        finally:
            client.close()

    @staticmethod
    def _open(host: str, port: int) -> socket.socket:
        host = host.strip("[]")
        if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            raise OSError(f"the test proxy only reaches loopback, not {host}")
        return socket.create_connection((host, port), timeout=10)

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        def copy(source: socket.socket, target: socket.socket) -> None:
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    target.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    target.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
        back.start()
        copy(client, upstream)
        back.join(30)
        upstream.close()
