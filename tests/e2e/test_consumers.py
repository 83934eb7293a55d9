"""Consumers other than Vault, on the real single-node swarm: nginx services (Debian's package,
on the local base) that serve the installed pair, opted in with labels, through a real certbot
renewal against pebble.

- ``web``: ``certflow.reload=restart`` with a check address, 2 replicas;
- ``edge``: ``certflow.reload=signal`` (SIGHUP, nginx's reload) with a check address, 2 replicas;
- ``stuck``: restart, but its check port has no listener: its first reloaded task can never be
  proven, so it halts, and nothing else waits on it;
- ``bad``: an unknown ``certflow.reload`` value; ``foreign``: a check name the certificate is
  not valid for. Both are reported and never touched;
- ``late``: no label until after the renewal, then labelled: it serves an older leaf, so it is
  reloaded at once.

Each consumer's tasks are checked with ``openssl s_client`` from the network, and the tasks Swarm
created since the renewal are counted (one per restarted slot, none for a signal).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared.certs import read_leaf
from tests.support import consumer_flow
from tests.support.consumer_flow import Consumer, reload_labels
from tests.support.consumer_image import ensure_consumer_image
from tests.support.e2e_flow import LocalFlow, docker, wait_for
from tests.support.notify_receiver import Receiver, noticed

pytestmark = [pytest.mark.timeout(900)]

NAMES = ("web", "edge", "stuck", "bad", "foreign", "late")


@pytest.fixture
def consumers(flow: LocalFlow) -> Iterator[dict[str, str]]:
    """The consumers, created on the flow's Vault network with the installed pair mounted;
    removed afterwards whatever happens (short name -> service name)."""
    full = {n: flow.service(f"consumer-{n}") for n in NAMES}
    defs = [
        Consumer(full["web"], reload_labels("restart", check="tls://web.iklim.co:8443"), 2),
        Consumer(
            full["edge"], reload_labels("signal", check="tls://edge.iklim.co:8443", signal="HUP"), 2
        ),
        Consumer(full["stuck"], reload_labels("restart", check="tls://stuck.iklim.co:9443"), 2),
        Consumer(full["bad"], {"certflow.reload": "bounce"}),
        Consumer(full["foreign"], reload_labels("restart", check="tls://web.example.org:8443")),
        Consumer(full["late"]),
    ]
    try:
        flow.add_consumers(*defs)
        yield full
    finally:
        consumer_flow.remove(docker, *full.values())


def _wait_states(
    flow: LocalFlow, want: dict[str, tuple[str, str | None]], what: str, *, timeout: float = 240
) -> dict[str, dict[str, Any]]:
    """Until every named consumer is in its state (for the fingerprint, when one is given)."""
    seen: dict[str, dict[str, Any]] = {}

    def reached() -> bool:
        seen.clear()
        seen.update(flow.consumer_reports())
        return all(
            name in seen
            and seen[name]["state"] == state
            and (fp is None or seen[name]["fingerprint"] == fp)
            for name, (state, fp) in want.items()
        )

    try:
        wait_for(what, reached, timeout=timeout, every=1.0)
    except Exception as exc:
        raise AssertionError(f"{exc}: {json.dumps(seen, indent=1)[-4000:]}") from None
    return seen


def _vault_decision(flow: LocalFlow) -> str | None:
    checks = (flow.health("cert-distributor") or {}).get("checks") or {}
    decision = (checks.get("reload") or {}).get("decision")
    return str(decision) if decision is not None else None


def _tasks(flow: LocalFlow, service: str) -> dict[int, str]:
    """Slot -> the running task's ID."""
    out: dict[int, str] = {}
    for slot, tasks in flow.tasks_by_slot(service).items():
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        if running:
            out[slot] = str(running[-1]["ID"])
    return out


def _served(flow: LocalFlow, service: str, name: str) -> dict[str, str]:
    from shared.docker_engine import open_engine

    tasks = open_engine(ping=False).tasks(service)
    addresses = sorted(ip for t in tasks for ip in t.addresses.get(flow.network, ())[:1])
    return consumer_flow.served(
        docker, image=ensure_consumer_image(), network=flow.network, addresses=addresses, name=name
    )


