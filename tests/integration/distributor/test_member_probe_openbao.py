"""The served-leaf probe and the signal-mode canary against real OpenBao servers in containers.

Each member is a plain container of the OpenBao image (stacks/openbao) carrying the labels Swarm
puts on a task's container, so the distributor's engine queries find it as a member of a
"service" on this node. Its listener reads the distributor's target directory (/vault/certs),
exactly as in the stack; the servers stay uninitialised (status exit 2), which the probe reads
as sealed, and which changes nothing about the certificate they serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.distributor.facts import MemberProbe
from services.distributor.local_members import LocalMemberProber
from services.distributor.member_events import MemberEventWatch
from services.distributor.peers import PeerDirectory
from services.distributor.service import SIGNALLED_MARKER, Distributor
from services.distributor.settings import DistributorSettings
from shared.certs import fingerprint
from shared.docker_engine import DockerPyEngine, open_engine
from shared.settings import load_settings
from shared.swarm import ContainerEvent
from tests.support.boxes import CERT, KEY, make_pair, publish
from tests.support.docker_engine import ensure_engine
from tests.support.e2e_names import unique
from tests.support.openbao_image import build_openbao_image
from tests.support.pki import CA

pytestmark = [pytest.mark.timeout(300)]

_CONFIG = f"""
api_addr     = "https://127.0.0.1:8200"
cluster_addr = "https://127.0.0.1:8201"
storage "raft" {{
  path    = "/vault/file"
  node_id = "probe-test"
}}
listener "tcp" {{
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/vault/certs/{CERT}"
  tls_key_file    = "/vault/certs/{KEY}"
}}
"""


def _docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def openbao_image() -> Iterator[str]:
    ensure_engine()
    tag = build_openbao_image(f"certflow-probe-openbao:{unique('img')}")
    try:
        yield tag
    finally:
        _docker("image", "rm", "-f", tag)


@dataclass
class Members:
    """OpenBao containers labelled as the tasks of ``service`` on this node."""

    image: str
    root: Path
    service: str
    node_id: str
    ca: CA
    started: list[str]

    @property
    def certs(self) -> Path:
        return self.root / "target"

    def start(self, slot: int) -> str:
        name = f"{self.service}.{slot}.task{slot}"
        started = _docker(
            "run",
            "-d",
            "--name",
            unique(f"certflow-probe-{slot}-"),
            "--label",
            f"com.docker.swarm.service.name={self.service}",
            "--label",
            f"com.docker.swarm.node.id={self.node_id}",
            "--label",
            f"com.docker.swarm.task.name={name}",
            "--label",
            f"com.docker.swarm.task.id=task{slot}",
            "-e",
            "VAULT_TLS_NAME=vault.iklim.co",
            "-e",
            f"VAULT_CERT_FILE={CERT}",
            "-e",
            f"VAULT_KEY_FILE={KEY}",
            "-e",
            "VAULT_CA_FILE=ca.pem",
            "-v",
            f"{self.root / 'config'}:/vault/config:ro",
            "-v",
            f"{self.certs}:/vault/certs:ro",
            "-v",
            f"{self.root / 'ca'}:/certflow-ca:ro",
            self.image,
            "server",
        )
        assert started.returncode == 0, started.stderr
        cid = started.stdout.strip()
        self.started.append(cid)
        return cid

    def sighup(self, cid: str) -> None:
        assert _docker("kill", "--signal", "HUP", cid).returncode == 0


@pytest.fixture
def members(openbao_image: str, tmp_path: Path) -> Iterator[Members]:
    for sub in ("config", "target", "ca"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub).chmod(0o755)
    (tmp_path / "config" / "server.hcl").write_text(_CONFIG)
    ca = CA("probe test")
    (tmp_path / "ca" / "ca.pem").write_bytes(ca.root_pem)
    node_id = DockerPyEngine(ensure_engine()).local_node().node_id
    made = Members(openbao_image, tmp_path, unique("certflow-probe-vault-"), node_id, ca, [])
    try:
        yield made
    finally:
        for cid in made.started:
            _docker("rm", "-f", "-v", cid)


def _install(certs: Path, ca: CA, *, uid: int = 100) -> str:
    """Put a new pair where the listener reads it (what the distributor does); its fingerprint."""
    leaf = ca.leaf()
    (certs / CERT).write_bytes(ca.fullchain(leaf))
    key = certs / KEY
    key.write_bytes(leaf.key_pem)
    key.chmod(0o600)
    os.chown(key, uid, 1000)
    return fingerprint(leaf.cert)


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _probe_until(
    prober: LocalMemberProber,
    node_id: str,
    installed: str,
    check: Callable[[MemberProbe], bool],
) -> MemberProbe:
    seen: list[MemberProbe] = []

    def done() -> bool:
        prober._last.clear()  # every call probes again
        seen[:] = prober.probe(node_id, installed)
        return len(seen) == 1 and check(seen[0])

    _until(f"a probe result: {seen}", done)
    return seen[0]


def test_the_probe_tells_which_leaf_each_member_serves(members: Members) -> None:
    first = _install(members.certs, members.ca)
    cid = members.start(1)
    engine = open_engine()
    prober = LocalMemberProber(engine, service=members.service, interval=60)
    # Listening (the server needs a moment): it serves the installed leaf, trusted, uninitialised.
    # Both calls must have answered: they run at once, and one may dial just before the listener
    # opens (CI, stop 29: the leaf call answered, the trust call was refused).
    probe = _probe_until(
        prober,
        members.node_id,
        first,
        lambda p: p.serves_installed is not None and p.trusted is not None,
    )
    assert (probe.slot, probe.task_id, probe.container_id) == (1, "task1", cid)
    assert (probe.fingerprint, probe.serves_installed, probe.trusted, probe.sealed) == (
        first,
        True,
        True,
        True,
    ), probe
    assert probe.checked_at

    # Files replaced, no SIGHUP: OpenBao still serves the first leaf.
    second = _install(members.certs, members.ca)
    [probe] = prober.probe(members.node_id, second)  # the installed pair changed: probed again
    assert (probe.fingerprint, probe.serves_installed, probe.trusted) == (second, False, True)
    assert "unknown authority" in probe.detail

    members.sighup(cid)
    probe = _probe_until(
        prober,
        members.node_id,
        second,
        lambda p: p.serves_installed is True and p.trusted is not None,
    )
    assert (probe.fingerprint, probe.trusted, probe.sealed) == (second, True, True)

    # A leaf from a CA the clients do not trust: served after the SIGHUP, but not trusted.
    third = _install(members.certs, CA("other"))
    members.sighup(cid)
    probe = _probe_until(
        prober,
        members.node_id,
        third,
        lambda p: p.serves_installed is True and p.trusted is not None,
    )
    assert probe.trusted is False
    assert "not trusted" in probe.detail
    assert "unknown authority" in probe.detail
    print(f"\nprobes run: {prober.probes}")


def test_a_proven_member_is_probed_again_only_after_the_interval(members: Members) -> None:
    installed = _install(members.certs, members.ca)
    members.start(1)
    prober = LocalMemberProber(open_engine(), service=members.service, interval=60)
    _probe_until(prober, members.node_id, installed, lambda p: p.proven)
    # Proven (uninitialised, which changes nothing about the certificate): spared...
    count = prober.probes
    prober.probe(members.node_id, installed)
    assert prober.probes == count
    # ... until a new pair is installed.
    prober.probe(members.node_id, _install(members.certs, members.ca))
    assert prober.probes == count + 1


def _signal_distributor(members: Members, *, uid: int, timeout: float = 3.0) -> Distributor:
    env = {
        "DISTRIBUTOR_SOURCE_DIR": str(members.root / "box"),
        "DISTRIBUTOR_TARGET_DIR": str(members.certs),
        "DISTRIBUTOR_RELOAD_MODE": "signal",
        "DISTRIBUTOR_VAULT_SERVICE": members.service,
        "DISTRIBUTOR_NODE_ID": members.node_id,
        "DISTRIBUTOR_FILE_UID": str(uid),
        "DISTRIBUTOR_FILE_GID": "1000",
        "DISTRIBUTOR_CANARY_TIMEOUT": str(timeout),
        "CERTFLOW_NODE_NAME": "probe-node",
    }
    settings = load_settings(DistributorSettings, env)
    # No peers: every member is on this node.
    peers = PeerDirectory(engine=None, service="unused", port=1, static={})
    return Distributor(settings, engine=open_engine(), peers=peers)


def _marker(members: Members) -> list[str]:
    path = members.certs / SIGNALLED_MARKER
    if not path.exists():
        return []
    doc: dict[str, Any] = json.loads(path.read_text())
    return list(doc["containers"])


def _reload(dist: Distributor) -> dict[str, Any]:
    dist.sync_pass()
    dist.reload_pass()
    check = dist.health.check("reload")
    assert check is not None
    return {"status": check.status.value, "message": check.message, **check.details}


def _serving(dist: Distributor) -> dict[int | None, bool | None]:
    return {m.slot: m.serves_installed for m in dist.members}


def test_signal_mode_signals_the_canary_first_halts_on_a_failed_reload_then_continues(
    members: Members,
) -> None:
    ca = members.ca
    publish(members.root / "box", make_pair(ca, 1))
    dist = _signal_distributor(members, uid=100)
    dist.sync_pass()
    slot1, slot2 = members.start(1), members.start(2)
    _until("both members listening", lambda: _reload(dist)["step"] == "done")
    assert _marker(members) == []  # serving the installed pair: nobody is signalled

    # A renewal: slot 1 (the canary) is signalled alone, the other only once it is proven.
    publish(members.root / "box", make_pair(ca, 2))
    first = _reload(dist)
    assert first["step"] == "signal_canary", first
    assert _marker(members) == [slot1]
    assert "slot 1" in str(first["canary"])
    _until("the canary proven and slot 2 signalled", lambda: _reload(dist)["step"] == "roll")
    assert sorted(_marker(members)) == sorted([slot1, slot2])
    _until("every member on the new pair", lambda: _reload(dist)["step"] == "done")
    assert _serving(dist) == {1: True, 2: True}
    signals = dist.metrics.signals._value.get()
    assert signals == 2

    # The key of the next pair belongs to a uid OpenBao cannot read as: the canary's reload
    # fails, it keeps the old certificate, and the rollout halts there.
    halted = _signal_distributor(members, uid=4242, timeout=3.0)
    publish(members.root / "box", make_pair(ca, 3))
    step = _reload(halted)
    assert step["step"] == "signal_canary", step
    _until("the halt", lambda: _reload(halted)["status"] == "failing", timeout=30)
    check = _reload(halted)
    assert check["step"] == "halted"
    assert "slot 1" in check["message"]
    assert "probe-node" in check["message"]
    assert "unknown authority" in check["message"]
    assert "since" in check["message"]
    assert _marker(members) == [slot1]  # nothing else was signalled
    assert _serving(halted) == {1: False, 2: False}
    assert halted.metrics.canary_failures._value.get() == 1

    # Fixed (the right owner) and a new generation: the rollout continues by itself.
    fixed = _signal_distributor(members, uid=100)
    publish(members.root / "box", make_pair(ca, 4))
    _until("the fixed rollout done", lambda: _reload(fixed)["step"] == "done")
    assert sorted(_marker(members)) == sorted([slot1, slot2])
    assert _serving(fixed) == {1: True, 2: True}
    # Reconcile, idempotent: more passes, a restarted distributor: no further SIGHUP.
    again = _signal_distributor(members, uid=100)
    for _ in range(2):
        assert _reload(again)["step"] == "done"
    assert again.metrics.signals._value.get() == 0


def _bao(cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The member's own CLI, inside its container (no output of it is ever printed: an init
    answers with the unseal key and the root token)."""
    env = ["-e", "BAO_ADDR=https://127.0.0.1:8200", "-e", "BAO_SKIP_VERIFY=true"]
    return _docker("exec", *env, cid, "bao", *argv)


