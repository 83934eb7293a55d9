"""Trust check: does a published chain verify for Vault's TLS name against its clients' CA bundle?

:func:`validate_pair` (``shared.certs``) checks that a pair is internally sound; this checks what
Vault's clients will check: a path from the leaf through the bundle's intermediates to a root of
the trust bundle, valid at ``now`` and for the DNS name the clients dial. A pure function of bytes,
a name and a time; the bundle file is read once, at start, by the settings layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from shared.certs import leaf_info, parse_certificates
from shared.errors import ChainUntrusted, Reason

# A wildcard leaf is checked for one concrete name under it: ``*.iklim.co`` -> this label.
CHECK_LABEL = "certflow-check"


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The CA certificates Vault's clients trust, parsed once."""

    roots: tuple[x509.Certificate, ...]
    source: str  # where it came from (a path), for messages

    def __repr__(self) -> str:
        return f"TrustBundle({self.source!r}, {len(self.roots)} CA certificate(s))"


def parse_bundle(data: bytes, *, source: str = "bundle") -> TrustBundle:
    """Every certificate of a PEM CA bundle; ValueError when there is none or one is broken."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"{source} holds no PEM certificate")
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{source} is not a readable PEM certificate bundle") from None
    return TrustBundle(roots=tuple(roots), source=source)


def load_bundle(path: Path) -> TrustBundle:
    """Read and parse a CA bundle file; ValueError (with the path, never content) when unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    return parse_bundle(data, source=str(path))


def default_check_name(sans: Sequence[str]) -> str | None:
    """The name to check when none is configured: the leaf's first DNS SAN, a wildcard's ``*``
    replaced by :data:`CHECK_LABEL` (a wildcard itself is never a name a client dials)."""
    for san in sans:
        name = san.strip().lower().rstrip(".")
        if name.startswith("*."):
            return f"{CHECK_LABEL}.{name[2:]}"
        if name:
            return name
    return None


def _strip_context(text: str) -> str:
    # The library appends "(encountered processing <Certificate(...)>)": we name the leaf ourselves.
    return text.split(" (encountered processing", 1)[0].removeprefix("validation failed: ")


def verify_chain(fullchain: bytes, bundle: TrustBundle, *, name: str | None, now: datetime) -> str:
    """Verify ``fullchain`` (leaf first, then intermediates) for ``name`` at ``now`` against
    ``bundle``; returns the name checked. Raises :class:`ChainUntrusted` saying why.

    ``name`` None: :func:`default_check_name` of the leaf's SANs.
    """
    certs = parse_certificates(fullchain)
    leaf, intermediates = certs[0], certs[1:]
    info = leaf_info(leaf)
    check = name or default_check_name(info.sans)
    if check is None:
        raise ChainUntrusted(
            Reason.DOMAIN_MISMATCH, "leaf has no DNS name to verify the chain for", name=""
        )
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(bundle.roots)))
            .time(now)
            .build_server_verifier(x509.DNSName(check))
        )
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise _explain(
            exc, certs, subject=info.subject, name=check, bundle=bundle, now=now
        ) from None
    except ValueError as exc:  # e.g. a name the verifier cannot express
        raise ChainUntrusted(
            Reason.UNTRUSTED, f"cannot verify the chain for {check}: {exc}", name=check
        ) from None
    return check


def _explain(
    exc: VerificationError,
    certs: list[x509.Certificate],
    *,
    subject: str,
    name: str,
    bundle: TrustBundle,
    now: datetime,
) -> ChainUntrusted:
    detail = _strip_context(str(exc))
    if "subjectAltName" in detail:
        return ChainUntrusted(
            Reason.DOMAIN_MISMATCH, f"leaf ({subject}) is not valid for {name}", name=name
        )
    if "not valid at validation time" in detail:
        for position, cert in enumerate(certs):
            what = "leaf" if position == 0 else f"chain certificate {position}"
            if now >= cert.not_valid_after_utc:
                return ChainUntrusted(
                    Reason.EXPIRED,
                    f"{what} expired at {cert.not_valid_after_utc.isoformat()}",
                    name=name,
                )
            if now < cert.not_valid_before_utc:
                return ChainUntrusted(
                    Reason.NOT_YET_VALID,
                    f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}",
                    name=name,
                )
        return ChainUntrusted(
            Reason.EXPIRED,
            f"a CA certificate of the trust bundle {bundle.source} is not valid now",
            name=name,
        )
    last = certs[-1]
    return ChainUntrusted(
        Reason.UNTRUSTED,
        f"unknown issuer: the chain of {subject} (ending at {last.issuer.rfc4514_string()}) does "
        f"not lead to a CA in the trust bundle {bundle.source} ({detail})",
        name=name,
    )


def check_pair_trust(
    fullchain: bytes, bundle: TrustBundle | None, *, name: str | None, now: datetime
) -> str | None:
    """:func:`verify_chain` when a bundle is configured; ``None`` (nothing checked) otherwise."""
    if bundle is None:
        return None
    return verify_chain(fullchain, bundle, name=name, now=now)
