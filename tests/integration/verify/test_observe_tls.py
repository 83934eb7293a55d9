"""Observing a Vault replica over real TLS: the served leaf, hostname checks and sys/health.

The server is ``openssl s_server -WWW`` serving a seal-status document from a directory: real TLS
(real handshake, SNI, chain) with a Vault-shaped answer. The Vault double's own behaviour is
covered in test_observe_vaultsim.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.verify.checks import check_replica_seal
from services.verify.facts import ReplicaFacts
from services.verify.observe import observe_replica, tls_context
from shared.certs import fingerprint
from tests.support.acme import free_port
from tests.support.pki import CA, Issued


@dataclass
class TlsVault:
    port: int
    ca_file: Path
    leaf: Issued
    docroot: Path

    def seal_status(self, **status: object) -> None:
        path = self.docroot / "v1" / "sys" / "seal-status"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"type": "shamir", "t": 1, "n": 1, **status}))
        # verify reads sys/health (openssl -WWW answers 200 whatever the state; the body counts)
        health = self.docroot / "v1" / "sys" / "health"
        health.write_text(json.dumps({"standby": False, **status}))


@pytest.fixture
def tls_vault(tmp_path: Path) -> Iterator[TlsVault]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is required (scripts/bootstrap installs it)")
    ca = CA("verify-tls")
    leaf = ca.leaf(("iklim.co", "*.iklim.co"), days=30)
    # -cert sends only the leaf; -cert_chain adds the intermediate, as Vault sends its fullchain.
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "chain.pem").write_bytes(ca.intermediate.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    docroot = tmp_path / "www"
    docroot.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            openssl,
            "s_server",
            "-quiet",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(tmp_path / "leaf.pem"),
            "-cert_chain",
            str(tmp_path / "chain.pem"),
            "-key",
            str(tmp_path / "key.pem"),
            "-WWW",
        ],
        cwd=docroot,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("openssl s_server did not start")
            time.sleep(0.05)
    vault = TlsVault(port=port, ca_file=tmp_path / "ca.pem", leaf=leaf, docroot=docroot)
    vault.seal_status(initialized=True, sealed=False)
    yield vault
    proc.terminate()
    proc.wait(5)


def _observe(
    vault: TlsVault, *, server_name: str = "vault.iklim.co", ca: Path | None = None
) -> ReplicaFacts:
    return observe_replica(
        "127.0.0.1",
        port=vault.port,
        server_name=server_name,
        context=tls_context(ca or vault.ca_file),
        timeout=5,
        task_id="t1",
        node="n1",
    )


def test_reads_the_served_leaf_and_the_seal_status(tls_vault: TlsVault) -> None:
    facts = _observe(tls_vault)
    assert facts.error == ""
    assert facts.sealed is False
    assert facts.initialized is True
    assert facts.served is not None
    assert facts.served.fingerprint == fingerprint(tls_vault.leaf.cert)
    assert facts.served.not_after == tls_vault.leaf.cert.not_valid_after_utc


def test_a_sealed_replica_is_seen_sealed(tls_vault: TlsVault) -> None:
    tls_vault.seal_status(initialized=True, sealed=True, progress=0)
    facts = _observe(tls_vault)
    assert facts.sealed is True
    assert facts.served is not None
    assert not check_replica_seal(facts, vault="v", unsealer="u").ok


def test_an_untrusted_certificate_is_an_error_that_names_the_ca_setting(
    tls_vault: TlsVault, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(CA("someone else").root_pem)
    facts = _observe(tls_vault, ca=other)
    assert facts.served is None
    assert facts.sealed is None
    assert facts.error == "TLS verification failed: unable to get local issuer certificate"
    result = check_replica_seal(facts, vault="v", unsealer="u")
    assert "VERIFY_VAULT_CA_FILE" in result.next_step


def test_a_certificate_for_another_name_is_refused(tls_vault: TlsVault) -> None:
    facts = _observe(tls_vault, server_name="vault.example.test")
    assert facts.served is None
    assert facts.error.startswith("TLS verification failed: ")
    assert "hostname mismatch" in facts.error.lower()


def test_a_closed_port_is_unreachable(tls_vault: TlsVault) -> None:
    facts = observe_replica(
        "127.0.0.1",
        port=free_port(),
        server_name="vault.iklim.co",
        context=tls_context(tls_vault.ca_file),
        timeout=2,
    )
    assert facts.served is None
    assert facts.error
    assert "ConnectError" in facts.error


def test_a_non_vault_answer_is_reported(tls_vault: TlsVault) -> None:
    (tls_vault.docroot / "v1" / "sys").mkdir(parents=True, exist_ok=True)
    (tls_vault.docroot / "v1" / "sys" / "health").write_text("<html>proxy</html>")
    facts = _observe(tls_vault)
    assert facts.served is not None
    assert facts.error == "sys/health body is not Vault's JSON"
