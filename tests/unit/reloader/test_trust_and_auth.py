"""The reloader's trust check and manifest signing, in-process against real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.reloader.service import Outcome
from services.reloader.settings import ReloaderSettings
from shared.errors import ConfigError
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MAC_FIELD, MacKeys, authenticate_manifest, key_id
from shared.settings import load_settings
from shared.snapshot import State
from shared.storagebox import read_snapshot
from tests.support.mac_keys import write_key_file
from tests.support.pki import CA

from .test_reconcile import CERT, KEY, Env


def _key(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    path = tmp_path / name
    return path, write_key_file(path)


def _bundle(tmp_path: Path, ca: CA, name: str = "clients.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(ca.root_pem)
    return path


def test_a_chain_that_does_not_verify_is_refused_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    stranger = CA("not the clients' CA")
    env = Env(
        tmp_path,
        RELOADER_TRUST_BUNDLE=str(_bundle(tmp_path, stranger)),
        RELOADER_TRUST_NAME="vault.iklim.co",
    )
    env.renew()
    result = env.reloader().reconcile()
    assert result.outcome is Outcome.REJECTED
    assert "untrusted: unknown issuer" in result.message
    assert env.snapshot().state is State.EMPTY
    assert env.failures("untrusted") == 1.0
    source = env.health.snapshot()["checks"]["source"]
    assert source["reason"] == "untrusted"
    assert "trust bundle" in source["message"]


def _trusting(env: Env, tmp_path: Path, **extra: str) -> None:
    """Settings whose trust bundle is the CA that issues ``env``'s renewals."""
    env.settings = load_settings(
        ReloaderSettings,
        {
            "RELOADER_SOURCE_DIR": str(env.live),
            "RELOADER_TARGET_DIR": str(env.target),
            "RELOADER_TRUST_BUNDLE": str(_bundle(tmp_path, env.ca)),
            **extra,
        },
    )


@pytest.mark.parametrize("name", [None, "vault.iklim.co"])
def test_a_chain_that_verifies_is_published(tmp_path: Path, name: str | None) -> None:
    env = Env(tmp_path)
    _trusting(env, tmp_path, **({"RELOADER_TRUST_NAME": name} if name else {}))
    env.renew()
    assert env.reloader().reconcile().outcome is Outcome.PUBLISHED


def test_an_expired_chain_is_refused_by_the_trust_check_too(tmp_path: Path) -> None:
    env = Env(tmp_path)
    _trusting(env, tmp_path)
    env.renew()
    env.now[0] += 200 * 86400
    result = env.reloader().reconcile()
    assert result.outcome is Outcome.REJECTED
    assert result.message.startswith("expired:")


def test_the_manifest_is_signed_and_re_signed_when_the_signing_key_changes(
    tmp_path: Path,
) -> None:
    old_path, old = _key(tmp_path, "old")
    _, new = _key(tmp_path, "new")
    env = Env(tmp_path, CERTFLOW_MANIFEST_KEY_FILES=str(old_path))
    env.renew()
    assert env.reloader().reconcile().outcome is Outcome.PUBLISHED
    raw = (env.target / MANIFEST_NAME).read_bytes()
    assert authenticate_manifest(MacKeys.of(old), raw) == key_id(old)
    health = env.health.snapshot()["checks"]
    assert health["storage"]["signed_by"] == key_id(old)
    assert health["manifest_auth"]["signing_key"] == key_id(old)

    # Rotation step 2: the new key signs, the old one is still accepted.
    env.settings = env.settings.model_copy(update={"manifest_keys": MacKeys.of(new, old)})
    reloader = env.reloader()
    result = reloader.reconcile()
    assert (result.outcome, result.generation) == (Outcome.CURRENT, 1)
    raw = (env.target / MANIFEST_NAME).read_bytes()
    assert authenticate_manifest(MacKeys.of(new), raw) == key_id(new)
    assert env.events("manifest.resigned")[0]["key_id"] == key_id(new)
    assert env.metrics.registry.get_sample_value("certflow_reloader_manifest_resigns_total") == 1
    assert reloader.reconcile().outcome is Outcome.CURRENT
    assert env.metrics.registry.get_sample_value("certflow_reloader_manifest_resigns_total") == 1


@pytest.mark.parametrize("forgery", ["unsigned", "wrong_key"])
def test_a_forged_manifest_on_the_storage_box_is_replaced(tmp_path: Path, forgery: str) -> None:
    key_path, secret = _key(tmp_path, "k")
    env = Env(tmp_path, CERTFLOW_MANIFEST_KEY_FILES=str(key_path))
    env.renew()
    reloader = env.reloader()
    reloader.reconcile()
    doc = json.loads((env.target / MANIFEST_NAME).read_bytes())
    if forgery == "unsigned":
        del doc[MAC_FIELD]
    else:
        doc[MAC_FIELD] = "hmac-sha256:0123abcd:" + "0" * 64
    (env.target / MANIFEST_NAME).write_text(json.dumps(doc))
    result = reloader.reconcile()
    assert result.outcome is Outcome.PUBLISHED
    snap = read_snapshot(env.target, cert_name=CERT, key_name=KEY, keys=MacKeys.of(secret))
    assert snap.state is State.COMMITTED
    assert snap.signer == key_id(secret)
    refused = env.events("manifest.refused")
    assert refused[0]["key_id"] == ("unsigned" if forgery == "unsigned" else "0123abcd")
    reason = "unsigned" if forgery == "unsigned" else "unknown_key"
    assert (
        env.metrics.registry.get_sample_value(
            "certflow_reloader_manifest_refused_total", {"reason": reason}
        )
        == 1
    )
    assert secret.hex() not in env.log.getvalue()


def test_without_keys_it_says_so(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.reloader()
    check = env.health.snapshot()["checks"]["manifest_auth"]
    assert check["message"].startswith("manifest not authenticated")
    assert env.metrics.registry.get_sample_value("certflow_manifest_auth_enabled") == 0
    assert env.events("manifest.not_authenticated")


@pytest.mark.parametrize(
    ("variable", "content", "mode", "words"),
    [
        ("RELOADER_TRUST_BUNDLE", b"not pem", 0o644, "holds no PEM certificate"),
        ("RELOADER_TRUST_BUNDLE", None, 0o644, "cannot read"),
        ("CERTFLOW_MANIFEST_KEY_FILES", b"k" * 40, 0o644, "accessible by group/others"),
        ("CERTFLOW_MANIFEST_KEY_FILES", b"k" * 8, 0o600, "fewer than 32 bytes"),
        ("CERTFLOW_MANIFEST_KEY_FILES", None, 0o600, "cannot read"),
    ],
    ids=["bundle-not-pem", "bundle-missing", "key-readable", "key-short", "key-missing"],
)
def test_a_bad_file_setting_stops_the_start_naming_the_variable(
    tmp_path: Path, variable: str, content: bytes | None, mode: int, words: str
) -> None:
    path = tmp_path / "file"
    if content is not None:
        path.write_bytes(content)
        path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_settings(ReloaderSettings, {variable: str(path)})
    assert variable in str(info.value)
    assert words in str(info.value)
    if content is not None:
        assert content.decode() not in str(info.value)


def test_a_wildcard_trust_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="RELOADER_TRUST_NAME"):
        load_settings(ReloaderSettings, {"RELOADER_TRUST_NAME": "*.iklim.co"})
