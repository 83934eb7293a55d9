"""The coordinator's loop step: observe Docker and the peers, ask :func:`step`, act on it.

It never blocks on a member: after asking one to stop it returns, and the next steps follow the
member's task back (the gate). A restarted or second coordinator picks up where the first one was:
which members were asked to stop is in the Vault service label ``certflow.rollout``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from shared.docker_engine import DockerEngine, engine_time
from shared.errors import DockerError, DockerNotFound
from shared.logs import get_logger
from shared.manifest_auth import MacKeys
from shared.rollout import (
    FINGERPRINT_LABEL,
    ROLLOUT_LABEL,
    Ordered,
    pause_from_labels,
    rollout_from_label,
    rollout_label,
)
from shared.swarm import NodeInfo, ServiceState, SpecEdit, TaskInfo

from .coordinator import (
    Decision,
    Kind,
    Limits,
    Member,
    Memory,
    Observed,
    decide,
    paused,
    step,
)
from .docker_ops import advance_update, record_fingerprint
from .facts import DistributorInfo, MemberProbe
from .metrics import DistributorMetrics
from .peers import PeerDirectory
from .stop_order import PATH, StopOrder, encode

_log = get_logger(__name__)

# Carries out a stop order on this node (the member is local): HTTP status and message.
LocalStop = Callable[[StopOrder], tuple[int, str]]
# Has this node's members (by task ID) probed on the next pass.
LocalProbe = Callable[[Collection[str]], None]
# A peer's distributor probes its members at once when this path is posted (the gate waits).
PROBE_PATH = "/v1/probe-members"


class RestartCoordinator:
    """The shell around :func:`coordinator.step`: observe Docker and the peers, decide, act.

    The decision's memory lives in ``self._memory`` between steps; what must survive a leader
    change (which members were asked to stop) is in the Vault service's labels.
    """

    def __init__(
        self,
        engine: DockerEngine,
        *,
        vault_service: str,
        peers: PeerDirectory,
        lag_timeout: float,
        keys: MacKeys | None = None,
        local_stop: LocalStop | None = None,
        node_id: Callable[[], str] | None = None,
        metrics: DistributorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        leader: Callable[[], bool] | None = None,
        member_bound: float = 120.0,
        voter_wait: float = 12.0,
        resend_every: float = 10.0,
        own_service: str | None = None,
        local_probe: LocalProbe | None = None,
        clock_skew: float = 1.0,
    ) -> None:
        self.engine = engine
        self.vault_service = vault_service
        # The cert-distributor service: it carries the operator's pause (PAUSE_LABEL).
        self.own_service = own_service
        self.last_pause: str | None = None  # the pause as the last step read it
        self.peers = peers
        self.keys = keys
        self.local_stop = local_stop
        self.local_probe = local_probe
        self._node_id = node_id or (lambda: engine.local_node().node_id)
        self.metrics = metrics or DistributorMetrics()
        self.clock = clock
        self._leader = leader or engine.is_leader
        self.limits = Limits(
            lag_timeout=lag_timeout,
            member_bound=member_bound,
            voter_wait=voter_wait,
            resend_every=resend_every,
            clock_skew=clock_skew,
        )
        self._memory = Memory()
        # The last answer to a stop order: task ID -> (HTTP status, message); 0: not delivered.
        self._answers: dict[str, tuple[int, str]] = {}

    def step(self, fingerprint: str | None) -> Decision:
        """One observe-decide-act pass. Raises DockerError when the engine fails."""
        now = self.clock()
        if not self._leader():
            # A former leader must not keep showing the rollout it was watching (an alert reads
            # this gauge across every distributor).
            self.metrics.lagging_nodes.set(0)
            return decide(_empty(now, fingerprint, leader=False))
        state = self.engine.service(self.vault_service)
        label = state.labels.get(FINGERPRINT_LABEL)
        # Every task Swarm wants running, running or not: a sealed member stays "starting".
        all_tasks = self.engine.tasks(self.vault_service, running_only=False)
        nodes = self.engine.nodes()
        running = [t for t in all_tasks if t.state == "running"]
        missing = missing_members(all_tasks, state.replicas)
        # The peers report what they installed and how their Vault members answer (the gate).
        survey = None
        if fingerprint is not None:
            survey = self.peers.survey()
            self.metrics.fanout_seconds.observe(survey.seconds)
        observed = Observed(
            now=now,
            is_leader=True,
            fingerprint=fingerprint,
            label=label,
            update_state=state.update_state,
            update_message=state.update_message,
            vault_nodes=frozenset(t.node_id for t in running),
            nodes=nodes,
            reports=survey.reports if survey else {},
            failures=survey.failures if survey else {},
            not_back=_not_back(all_tasks, nodes) + missing,
            missing=missing,
            members=_members(all_tasks, nodes, survey.reports if survey else {}),
            ordered=rollout_from_label(state.labels.get(ROLLOUT_LABEL), fingerprint),
            paused=self.pause(),
        )
        before = self._memory
        decision, self._memory = step(observed, self._memory, self.limits)
        waiting = fingerprint is not None and label != fingerprint
        self.metrics.lagging_nodes.set(len(decision.nodes) if waiting else 0)
        if fingerprint is None:
            return decision
        if decision.kind is Kind.RESTART and decision.member is not None:
            late = self.pause()
            if late is not None:
                # Paused between the observation and now: `certflow pause` has said no member
                # is restarted from here, so none is (and the gate watches nothing new).
                self._memory = before
                return paused(decision, late)
            recorded = self._record_order(state, fingerprint, decision.member)
            if recorded is not None:
                if recorded:
                    self.metrics.restarts.inc()
                # Recorded by a concurrent coordinator for the same task: sent again, harmless.
                self._send(fingerprint, decision.member, now)
            else:  # another task of this slot was ordered: nothing of ours to follow
                self._memory = Memory(fingerprint=fingerprint)
        elif decision.resend and decision.member is not None:
            self._send(fingerprint, decision.member, now, again=True)
        elif decision.kind is Kind.ADOPT:
            outcome = record_fingerprint(
                self.engine, self.vault_service, fingerprint, observed=state
            )
            self.metrics.update_conflicts.inc(outcome.conflicts)
            if outcome.posted:
                self.metrics.adoptions.inc()
        elif (
            decision.kind is Kind.ADVANCE
            and self._memory.gate_task is not None
            and advance_update(
                self.engine, self.vault_service, self._memory.gate_task, observed=state
            )
        ):
            self.metrics.advances.inc()
        if decision.probe:
            self._probe(decision.probe)
        if decision.member is not None and decision.kind in {Kind.GATE, Kind.HALTED}:
            status, message = self._answers.get(decision.member.task_id, (202, ""))
            if not 200 <= status < 300:
                # Why the member still runs, in the operator's words: its node refused or was
                # not reached.
                answer = f"its node answered {status}" if status else "its node was not reached"
                decision = replace(decision, message=f"{decision.message} ({answer}: {message})")
        return decision

    def pause(self) -> str | None:
        """The operator's pause, described, from the cert-distributor service's labels."""
        if self.own_service is None:
            return None
        try:
            labels = self.engine.service(self.own_service).labels
        except DockerNotFound:
            return None  # not run as that service (a test, a hand-started process)
        pause = pause_from_labels(labels)
        self.last_pause = pause.describe() if pause is not None else None
        return self.last_pause

    def _record_order(self, state: ServiceState, fingerprint: str, member: Member) -> bool | None:
        """Write the order into ROLLOUT_LABEL before it is sent (compare-and-swap). True: this
        write recorded it; False: a concurrent coordinator recorded the same order; None: the
        slot had another order for this certificate, or the rollout is done (send nothing)."""
        if member.slot is None:
            return None
        order = Ordered(member.slot, member.task_id)
        verdict: list[bool | None] = []

        def edit_for(current: ServiceState) -> SpecEdit | None:
            verdict.clear()
            if current.labels.get(FINGERPRINT_LABEL) == fingerprint:
                verdict.append(None)  # done meanwhile
                return None
            orders = rollout_from_label(current.labels.get(ROLLOUT_LABEL), fingerprint)
            same = [o for o in orders if o.slot == order.slot]
            if same:
                verdict.append(False if same == [order] else None)
                return None
            verdict.append(True)
            return SpecEdit(labels={ROLLOUT_LABEL: rollout_label(fingerprint, (*orders, order))})

        outcome = self.engine.update_service(
            self.vault_service, edit_for, what="record stop order", observed=state, attempts=6
        )
        self.metrics.update_conflicts.inc(outcome.conflicts)
        return verdict[0] if verdict else None

    def _probe(self, members: tuple[Member, ...]) -> None:
        """Have the members' nodes probe them now: this one on its next pass (the gate's pace),
        the others at once (a POST naming the tasks). Best effort: a node not reached probes
        them at its own pace."""
        try:
            me = self._node_id()
        except DockerError:
            me = ""
        by_node: dict[str, list[str]] = {}
        for member in members:
            by_node.setdefault(member.node_id, []).append(member.task_id)
        for node, tasks in sorted(by_node.items()):
            if node == me:
                if self.local_probe is not None:
                    self.local_probe(tasks)
            elif node:
                body = json.dumps({"tasks": sorted(tasks)}).encode()
                status, message = self.peers.post(node, PROBE_PATH, body)
                if not 200 <= status < 300:
                    _log.debug("vault.probe_request_failed", node=node, answer=message)

    def _send(self, fingerprint: str, member: Member, now: float, *, again: bool = False) -> None:
        """Deliver the stop order to the member's node: this process, or its distributor."""
        if member.slot is None:
            return
        order = StopOrder(self.vault_service, member.slot, member.task_id, fingerprint, now)
        try:
            local = member.node_id == self._node_id()
        except DockerError:
            local = False
        if local and self.local_stop is not None:
            status, message = self.local_stop(order)
            where = "this node"
        elif self.keys is None:
            status, message = 0, "no manifest key to sign the order with"
            where = member.node_id
        else:
            status, message = self.peers.post(member.node_id, PATH, encode(order, self.keys))
            where = member.node_id
        self._answers = {member.task_id: (status, message)}
        log = _log.info if 200 <= status < 300 else _log.warning
        log(
            "vault.stop_ordered",
            member=member.where,
            slot=member.slot,
            task=member.task_id[:12],
            node=where,
            again=again,
            status=status,
            answer=message,
        )


