"""Real dockerd swarm fixtures: a stand-in Vault service that records SIGHUPs, and distributors."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.types
import pytest

from services.distributor.peers import PeerDirectory, health_url
from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.docker_engine import DockerPyEngine
from shared.runtime import HealthServer
from shared.settings import load_settings
from shared.swarm import ServiceState, TaskInfo
from tests.support.docker_engine import ensure_engine
from tests.support.images import ensure_base_image

CERT_NAME = "STAR.iklim.co.full.crt"  # the default CERTFLOW_CERT_NAME

# The stand-in traps HUP and appends its hostname (= container ID prefix) to a bind-mounted file;
# it exits at once on TERM so restarts are quick, and at start when /hup/fail exists. Like Vault,
# it "serves" the certificate file as it was when it started or was last signalled: a copy in
# /tmp/served, which the stand-in CLI below compares with the file.
STANDIN = r"""
import os, shutil, signal, socket, sys, time
log = os.path.join("/hup", socket.gethostname())
if os.path.exists("/hup/fail"):
    sys.exit(1)  # lets a test make a restart fail
def load():
    cert = os.path.join("/vault/certs", os.environ.get("VAULT_CERT_FILE", ""))
    if os.path.isfile(cert):
        shutil.copyfile(cert, "/tmp/served.new")
        os.replace("/tmp/served.new", "/tmp/served")
load()
def hup(*_):
    load()
    with open(log, "a") as f:
        f.write("HUP\n")
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
open(os.path.join("/hup", "started-" + socket.gethostname()), "w").close()
while True:
    time.sleep(0.2)
