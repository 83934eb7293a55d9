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
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from shared.swarm import FAILED_UPDATE_STATES, NodeInfo

from .facts import DistributorInfo

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
    HELD = "held"  # a vault member is not back (sealed or unhealthy): no restart until it is
    NOT_BACK = "not_back"  # our update finished but a member is not back: not done yet
    GATE = "gate"  # rolling update: the restarted member is not back yet (within its bound)
    HALTED = "halted"  # rolling update: the restarted member is not back past its bound
    ADVANCE = "advance"  # rolling update: the restarted member is back: let Swarm go on


@dataclass(frozen=True, slots=True)
class Member:
    """One Vault member (a task Swarm wants running), as the leader sees it.

    ``sealed``/``proven`` come from the probe its node's distributor runs inside the container
    (local_members.py); None: no probe yet. ``proven``: it serves the leaf installed on its node
    and that chain verifies against the trust Vault's clients use.
    """

    task_id: str
    where: str  # "slot 2 on host-b", for operators
    running: bool
    started_at: float | None = None
    sealed: bool | None = None
    proven: bool | None = None
    fingerprint: str | None = None  # the installed leaf its probe compared with
    detail: str = ""


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
    # Vault tasks Swarm wants running that are not running (healthy) now, labelled for operators:
    # a member that is sealed stays "starting" (the stack's healthcheck calls sealed unhealthy).
    not_back: tuple[str, ...] = ()
    # Members with no task Swarm wants running at all (also in not_back): a replaced member's new
    # task is held back until the old one has stopped, for up to a minute when its node was lost,
    # and the old one no longer counts. Without this, that member would simply not be seen.
    missing: tuple[str, ...] = ()
    members: tuple[Member, ...] = ()
    # The rolling update's gate (filled from the step's memory): the member it waits on, since
    # when, since when that member is back, and whether we already moved the update past it.
    gate_task: str | None = None
    gate_since: float | None = None
    back_since: float | None = None
    advanced: bool = False
    member_bound: float = 120.0  # a restarted member not back after this long halts the update
    voter_wait: float = 12.0  # a member back this long has become a raft voter


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


def _all_serve(obs: Observed, fp: str) -> bool:
    """Every member is probed unsealed and serving ``fp``. Task start times alone cannot say it:
    Swarm rewrites a task's status time when a manager re-syncs it (after a partition or a
    leader change), so a member that loaded the old pair can look newer than the install."""
    return bool(obs.members) and all(
        m.running and m.sealed is False and m.proven and m.fingerprint == fp for m in obs.members
    )


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
            return gate(obs, fp)
        if state is None and obs.posted:
            return Decision(Kind.WAIT, "vault update posted, not started yet", fingerprint=fp)
        # (members not running are in not_back already)
        short = obs.not_back + tuple(
            f"{m.where}: {_problem(m, fp)}" for m in obs.members if m.running and _problem(m, fp)
        )
        if short:
            return Decision(
                Kind.NOT_BACK,
                "vault restarted for the installed certificate, but member(s) not back: "
                + "; ".join(short),
                fingerprint=fp,
                nodes=short,
            )
        return Decision(Kind.DONE, "vault runs with the installed certificate", fingerprint=fp)
    if state == "updating":
        # Someone else's update (a stack deploy, say): gated the same way, one member at a time.
        return gate(obs, fp)
    if state in BUSY_UPDATE_STATES:
        return Decision(Kind.WAIT, f"another vault update is {state}; waiting", fingerprint=fp)
    sealed = tuple(f"{m.where}: sealed" for m in obs.members if m.running and m.sealed)
    if obs.not_back or sealed:
        # Stopping a member while another is down could leave no quorum, or no unsealed member.
        return Decision(
            Kind.HELD,
            "no vault restart while member(s) are not back (sealed or unhealthy): "
            + "; ".join(obs.not_back + sealed),
            fp,
            nodes=obs.not_back + sealed,
        )
    left_out = tuple(sorted(n for n in obs.vault_nodes if not _live(n, obs.nodes)))
    live = sorted(n for n in obs.vault_nodes if _live(n, obs.nodes))
    if not live:
        return Decision(
            Kind.NO_TASKS, "vault has no running task on a live node", fp, left_out=left_out
        )
    if left_out:
        # A raft member whose node is down is a lost vote: stopping one more member could leave
        # the cluster without quorum, so without an active member. Restart once it is back.
        down = tuple(_label(n, obs.nodes) for n in left_out)
        return Decision(
            Kind.HELD,
            "no vault restart while a vault node is down (one more member stopped could leave "
            "raft without quorum): " + "; ".join(down),
            fp,
            nodes=down,
            left_out=left_out,
        )
    lagging = tuple(n for n in live if n not in obs.reports or obs.reports[n].fingerprint != fp)
    if not lagging:
        unprobed = tuple(f"{m.where}: not probed yet" for m in obs.members if m.sealed is None)
        if unprobed:
            # Restart or adopt is decided on what the members serve: wait for their probes.
            return Decision(Kind.WAIT, "waiting for " + "; ".join(unprobed), fp, nodes=unprobed)
        if _all_started_after_install(live, obs) and _all_serve(obs, fp):
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