def _empty(
    now: float, fingerprint: str | None, *, leader: bool, label: str | None = None
) -> Observed:
    return Observed(
        now=now,
        is_leader=leader,
        fingerprint=fingerprint,
        label=label,
        update_state=None,
        update_message="",
        vault_nodes=frozenset(),
        nodes={},
        reports={},
    )


def _members(
    tasks: list[TaskInfo], nodes: dict[str, NodeInfo], reports: Mapping[str, DistributorInfo]
) -> tuple[Member, ...]:
    """Every Vault task Swarm wants running, with what its node's distributor probed of it."""
    probes = {p.task_id: p for info in reports.values() for p in info.members if p.task_id}
    out = []
    for task in tasks:
        info = nodes.get(task.node_id)
        host = info.hostname if info and info.hostname else (task.node_id or "no node")
        where = f"slot {task.slot} on {host}" if task.slot is not None else f"task on {host}"
        probe = probes.get(task.task_id)
        out.append(
            Member(
                task_id=task.task_id,
                where=where,
                running=task.state == "running",
                started_at=task.started_at.timestamp() if task.started_at else None,
                sealed=probe.sealed if probe else None,
                proven=probe.proven if probe and probe.sealed is not None else None,
                fingerprint=probe.fingerprint if probe else None,
                detail=probe.detail if probe else "",
                slot=task.slot,
                node_id=task.node_id,
                active=probe.active if probe else None,
                applied=probe.applied if probe else None,
                checked_at=_checked_at(probe),
            )
        )
    return tuple(out)


