"""``certflow distributor`` as a real process against forged and untrusted Storage Box content.

Each forgery is written straight into the Storage Box directory, the way anyone who can write the
share could: the process must refuse it on /health (with the reason and key id), count it, and
keep the installed pair byte for byte.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.atomic import write_file_atomic
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MacKeys, key_id, sign_manifest
from tests.support.boxes import CERT, KEY, Pair, make_pair, publish
from tests.support.certflow_procs import REPO, DistributorProcess, clean_env, wait_for
from tests.support.mac_keys import write_key_file
from tests.support.pki import CA


def _key_file(path: Path) -> bytes:
    return write_key_file(path)


def _publish(box: Path, pair: Pair, secret: bytes | None) -> None:
    publish(box, pair)
    if secret is not None:
        write_file_atomic(
            box / MANIFEST_NAME, sign_manifest(MacKeys.of(secret), pair.manifest.to_json())
        )


def _sync_check(dist: DistributorProcess) -> dict[str, object]:
    check: dict[str, object] = dist.health()["checks"]["sync"]
    return check


def test_forged_untrusted_and_expired_pairs_are_refused_and_the_pair_stays(
    tmp_path: Path,
) -> None:
    ca = CA("clients' CA")
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(ca.root_pem)
    ours = _key_file(tmp_path / "manifest-key")
    box, target = tmp_path / "box", tmp_path / "target"
    good = make_pair(ca, 1)
    _publish(box, good, ours)
    dist = DistributorProcess(
        box,
        target,
        tmp_path / "distributor.log",
        CERTFLOW_MANIFEST_KEY_FILES=str(tmp_path / "manifest-key"),
        DISTRIBUTOR_TRUST_BUNDLE=str(bundle),
        DISTRIBUTOR_TRUST_NAME="vault.iklim.co",
    )
    try:
        wait_for("generation 1 installed", lambda: dist.generation() == 1)
        stranger_key = secrets.token_bytes(32)
        attacker = CA("attacker")
        now = datetime.now(UTC)
        expired_leaf = ca.leaf(not_before=now - timedelta(days=100), days=90)
        cases = [
            # (what is written, reason expected on /health, key id expected)
            ("no mac", make_pair(attacker, 7), None, "unsigned", "unsigned"),
            (
                "wrong key",
                make_pair(attacker, 8),
                stranger_key,
                "unknown_key",
                key_id(stranger_key),
            ),
            ("untrusted chain", make_pair(attacker, 9), ours, "untrusted", None),
            ("expired chain", make_pair(ca, 10, expired_leaf), ours, "expired", None),
        ]
        for what, pair, secret, reason, kid in cases:
            _publish(box, pair, secret)

            def refused(reason: str = reason) -> bool:
                check = _sync_check(dist)
                return check["status"] == "failing" and f"{reason}:" in str(check["message"])

            wait_for(f"{what} refused", refused)
            check = _sync_check(dist)
            if kid is not None:
                assert check["key_id"] == kid, what
                assert check["reason"] == reason
                assert kid in str(check["message"])
            assert (target / CERT).read_bytes() == good.cert, what
            assert (target / KEY).read_bytes() == good.key, what
            assert dist.generation() == 1
        metrics = dist.metrics()
        assert 'certflow_distributor_manifest_refused_total{reason="unsigned"} 1.0' in metrics
        assert 'certflow_distributor_manifest_refused_total{reason="unknown_key"} 1.0' in metrics
        assert 'certflow_distributor_refused_total{reason="untrusted"} 1.0' in metrics
        assert 'certflow_distributor_refused_total{reason="expired"} 1.0' in metrics
        assert "certflow_manifest_auth_enabled 1.0" in metrics
        # The real thing again: installed.
        _publish(box, make_pair(ca, 11), ours)
        wait_for("generation 11 installed", lambda: dist.generation() == 11)
        assert _sync_check(dist)["status"] == "ok"
    finally:
        assert dist.stop() == 0
    logs = dist.logs()
    assert ours.hex() not in logs
    assert stranger_key.hex() not in logs
    assert "PRIVATE KEY" not in logs
    refusals = dist.events("manifest.refused")
    assert [(e["reason"], e["key_id"]) for e in refusals] == [
        ("unsigned", "unsigned"),
        ("unknown_key", key_id(stranger_key)),
    ]


@pytest.mark.parametrize(
    ("variable", "setup", "words"),
    [
        ("DISTRIBUTOR_TRUST_BUNDLE", "missing", "cannot read"),
        ("DISTRIBUTOR_TRUST_BUNDLE", "not_pem", "holds no PEM certificate"),
        ("CERTFLOW_MANIFEST_KEY_FILES", "readable", "accessible by group/others"),
        ("CERTFLOW_MANIFEST_KEY_FILES", "short", "fewer than 32 bytes"),
    ],
)
def test_a_bad_file_setting_stops_the_process_naming_the_variable(
    tmp_path: Path, variable: str, setup: str, words: str
) -> None:
    path = tmp_path / "file"
    secret = secrets.token_hex(32)
    if setup == "not_pem":
        path.write_text("hello\n")
    elif setup == "readable":
        path.write_text(secret)
        path.chmod(0o644)
    elif setup == "short":
        path.write_text("0123456789")
        path.chmod(0o600)
    env = clean_env(
        DISTRIBUTOR_SOURCE_DIR=str(tmp_path / "box"),
        DISTRIBUTOR_TARGET_DIR=str(tmp_path / "target"),
        DISTRIBUTOR_RELOAD_MODE="none",
        **{variable: str(path)},
    )
    done = subprocess.run(
        [sys.executable, "-m", "services", "distributor"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert variable in done.stderr
    assert words in done.stderr
    assert secret not in done.stderr + done.stdout
