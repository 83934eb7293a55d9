"""The trust check: a chain verifies for a DNS name at a time against a CA bundle, or says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.errors import CertificateInvalid, ChainUntrusted, Reason
from shared.trust import (
    TrustBundle,
    check_pair_trust,
    default_check_name,
    load_bundle,
    parse_bundle,
    verify_chain,
)
from tests.support.pki import CA

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("trusted")


@pytest.fixture(scope="module")
def bundle(ca: CA) -> TrustBundle:
    return parse_bundle(ca.root_pem, source="clients.pem")


@pytest.mark.parametrize(
    ("sans", "name"),
    [
        (("*.iklim.co", "iklim.co"), "vault.iklim.co"),  # a wildcard leaf, the Vault name
        (("iklim.co", "*.iklim.co"), "iklim.co"),
        (("iklim.co", "*.iklim.co"), None),  # default: the first name
        (("*.iklim.co",), None),  # default: certflow-check.iklim.co under the wildcard
        (("vault.iklim.co",), "VAULT.iklim.co"),
    ],
)
def test_a_chain_to_the_bundle_verifies(
    ca: CA, bundle: TrustBundle, sans: tuple[str, ...], name: str | None
) -> None:
    chain = ca.fullchain(ca.leaf(sans))
    checked = verify_chain(chain, bundle, name=name.lower() if name else None, now=NOW)
    assert checked == (name.lower() if name else default_check_name(sans))


@pytest.mark.parametrize(
    ("case", "reason", "words"),
    [
        ("other_ca", Reason.UNTRUSTED, "unknown issuer"),
        ("no_intermediate", Reason.UNTRUSTED, "unknown issuer"),
        ("name", Reason.DOMAIN_MISMATCH, "not valid for other.example"),
        ("deep_name", Reason.DOMAIN_MISMATCH, "not valid for a.b.iklim.co"),
        ("expired", Reason.EXPIRED, "leaf expired at"),
        ("future", Reason.NOT_YET_VALID, "leaf is not valid before"),
    ],
)
def test_a_chain_that_does_not_verify_says_why(
    ca: CA, bundle: TrustBundle, case: str, reason: Reason, words: str
) -> None:
    leaf = ca.leaf()
    chain, name, now = ca.fullchain(leaf), "vault.iklim.co", NOW
    if case == "other_ca":
        other = CA("someone else")
        chain = other.fullchain(other.leaf())
    elif case == "no_intermediate":
        chain = leaf.cert_pem
    elif case == "name":
        name = "other.example"
    elif case == "deep_name":
        name = "a.b.iklim.co"  # a wildcard covers exactly one label
    elif case == "expired":
        now = NOW + timedelta(days=120)
    elif case == "future":
        now = NOW - timedelta(days=1)
    with pytest.raises(ChainUntrusted) as info:
        verify_chain(chain, bundle, name=name, now=now)
    err = info.value
    assert isinstance(err, CertificateInvalid)  # the refusal family every caller handles
    assert err.reason is reason
    assert words in str(err)
    assert "PRIVATE KEY" not in str(err)
    assert "encountered processing" not in str(err)


def test_the_untrusted_message_names_the_bundle(ca: CA) -> None:
    other = CA("someone else")
    with pytest.raises(ChainUntrusted, match=r"trust bundle /etc/vault-clients\.pem"):
        verify_chain(
            ca.fullchain(ca.leaf()),
            parse_bundle(other.root_pem, source="/etc/vault-clients.pem"),
            name="vault.iklim.co",
            now=NOW,
        )


def test_a_bundle_of_several_cas_trusts_each(ca: CA, bundle: TrustBundle) -> None:
    other = CA("second")
    both = parse_bundle(other.root_pem + ca.root_pem)
    assert len(both.roots) == 2
    for issuer in (ca, other):
        verify_chain(issuer.fullchain(issuer.leaf()), both, name="vault.iklim.co", now=NOW)


def test_no_bundle_checks_nothing(ca: CA) -> None:
    other = CA("someone else")
    assert check_pair_trust(other.fullchain(other.leaf()), None, name=None, now=NOW) is None


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        (("*.iklim.co", "iklim.co"), "certflow-check.iklim.co"),
        (("iklim.co.",), "iklim.co"),
        ((), None),
    ],
)
def test_default_check_name(sans: tuple[str, ...], expected: str | None) -> None:
    assert default_check_name(sans) == expected


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "holds no PEM certificate"),
        (b"hello", "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a readable PEM"),
    ],
)
def test_a_bundle_that_is_not_pem_is_refused(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words):
        load_bundle(path)


def test_a_missing_bundle_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read .*nope\.pem: No such file"):
        load_bundle(tmp_path / "nope.pem")


def test_bundle_repr_is_short(bundle: TrustBundle) -> None:
    assert repr(bundle) == "TrustBundle('clients.pem', 1 CA certificate(s))"
