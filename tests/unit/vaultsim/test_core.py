"""The double's protocol logic checked against Vault's and OpenBao's API behaviour, case by case.

These drive ``VaultCore.handle`` directly (no sockets); tests/integration/vaultsim repeats the
important cases through hvac and httpx over real TLS.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.vaultsim.core import Options, Reply, VaultCore

SEAL_STATUS_KEYS_VAULT = {
    "type",
    "initialized",
    "sealed",
    "t",
    "n",
    "progress",
    "nonce",
    "version",
    "build_date",
    "migration",
    "recovery_seal",
    "storage_type",
    "removed_from_cluster",
}


def make(tmp_path: Path, **options: Any) -> VaultCore:
    return VaultCore(tmp_path / "data", Options(**options))


def call(
    core: VaultCore,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return core.handle(method, path, query, headers or {}, raw)


def init(core: VaultCore, shares: int, threshold: int) -> dict[str, Any]:
    reply = call(
        core, "PUT", "/v1/sys/init", {"secret_shares": shares, "secret_threshold": threshold}
    )
    assert reply.status == 200, reply.body
    assert reply.body is not None
    return reply.body


def errors(reply: Reply) -> list[str]:
    assert reply.body is not None
    value: list[str] = reply.body["errors"]
    return value


# -- seal-status -------------------------------------------------------------------------------
def test_uninitialized_seal_status_is_200_with_zeroes(tmp_path: Path) -> None:
    reply = call(make(tmp_path), "GET", "/v1/sys/seal-status")
    assert reply.status == 200
    body = reply.body
    assert body is not None
    assert body["initialized"] is False
    assert body["sealed"] is True
    assert (body["t"], body["n"], body["progress"], body["nonce"]) == (0, 0, 0, "")
    assert body["type"] == "shamir"
    assert "cluster_name" not in body
    assert "cluster_id" not in body


def test_vault_seal_status_fields_match_the_docs_sample(tmp_path: Path) -> None:
    core = make(tmp_path)
    init(core, 1, 1)
    body = call(core, "GET", "/v1/sys/seal-status").body
    assert body is not None
    assert set(body) == SEAL_STATUS_KEYS_VAULT


@pytest.mark.parametrize(
    ("version", "date_field"), [("2.6.2", "commit_date"), ("2.5.1", "build_date")]
)
def test_openbao_field_variants(tmp_path: Path, version: str, date_field: str) -> None:
    body = call(make(tmp_path, flavor="openbao", version=version), "GET", "/v1/sys/seal-status")
    assert body.body is not None
    assert date_field in body.body
    assert "removed_from_cluster" not in body.body
    other = "build_date" if date_field == "commit_date" else "commit_date"
    assert other not in body.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "PATCH"])
def test_seal_status_other_methods_are_405_with_empty_errors(tmp_path: Path, method: str) -> None:
    reply = call(make(tmp_path), method, "/v1/sys/seal-status")
    assert reply.status == 405
    if method != "HEAD":
        assert reply.body == {"errors": []}


# -- unseal ------------------------------------------------------------------------------------
def test_threshold_progress_nonce_and_duplicates(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 5, 3)["keys_base64"]
    first = call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]}).body
    assert first is not None
    assert first["progress"] == 1
    assert first["sealed"] is True
    nonce = first["nonce"]
    assert nonce
    again = call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]}).body  # duplicate: ignored
    assert again is not None
    assert again["progress"] == 1
    assert again["nonce"] == nonce
    second = call(core, "POST", "/v1/sys/unseal", {"key": keys[3]}).body
    assert second is not None
    assert second["progress"] == 2
    assert second["nonce"] == nonce
    done = call(core, "PUT", "/v1/sys/unseal", {"key": keys[4]})
    assert done.status == 200
    assert done.body is not None
    assert done.body["sealed"] is False
    assert done.body["progress"] == 0
    assert done.body["nonce"] == ""
    assert done.body["cluster_name"].startswith("vault-cluster-")
    assert done.body["cluster_id"]


def test_hex_keys_and_case_insensitive_field_names(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 3, 2)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"Key": keys[0], "migrate": False, "extra": 1})
    done = call(core, "PUT", "/v1/sys/unseal", {"KEY": keys[1]})
    assert done.body is not None
    assert done.body["sealed"] is False


def test_single_share_is_the_key_itself(tmp_path: Path) -> None:
    core = make(tmp_path)
    result = init(core, 1, 1)
    assert len(base64.b64decode(result["keys_base64"][0])) == 32
    assert len(result["keys"][0]) == 64
    done = call(core, "PUT", "/v1/sys/unseal", {"key": result["keys"][0]})
    assert done.body is not None
    assert done.body["sealed"] is False


@pytest.mark.parametrize(
    ("options", "status", "fragment"),
    [
        ({}, 400, "invalid key: failed to decrypt keys from storage"),
        ({"version": "1.12.4"}, 500, "unable to retrieve stored keys: failed to decrypt"),
        ({"flavor": "openbao"}, 500, "unable to retrieve stored keys"),
        ({"wrong_key_status": 500}, 500, "message authentication failed"),
        ({"flavor": "openbao", "wrong_key_status": 400}, 400, "invalid key"),
    ],
)
def test_wrong_key_fails_at_threshold_and_resets(
    tmp_path: Path, options: dict[str, Any], status: int, fragment: str
) -> None:
    core = make(tmp_path, **options)
    init(core, 3, 2)
    other = make(tmp_path / "other")
    wrong = init(other, 3, 2)["keys_base64"]
    partial = call(core, "PUT", "/v1/sys/unseal", {"key": wrong[0]})
    assert partial.status == 200
    assert partial.body is not None
    assert partial.body["progress"] == 1
    failed = call(core, "PUT", "/v1/sys/unseal", {"key": wrong[1]})
    assert failed.status == status
    assert fragment in errors(failed)[0]
    after = call(core, "GET", "/v1/sys/seal-status").body
    assert after is not None
    assert after["progress"] == 0
    assert after["nonce"] == ""
    assert after["sealed"] is True


def test_wrong_key_message_never_echoes_the_key(tmp_path: Path) -> None:
    core = make(tmp_path)
    init(core, 1, 1)
    wrong = base64.b64encode(b"\x07" * 32).decode()
    failed = call(core, "PUT", "/v1/sys/unseal", {"key": wrong})
    assert wrong not in json.dumps(failed.body)


def test_reset_wins_over_key_and_clears_progress(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 3, 2)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    reset = call(core, "PUT", "/v1/sys/unseal", {"reset": True, "key": keys[1]})
    assert reset.status == 200
    assert reset.body is not None
    assert reset.body["progress"] == 0
    assert reset.body["nonce"] == ""
    assert reset.body["sealed"]


def test_reset_while_unsealed_is_400(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 1, 1)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    reply = call(core, "PUT", "/v1/sys/unseal", {"reset": True})
    assert reply.status == 400
    assert errors(reply) == ["vault is unsealed"]


def test_key_while_unsealed_is_200_sealed_false(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 1, 1)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    other = base64.b64encode(b"\x01" * 32).decode()
    reply = call(core, "PUT", "/v1/sys/unseal", {"key": other})
    assert reply.status == 200
    assert reply.body is not None
    assert reply.body["sealed"] is False


@pytest.mark.parametrize(
    ("flavor", "body", "message"),
    [
        ("vault", b"", "EOF"),
        ("openbao", b"", "'key' must be specified in request body as JSON, or 'reset' set to true"),
        ("vault", {}, "'key' must be specified in request body as JSON, or 'reset' set to true"),
        ("vault", {"key": ""}, "'key' must be specified"),
        ("vault", {"key": "not a key!"}, "'key' must be a valid hex or base64 string"),
        ("vault", {"key": "abcd"}, "invalid key: key is shorter than minimum 16 bytes"),
        ("vault", {"key": "ab" * 40}, "invalid key: key is longer than maximum 33 bytes"),
        ("vault", b"{not json", "failed to parse JSON input"),
    ],
)
def test_malformed_unseal_requests_are_400(
    tmp_path: Path, flavor: str, body: Any, message: str
) -> None:
    core = make(tmp_path, flavor=flavor)
    init(core, 1, 1)
    reply = call(core, "PUT", "/v1/sys/unseal", body)
    assert reply.status == 400
    assert errors(reply)[0].startswith(message)


def test_unseal_on_uninitialized_is_400(tmp_path: Path) -> None:
    key = base64.b64encode(b"\x01" * 32).decode()
    reply = call(make(tmp_path), "PUT", "/v1/sys/unseal", {"key": key})
    assert reply.status == 400
    assert errors(reply) == ["Vault is not initialized"]


@pytest.mark.parametrize(("flavor", "status"), [("vault", 400), ("openbao", 200)])
def test_length_check_order_differs_when_unsealed(tmp_path: Path, flavor: str, status: int) -> None:
    """Vault checks the key length before 'already unsealed'; OpenBao after."""
    core = make(tmp_path, flavor=flavor)
    call(core, "PUT", "/v1/sys/unseal", {"key": init(core, 1, 1)["keys"][0]})
    reply = call(core, "PUT", "/v1/sys/unseal", {"key": base64.b64encode(b"x" * 8).decode()})
    assert reply.status == status


def test_unseal_get_is_405(tmp_path: Path) -> None:
    assert call(make(tmp_path), "GET", "/v1/sys/unseal").status == 405


def test_restart_comes_back_initialized_and_sealed(tmp_path: Path) -> None:
    core = make(tmp_path)
    keys = init(core, 1, 1)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    restarted = make(tmp_path)
    body = call(restarted, "GET", "/v1/sys/seal-status").body
    assert body is not None
    assert body["initialized"] is True
    assert body["sealed"] is True
    assert (body["t"], body["n"]) == (1, 1)
    state = (tmp_path / "data" / "state.json").read_text()
    assert keys[0] not in state  # only hashes persist


# -- health ------------------------------------------------------------------------------------
def health(core: VaultCore, query: str = "", method: str = "GET") -> Reply:
    return call(core, method, "/v1/sys/health", query=query)


def test_health_default_codes_by_state(tmp_path: Path) -> None:
    core = make(tmp_path)
    uninit = health(core)
    assert uninit.status == 501
    assert uninit.body is not None
    assert uninit.body["initialized"] is False
    assert uninit.body["standby"] is True
    keys = init(core, 1, 1)["keys"]
    sealed = health(core)
    assert sealed.status == 503
    assert sealed.body is not None
    assert sealed.body["standby"] is True
    assert sealed.body["replication_dr_mode"] == "unknown"
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    active = health(core)
    assert active.status == 200
    assert active.body is not None
    assert active.body["standby"] is False
    assert active.body["replication_dr_mode"] == "disabled"
    assert "cluster_id" in active.body


def test_health_precedence_uninit_before_sealed(tmp_path: Path) -> None:
    reply = health(make(tmp_path), "sealedcode=299&uninitcode=298")
    assert reply.status == 298


def test_health_overrides_and_head_has_no_body(tmp_path: Path) -> None:
    core = make(tmp_path)
    init(core, 1, 1)
    assert health(core, "sealedcode=200&uninitcode=200").status == 200
    head = health(core, "sealedcode=299", method="HEAD")
    assert head.status == 299
    assert head.body is None


@pytest.mark.parametrize("query", ["sealedcode=abc", "activecode=", "uninitcode=1.5"])
def test_health_non_integer_code_is_400_empty_errors(tmp_path: Path, query: str) -> None:
    reply = health(make(tmp_path), query)
    assert reply.status == 400
    assert reply.body == {"errors": []}


@pytest.mark.parametrize(
    ("role", "query", "status"),
    [
        ("standby", "", 429),
        ("standby", "standbyok=true", 200),
        ("standby", "standbyok=t", 200),
        ("standby", "standbyok=1", 200),
        ("standby", "standbyok=", 429),
        ("standby", "standbycode=299", 299),
        ("perfstandby", "", 473),
        ("perfstandby", "standbyok=true", 473),  # standbyok does not apply to perf standbys
        ("perfstandby", "perfstandbyok=True", 200),
        ("active", "activecode=204", 204),
    ],
)
def test_health_standby_rules(tmp_path: Path, role: str, query: str, status: int) -> None:
    core = make(tmp_path, role=role)
    call(core, "PUT", "/v1/sys/unseal", {"key": init(core, 1, 1)["keys"][0]})
    assert health(core, query).status == status


def test_health_bad_standbyok_is_400(tmp_path: Path) -> None:
    reply = health(make(tmp_path), "standbyok=maybe")
    assert reply.status == 400
    assert errors(reply) == ["bad value for standbyok parameter"]


def test_openbao_health_ignores_vault_only_parameters(tmp_path: Path) -> None:
    core = make(tmp_path, flavor="openbao")
    init(core, 1, 1)
    reply = health(core, "removedcode=abc&haunhealthycode=x&drsecondarycode=1")
    assert reply.status == 503
    assert reply.body is not None
    assert "performance_standby" not in reply.body
    assert "enterprise" not in reply.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_health_other_methods_405(tmp_path: Path, method: str) -> None:
    assert health(make(tmp_path), method=method).status == 405


# -- init, seal, envelope ----------------------------------------------------------------------
def test_init_get_reports_and_second_init_is_400(tmp_path: Path) -> None:
    core = make(tmp_path)
    assert call(core, "GET", "/v1/sys/init").body == {"initialized": False}
    result = init(core, 3, 2)
    assert len(result["keys"]) == 3
    assert len(result["keys_base64"]) == 3
    assert result["root_token"].startswith("hvs.")
    assert call(core, "GET", "/v1/sys/init").body == {"initialized": True}
    again = call(core, "PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
    assert again.status == 400
    assert errors(again) == ["Vault is already initialized"]
    status = call(core, "GET", "/v1/sys/seal-status").body
    assert status is not None
    assert status["sealed"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"secret_shares": 3, "secret_threshold": 1},
        {"secret_shares": 2, "secret_threshold": 3},
        {"secret_shares": 0, "secret_threshold": 0},
        {"secret_shares": 1, "secret_threshold": 1, "recovery_shares": 1},
    ],
)
def test_init_bad_configuration_is_400(tmp_path: Path, body: dict[str, int]) -> None:
    core = make(tmp_path)
    reply = call(core, "PUT", "/v1/sys/init", body)
    assert reply.status == 400
    assert errors(reply)
    assert call(core, "GET", "/v1/sys/init").body == {"initialized": False}


def test_seal_needs_the_root_token(tmp_path: Path) -> None:
    core = make(tmp_path, root_token="root-for-test")
    keys = init(core, 1, 1)["keys"]
    call(core, "PUT", "/v1/sys/unseal", {"key": keys[0]})
    denied = call(core, "PUT", "/v1/sys/seal", headers={"x-vault-token": "nope"})
    assert denied.status == 403
    assert errors(denied) == ["permission denied"]
    assert call(core, "PUT", "/v1/sys/seal").status == 403
    sealed = call(core, "POST", "/v1/sys/seal", headers={"x-vault-token": "root-for-test"})
    assert sealed.status == 204
    assert sealed.body is None
    again = call(core, "PUT", "/v1/sys/seal", headers={"x-vault-token": "x"})
    assert again.status == 204  # already sealed: returns early
    assert call(core, "GET", "/v1/sys/seal").status == 405


def test_unknown_path_is_404_envelope(tmp_path: Path) -> None:
    reply = call(make(tmp_path), "GET", "/v1/sys/nothing-here")
    assert reply.status == 404
    assert reply.body == {"errors": []}


def test_init_through_one_process_is_seen_by_another_on_the_same_storage(tmp_path: Path) -> None:
    """Replicas of one Vault share storage: the second process sees the init without a restart."""
    first, second = make(tmp_path), make(tmp_path)
    assert call(second, "GET", "/v1/sys/init").body == {"initialized": False}
    keys = init(first, 1, 1)["keys"]
    status = call(second, "GET", "/v1/sys/seal-status").body
    assert status is not None
    assert status["initialized"] is True
    assert status["sealed"] is True
    unsealed = call(second, "PUT", "/v1/sys/unseal", {"key": keys[0]}).body
    assert unsealed is not None
    assert unsealed["sealed"] is False
