"""Certificate/key pair validation: a pure function of bytes, names and the current time.

Used by the reloader before publishing and by every distributor before installing, so that a pair
one of them accepts is a pair both accept.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtensionOID

from shared.errors import CertificateInvalid, Reason

_CERT_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n(.*?)-----END CERTIFICATE-----", re.DOTALL
)
_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
_KEY_BEGIN = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----")


@dataclass(frozen=True, slots=True)
class LeafInfo:
    """What operators and the manifest need to know about the leaf certificate."""

    serial: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str


@dataclass(frozen=True, slots=True)
class ValidPair:
    leaf: LeafInfo
    chain_length: int
    key_type: str


def required_names(domain: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The names a certificate for ``domain`` must cover: the domain and its wildcard."""
    names = [domain.lower(), f"*.{domain.lower()}", *(n.lower() for n in extra)]
    return tuple(dict.fromkeys(names))


def name_covered(name: str, sans: Sequence[str]) -> bool:
    """RFC 6125 matching: exact, or a ``*.`` SAN covering exactly one leftmost label."""
    name = name.lower().rstrip(".")
    for raw in sans:
        san = raw.lower().rstrip(".")
        if san == name:
            return True
        if san.startswith("*.") and not name.startswith("*."):
            head, _, rest = name.partition(".")
            if head and rest == san[2:]:
                return True
    return False


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def leaf_info(cert: x509.Certificate) -> LeafInfo:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        sans = tuple(ext.value.get_values_for_type(x509.DNSName))  # type: ignore[attr-defined]
    except x509.ExtensionNotFound:
        sans = ()
    return LeafInfo(
        serial=format(cert.serial_number, "x"),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_before=_utc(cert.not_valid_before_utc),
        not_after=_utc(cert.not_valid_after_utc),
        fingerprint_sha256=fingerprint(cert),
    )


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, refusing anything that is not a complete bundle."""
    if not data.strip():
        raise CertificateInvalid(Reason.EMPTY, "certificate file is empty")
    begins = data.count(_BEGIN_CERT)
    if begins == 0:
        raise CertificateInvalid(Reason.NOT_PEM, "no PEM certificate block found")
    blocks = _CERT_BLOCK.findall(data)
    if len(blocks) != begins:
        raise CertificateInvalid(
            Reason.TRUNCATED, f"{begins} certificate blocks begin but {len(blocks)} end"
        )
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateInvalid(
            Reason.TRUNCATED, f"certificate PEM does not decode: {exc}"
        ) from None
    if len(certs) != begins:
        raise CertificateInvalid(Reason.TRUNCATED, "a certificate block does not decode")
    return certs


def parse_private_key(data: bytes) -> PrivateKeyTypes:
    """The single private key of a PEM file. Error messages never contain key material."""
    if not data.strip():
        raise CertificateInvalid(Reason.EMPTY, "key file is empty")
    markers = _KEY_BEGIN.findall(data)
    if not markers:
        raise CertificateInvalid(Reason.NOT_PEM, "no PEM private key block found")
    if len(markers) > 1:
        raise CertificateInvalid(Reason.BAD_KEY, "key file holds more than one private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The library's message is dropped on purpose: we never echo anything about key bytes.
        raise CertificateInvalid(
            Reason.BAD_KEY, "private key does not decode (truncated, encrypted or corrupt)"
        ) from None


def key_type(key: PrivateKeyTypes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_chain(certs: list[x509.Certificate]) -> None:
    # A bundle that ends at a certificate which is neither a CA nor self-issued has lost its
    # intermediate (e.g. a fullchain cut between two blocks): clients could not build a path.
    last = certs[-1]
    if not _is_ca(last) and last.issuer != last.subject:
        raise CertificateInvalid(
            Reason.TRUNCATED,
            f"chain ends at {last.subject.rfc4514_string()}, which is not a CA: "
            f"the issuing certificate ({last.issuer.rfc4514_string()}) is missing",
        )
    for position, (child, parent) in enumerate(itertools.pairwise(certs)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateInvalid(
                Reason.CHAIN_ORDER,
                f"certificate {position} ({child.subject.rfc4514_string()}) is not issued by "
                f"certificate {position + 1} ({parent.subject.rfc4514_string()})",
            ) from None


def validate_pair(
    fullchain: bytes,
    key: bytes,
    *,
    names: Sequence[str],
    now: datetime,
    previous_not_after: datetime | None = None,
    allow_downgrade: bool = False,
) -> ValidPair:
    """Check that ``fullchain`` + ``key`` is a pair safe to serve; raise CertificateInvalid if not.

    Checks, in order: PEM structure, key decodes, key matches the leaf, every certificate is valid
    at ``now``, the chain is in order (each certificate issued by the next), the leaf covers every
    name in ``names``, and the leaf does not expire before ``previous_not_after`` (the certificate
    it replaces) unless ``allow_downgrade``.
    """
    certs = parse_certificates(fullchain)
    private_key = parse_private_key(key)
    leaf = certs[0]
    key_spki = _spki(private_key.public_key())
    if key_spki != _spki(leaf.public_key()):
        if any(_spki(cert.public_key()) == key_spki for cert in certs[1:]):
            # The key's certificate is in the bundle, just not first: a reordered fullchain.
            raise CertificateInvalid(
                Reason.CHAIN_ORDER, "the certificate of the private key is not first in the bundle"
            )
        raise CertificateInvalid(
            Reason.KEY_MISMATCH, "private key does not belong to the leaf certificate"
        )
    for position, cert in enumerate(certs):
        what = "leaf certificate" if position == 0 else f"chain certificate {position}"
        not_before, not_after = _utc(cert.not_valid_before_utc), _utc(cert.not_valid_after_utc)
        if now >= not_after:
            raise CertificateInvalid(Reason.EXPIRED, f"{what} expired at {not_after.isoformat()}")
        if now < not_before:
            raise CertificateInvalid(
                Reason.NOT_YET_VALID, f"{what} is not valid before {not_before.isoformat()}"
            )
    _check_chain(certs)
    info = leaf_info(leaf)
    missing = [name for name in names if not name_covered(name, info.sans)]
    if missing:
        raise CertificateInvalid(
            Reason.DOMAIN_MISMATCH,
            f"leaf does not cover {', '.join(missing)} (SANs: {', '.join(info.sans) or 'none'})",
        )
    if (
        previous_not_after is not None
        and not allow_downgrade
        and info.not_after < _utc(previous_not_after)
    ):
        raise CertificateInvalid(
            Reason.DOWNGRADE,
            f"leaf expires {info.not_after.isoformat()}, before the published certificate "
            f"({_utc(previous_not_after).isoformat()}); set RELOADER_ALLOW_DOWNGRADE=true to allow",
        )
    return ValidPair(leaf=info, chain_length=len(certs), key_type=key_type(private_key))


def read_leaf(fullchain: bytes) -> LeafInfo:
    """Leaf facts of an already-validated bundle (e.g. a published one)."""
    return leaf_info(parse_certificates(fullchain)[0])