def test_every_consumer_is_reloaded_once_through_the_gate_after_a_real_renewal(
    flow: LocalFlow,
    consumers: dict[str, str],
    notices: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    web, edge, stuck, late = (consumers[n] for n in ("web", "edge", "stuck", "late"))
    before = read_leaf(flow.certbot_pair()[0]).fingerprint_sha256
    # First sight: started on the installed pair (or serving it), so recorded, not reloaded;
    # the bad label and the foreign check name are reported.
    seen = _wait_states(
        flow,
        {
            web: ("done", before),
            edge: ("done", before),
            stuck: ("done", before),
            consumers["bad"]: ("reported", None),
            consumers["foreign"]: ("reported", None),
        },
        "the consumers seen and recorded",
    )
    assert "certflow.reload='bounce'" in seen[consumers["bad"]]["message"]
    assert "fails the trust check" in seen[consumers["foreign"]]["message"]
    assert late not in seen  # no label: not a consumer
    tasks_before = {s: _tasks(flow, s) for s in consumers.values()}

    start = len(notices.bodies)
    renewed_at = time.time()
    flow.issue_or_renew()
    after = read_leaf(flow.certbot_pair()[0]).fingerprint_sha256
    assert after != before
    seen = _wait_states(
        flow,
        {web: ("done", after), edge: ("done", after), stuck: ("halted", after)},
        "web and edge reloaded, stuck halted",
    )
    every_on_new = time.time() - renewed_at
    # The halt names its task and says that the rest keeps serving.
    assert "other tasks keep what they serve" in seen[stuck]["message"], seen[stuck]
    # Vault's rollout went on beside them, and finished.
    wait_for("Vault's rollout recorded done", lambda: _vault_decision(flow) == "done", timeout=240)

    # openssl against every task: the new leaf, at the check address each one names.
    for service, name in ((web, "web.iklim.co"), (edge, "edge.iklim.co")):
        leaves = _served(flow, service, name)
        assert len(leaves) == 2, leaves
        assert set(leaves.values()) == {after}, leaves
    # Restart: exactly one new task per slot. Signal: the same tasks, none restarted.
    assert flow.restarts_since(renewed_at, web) == {1: 1, 2: 1}
    assert flow.restarts_since(renewed_at, edge) == {1: 0, 2: 0}
    assert _tasks(flow, edge) == tasks_before[edge]
    # Halted after its first task: the other one untouched. Reported ones: never touched.
    assert sorted(flow.restarts_since(renewed_at, stuck).values()) == [0, 1]
    for bad in (consumers["bad"], consumers["foreign"]):
        assert _tasks(flow, bad) == tasks_before[bad]
        assert flow.restarts_since(renewed_at, bad) == {1: 0}
    assert seen[web]["reloads"] == 2
    assert seen[edge]["reloads"] == 2

    # The webhook heard it: the halt (critical) and each reloaded consumer done.
    bodies = noticed(notices, start, "consumer.halted", "consumer.done")
    halted = [b for b in bodies if b.get("kind") == "consumer.halted"]
    assert [b["fields"]["consumer"] for b in halted] == [stuck], halted
    done = {b["fields"]["consumer"] for b in bodies if b.get("kind") == "consumer.done"}
    assert {web, edge} <= done, bodies
    # verify fails on the halted and the reported ones, and names them.
    code, out = flow.verify()
    assert code != 0
    doc = json.loads(out[out.index("{") :])
    failed = {r["check"]: r for r in doc["checks"] if r["outcome"] == "fail"}
    assert "consumers" in failed, out[-3000:]
    for name in (stuck, consumers["bad"], consumers["foreign"]):
        assert name in json.dumps(failed["consumers"]), failed["consumers"]

    # A label added after the renewal, to a service still on the older leaf: reloaded at once.
    labelled_at = time.time()
    docker(
        "service",
        "update",
        "--detach",
        "--label-add",
        "certflow.reload=restart",
        "--label-add",
        "certflow.check=tls://late.iklim.co:8443",
        late,
    )
    _wait_states(flow, {late: ("done", after)}, "late reloaded once labelled")
    late_at = time.time() - labelled_at
    assert flow.restarts_since(labelled_at, late) == {1: 1}
    assert set(_served(flow, late, "late.iklim.co").values()) == {after}

    # Without the broken ones, verify passes and lists each consumer on the new leaf.
    consumer_flow.remove(docker, stuck, consumers["bad"], consumers["foreign"])
    wait_for(
        "the removed consumers gone from the report",
        lambda: set(flow.consumer_reports()) == {web, edge, late},
        timeout=60,
    )
    code, out = flow.verify(as_json=False)
    assert code == 0, out
    for name in (web, edge, late):
        assert name in out
    status = flow.certflow("status", "--json")
    assert status.returncode in {0, 3}, status.stdout + status.stderr
    listed = {c["service"] for c in json.loads(status.stdout)["consumers"]}
    assert listed == {web, edge, late}
    with capsys.disabled():
        print(
            f"\nconsumers: renewal -> web (restart, 2) and edge (signal, 2) serving the new leaf "
            f"and stuck halted: {every_on_new:.1f} s (the halt takes DISTRIBUTOR_CONSUMER_BOUND, "
            f"30 s, so this bounds it); late labelled -> reloaded: {late_at:.1f} s"
        )
