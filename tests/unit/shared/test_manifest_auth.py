"""Manifest authentication: sign, verify, refuse, and load keys without ever showing them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from shared.errors import AuthReason, ManifestInvalid, ManifestUnauthenticated
from shared.manifest_auth import (
    MAC_FIELD,
    MacKeys,
    authenticate_manifest,
    canonical,
    key_id,
    load_key_files,
    manifest_signer,
    parse_key_files,
    sign,
    sign_manifest,
    verify,
)

OLD, NEW, OTHER = (secrets.token_bytes(32) for _ in range(3))
DOC = {"schema": 1, "generation": 3, "files": {"cert": {"md5": "x"}}, "publisher": "n1"}
RAW = (json.dumps(DOC, indent=2) + "\n").encode()


def test_key_id_is_eight_hex_of_the_sha256() -> None:
    kid = key_id(OLD)
    assert len(kid) == 8
    assert int(kid, 16) >= 0
    assert kid != key_id(NEW)


@pytest.mark.parametrize(
    ("signer", "verifier", "ok"),
    [
        ((OLD,), (OLD,), True),
        ((OLD, NEW), (NEW, OLD), True),  # the old key signs; a verifier holding both accepts
        ((NEW, OLD), (OLD, NEW), True),
        ((NEW,), (OLD,), False),  # a key the verifier does not hold
        ((OTHER,), (OLD, NEW), False),
    ],
    ids=["same", "old-signs-both-held", "new-signs-both-held", "not-held", "foreign"],
)
def test_sign_and_verify(signer: tuple[bytes, ...], verifier: tuple[bytes, ...], ok: bool) -> None:
    tag = sign(MacKeys.of(*signer), b"payload")
    assert tag.startswith(f"hmac-sha256:{key_id(signer[0])}:")
    assert verify(MacKeys.of(*verifier), b"payload", tag) is ok
    assert verify(MacKeys.of(*signer), b"payload!", tag) is False


@pytest.mark.parametrize(
    "tag",
    ["", "hmac-sha256", "hmac-sha1:abcd1234:" + "0" * 64, "hmac-sha256:abcd1234:xyz", "x" * 200],
)
def test_malformed_tags_never_verify(tag: str) -> None:
    assert verify(MacKeys.of(OLD), b"payload", tag) is False


def test_canonical_form_ignores_whitespace_order_and_the_mac() -> None:
    a = canonical({"b": 1, "a": [1, 2], MAC_FIELD: "anything"})
    assert a == canonical({"a": [1, 2], "b": 1}) == b'{"a":[1,2],"b":1}'


def test_a_signed_manifest_authenticates_and_names_its_key() -> None:
    signed = sign_manifest(MacKeys.of(OLD), RAW)
    assert manifest_signer(signed) == key_id(OLD)
    assert authenticate_manifest(MacKeys.of(NEW, OLD), signed) == key_id(OLD)
    # Re-indenting the file does not matter: the MAC covers the canonical JSON.
    compact = json.dumps(json.loads(signed)).encode()
    assert authenticate_manifest(MacKeys.of(OLD), compact) == key_id(OLD)


def _altered(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["generation"] = 99
    return json.dumps(doc).encode()


def _other_mac(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc[MAC_FIELD] = 42
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "reason", "kid", "words"),
    [
        (RAW, AuthReason.UNSIGNED, None, "unsigned"),
        (sign_manifest(MacKeys.of(OTHER), RAW), AuthReason.UNKNOWN_KEY, key_id(OTHER), "key id"),
        (_altered(sign_manifest(MacKeys.of(OLD), RAW)), AuthReason.BAD_MAC, key_id(OLD), "forged"),
        (_other_mac(RAW), AuthReason.MALFORMED, None, "hmac-sha256:<keyid>:<hex>"),
    ],
    ids=["unsigned", "unknown-key", "altered", "malformed"],
)
def test_refusals_say_why_and_which_key(
    raw: bytes, reason: AuthReason, kid: str | None, words: str
) -> None:
    with pytest.raises(ManifestUnauthenticated) as info:
        authenticate_manifest(MacKeys.of(OLD, NEW), raw)
    assert info.value.reason is reason
    assert info.value.key_id == kid
    assert words in str(info.value)
    if kid:
        assert kid in str(info.value)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_manifest_that_is_not_a_json_object_is_invalid(raw: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        authenticate_manifest(MacKeys.of(OLD), raw)


def test_reprs_and_messages_never_show_key_bytes() -> None:
    keys = MacKeys.of(OLD, NEW)
    text = repr(keys) + repr(keys.signing) + str(keys.keys)
    assert keys.signing.key_id in text
    for secret in (OLD, NEW):
        assert secret.hex() not in text
        assert repr(secret) not in text


@pytest.mark.parametrize(
    ("secrets_", "words"),
    [
        ((), "at least one key"),
        ((b"short",), "shorter than 32 bytes"),
        ((OLD, OLD), "listed twice"),
    ],
    ids=["none", "short", "twice"],
)
def test_bad_key_sets_are_refused(secrets_: tuple[bytes, ...], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MacKeys.of(*secrets_)


def _key_file(tmp_path: Path, name: str, data: bytes, mode: int = 0o400) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_key_files_load_in_order_and_a_trailing_newline_is_dropped(tmp_path: Path) -> None:
    hex_key = secrets.token_hex(32).encode()
    first = _key_file(tmp_path, "k1", hex_key + b"\n")
    second = _key_file(tmp_path, "k2", OLD, 0o600)
    keys = load_key_files([first, second])
    assert keys.ids == (key_id(hex_key), key_id(OLD))
    assert keys.signing.source == str(first)
    assert parse_key_files(f" {first} , {second},") == keys
    assert parse_key_files("") is None
    assert parse_key_files(None) is None


@pytest.mark.parametrize(
    ("data", "mode", "words"),
    [
        (OLD, 0o644, r"accessible by group/others \(mode 0644\)"),
        (OLD, 0o440, "accessible by group/others"),
        (OLD, 0o604, "accessible by group/others"),
        (b"x" * 31 + b"\n", 0o400, "fewer than 32 bytes"),
        (b"", 0o600, "fewer than 32 bytes"),
    ],
    ids=["0644", "0440", "0604", "short", "empty"],
)
def test_bad_key_files_are_refused_naming_the_file_not_the_content(
    tmp_path: Path, data: bytes, mode: int, words: str
) -> None:
    path = _key_file(tmp_path, "key", data, mode)
    with pytest.raises(ValueError, match=words) as info:
        load_key_files([path])
    assert str(path) in str(info.value)
    if data:
        assert data.hex() not in str(info.value)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read .*missing"):
        load_key_files([tmp_path / "missing"])
