"""Observing the Vault double (tests/vaultsim) over real TLS through its whole life:
uninitialized, initialized and sealed, unsealed, and a SIGHUP that swaps the served certificate.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.verify.checks import check_replica_certificate, check_replica_seal
from services.verify.facts import CertFacts, DirFacts, ReplicaFacts
from services.verify.observe import observe_replica, tls_context
from shared.certs import fingerprint
from tests.support.acme import free_port
from tests.support.pki import CA, Issued

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Sim:
    port: int
    ca: CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    proc: subprocess.Popen[bytes] | None = None

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def install(self, leaf: Issued) -> None:
        self.cert_file.write_bytes(self.ca.fullchain(leaf))
        self.key_file.write_bytes(leaf.key_pem)

    def observe(self) -> ReplicaFacts:
        return observe_replica(
            "127.0.0.1",
            port=self.port,
            server_name="vault.iklim.co",
            context=tls_context(self.ca_file),
            timeout=5,
            task_id="sim",
            node="local",
        )

    def client(self) -> httpx.Client:
        # The double's certificate is for *.iklim.co; connect by IP with the SNI name.
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.port}",
            verify=tls_context(self.ca_file),
            timeout=5,
        )

    def put(self, path: str, body: dict[str, object]) -> dict[str, object]:
        with self.client() as client:
            response = client.put(path, json=body, extensions={"sni_hostname": "vault.iklim.co"})
        assert response.status_code == 200, response.text
        doc: dict[str, object] = response.json()
        return doc


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    if not (ROOT / "tests" / "vaultsim" / "server.py").exists():
        pytest.fail("tests/vaultsim (the Vault double) is missing")
    ca = CA("vaultsim")
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    port = free_port()
    state = Sim(
        port=port,
        ca=ca,
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "cert.pem",
        key_file=tmp_path / "key.pem",
    )
    state.install(ca.leaf(("iklim.co", "*.iklim.co"), days=30))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.vaultsim",
            "--listen",
            f"127.0.0.1:{port}",
            "--data",
            str(tmp_path / "data"),
            "--tls-cert",
            str(state.cert_file),
            "--tls-key",
            str(state.key_file),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state.proc = proc
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the Vault double did not start")
            time.sleep(0.05)
    yield state
    proc.terminate()
    proc.wait(10)


def test_verify_follows_the_double_from_uninitialized_to_unsealed(sim: Sim) -> None:
    fresh = sim.observe()
    assert fresh.error == ""
    assert fresh.initialized is False
    assert fresh.sealed is True
    assert "vault-bootstrap" in check_replica_seal(fresh, vault="v", unsealer="u").next_step

    init = sim.put("/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
    keys = init["keys"]
    assert isinstance(keys, list)
    sealed = sim.observe()
    assert sealed.initialized is True
    assert sealed.sealed is True
    result = check_replica_seal(sealed, vault="v", unsealer="u")
    assert result.summary == "sealed (task sim on local)"

    sim.put("/v1/sys/unseal", {"key": keys[0]})
    unsealed = sim.observe()
    assert unsealed.sealed is False
    assert check_replica_seal(unsealed, vault="v", unsealer="u").ok


def test_verify_sees_the_new_certificate_only_after_sighup(sim: Sim) -> None:
    first = sim.observe()
    assert first.served is not None
    renewed = sim.ca.leaf(("iklim.co", "*.iklim.co"), days=60)
    sim.install(renewed)
    installed = DirFacts(
        label="/opt/iklimco/ssl",
        path="/opt/iklimco/ssl",
        cert=CertFacts(renewed.cert.not_valid_after_utc, fingerprint(renewed.cert)),
    )
    published = DirFacts(label="sb", path="sb", state="committed", cert=installed.cert)

    before = sim.observe()
    assert before.served == first.served  # the files changed, the listener did not
    stale = check_replica_certificate(
        before, installed, published, distributor="iklimco_cert-distributor", vault="v"
    )
    assert not stale.ok
    assert "not reloaded" in stale.next_step

    sim.hup()
    deadline = time.monotonic() + 10
    after = sim.observe()
    while after.served == first.served and time.monotonic() < deadline:
        time.sleep(0.1)
        after = sim.observe()
    assert after.served is not None
    assert after.served.fingerprint == fingerprint(renewed.cert)
    assert check_replica_certificate(after, installed, published, distributor="d", vault="v").ok