"""


# The member probe (services/distributor/member_probe.py) runs `vault status` inside each Vault
# container. These tests are about Swarm's restart mechanics, not Vault, so the stand-in carries a
# stand-in of the external Vault CLI. It answers "unsealed" to the clients' trust check, and to
# the check that trusts only the installed leaf when the stand-in serves the file as installed now
# (the first distributor's pair, d0), else "unknown authority", as Vault's CLI does for another
# certificate. The real probe against real OpenBao: test_member_probe_openbao.py.
FAKE_VAULT_CLI = """#!/bin/sh
case "$*" in
  *-ca-cert=/certflow-ca/*) ;;
  *) cmp -s /tmp/served "/vault/certs/$VAULT_CERT_FILE" || {
       echo 'x509: certificate signed by unknown authority'; exit 1; } ;;
esac
echo '{"initialized": true, "sealed": false}'
exit 0
"""


def unique(prefix: str) -> str:
    return f"certflow-dt-{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def client() -> Any:
    return ensure_engine()


@pytest.fixture(scope="session")
def base_image(client: Any) -> str:
    return ensure_base_image()


@pytest.fixture(scope="session")
def node_id(client: Any) -> str:
    return DockerPyEngine(client).local_node().node_id


def service_state(client: Any, name: str) -> ServiceState:
    return DockerPyEngine(client).service(name)


def running_tasks(client: Any, name: str) -> list[TaskInfo]:
    return DockerPyEngine(client).tasks(name)


def wait_update_done(client: Any, name: str, timeout: float = 120.0) -> ServiceState:
    """Until Swarm reports the service's rolling update completed; fails on a paused one."""
    wait_for(
        f"update of {name} completed",
        lambda: service_state(client, name).update_state in {"completed", "paused"},
        timeout,
    )
    state = service_state(client, name)
    assert state.update_state == "completed", state
    return state


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class StandIns:
    """Creates stand-in services/containers and removes every one of them afterwards."""

    def __init__(self, client: Any, image: str, tmp: Path) -> None:
        self.client = client
        self.image = image
        self.tmp = tmp
        self.services: list[Any] = []
        self.containers: list[Any] = []

    def service(
        self,
        prefix: str = "vault",
        replicas: int = 1,
        *,
        monitor: float = 0.5,
        certs_from: str = "d0",
    ) -> tuple[str, Path]:
        """A replicated stand-in "Vault" whose /vault/certs is distributor ``certs_from``'s."""
        name = unique(prefix)
        hup_dir = self.tmp / name
        hup_dir.mkdir()
        (hup_dir / "bin").mkdir()
        cli = hup_dir / "bin" / "vault"
        cli.write_text(FAKE_VAULT_CLI)
        cli.chmod(0o755)
        svc = self.client.services.create(
            self.image,
            command=["python3", "-c", STANDIN],
            name=name,
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
            env=[
                "PATH=/hup/bin:/usr/local/bin:/usr/bin:/bin",
                f"VAULT_CERT_FILE={certs_from}/{CERT_NAME}",
                f"VAULT_CA_FILE={certs_from}/{CERT_NAME}",
            ],
            mounts=[
                docker.types.Mount(target="/hup", source=str(hup_dir), type="bind"),
                docker.types.Mount(target="/vault/certs", source=str(self.tmp), type="bind"),
                docker.types.Mount(target="/certflow-ca", source=str(self.tmp), type="bind"),
            ],
            update_config=docker.types.UpdateConfig(
                parallelism=1, delay=0, monitor=int(monitor * 1e9), failure_action="pause"
            ),
            # As the stack's Vault: a stopped member is started again (1 s here, 5 s there).
            restart_policy=docker.types.RestartPolicy(condition="any", delay=int(1e9)),
            stop_grace_period=int(2e9),
            labels={"certflow.test": "distributor"},
        )
        self.services.append(svc)
        wait_for(
            f"{name} running",
            lambda: (
                len(running_tasks(self.client, name)) == replicas
                and len(list(hup_dir.glob("started-*"))) >= replicas
            ),
        )
        return name, hup_dir

    def container(self, prefix: str = "plain") -> tuple[Any, Path]:
        name = unique(prefix)
        hup_dir = self.tmp / name
        hup_dir.mkdir()
        ctr = self.client.containers.run(
            self.image,
            ["python3", "-c", STANDIN],
            name=name,
            detach=True,
            volumes={str(hup_dir): {"bind": "/hup", "mode": "rw"}},
        )
        self.containers.append(ctr)
        wait_for(f"{name} started", lambda: bool(list(hup_dir.glob("started-*"))))
        return ctr, hup_dir

    def close(self) -> None:
        for svc in self.services:
            with contextlib.suppress(docker.errors.NotFound):
                svc.remove()
        for ctr in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                ctr.remove(force=True)


@pytest.fixture
def standins(client: Any, base_image: str, tmp_path: Path) -> Iterator[StandIns]:
    made = StandIns(client, base_image, tmp_path)
    yield made
    made.close()


class Fleet:
    """Distributors in this process, each with its real /health server on loopback."""

    def __init__(self, client: Any, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.servers: list[HealthServer] = []

    def distributor(
        self,
        vault_service: str,
        *,
        mode: str = "restart",
        name: str = "d0",
        peer: str = "",
        box: str = "box",
        lag_timeout: float = 60.0,
        member_bound: float = 120.0,
        voter_wait: float = 1.0,
    ) -> tuple[Distributor, str]:
        env = {
            "DISTRIBUTOR_SOURCE_DIR": str(self.tmp / box),
            "DISTRIBUTOR_TARGET_DIR": str(self.tmp / name),
            "DISTRIBUTOR_RELOAD_MODE": mode,
            "DISTRIBUTOR_VAULT_SERVICE": vault_service,
            "DISTRIBUTOR_LAG_TIMEOUT": str(lag_timeout),
            "DISTRIBUTOR_MEMBER_BOUND": str(member_bound),
            # The stand-in is no raft member: no voter to wait for.
            "DISTRIBUTOR_VOTER_WAIT": str(voter_wait),
        }
        settings = load_settings(DistributorSettings, env)
        engine = DockerPyEngine(self.client)
        node = engine.local_node().node_id
        url_box: dict[str, str] = {}
        peers = PeerDirectory(engine=None, service="unused", port=1, static=url_box)
        dist = Distributor(settings, engine=engine, peers=peers)
        server = HealthServer(dist.health, dist.metrics.registry, host="127.0.0.1", port=0)
        self.servers.append(server)
        url = health_url("127.0.0.1", server.start())
        # The node's report comes from ``peer`` when given (one distributor per node in Swarm).
        url_box[node] = peer or url
        peers.static = url_box
        return dist, url

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def fleet(client: Any, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(client, tmp_path)
    yield made
    made.close()
