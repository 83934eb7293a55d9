"""The distributor's notifications reach a real HTTP receiver: through the real ``certflow
distributor`` process (manifest refused, trust failed), and in-process over the in-memory Docker
engine (Docker is external; the decisions and the distributor pass are the real ones) for the
rollout transitions and the signal-mode canary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.distributor.service import Distributor
from shared.rollout import FINGERPRINT_LABEL
from tests.support.boxes import make_pair, publish
from tests.support.fake_engine import FakeEngine
from tests.support.mac_keys import write_key_file
from tests.support.notify_receiver import WAIT, Receiver
from tests.support.pki import CA
from tests.unit.distributor.test_reload_shell import (
    VAULT,
    FakeVaultCli,
    _member_container,
    peers_reporting,
    settings,
)
from tests.unit.distributor.test_trust_and_auth import publish_signed

from .test_service_process import REPO, free_port

TOKEN = "T0K3Nsecret"


def test_the_distributor_process_notifies_a_refused_manifest_and_an_untrusted_chain(
    tmp_path: Path, receiver: Receiver
) -> None:
    ca = CA()
    box, target = tmp_path / "box", tmp_path / "target"
    key_path = tmp_path / "mac.key"
    ours = write_key_file(key_path, 0o600)
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(ca.root_pem)
    publish_signed(box, make_pair(ca, 1), ours)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DISTRIBUTOR_", "CERTFLOW_", "HEALTH_", "LOG_"))
        },
        "DISTRIBUTOR_SOURCE_DIR": str(box),
        "DISTRIBUTOR_TARGET_DIR": str(target),
        "DISTRIBUTOR_RELOAD_MODE": "none",
        "DISTRIBUTOR_POLL_INTERVAL": "0.5",
        "DISTRIBUTOR_TRUST_BUNDLE": str(bundle),
        "DISTRIBUTOR_TRUST_NAME": "vault.iklim.co",
        "CERTFLOW_MANIFEST_KEY_FILES": str(key_path),
        "CERTFLOW_NODE_NAME": "vm2",
        "CERTFLOW_NOTIFY_WEBHOOK_URL": f"{receiver.url}/hook/{TOKEN}",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(free_port()),
    }
    log_path = tmp_path / "log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services", "distributor"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        # A forged pair, manifest unsigned: refused, the installed pair stays.
        publish_signed(box, make_pair(CA("attacker"), 2), None)
        receiver.wait_for(lambda r: "manifest.refused" in r.kinds(), what="manifest.refused")
        # Signed with our key, but its chain leads to another CA than Vault's clients trust.
        publish_signed(box, make_pair(CA("stranger"), 3), ours)
        receiver.wait_for(lambda r: "trust.failed" in r.kinds(), what="trust.failed")
        proc.terminate()
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    bodies = {b["kind"]: b for b in receiver.bodies}
    refused = bodies["manifest.refused"]
    assert refused["service"] == "cert-distributor"
    assert refused["node"] == "vm2"
    assert refused["fields"] == {"reason": "unsigned", "key_id": "unsigned"}
    assert bodies["trust.failed"]["fields"]["reason"] == "untrusted"
    assert bodies["trust.failed"]["fields"]["trust_name"] == "vault.iklim.co"
    assert receiver.kinds().count("manifest.refused") == 1  # once, not per poll
    assert TOKEN not in log_path.read_text(errors="replace")
    assert ours.hex() not in str(receiver.bodies)


def _engine() -> FakeEngine:
    fake = FakeEngine(node_id="n1")
    fake.add_service(VAULT)
    for node in ("n1", "n2"):
        fake.add_node(node, leader=node == "n1")
        fake.run_task(VAULT, node)
    return fake


def test_a_paused_update_then_done_notify_once_each(tmp_path: Path, receiver: Receiver) -> None:
    engine = _engine()
    pair = make_pair(CA(), 1)
    fp = pair.manifest.fingerprint
    publish(tmp_path / "box", pair)
    conf = settings(tmp_path, "restart", CERTFLOW_NOTIFY_WEBHOOK_URL=receiver.url)
    # The peers report every member unsealed on the installed pair.
    dist = Distributor(conf, engine=engine, peers=peers_reporting({"n1": fp, "n2": fp}, engine))
    try:
        assert dist.sync_pass() is not None
        engine.set_update_state(VAULT, "paused", "task failed")
        for _ in range(3):
            decision = dist.reload_pass()
            assert decision is not None
            assert decision.kind.value == "failed"
        engine.set_update_state(VAULT, None)
        engine.services[VAULT] = engine.add_service(VAULT, labels={FINGERPRINT_LABEL: fp})
        for _ in range(3):
            decision = dist.reload_pass()
            assert decision is not None
            assert decision.kind.value == "done"
    finally:
        dist.notifier.close(timeout=WAIT)
    assert receiver.kinds() == ["rollout.paused", "rollout.done"]
    paused, done = receiver.bodies
    assert "task failed" in paused["summary"]
    assert paused["severity"] == "critical"
    assert done["fields"]["fingerprint"] == fp


def test_a_canary_that_could_not_load_the_pair_notifies_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    engine = _engine()
    publish(tmp_path / "box", make_pair(CA(), 1))
    conf = settings(
        tmp_path,
        "signal",
        DISTRIBUTOR_CANARY_TIMEOUT="0.01",
        CERTFLOW_NOTIFY_WEBHOOK_URL=receiver.url,
    )
    dist = Distributor(conf, engine=engine)
    try:
        cli = FakeVaultCli(engine, tmp_path / "target")
        engine.exec_handler = cli
        dist.sync_pass()
        for slot in (1, 2):
            _member_container(engine, "n1", slot)
        dist.reload_pass()
        cli.broken.add("c1")
        publish(tmp_path / "box", make_pair(CA(), 2))
        dist.sync_pass()
        for _ in range(4):
            dist.reload_pass()
    finally:
        dist.notifier.close(timeout=WAIT)
    assert receiver.kinds() == ["canary.failed"]
    body = receiver.bodies[0]
    assert body["fields"]["slot"] == 1
    assert "canary slot 1 (c1)" in body["summary"]
