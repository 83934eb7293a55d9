"""shared.certs.validate_pair: every bad input one by one, and the good ones (RSA and ECDSA)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.certs import (
    name_covered,
    parse_certificates,
    parse_private_key,
    read_leaf,
    required_names,
    validate_pair,
)
from shared.errors import CertificateInvalid, Reason
from tests.support.pki import CA, Issued, KeyKind

NAMES = required_names("iklim.co")
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def leaf(ca: CA) -> Issued:
    return ca.leaf()


def _refused(fullchain: bytes, key: bytes, **kwargs: object) -> CertificateInvalid:
    with pytest.raises(CertificateInvalid) as info:
        validate_pair(fullchain, key, names=kwargs.pop("names", NAMES), now=NOW, **kwargs)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_good_pair_is_accepted_with_its_facts(kind: KeyKind) -> None:
    ca = CA(kind=kind)
    issued = ca.leaf(kind=kind)
    pair = validate_pair(ca.fullchain(issued), issued.key_pem, names=NAMES, now=NOW)
    assert pair.key_type.startswith("ECDSA" if kind == "ec" else "RSA-2048")
    assert pair.chain_length == 2
    assert set(pair.leaf.sans) == {"iklim.co", "*.iklim.co"}
    assert pair.leaf.not_after == issued.cert.not_valid_after_utc
    assert pair.leaf.fingerprint_sha256.count(":") == 31


def test_crlf_line_endings_are_valid_pem_and_accepted(ca: CA, leaf: Issued) -> None:
    # RFC 7468 allows CRLF; a bundle edited on Windows is still the same certificate.
    crlf = ca.fullchain(leaf).replace(b"\n", b"\r\n")
    pair = validate_pair(crlf, leaf.key_pem.replace(b"\n", b"\r\n"), names=NAMES, now=NOW)
    assert pair.chain_length == 2


@pytest.mark.parametrize(
    ("cert", "key", "reason"),
    [
        (b"", None, Reason.EMPTY),
        (b"  \n\n", None, Reason.EMPTY),
        (None, b"", Reason.EMPTY),
        (b"\x00\xff\x13garbage\x89PNG", None, Reason.NOT_PEM),
        (None, b"\x00\xff\x13garbage", Reason.NOT_PEM),
        (b"hello world\n", None, Reason.NOT_PEM),
    ],
)
def test_empty_and_garbage_files_are_refused(
    ca: CA, leaf: Issued, cert: bytes | None, key: bytes | None, reason: Reason
) -> None:
    error = _refused(
        ca.fullchain(leaf) if cert is None else cert, leaf.key_pem if key is None else key
    )
    assert error.reason is reason


def test_certificate_cut_mid_block_is_truncated(ca: CA, leaf: Issued) -> None:
    full = ca.fullchain(leaf)
    for cut in (len(full) // 4, len(full) // 2, len(full) - 30):
        assert _refused(full[:cut], leaf.key_pem).reason is Reason.TRUNCATED


def test_fullchain_cut_between_blocks_loses_the_intermediate_and_is_refused(
    ca: CA, leaf: Issued
) -> None:
    # The leaf alone is a complete PEM block: only the chain rule can tell it was truncated.
    info = _refused(leaf.cert_pem, leaf.key_pem)
    assert info.reason is Reason.TRUNCATED
    assert "missing" in info.message


def test_certificate_with_damaged_base64_is_refused(ca: CA, leaf: Issued) -> None:
    pem = leaf.cert_pem
    lines = pem.split(b"\n")
    lines[3] = lines[3][:10]  # a short line in the middle of the base64 body
    assert _refused(b"\n".join(lines) + ca.intermediate.cert_pem, leaf.key_pem).reason in {
        Reason.TRUNCATED,
        Reason.NOT_PEM,
    }


def test_key_cut_mid_block_is_refused(ca: CA, leaf: Issued) -> None:
    key = leaf.key_pem
    error = _refused(ca.fullchain(leaf), key[: len(key) // 2])
    assert error.reason is Reason.BAD_KEY
    error = _refused(ca.fullchain(leaf), key[:-40])
    assert error.reason is Reason.BAD_KEY


def test_key_of_another_certificate_is_refused(ca: CA, leaf: Issued) -> None:
    other = ca.leaf()
    assert _refused(ca.fullchain(leaf), other.key_pem).reason is Reason.KEY_MISMATCH


def test_two_keys_in_one_file_are_refused(ca: CA, leaf: Issued) -> None:
    both = leaf.key_pem + ca.leaf().key_pem
    assert _refused(ca.fullchain(leaf), both).reason is Reason.BAD_KEY


def test_expired_leaf_is_refused(ca: CA) -> None:
    old = ca.leaf(not_before=NOW - timedelta(days=100), days=90)
    error = _refused(ca.fullchain(old), old.key_pem)
    assert error.reason is Reason.EXPIRED
    assert "leaf certificate expired" in str(error)


def test_not_yet_valid_leaf_is_refused(ca: CA) -> None:
    future = ca.leaf(not_before=NOW + timedelta(days=1))
    assert _refused(ca.fullchain(future), future.key_pem).reason is Reason.NOT_YET_VALID


def test_wrong_domain_is_refused(ca: CA) -> None:
    other = ca.leaf(("example.org", "*.example.org"))
    error = _refused(ca.fullchain(other), other.key_pem)
    assert error.reason is Reason.DOMAIN_MISMATCH
    assert "iklim.co" in str(error)


@pytest.mark.parametrize(
    ("sans", "missing"),
    [
        (("*.iklim.co",), "iklim.co"),
        (("iklim.co",), "*.iklim.co"),
        (("vault.iklim.co",), "iklim.co"),
    ],
)
def test_wildcard_only_or_apex_only_coverage_is_refused(
    ca: CA, sans: tuple[str, ...], missing: str
) -> None:
    issued = ca.leaf(sans)
    error = _refused(ca.fullchain(issued), issued.key_pem)
    assert error.reason is Reason.DOMAIN_MISMATCH
    assert missing in error.message


def test_explicit_names_replace_the_default(ca: CA) -> None:
    issued = ca.leaf(("vault.iklim.co",))
    pair = validate_pair(ca.fullchain(issued), issued.key_pem, names=["vault.iklim.co"], now=NOW)
    assert pair.leaf.sans == ("vault.iklim.co",)
    wildcard = ca.leaf(("*.iklim.co",))
    validate_pair(ca.fullchain(wildcard), wildcard.key_pem, names=["vault.iklim.co"], now=NOW)


def test_chain_in_the_wrong_order_is_refused(ca: CA, leaf: Issued) -> None:
    reversed_bundle = ca.intermediate.cert_pem + leaf.cert_pem
    assert _refused(reversed_bundle, leaf.key_pem).reason is Reason.CHAIN_ORDER
    # leaf, root, intermediate: the leaf is not issued by the certificate after it.
    shuffled = leaf.cert_pem + ca.root_pem + ca.intermediate.cert_pem
    error = _refused(shuffled, leaf.key_pem)
    assert error.reason is Reason.CHAIN_ORDER
    assert "certificate 0" in error.message


def test_chain_from_another_ca_is_refused(ca: CA, leaf: Issued) -> None:
    stranger = CA("stranger")
    assert _refused(leaf.cert_pem + stranger.intermediate.cert_pem, leaf.key_pem).reason is (
        Reason.CHAIN_ORDER
    )


def test_a_leaf_expiring_before_the_published_one_is_a_downgrade(ca: CA) -> None:
    short = ca.leaf(days=30)
    published_not_after = NOW + timedelta(days=60)
    error = _refused(ca.fullchain(short), short.key_pem, previous_not_after=published_not_after)
    assert error.reason is Reason.DOWNGRADE
    assert "RELOADER_ALLOW_DOWNGRADE" in error.message
    allowed = validate_pair(
        ca.fullchain(short),
        short.key_pem,
        names=NAMES,
        now=NOW,
        previous_not_after=published_not_after,
        allow_downgrade=True,
    )
    assert allowed.leaf.not_after < published_not_after
    # The same certificate again (equal notAfter) is not a downgrade.
    validate_pair(
        ca.fullchain(short),
        short.key_pem,
        names=NAMES,
        now=NOW,
        previous_not_after=short.cert.not_valid_after_utc,
    )


def test_error_messages_never_contain_key_material(ca: CA, leaf: Issued) -> None:
    body_lines = leaf.key_pem.decode().splitlines()[1:-1]
    cases: Iterator[bytes] = iter(
        [leaf.key_pem[:-40], leaf.key_pem[: len(leaf.key_pem) // 2], ca.leaf().key_pem]
    )
    for key in cases:
        error = _refused(ca.fullchain(leaf), key)
        for line in body_lines:
            assert line not in str(error)
            assert line not in repr(error)


def test_name_matching_follows_rfc_6125() -> None:
    assert name_covered("vault.iklim.co", ["*.iklim.co"])
    assert not name_covered("a.vault.iklim.co", ["*.iklim.co"])
    assert not name_covered("iklim.co", ["*.iklim.co"])
    assert name_covered("*.iklim.co", ["*.iklim.co"])
    assert name_covered("IKLIM.CO.", ["iklim.co"])
    assert not name_covered("*.iklim.co", ["vault.iklim.co"])
    assert required_names("Iklim.Co", ["vault.iklim.co", "iklim.co"]) == (
        "iklim.co",
        "*.iklim.co",
        "vault.iklim.co",
    )


def test_parsers_and_read_leaf(ca: CA, leaf: Issued) -> None:
    assert len(parse_certificates(ca.fullchain(leaf))) == 2
    assert parse_private_key(leaf.key_pem) is not None
    info = read_leaf(ca.fullchain(leaf))
    assert info.serial == format(leaf.cert.serial_number, "x")
    assert info.subject == "CN=iklim.co"
