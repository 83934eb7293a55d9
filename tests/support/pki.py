"""Throwaway PKI for tests: a CA, intermediates and leaves with any dates, names and key types.

Generated per test run; no key is ever checked in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

KeyKind = Literal["ec", "rsa"]


def new_key(kind: KeyKind = "ec") -> CertificateIssuerPrivateKeyTypes:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


class CA:
    """A root CA with one intermediate, both valid for ten years around now."""

    def __init__(self, name: str = "certflow test", kind: KeyKind = "ec") -> None:
        now = datetime.now(UTC)
        self.root = _issue(
            f"{name} root", None, kind, now - timedelta(days=1), now + timedelta(days=3650), ca=True
        )
        self.intermediate = _issue(
            f"{name} intermediate",
            self.root,
            kind,
            now - timedelta(days=1),
            now + timedelta(days=3650),
            ca=True,
        )

    @property
    def root_pem(self) -> bytes:
        return self.root.cert_pem

    def leaf(
        self,
        names: Sequence[str] = ("iklim.co", "*.iklim.co"),
        *,
        kind: KeyKind = "ec",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        days: float = 90,
        ip_addresses: Sequence[str] = (),
    ) -> Issued:
        now = datetime.now(UTC)
        start = not_before or now - timedelta(hours=1)
        end = not_after or start + timedelta(days=days)
        return _issue(
            names[0] if names else "no-name",
            self.intermediate,
            kind,
            start,
            end,
            ca=False,
            names=names,
            ip_addresses=ip_addresses,
        )

    def fullchain(self, leaf: Issued) -> bytes:
        """What certbot's fullchain.pem holds: leaf, then intermediate."""
        return leaf.cert_pem + self.intermediate.cert_pem


def _issue(
    common_name: str,
    issuer: Issued | None,
    kind: KeyKind,
    not_before: datetime,
    not_after: datetime,
    *,
    ca: bool,
    names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> Issued:
    import ipaddress

    key = new_key(kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    # Key identifiers as every public CA sets them: strict path builders (cryptography's
    # verifier, used by the trust check) require the authority key identifier.
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    issuer_public = issuer.key.public_key() if issuer else key.public_key()
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public),
        critical=False,
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(
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
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())
    return Issued(cert=cert, key=key)
