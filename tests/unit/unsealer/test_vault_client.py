"""The Vault adapter's error translation, over httpx's mock transport (a tiny fake of Vault)."""

from __future__ import annotations

import httpx
import pytest

from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.errors import KeyRejected, VaultError, VaultUnreachable

KEY = "q" * 43 + "="
DECRYPT = "failed to decrypt keys from storage: cipher: message authentication failed"


def client_for(handler: httpx.MockTransport) -> VaultClient:
    return VaultClient(
        "https://10.0.0.5:8200", TlsConfig(None, "vault.iklim.co"), transport=handler
    )


def answering(status: int, body: object, content_type: str = "application/json") -> VaultClient:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.extensions["sni_hostname"] == "vault.iklim.co"
        return httpx.Response(status, json=body, headers={"Content-Type": content_type})

    return client_for(httpx.MockTransport(handle))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, f"invalid key: {DECRYPT}"),
        (500, f"unable to retrieve stored keys: {DECRYPT}"),
        (400, "invalid key: failed to compute combined key: duplicate part detected"),
        (400, "'key' must be a valid hex or base64 string"),
        (400, "Unseal failed, invalid key"),
    ],
)  # fmt: skip
def test_rejections(status: int, message: str) -> None:
    with pytest.raises(KeyRejected, match=f"HTTP {status}"):
        answering(status, {"errors": [message]}).submit_key(KEY)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Vault is not initialized"),
        (500, "migrate option not provided and seal migration is pending"),
        (503, "Vault is sealed"),
    ],
)
def test_other_errors_are_not_rejections(status: int, message: str) -> None:
    with pytest.raises(VaultError) as caught:
        answering(status, {"errors": [message]}).submit_key(KEY)
    assert not isinstance(caught.value, KeyRejected)
    assert message in str(caught.value)


def test_an_echoed_key_is_scrubbed() -> None:
    with pytest.raises(KeyRejected) as caught:
        answering(400, {"errors": [f"invalid key {KEY}: failed to decrypt"]}).submit_key(KEY)
    assert KEY not in str(caught.value)


def test_transport_errors_are_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(VaultUnreachable, match="connection refused"):
        client_for(httpx.MockTransport(refuse)).seal_status()


def test_non_json_answer_is_a_vault_error() -> None:
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy</html>")

    with pytest.raises(VaultError, match="not JSON"):
        client_for(httpx.MockTransport(html)).seal_status()


CLUSTER = "aea0926c-24b0-8d67-0ed4-dba6847e7d21"


@pytest.mark.parametrize(
    ("extra", "cluster_id"),
    [
        ({"cluster_id": CLUSTER, "cluster_name": "vault-cluster-1"}, CLUSTER),
        ({}, None),  # a sealed member says nothing
        ({"cluster_id": None}, None),
        ({"cluster_id": ""}, None),
        ({"cluster_id": 7}, None),
        ({"cluster_id": "x" * 500}, None),
    ],
)
def test_the_cluster_id_is_read_when_a_member_reports_it(
    extra: dict[str, object], cluster_id: str | None
) -> None:
    body = {"initialized": True, "sealed": cluster_id is None, "standby": True, **extra}
    status = answering(200, body).seal_status()
    health = answering(200, body).health()
    assert status.cluster_id == cluster_id
    assert health.cluster_id == cluster_id
    assert health.seal_status().cluster_id == cluster_id
    if cluster_id is not None:
        assert status.cluster_name == "vault-cluster-1"