def _problem(member: Member, fp: str | None) -> str:
    """Why ``member`` is not back ("" when it is): running, unsealed, serving and trusted."""
    if not member.running:
        return "not running yet"
    if member.sealed is None:
        return "not probed yet"
    if member.sealed:
        return "sealed"
    if not member.proven:
        detail = f" ({member.detail})" if member.detail else ""
        return f"does not serve the installed certificate{detail}"
    if fp is not None and member.fingerprint is not None and member.fingerprint != fp:
        return "its node has another certificate installed"
    return ""


def newest_member(members: tuple[Member, ...]) -> Member | None:
    """The member the rolling update touched last: one not running yet, else the newest start."""
    if not members:
        return None
    starting = [m for m in members if not m.running]
    if starting:
        return min(starting, key=lambda m: m.task_id)
    return max(members, key=lambda m: (m.started_at or 0.0, m.task_id))


def gate(obs: Observed, fp: str) -> Decision:
    """A rolling update restarts one member, then Swarm waits (the stack's long ``delay``).

    The update moves on only when that member is back: running, unsealed, serving the installed
    certificate and trusted by Vault's clients, every other member running and probed unsealed, no
    Vault node down, and the member back
    for ``voter_wait`` (a member that has just rejoined raft is a non-voter for about 10 s, and
    stopping the active member then loses quorum). Past ``member_bound`` the rollout is halted:
    reported failing, and left waiting, never moved on.
    """
    newest = newest_member(obs.members)
    if newest is None:
        return Decision(Kind.GATE, "vault rolling update in progress: no member seen yet", fp)
    if obs.advanced and obs.gate_task == newest.task_id:
        return Decision(
            Kind.GATE,
            f"vault rolling update moved on past {newest.where}; Swarm stops the next",
            fp,
        )
    problems = [f"{newest.where}: {why}"] if (why := _problem(newest, fp)) else []
    # Every other member must be proven unsealed, and no Vault node down: stopping the next member
    # while another vote is missing could leave raft without quorum.
    problems += [
        f"{m.where}: {'not running' if not m.running else 'sealed' if m.sealed else 'not probed'}"
        for m in obs.members
        if m is not newest and (not m.running or m.sealed is not False)
    ]
    problems += [
        f"{_label(n, obs.nodes)}: node down"
        for n in sorted(obs.vault_nodes)
        if not _live(n, obs.nodes)
    ]
    problems += obs.missing
    since = obs.gate_since if obs.gate_since is not None else obs.now
    if problems:
        waited = obs.now - since
        nodes = tuple(problems)
        if waited >= obs.member_bound:
            return Decision(
                Kind.HALTED,
                f"vault rollout halted for {waited:.0f}s: " + "; ".join(problems) + "; the members "
                "not restarted yet keep serving; it goes on by itself once this is fixed",
                fp,
                nodes=nodes,
            )
        return Decision(
            Kind.GATE, "vault rolling update waits: " + "; ".join(problems), fp, nodes=nodes
        )
    back_for = obs.now - (obs.back_since if obs.back_since is not None else obs.now)
    if back_for < obs.voter_wait:
        return Decision(
            Kind.GATE,
            f"vault rolling update: {newest.where} is back; {obs.voter_wait - back_for:.0f}s "
            "more for it to become a raft voter",
            fp,
        )
    return Decision(Kind.ADVANCE, f"vault rolling update: {newest.where} is back; moving on", fp)


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
    if obs.not_back:
        # The member the update stopped at is still sealed (or unhealthy): resuming would stop
        # the next one while it is down. Halt here until it is back.
        return Decision(
            Kind.FAILED,
            f"{failed}; halted: member(s) not back (sealed or unhealthy): "
            + "; ".join(obs.not_back),
            fp,
            nodes=obs.not_back,
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


# -- the decision's memory ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """What the restart decision remembers between steps, for one certificate.

    Only ``resumes`` must survive a leader change (it bounds the automatic resumes): it is
    written into the Vault service's labels in the same spec write as the resume itself. The
    rest only times things (how long nodes lag, how long a pause lasted, whether our post has
    started), and a new leader that starts them from zero only waits a little longer.
    """

    fingerprint: str | None = None
    pending_since: float | None = None  # first seen waiting for nodes
    posted_at: float | None = None  # our update (or resume) posted
    post_window: float = 0.0  # how long "no UpdateStatus yet" means "not started yet"
    paused_since: float | None = None  # first seen our update paused
    resumes: int = 0  # automatic resumes posted for this fingerprint
    gate_task: str | None = None  # the member the rolling update waits on
    gate_since: float | None = None  # since when it waits on it
    back_since: float | None = None  # since when that member is back
    advanced: bool = False  # we moved the update past gate_task


@dataclass(frozen=True, slots=True)
class Limits:
    lag_timeout: float = 300.0
    update_timeout: float = 900.0  # how long a posted update may take to show an UpdateStatus
    resume_window: float = 15.0  # the same, after a resume
    max_resumes: int = 3
    resume_after: float = 30.0
    member_bound: float = 120.0
    voter_wait: float = 12.0


def step(obs: Observed, memory: Memory, limits: Limits) -> tuple[Decision, Memory]:
    """One decision with its memory: ``obs`` is what was seen now; the timing fields of ``obs``
    (pending_since, posted, paused_since, resumes_left, lag_timeout, resume_after) are filled
    from ``memory`` and ``limits`` here, and the memory for the next step comes back.
    """
    fp = obs.fingerprint
    if memory.fingerprint != fp:
        memory = Memory(fingerprint=fp)
    done_label = fp is not None and obs.label == fp
    posted = (
        done_label
        and memory.posted_at is not None
        and obs.update_state is None
        and obs.now - memory.posted_at < memory.post_window
    )
    if not posted:
        memory = replace(memory, posted_at=None, post_window=0.0)
    paused = done_label and obs.update_state == "paused"
    if paused and memory.paused_since is None:
        memory = replace(memory, paused_since=obs.now)
    elif not paused:
        memory = replace(memory, paused_since=None)
    waiting = fp is not None and not done_label
    if waiting and memory.pending_since is None:
        memory = replace(memory, pending_since=obs.now)
    elif not waiting:
        memory = replace(memory, pending_since=None)
    if obs.update_state == "updating" and (newest := newest_member(obs.members)) is not None:
        if memory.gate_task != newest.task_id:
            memory = replace(
                memory,
                gate_task=newest.task_id,
                gate_since=obs.now,
                back_since=None,
                advanced=False,
            )
        back = not _problem(newest, fp) and not any(
            m.running and m.sealed for m in obs.members if m is not newest
        )
        if back and memory.back_since is None:
            memory = replace(memory, back_since=obs.now)
        elif not back:
            memory = replace(memory, back_since=None)
    else:
        memory = replace(memory, gate_task=None, gate_since=None, back_since=None, advanced=False)
    decision = decide(
        replace(
            obs,
            gate_task=memory.gate_task,
            gate_since=memory.gate_since,
            back_since=memory.back_since,
            advanced=memory.advanced,
            member_bound=limits.member_bound,
            voter_wait=limits.voter_wait,
            posted=posted,
            pending_since=memory.pending_since,
            lag_timeout=limits.lag_timeout,
            paused_since=memory.paused_since,
            resumes_left=limits.max_resumes - memory.resumes,
            resume_after=limits.resume_after,
        )
    )
    if decision.kind is Kind.RESTART:
        memory = Memory(
            fingerprint=fp, posted_at=obs.now, post_window=limits.update_timeout, resumes=0
        )
    elif decision.kind is Kind.ADOPT:
        memory = Memory(fingerprint=fp)
    elif decision.kind is Kind.ADVANCE:
        # Swarm clears UpdateStatus on the spec write until its updater starts again (or for
        # good, when no member is left on the old spec): a short window, like a resume.
        memory = replace(memory, advanced=True, posted_at=obs.now, post_window=limits.resume_window)
    elif decision.kind is Kind.RESUME:
        memory = replace(
            memory,
            resumes=memory.resumes + 1,
            paused_since=None,
            posted_at=obs.now,
            post_window=limits.resume_window,
        )
    return decision, memory
