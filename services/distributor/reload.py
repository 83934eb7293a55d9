"""The coordinator's loop step: observe Docker and the peers, ask :func:`decide`, act on it.

It never blocks on a rolling update: after posting the update it returns, and the next steps see
the label already set and follow ``UpdateStatus`` (updating -> completed, or paused/rolled back).
A restarted or second coordinator therefore picks up exactly where the first one was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from shared.docker_engine import DockerEngine
from shared.logs import get_logger
from shared.swarm import NodeInfo, TaskInfo

from .coordinator import (
    Decision,
    Kind,
    Limits,
    Member,
    Memory,
    Observed,
    decide,
    step,
)
from .docker_ops import advance_update, force_update_once, resume_update
from .facts import FINGERPRINT_LABEL, RESUMES_LABEL, DistributorInfo, resumes_from_label
from .metrics import DistributorMetrics
from .peers import PeerDirectory

_log = get_logger(__name__)

# Swarm starts a resumed update within a second when a task is out of date; past this window an
# absent UpdateStatus means nothing was left to update.
RESUME_START_WINDOW = 15.0


class RestartCoordinator:
    """The shell around :func:`coordinator.step`: observe Docker and the peers, decide, act.

    The decision's memory lives in ``self._memory`` between steps; the part that must survive a
    leader change (the resume count) is written into the Vault service's labels with the resume.
    """

    def __init__(
        self,
        engine: DockerEngine,
        *,
        vault_service: str,
        peers: PeerDirectory,
        lag_timeout: float,
        clock_skew: float = 30.0,
        update_timeout: float = 900.0,
        metrics: DistributorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        leader: Callable[[], bool] | None = None,
        max_resumes: int = 3,
        resume_after: float = 30.0,
        member_bound: float = 120.0,
        voter_wait: float = 12.0,
    ) -> None:
        self.engine = engine
        self.vault_service = vault_service
        self.peers = peers
        self.metrics = metrics or DistributorMetrics()
        self.clock = clock
        self._leader = leader or engine.is_leader
        self.clock_skew = clock_skew
        self.limits = Limits(
            lag_timeout=lag_timeout,
            update_timeout=update_timeout,
            resume_window=RESUME_START_WINDOW,
            max_resumes=max_resumes,
            resume_after=resume_after,
            member_bound=member_bound,
            voter_wait=voter_wait,
        )
        self._memory = Memory()

    def step(self, fingerprint: str | None) -> Decision:
        """One observe-decide-act pass. Raises DockerError when the engine fails."""
        now = self.clock()
        if not self._leader():
            return decide(_empty(now, fingerprint, leader=False))
        state = self.engine.service(self.vault_service)
        label = state.labels.get(FINGERPRINT_LABEL)
        # Every task Swarm wants running, running or not: a sealed member stays "starting".
        all_tasks = self.engine.tasks(self.vault_service, running_only=False)
        nodes = self.engine.nodes()
        running = [t for t in all_tasks if t.state == "running"]
        missing = missing_members(all_tasks, state.replicas)
        memory = self._memory
        if memory.fingerprint != fingerprint:
            memory = Memory(fingerprint=fingerprint)
        recorded = resumes_from_label(state.labels.get(RESUMES_LABEL), fingerprint)
        memory = replace(memory, resumes=max(memory.resumes, recorded))
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
            vault_started=_oldest_start(running),
            clock_skew=self.clock_skew,
            not_back=_not_back(all_tasks, nodes) + missing,
            missing=missing,
            members=_members(all_tasks, nodes, survey.reports if survey else {}),
        )
        decision, self._memory = step(observed, memory, self.limits)
        waiting = fingerprint is not None and label != fingerprint
        self.metrics.lagging_nodes.set(len(decision.nodes) if waiting else 0)
        if decision.kind in {Kind.RESTART, Kind.ADOPT} and fingerprint is not None:
            force = decision.kind is Kind.RESTART
            outcome = force_update_once(
                self.engine, self.vault_service, fingerprint, observed=state, force=force
            )
            self.metrics.update_conflicts.inc(outcome.conflicts)
            if outcome.posted and force:
                self.metrics.restarts.inc()
            elif outcome.posted:
                self.metrics.adoptions.inc()
            else:  # someone else acted first: nothing of ours to wait for
                self._memory = replace(self._memory, posted_at=None, post_window=0.0)
        elif decision.kind is Kind.ADVANCE and self._memory.gate_task is not None:
            if advance_update(
                self.engine, self.vault_service, self._memory.gate_task, observed=state
            ):
                self.metrics.advances.inc()
        elif decision.kind is Kind.RESUME and fingerprint is not None:
            # When every task already runs the current spec, Swarm starts no update and
            # UpdateStatus stays absent: a short window, after which absent reads as done.
            if resume_update(
                self.engine,
                self.vault_service,
                fingerprint,
                observed=state,
                resumes=self._memory.resumes,
            ):
                self.metrics.resumes.inc()
            else:
                self._memory = replace(self._memory, posted_at=None, post_window=0.0)
        return decision


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
            )
        )
    return tuple(out)


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


def _oldest_start(tasks: list[TaskInfo]) -> dict[str, float]:
    """Per node, when its oldest running Vault task started (epoch seconds)."""
    oldest: dict[str, float] = {}
    for task in tasks:
        if task.started_at is None:
            continue
        started = task.started_at.timestamp()
        oldest[task.node_id] = min(started, oldest.get(task.node_id, started))
    return oldest