def _checked_at(probe: MemberProbe | None) -> float | None:
    at = engine_time(probe.checked_at) if probe is not None else None
    return at.timestamp() if at is not None else None


def _not_back(tasks: list[TaskInfo], nodes: dict[str, NodeInfo]) -> tuple[str, ...]:
    """Vault tasks that should run but are not running (healthy), labelled for operators."""
    out = []
    for task in sorted(tasks, key=lambda t: (t.slot or 0, t.task_id)):
        if task.state == "running":
            continue
        info = nodes.get(task.node_id)
        where = info.hostname if info and info.hostname else (task.node_id or "no node")
        slot = f"slot {task.slot}" if task.slot is not None else f"task {task.task_id[:12]}"
        detail = f" ({task.error})" if task.error else ""
        out.append(f"{slot} on {where}: {task.state}{detail}")
    return tuple(out)


def missing_members(tasks: list[TaskInfo], replicas: int | None) -> tuple[str, ...]:
    """Members of a replicated service with no task Swarm wants running, labelled for operators.

    When a member's node is lost, Swarm stops wanting its task and holds the replacement back
    until the old one has stopped (up to a minute), so for that time the member has no task at all.
    """
    if replicas is None:
        return ()
    slots = {t.slot for t in tasks if t.slot is not None}
    short = replicas - len(slots)
    if short <= 0:
        return ()
    if all(1 <= s <= replicas for s in slots):  # else slots were renumbered by a scale: count
        absent = [s for s in range(1, replicas + 1) if s not in slots]
        return tuple(f"slot {s}: no task (Swarm is replacing the member)" for s in absent)
    return (f"{short} of {replicas} members: no task (Swarm is replacing them)",)
