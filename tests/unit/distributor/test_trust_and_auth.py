"""The distributor refuses unauthenticated manifests and untrusted chains; the pair stays."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from services.distributor.service import Distributor
from shared.atomic import write_file_atomic
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MacKeys, key_id, sign_manifest
from tests.support.boxes import CERT, KEY, Pair, make_pair, publish
from tests.support.mac_keys import write_key_file
from tests.support.pki import CA

from .test_service import get_health, settings


def _key(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    path = tmp_path / name
    return path, write_key_file(path, 0o600)


def publish_signed(box: Path, pair: Pair, secret: bytes | None) -> None:
    publish(box, pair)
    if secret is not None:
        raw = sign_manifest(MacKeys.of(secret), pair.manifest.to_json())
        write_file_atomic(box / MANIFEST_NAME, raw)


def _refused(dist: Distributor, reason: str) -> float:
    value = dist.metrics.registry.get_sample_value(
        "certflow_distributor_manifest_refused_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("forgery", "reason", "shown"),
    [
        ("unsigned", "unsigned", "unsigned"),
        ("wrong_key", "unknown_key", "stranger"),
        ("altered", "bad_mac", "ours"),
    ],
)
def test_a_manifest_that_does_not_authenticate_is_refused_and_the_pair_stays(
    tmp_path: Path, forgery: str, reason: str, shown: str
) -> None:
    ca = CA()
    box = tmp_path / "box"
    key_path, ours = _key(tmp_path, "ours")
    stranger = secrets.token_bytes(32)
    first = make_pair(ca, 1)
    publish_signed(box, first, ours)
    dist = Distributor(settings(tmp_path, CERTFLOW_MANIFEST_KEY_FILES=str(key_path)))
    assert dist.sync_pass() is not None
    forged = make_pair(CA("attacker"), 2)
    if forgery == "unsigned":
        publish_signed(box, forged, None)
    elif forgery == "wrong_key":
        publish_signed(box, forged, stranger)
    else:
        publish_signed(box, forged, ours)
        doc = json.loads((box / MANIFEST_NAME).read_bytes())
        doc["generation"] = 3  # any change after signing
        write_file_atomic(box / MANIFEST_NAME, json.dumps(doc).encode())
    assert dist.sync_pass() is None
    assert dist.sync_pass() is None  # counted once, not per poll
    assert (tmp_path / "target" / CERT).read_bytes() == first.cert
    assert (tmp_path / "target" / KEY).read_bytes() == first.key
    code, body = get_health(dist)
    assert code == 503
    sync = body["checks"]["sync"]
    assert sync["reason"] == reason
    want = {"unsigned": "unsigned", "stranger": key_id(stranger), "ours": key_id(ours)}[shown]
    assert sync["key_id"] == want
    assert want in sync["message"]
    assert "keeping the installed pair" in sync["message"]
    assert body["info"]["generation"] == 1
    assert _refused(dist, reason) == 1.0
    for secret in (ours, stranger):
        assert secret.hex() not in json.dumps(body)


def test_a_manifest_signed_with_any_accepted_key_is_installed(tmp_path: Path) -> None:
    ca = CA()
    box = tmp_path / "box"
    old_path, old = _key(tmp_path, "old")
    new_path, new = _key(tmp_path, "new")
    dist = Distributor(settings(tmp_path, CERTFLOW_MANIFEST_KEY_FILES=f"{old_path},{new_path}"))
    publish_signed(box, make_pair(ca, 1), old)
    assert dist.sync_pass() is not None
    publish_signed(box, make_pair(ca, 2), new)
    result = dist.sync_pass()
    assert result is not None
    assert result.installed is not None
    assert result.installed.manifest.generation == 2
    _, body = get_health(dist)
    assert body["checks"]["manifest_auth"]["accepted_keys"] == [key_id(old), key_id(new)]
    assert dist.metrics.registry.get_sample_value("certflow_manifest_auth_enabled") == 1


def test_without_keys_a_signed_manifest_is_still_installed_and_the_gap_is_shown(
    tmp_path: Path,
) -> None:
    box = tmp_path / "box"
    publish_signed(box, make_pair(CA(), 1), secrets.token_bytes(32))
    dist = Distributor(settings(tmp_path))
    assert dist.sync_pass() is not None
    _, body = get_health(dist)
    assert body["checks"]["manifest_auth"]["message"].startswith("manifest not authenticated")
    assert dist.metrics.registry.get_sample_value("certflow_manifest_auth_enabled") == 0


@pytest.mark.parametrize(
    ("case", "reason"),
    [("stranger", "untrusted"), ("name", "domain_mismatch")],
)
def test_a_chain_that_does_not_verify_is_refused_before_install(
    tmp_path: Path, case: str, reason: str
) -> None:
    ca = CA()
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(ca.root_pem)
    box = tmp_path / "box"
    first = make_pair(ca, 1)
    publish(box, first)
    dist = Distributor(
        settings(
            tmp_path,
            DISTRIBUTOR_TRUST_BUNDLE=str(bundle),
            DISTRIBUTOR_TRUST_NAME="other.example" if case == "name" else "vault.iklim.co",
        )
    )
    if case == "stranger":
        assert dist.sync_pass() is not None  # the trusted pair installs
        stranger = CA("stranger")
        publish(box, make_pair(stranger, 2))
    assert dist.sync_pass() is None
    code, body = get_health(dist)
    assert code == 503
    assert f"refused, keeping the installed one: {reason}:" in body["checks"]["sync"]["message"]
    value = dist.metrics.registry.get_sample_value(
        "certflow_distributor_refused_total", {"reason": reason}
    )
    assert value == 1.0
    if case == "stranger":
        assert (tmp_path / "target" / CERT).read_bytes() == first.cert
    else:
        assert not (tmp_path / "target" / CERT).exists()
