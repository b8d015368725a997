"""A test certificate authority (python ``cryptography``) for the end-to-end tests.

``TestCa(name)`` makes a fresh CA key and self-signed certificate; ``issue`` signs leaf
certificates with DNS names and IP addresses as subject alternative names. Everything is
P-256 and valid from a day ago for 30 days, so clock skew between processes never matters.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Leaf:
    """One issued certificate: its PEM files, and ``combined`` (certificate then key, the
    single-file form some servers want)."""

    cert: pathlib.Path
    key: pathlib.Path
    combined: pathlib.Path
    names: tuple[str, ...]


class TestCa:
    __test__ = False  # not a pytest test class

    def __init__(self, name: str) -> None:
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        start, end = _validity()
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self._key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def write(self, path: pathlib.Path) -> pathlib.Path:
        path.write_bytes(self.pem)
        return path

    def issue_pem(self, names: list[str] | tuple[str, ...], ips: tuple[str, ...] = ()
                  ) -> tuple[bytes, bytes]:
        """A leaf certificate for ``names`` and ``ips`` (the first is also the subject's CN),
        usable by a server and, for server-to-server streams, as a client (RFC 6120
        §13.7.1.2). Returns the certificate and its key as PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = _validity()
        san = x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in names]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips])
        cert = (
            x509.CertificateBuilder().subject_name(_name((*names, *ips)[0]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(self._key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue(self, names: list[str] | tuple[str, ...], directory: pathlib.Path, *,
              stem: str | None = None) -> Leaf:
        """``issue_pem`` for DNS names, written to ``directory/STEM.{crt,key,pem}`` (the
        stem defaults to the first name); the key files are readable by their owner only."""
        cert_pem, key_pem = self.issue_pem(names)
        stem = stem or names[0]
        directory.mkdir(parents=True, exist_ok=True)
        leaf = Leaf(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key",
                    combined=directory / f"{stem}.pem", names=tuple(names))
        leaf.cert.write_bytes(cert_pem)
        for path, data in ((leaf.key, key_pem), (leaf.combined, cert_pem + key_pem)):
            path.touch(0o600)
            path.write_bytes(data)
        return leaf