def test_the_probe_reads_an_unsealed_raft_members_applied_index(members: Members) -> None:
    installed = _install(members.certs, members.ca)
    cid = members.start(1)
    engine = open_engine()
    prober = LocalMemberProber(engine, service=members.service, interval=60)
    _probe_until(prober, members.node_id, installed, lambda p: p.sealed is True)
    init = _bao(cid, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
    assert init.returncode == 0, "operator init failed (its output is not shown: it holds keys)"
    key = json.loads(init.stdout)["unseal_keys_b64"][0]
    assert _bao(cid, "operator", "unseal", key).returncode == 0, "unseal failed"
    probe = _probe_until(
        prober, members.node_id, installed, lambda p: p.active is True and p.applied is not None
    )
    # A new single-node raft cluster has applied its first entries (the keyring, the mounts).
    assert probe.sealed is False
    assert isinstance(probe.applied, int)
    assert probe.applied > 0


def test_a_members_start_and_stop_arrive_as_events(members: Members) -> None:
    seen: list[ContainerEvent] = []
    watch = MemberEventWatch(open_engine(), members.service, seen.append)
    watch.start()
    try:
        assert watch.following.wait(30), "the event stream did not open"
        cid = members.start(1)
        _until("a start event", lambda: any(e.action == "start" for e in seen))
        start = next(e for e in seen if e.action == "start")
        assert (start.container_id, start.labels["com.docker.swarm.task.id"]) == (cid, "task1")
        _docker("stop", "-t", "5", cid)
        _until("a die event", lambda: any(e.action == "die" for e in seen))
        # Only this service's containers, only what the distributor acts on.
        assert {e.container_id for e in seen} == {cid}
        assert {e.action for e in seen} <= {"start", "die", "health_status: healthy"}
    finally:
        watch.stop()
    assert watch.events == len(seen)
