"""The coordinator's loop step: observe Docker and the peers, ask :func:`decide`, act on it.

It never blocks on a rolling update: after posting the update it returns, and the next steps see
the label already set and follow ``UpdateStatus`` (updating -> completed, or paused/rolled back).
A restarted or second coordinator therefore picks up exactly where the first one was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shared.logs import get_logger
from shared.swarm import TaskInfo, is_leader, list_nodes, running_tasks, service_attrs
from shared.swarm import service_state_from_dict as _state

from .coordinator import FINGERPRINT_LABEL, Decision, Kind, Observed, decide
from .docker_ops import RestartOutcome, force_update_once, resume_update
from .metrics import DistributorMetrics
from .peers import PeerDirectory

_log = get_logger(__name__)

# Swarm starts a resumed update within a second when a task is out of date; past this window an
# absent UpdateStatus means nothing was left to update.
RESUME_START_WINDOW = 15.0


class RestartCoordinator:
    def __init__(
        self,
        client: Any,
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
    ) -> None:
        self.client = client
        self.vault_service = vault_service
        self.peers = peers
        self.lag_timeout = lag_timeout
        self.metrics = metrics or DistributorMetrics()
        self.clock = clock
        self._leader = leader or (lambda: is_leader(client))
        self._pending: tuple[str, float] | None = None
        # fingerprint, when we posted its update, how long "no UpdateStatus yet" means "not started"
        self._posted: tuple[str, float, float] | None = None
        self.update_timeout = update_timeout
        self.clock_skew = clock_skew
        self.last_outcome: RestartOutcome | None = None
        self.max_resumes = max_resumes
        self.resume_after = resume_after
        self._paused: tuple[str, float] | None = None  # fingerprint, first seen paused
        self._resumes: dict[str, int] = {}  # fingerprint -> resumes posted by this coordinator

    def step(self, fingerprint: str | None) -> Decision:
        """One observe-decide-act pass. Raises DockerError when the engine fails."""
        now = self.clock()
        if not self._leader():
            return decide(_empty(now, fingerprint, leader=False))
        attrs = service_attrs(self.client, self.vault_service)
        state = _state(attrs)
        label = state.labels.get(FINGERPRINT_LABEL)
        if fingerprint is None or label == fingerprint:
            self._pending = None
            self.metrics.lagging_nodes.set(0)
            posted = (
                self._posted is not None
                and self._posted[0] == fingerprint
                and state.update_state is None
                and now - self._posted[1] < self._posted[2]
            )
            if not posted:
                self._posted = None
            obs = replace(
                _empty(now, fingerprint, leader=True, label=label),
                update_state=state.update_state,
                update_message=state.update_message,
                posted=posted,
            )
            if fingerprint is not None and state.update_state == "paused":
                return self._paused_step(fingerprint, obs, attrs)
            self._paused = None
            return decide(obs)
        if self._pending is None or self._pending[0] != fingerprint:
            self._pending = (fingerprint, now)
        tasks = running_tasks(self.client, self.vault_service)
        nodes = list_nodes(self.client)
        survey = self.peers.survey()
        self.metrics.fanout_seconds.observe(survey.seconds)
        decision = decide(
            Observed(
                now=now,
                is_leader=True,
                fingerprint=fingerprint,
                label=label,
                update_state=state.update_state,
                update_message=state.update_message,
                vault_nodes=frozenset(t.node_id for t in tasks),
                nodes=nodes,
                reports=survey.reports,
                failures=survey.failures,
                pending_since=self._pending[1],
                lag_timeout=self.lag_timeout,
                vault_started=_oldest_start(tasks),
                clock_skew=self.clock_skew,
            )
        )
        self.metrics.lagging_nodes.set(len(decision.nodes))
        if decision.kind not in {Kind.RESTART, Kind.ADOPT}:
            return decision
        force = decision.kind is Kind.RESTART
        outcome = force_update_once(
            self.client, self.vault_service, fingerprint, observed=attrs, force=force
        )
        self.last_outcome = outcome
        self.metrics.update_conflicts.inc(outcome.conflicts)
        if outcome.restarted and force:
            self.metrics.restarts.inc()
            self._posted = (fingerprint, now, self.update_timeout)
        elif outcome.restarted:
            self.metrics.adoptions.inc()
        self._pending = None
        return decision

    def _paused_step(self, fingerprint: str, obs: Observed, attrs: dict[str, Any]) -> Decision:
        """Our update is paused: look at the Vault nodes and maybe resume it (coordinator.py)."""
        if self._paused is None or self._paused[0] != fingerprint:
            self._paused = (fingerprint, obs.now)
        used = self._resumes.get(fingerprint, 0)
        tasks = running_tasks(self.client, self.vault_service)
        survey = self.peers.survey()
        decision = decide(
            replace(
                obs,
                vault_nodes=frozenset(t.node_id for t in tasks),
                nodes=list_nodes(self.client),
                reports=survey.reports,
                failures=survey.failures,
                paused_since=self._paused[1],
                resumes_left=self.max_resumes - used,
                resume_after=self.resume_after,
            )
        )
        if decision.kind is Kind.RESUME:
            self._resumes = {fingerprint: used + 1}
            self._paused = None
            # When every task already runs the current spec, Swarm starts no update and
            # UpdateStatus stays absent: a short window, after which absent reads as done.
            if resume_update(self.client, self.vault_service, fingerprint, observed=attrs):
                self.metrics.resumes.inc()
                self._posted = (fingerprint, obs.now, RESUME_START_WINDOW)
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


def _oldest_start(tasks: list[TaskInfo]) -> dict[str, float]:
    """Per node, when its oldest running Vault task started (epoch seconds)."""
    oldest: dict[str, float] = {}
    for task in tasks:
        if task.started_at is None:
            continue
        started = task.started_at.timestamp()
        oldest[task.node_id] = min(started, oldest.get(task.node_id, started))
    return oldest
