"""A throw-away certificate authority with server and client certificates, for the TLS tests."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# P-256 keys are made in microseconds where RSA takes tens of milliseconds each.
_CURVE = ec.SECP256R1()
_VALID = dt.timedelta(days=2)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both as PEM files."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    """One CA's certificate, the broker's certificate, and client certificates by common name."""

    ca_file: Path
    server: KeyPair
    clients: dict[str, KeyPair] = field(default_factory=dict)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _issue(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier | None,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """Sign a certificate; without an ``issuer`` it is a self-signed CA."""
    now = dt.datetime.now(dt.UTC)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Clock skew between the broker and a test client must not make a fresh certificate "not yet valid".
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # OpenSSL's strict mode (Python 3.13's default) refuses leaf certificates without this.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, clients: tuple[str, ...] = (), *, ca_name: str = "linerec test CA") -> Pki:
    """Write a CA, a server certificate for localhost/127.0.0.1 and one client certificate per name."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(_CURVE)
    ca = _issue(subject=ca_name, key=ca_key, issuer=None, issuer_key=ca_key, usage=None)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(stem: str, subject: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> KeyPair:
        key = ec.generate_private_key(_CURVE)
        cert = _issue(subject=subject, key=key, issuer=ca, issuer_key=ca_key, usage=usage, san=san)
        pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        pair.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key_file)
        return pair

    # Clients check the name they dialled against the SAN, so both spellings of loopback are in it.
    server_san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = leaf("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_san)
    issued = {name: leaf(f"client-{name}", name, ExtendedKeyUsageOID.CLIENT_AUTH, None) for name in clients}
    return Pki(ca_file, server, issued)
