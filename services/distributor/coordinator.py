"""Whether to restart Vault now: a pure function of what the leader's distributor observed.

Exactly one restart per certificate comes from three rules: only the Swarm leader decides; the
restart is a single service update that also writes the fingerprint into the service label
``certflow.fingerprint`` (so a label equal to the fingerprint means "already done", for this and
every later or concurrent coordinator); and it waits until every live Vault node reports the new
pair installed, so no Vault task restarts onto old files. When the label is lost (a stack redeploy
replaces service labels) but every Vault task started after its node installed the pair, the
fingerprint is recorded without a restart.

A rolling update that Swarm paused (a task of the update failed, typically because its node went
down or rejoined mid-update) is resumed by posting the same spec again, which restarts only the
tasks still on the old spec, never the ones already restarted. It is resumed only once the cause is
gone (every Vault node live and holding the pair), a bounded number of times per certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from shared.swarm import NodeInfo

from .peers import DistributorInfo

FINGERPRINT_LABEL = "certflow.fingerprint"

# UpdateStatus.State values after which the restart did not happen as asked (reference B2).
FAILED_UPDATE_STATES = frozenset(
    {"paused", "rollback_started", "rollback_paused", "rollback_completed"}
)
BUSY_UPDATE_STATES = frozenset({"updating", "rollback_started"})


class Kind(StrEnum):
    SYNC_ONLY = "sync_only"  # not the leader: install locally, decide nothing
    WAIT = "wait"  # not yet: nothing installed here, nodes still syncing, another update running
    RESTART = "restart"  # every live Vault node has the pair: force one update now
    ADOPT = "adopt"  # Vault tasks already started after the install: record the label, no restart
    LAGGING = "lagging"  # a live Vault node lags past the timeout: failing, no restart
    NO_TASKS = "no_tasks"  # the Vault service runs no task on a live node
    FAILED = "failed"  # our update paused or rolled back
    RESUME = "resume"  # our update paused, its cause is gone: post the same spec again
    DONE = "done"  # the service already runs with this fingerprint


@dataclass(frozen=True, slots=True)
class Observed:
    now: float
    is_leader: bool
    fingerprint: str | None  # the pair installed on this (the leader's) node
    label: str | None  # certflow.fingerprint label of the Vault service
    update_state: str | None  # Vault service UpdateStatus.State (None: absent)
    update_message: str
    vault_nodes: frozenset[str]  # nodes with a running Vault task
    nodes: Mapping[str, NodeInfo]  # the swarm's nodes (empty: unknown)
    reports: Mapping[str, DistributorInfo]  # node ID -> what its distributor reports
    failures: Mapping[str, str] = field(default_factory=dict)  # node ID -> why it was not heard
    pending_since: float | None = None  # when this fingerprint was first found waiting
    lag_timeout: float = 300.0
    posted: bool = False  # this coordinator posted the update and Swarm has not reported on it yet
    vault_started: Mapping[str, float] = field(default_factory=dict)  # node -> oldest task start
    clock_skew: float = 30.0
    paused_since: float | None = None  # when this coordinator first saw our update paused
    resumes_left: int = 0  # how many more times a paused update of this fingerprint may resume
    resume_after: float = 30.0  # seconds a pause must last before it is resumed


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    message: str = ""
    fingerprint: str | None = None
    nodes: tuple[str, ...] = ()  # lagging or waited-for nodes
    left_out: tuple[str, ...] = ()  # Vault nodes that are down and were not asked


def _label(node: str, nodes: Mapping[str, NodeInfo]) -> str:
    info = nodes.get(node)
    return f"{info.hostname} ({node})" if info and info.hostname else node


def _live(node: str, nodes: Mapping[str, NodeInfo]) -> bool:
    info = nodes.get(node)
    # A node the list does not know is not assumed dead: the task list says a task runs there.
    return info is None or info.state == "ready"


def _all_started_after_install(live: list[str], obs: Observed) -> bool:
    for node in live:
        started = obs.vault_started.get(node)
        installed = obs.reports[node].installed_at if node in obs.reports else None
        if started is None or installed is None:
            return False
        try:
            installed_ts = datetime.fromisoformat(installed).timestamp()
        except ValueError:
            return False
        if started <= installed_ts + obs.clock_skew:
            return False
    return True


def decide(obs: Observed) -> Decision:
    if not obs.is_leader:
        return Decision(Kind.SYNC_ONLY, "not the swarm leader")
    fp = obs.fingerprint
    if fp is None:
        return Decision(Kind.WAIT, "no pair installed on this node yet")
    state = obs.update_state
    if obs.label == fp:
        if state == "paused":
            return _paused(obs, fp)
        if state in FAILED_UPDATE_STATES:
            detail = f": {obs.update_message}" if obs.update_message else ""
            return Decision(Kind.FAILED, f"vault update {state}{detail}", fingerprint=fp)
        if state == "updating":
            return Decision(Kind.WAIT, "vault rolling update in progress", fingerprint=fp)
        if state is None and obs.posted:
            return Decision(Kind.WAIT, "vault update posted, not started yet", fingerprint=fp)
        return Decision(Kind.DONE, "vault runs with the installed certificate", fingerprint=fp)
    if state in BUSY_UPDATE_STATES:
        return Decision(Kind.WAIT, f"another vault update is {state}; waiting", fingerprint=fp)
    left_out = tuple(sorted(n for n in obs.vault_nodes if not _live(n, obs.nodes)))
    live = sorted(n for n in obs.vault_nodes if _live(n, obs.nodes))
    if not live:
        return Decision(
            Kind.NO_TASKS, "vault has no running task on a live node", fp, left_out=left_out
        )
    lagging = tuple(n for n in live if n not in obs.reports or obs.reports[n].fingerprint != fp)
    if not lagging:
        if _all_started_after_install(live, obs):
            # E.g. a `docker stack deploy` replaced the service labels (and maybe restarted the
            # tasks): every Vault task already loaded this pair, so a restart would only seal it.
            return Decision(
                Kind.ADOPT,
                "vault tasks started after the pair was installed; recording it, no restart",
                fp,
                left_out=left_out,
            )
        return Decision(Kind.RESTART, "every vault node has the pair", fp, left_out=left_out)
    waited = obs.now - obs.pending_since if obs.pending_since is not None else 0.0
    why = []
    for node in lagging:
        if node in obs.failures:
            why.append(f"{_label(node, obs.nodes)}: unreachable ({obs.failures[node]})")
        elif node in obs.reports:
            got = obs.reports[node]
            error = f", last error: {got.last_error}" if got.last_error else ""
            why.append(f"{_label(node, obs.nodes)}: has generation {got.generation}{error}")
        else:
            why.append(f"{_label(node, obs.nodes)}: no distributor report")
    if waited >= obs.lag_timeout:
        return Decision(
            Kind.LAGGING,
            f"no vault restart: node(s) lag for {waited:.0f}s: " + "; ".join(why),
            fp,
            nodes=lagging,
            left_out=left_out,
        )
    return Decision(
        Kind.WAIT, "waiting for node(s): " + "; ".join(why), fp, nodes=lagging, left_out=left_out
    )


def _paused(obs: Observed, fp: str) -> Decision:
    """Our update is paused: resume it once its cause is gone, within the resume budget."""
    detail = f": {obs.update_message}" if obs.update_message else ""
    failed = f"vault update paused{detail}"
    if obs.resumes_left <= 0:
        return Decision(Kind.FAILED, failed + " (no automatic resume left)", fingerprint=fp)
    down = tuple(sorted(n for n in obs.vault_nodes if not _live(n, obs.nodes)))
    lagging = tuple(
        sorted(
            n
            for n in obs.vault_nodes
            if _live(n, obs.nodes) and (n not in obs.reports or obs.reports[n].fingerprint != fp)
        )
    )
    if down or lagging or not obs.vault_nodes:
        why = "no running vault task" if not obs.vault_nodes else "vault node(s) down or lagging"
        nodes = tuple(_label(n, obs.nodes) for n in (*down, *lagging))
        return Decision(Kind.FAILED, f"{failed}; resume waits: {why}", fp, nodes=nodes)
    paused_for = obs.now - obs.paused_since if obs.paused_since is not None else 0.0
    if paused_for < obs.resume_after:
        return Decision(
            Kind.FAILED, f"{failed}; resuming in {obs.resume_after - paused_for:.0f}s", fp
        )
    return Decision(Kind.RESUME, f"{failed}; every vault node is up with the pair: resuming", fp)


def nodes_not_ready(nodes: Mapping[str, NodeInfo]) -> tuple[str, ...]:
    """Swarm nodes that are not ``ready`` (down, disconnected, unknown), labelled for operators.

    The coordinator leaves such nodes out of a restart, and their distributor cannot report, so
    the leader's /health says it for them.
    """
    return tuple(
        f"{_label(node_id, nodes)}: {info.state}"
        for node_id, info in sorted(nodes.items(), key=lambda item: item[1].hostname)
        if info.state != "ready"
    )
