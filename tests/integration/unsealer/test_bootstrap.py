"""``certflow vault-bootstrap`` against the Vault double and a real dockerd swarm.

A stand-in service (the base image running ``sleep``) mounts an older version of the secret; the
bootstrap must initialize Vault, create the new versioned secret, repoint the service under the
same target, wait for it and remove the old version. Names carry a random suffix; the fixture
removes what it created.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
import pytest

from services.unsealer.keys import parse_keys
from tests.integration.unsealer.conftest import wait_for
from tests.support.docker_engine import ensure_engine
from tests.support.images import ensure_base_image
from tests.support.leaks import assert_no_keys
from tests.support.openbao import BaoCluster
from tests.vaultsim.harness import ROOT, SimProcess, TlsMaterial


class Swarm:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.suffix = secrets.token_hex(4)
        self.secret_base = f"cfunseal_{self.suffix}"
        self.services: list[str] = []

    def secrets_ours(self) -> list[Any]:
        found = self.client.secrets.list(filters={"label": f"certflow.secret={self.secret_base}"})
        return [s for s in found if s.name.startswith(self.secret_base)]

    def cleanup(self) -> None:
        for name in self.services:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.services.get(name).remove()
        deadline = time.monotonic() + 60
        for secret in self.secrets_ours():
            while True:
                try:
                    secret.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)  # still in use until the service's tasks are gone


@pytest.fixture
def swarm() -> Iterator[Swarm]:
    state = Swarm(ensure_engine())
    yield state
    state.cleanup()


def container_of(client: Any, service: Any) -> Any:
    for task in service.tasks(filters={"desired-state": "running"}):
        status = task.get("Status") or {}
        if status.get("State") == "running":
            return client.containers.get(status["ContainerStatus"]["ContainerID"])
    return None


def run_bootstrap(*args: str, output_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSEALER_", "VAULT_"))}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "vault-bootstrap", "--output-dir", str(output_dir),
         *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_bootstrap_initializes_stores_and_rotates(tmp_path: Path, swarm: Swarm) -> None:
    client = swarm.client
    image = ensure_base_image()
    old = client.secrets.create(
        name=f"{swarm.secret_base}-20200101T000000Z",
        data=b"previous keys\n",
        labels={"certflow.secret": swarm.secret_base},
    )
    old.reload()
    service_name = f"cfunseal-standin-{swarm.suffix}"
    swarm.services.append(service_name)
    client.services.create(
        image,
        command=["sleep", "infinity"],
        name=service_name,
        secrets=[
            docker.types.SecretReference(
                old.id, old.name, filename=swarm.secret_base, uid="0", gid="0", mode=0o400
            )
        ],
        update_config=docker.types.UpdateConfig(parallelism=1, order="stop-first"),
        stop_grace_period=1_000_000_000,
    )
    service = client.services.get(service_name)
    wait_for(lambda: container_of(client, service) is not None, timeout=60, what="stand-in up")

    tls = TlsMaterial.create(tmp_path / "tls")
    sim = SimProcess(tls, tmp_path / "vault").start()
    try:
        token_file = tmp_path / "root-token"
        result = run_bootstrap(
            "--addr", sim.address, "--ca-file", str(tls.ca_file),
            "--tls-server-name", "vault.iklim.co", "--shares", "3", "--threshold", "2",
            "--secret-name", swarm.secret_base,
            "--services", f"{service_name},cfunseal-missing-{swarm.suffix}",
            "--root-token-file", token_file.name, "--timeout", "180", output_dir=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert sim.status()["initialized"] is True

        token = token_file.read_text().strip()
        assert token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token not in result.stdout + result.stderr

        versions = swarm.secrets_ours()
        assert [s.id for s in versions] != [old.id]
        assert len(versions) == 1
        new = versions[0]
        assert new.name.startswith(f"{swarm.secret_base}-")
        assert new.id != old.id
        with pytest.raises(docker.errors.NotFound):
            client.secrets.get(old.id)

        service.reload()
        refs = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert len(refs) == 1
        assert refs[0]["SecretID"] == new.id
        assert refs[0]["File"]["Name"] == swarm.secret_base
        assert refs[0]["File"]["Mode"] == 0o400

        container = container_of(client, service)
        exit_code, output = container.exec_run(["cat", f"/run/secrets/{swarm.secret_base}"])
        assert exit_code == 0
        keys = parse_keys(output)
        assert len(keys.keys) == 3
        sim.unseal(keys.keys[0])
        assert sim.unseal(keys.keys[2]).json()["sealed"] is False  # the stored keys are right
        assert_no_keys([result.stdout, result.stderr], list(keys.keys))
        assert "Repointed" in result.stdout
        assert "Removed previous secret" in result.stdout
        assert f"cfunseal-missing-{swarm.suffix} not found" in result.stdout

        again = run_bootstrap(
            "--addr", sim.address, "--ca-file", str(tls.ca_file),
            "--secret-name", swarm.secret_base, "--services", service_name, output_dir=tmp_path,
        )  # fmt: skip
        assert again.returncode == 0
        assert "already initialized: nothing changed" in again.stdout
        assert [s.id for s in swarm.secrets_ours()] == [new.id]
    finally:
        sim.stop()


def test_bootstrap_prints_root_token_once_to_the_terminal(tmp_path: Path, swarm: Swarm) -> None:
    tls = TlsMaterial.create(tmp_path / "tls")
    sim = SimProcess(tls, tmp_path / "vault", args=["--root-token", "hvs.terminal-only"]).start()
    try:
        result = run_bootstrap(
            "--addr", sim.address, "--ca-file", str(tls.ca_file),
            "--secret-name", swarm.secret_base, "--services", "", output_dir=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("hvs.terminal-only") == 1
        assert "hvs.terminal-only" not in result.stderr  # the log stream
        assert len(swarm.secrets_ours()) == 1
    finally:
        sim.stop()


def test_bootstrap_refuses_an_unverified_vault(tmp_path: Path, swarm: Swarm) -> None:
    tls = TlsMaterial.create(tmp_path / "tls")
    other_ca = TlsMaterial.create(tmp_path / "other")
    sim = SimProcess(tls, tmp_path / "vault").start()
    try:
        result = run_bootstrap(
            "--addr", sim.address, "--ca-file", str(other_ca.ca_file),
            "--secret-name", swarm.secret_base, "--services", "", output_dir=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1
        assert "TLS verification failed" in result.stderr
        assert sim.status()["initialized"] is False
        assert swarm.secrets_ours() == []
    finally:
        sim.stop()


def test_bootstrap_never_initializes_beside_a_real_raft_cluster(
    tmp_path: Path, swarm: Swarm
) -> None:
    """Real OpenBao: a member that holds a cluster, or one that cannot be seen, stops the init."""
    with BaoCluster(3, base_dir=tmp_path) as bao:
        bao.init(0)  # member 0 holds a cluster; 1 and 2 have not joined it (nobody unsealed 0)
        # The uninitialized members first: a bootstrap that asked only them would split the cluster.
        members = ",".join(bao.address(i) for i in (1, 2, 0))
        common = ("--ca-file", str(bao.ca_file), "--secret-name", swarm.secret_base)
        result = run_bootstrap("--addr", members, *common, "--services", "", output_dir=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "already initialized" in result.stdout
        assert bao.address(0) in result.stdout
        assert bao.roles() == ["sealed", "not joined", "not joined"]
        assert swarm.secrets_ours() == []
        # A member that does not answer: it may hold a cluster, so nothing is initialized.
        bao.stop(0)
        blind = run_bootstrap(
            "--addr", members, *common, "--services", "", "--timeout", "5", output_dir=tmp_path
        )
        assert blind.returncode == 1
        assert "cannot reach every member" in blind.stderr
        assert bao.roles()[1:] == ["not joined", "not joined"]
        assert swarm.secrets_ours() == []
