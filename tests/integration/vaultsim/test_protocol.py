"""The double as a real process over real TLS, with hvac as the client where hvac covers it.

Covered: seal-status, unseal, health, init, seal and the error envelope; SIGHUP reloads the
certificate without sealing; what hvac raises for each answer.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509

from tests.vaultsim.harness import SERVER_NAME, SimProcess, TlsMaterial


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    # 127.0.0.1 in the SANs too: hvac (requests) checks the URL host, it has no SNI override.
    return TlsMaterial.create(tmp_path / "tls", ip_addresses=["127.0.0.1"])


@pytest.fixture
def sim(tmp_path: Path, tls: TlsMaterial) -> Iterator[SimProcess]:
    process = SimProcess(tls, tmp_path / "data", args=["--root-token", "root-test"]).start()
    yield process
    process.stop()


def client(sim: SimProcess, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=sim.address, verify=str(sim.tls.ca_file), token=token, timeout=5)


def test_hvac_full_lifecycle(sim: SimProcess) -> None:
    vault = client(sim)
    assert vault.sys.is_initialized() is False
    status = vault.sys.read_seal_status()
    assert status["initialized"] is False
    assert status["sealed"] is True
    result = vault.sys.initialize(secret_shares=5, secret_threshold=3)
    keys = result["keys_base64"]
    assert len(keys) == 5
    assert result["root_token"] == "root-test"
    assert vault.sys.is_initialized() is True
    assert vault.sys.is_sealed() is True
    first = vault.sys.submit_unseal_key(keys[0])
    assert first["progress"] == 1
    assert first["nonce"]
    duplicate = vault.sys.submit_unseal_key(keys[0])
    assert duplicate["progress"] == 1
    assert duplicate["nonce"] == first["nonce"]
    final = vault.sys.submit_unseal_keys(keys[1:])
    assert final["sealed"] is False
    assert vault.sys.is_sealed() is False


@pytest.mark.parametrize(
    ("args", "exception"),
    [
        ([], hvac.exceptions.InvalidRequest),  # Vault >= 1.13: 400
        (["--wrong-key-status", "500"], hvac.exceptions.InternalServerError),
        (["--flavor", "openbao"], hvac.exceptions.InternalServerError),
        (["--version", "1.12.0"], hvac.exceptions.InternalServerError),
    ],
)
def test_hvac_sees_wrong_key_variants(
    tmp_path: Path, tls: TlsMaterial, args: list[str], exception: type[Exception]
) -> None:
    sim = SimProcess(tls, tmp_path / "data", args=args).start()
    try:
        vault = client(sim)
        vault.sys.initialize(secret_shares=1, secret_threshold=1)
        wrong = base64.b64encode(b"\x42" * 32).decode()
        with pytest.raises(exception) as caught:
            vault.sys.submit_unseal_key(wrong)
        # hvac parsed the errors list: only possible with Content-Type exactly application/json
        error = caught.value
        assert isinstance(error, hvac.exceptions.VaultError)
        assert error.errors
        assert "failed to decrypt keys from storage" in error.errors[0]
        assert wrong not in str(error)
        assert vault.sys.read_seal_status()["progress"] == 0
    finally:
        sim.stop()


def test_hvac_reset_while_unsealed_is_invalid_request(sim: SimProcess) -> None:
    vault = client(sim)
    keys = vault.sys.initialize(secret_shares=1, secret_threshold=1)["keys"]
    vault.sys.submit_unseal_key(keys[0])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="vault is unsealed"):
        vault.sys.submit_unseal_key(reset=True)


def test_hvac_malformed_key_is_invalid_request(sim: SimProcess) -> None:
    vault = client(sim)
    vault.sys.initialize(secret_shares=1, secret_threshold=1)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="valid hex or base64"):
        vault.sys.submit_unseal_key("%%%")


def test_hvac_health_codes(sim: SimProcess) -> None:
    vault = client(sim)
    uninit = vault.sys.read_health_status(method="GET")
    assert isinstance(uninit, requests.Response)
    assert uninit.status_code == 501
    keys = vault.sys.initialize(secret_shares=1, secret_threshold=1)["keys"]
    sealed = vault.sys.read_health_status(method="GET")
    assert isinstance(sealed, requests.Response)
    assert sealed.status_code == 503
    assert sealed.json()["sealed"] is True
    overridden = vault.sys.read_health_status(method="GET", sealed_code=200)
    assert isinstance(overridden, dict)
    assert overridden["sealed"] is True
    head = vault.sys.read_health_status()  # HEAD: status only
    assert isinstance(head, requests.Response)
    assert head.status_code == 503
    assert not head.content
    vault.sys.submit_unseal_key(keys[0])
    active = vault.sys.read_health_status(method="GET")
    assert isinstance(active, dict)
    assert active["sealed"] is False


def test_hvac_seal_needs_root_token(sim: SimProcess) -> None:
    vault = client(sim)
    keys = vault.sys.initialize(secret_shares=1, secret_threshold=1)["keys"]
    vault.sys.submit_unseal_key(keys[0])
    with pytest.raises(hvac.exceptions.Forbidden):
        client(sim, token="wrong").sys.seal()
    response = client(sim, token="root-test").sys.seal()
    assert response.status_code == 204
    assert vault.sys.is_sealed() is True


def test_raw_http_envelope_and_content_type(sim: SimProcess) -> None:
    status = sim.request("GET", "/v1/sys/seal-status")
    assert status.headers["content-type"] == "application/json"
    for method, path in [("POST", "/v1/sys/seal-status"), ("GET", "/v1/sys/unseal"),
                         ("DELETE", "/v1/sys/health"), ("GET", "/v1/sys/seal")]:  # fmt: skip
        reply = sim.request(method, path)
        assert reply.status_code == 405, (method, path)
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {"errors": []}
    bad = sim.request("GET", "/v1/sys/health", params={"sealedcode": "x"})
    assert bad.status_code == 400
    assert bad.json() == {"errors": []}


def test_restart_comes_back_initialized_and_sealed(sim: SimProcess) -> None:
    keys = sim.init(3, 2)["keys"]
    sim.unseal(keys[0])
    assert sim.unseal(keys[1]).json()["sealed"] is False
    sim.restart()
    status = sim.status()
    assert status["initialized"] is True
    assert status["sealed"] is True
    assert (status["t"], status["n"], status["progress"]) == (3 - 1, 3, 0)


def _served_cert(sim: SimProcess) -> x509.Certificate:
    context = sim.tls.client_context()
    with (
        socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_sighup_reloads_certificate_without_sealing(sim: SimProcess) -> None:
    keys = sim.init(1, 1)["keys"]
    sim.unseal(keys[0])
    before = _served_cert(sim).serial_number
    new_pem = sim.tls.reissue()
    sim.sighup()
    expected = x509.load_pem_x509_certificate(new_pem).serial_number
    for _ in range(100):
        if _served_cert(sim).serial_number == expected:
            break
        time.sleep(0.05)
    assert _served_cert(sim).serial_number == expected != before
    assert sim.status()["sealed"] is False
    assert '"vaultsim.tls_reloaded"' in sim.logs()


def test_sighup_with_broken_files_keeps_the_old_certificate(sim: SimProcess) -> None:
    before = _served_cert(sim).serial_number
    sim.tls.cert_file.write_text("not a certificate")
    sim.sighup()
    deadline = time.monotonic() + 5
    while "vaultsim.tls_reload_failed" not in sim.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "vaultsim.tls_reload_failed" in sim.logs()
    assert _served_cert(sim).serial_number == before


def test_wrong_server_name_fails_verification(sim: SimProcess) -> None:
    context = sim.tls.client_context()
    with (
        socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="other.example")


def test_sigterm_exits_zero(sim: SimProcess) -> None:
    assert sim.proc is not None
    proc = sim.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_init_at_start_writes_operator_init_json(tmp_path: Path, tls: TlsMaterial) -> None:
    sim = SimProcess(tls, tmp_path / "data", args=["--shares", "3", "--threshold", "2"]).start()
    try:
        init_file = tmp_path / "data" / "init.json"
        assert init_file.stat().st_mode & 0o077 == 0
        document = json.loads(init_file.read_text())
        assert document["unseal_shares"] == 3
        assert document["unseal_threshold"] == 2
        assert len(document["unseal_keys_b64"]) == 3
        assert document["root_token"]
        sim.unseal(document["unseal_keys_hex"][0])
        assert sim.unseal(document["unseal_keys_b64"][2]).json()["sealed"] is False
        assert document["unseal_keys_b64"][0] not in sim.logs()
    finally:
        sim.stop()
