"""Whether to restart a Vault member now, and which: a pure function of what the leader observed.

A certificate reaches Vault by restarting each member once, one at a time. The distributor on the
member's node stops that member's container (SIGTERM, so an active member steps down first) and
Swarm's restart policy starts the same task spec again, which reads the pair now installed. The
standbys go first and the active member last, so leadership moves once per certificate.

No Swarm service update is used for this. Swarm's updater starts again whenever a new Swarm
leader takes over, and it then replaces the next member at once, with no gate: losing the leader
manager mid-rollout would stop a second member while the first was still down (lab row 17).

Exactly one restart per member per certificate comes from four rules:
- only the Swarm leader decides;
- before a member is asked to stop, its slot and task go into the Vault service label
  ``certflow.rollout``. No coordinator, this one or the next leader's, orders a second stop for a
  slot already in it. It only sends the same order again, for the same task, and that task is
  stopped only while it still runs;
- a member that already serves the installed certificate is never stopped;
- once every member serves it, the fingerprint goes into ``certflow.fingerprint``: done.

Each stop waits for the gate. The member stopped last must be back: running, unsealed, serving
the installed certificate and trusted by Vault's clients, and back long enough to be a raft voter.
Every other member must be running and unsealed, and no Vault node may be down. Otherwise the
rollout waits, and past a bound it reports itself halted. It never stops a second member.

A rolling update certflow did not start (an operator's ``docker stack deploy``) is gated the same
way: its member must be back before the coordinator moves Swarm on (``advance``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from shared.rollout import Ordered
from shared.swarm import NodeInfo

from .facts import DistributorInfo

BUSY_UPDATE_STATES = frozenset({"updating", "rollback_started"})
# An update Swarm paused: a member it stopped may be down, and a restart now would start the
# member on the half-rolled spec. No member is stopped until an operator resumes or rolls back.
PAUSED_UPDATE_STATES = frozenset({"paused", "rollback_paused"})


class Kind(StrEnum):
    SYNC_ONLY = "sync_only"  # not the leader: install locally, decide nothing
    WAIT = "wait"  # not yet: nothing installed here, nodes still syncing, another update running
    RESTART = "restart"  # every node has the pair, the gate is open: stop this member now
    ADOPT = "adopt"  # every member serves the installed certificate: record it, no restart
    LAGGING = "lagging"  # a live Vault node lags past the timeout: failing, no restart
    NO_TASKS = "no_tasks"  # the Vault service runs no task on a live node
    FAILED = "failed"  # an update of Vault's own (not certflow's) is paused: nothing restarted
    DONE = "done"  # every member serves this fingerprint and it is recorded
    HELD = "held"  # a vault member is not back (sealed or unhealthy): no restart until it is
    NOT_BACK = "not_back"  # recorded done, but a member is not back now
    GATE = "gate"  # the member stopped last (or updated by Swarm) is not back yet (within bound)
    HALTED = "halted"  # that member is not back past its bound, or a restart did not take
    ADVANCE = "advance"  # someone else's rolling update: its member is back, let Swarm go on
    PAUSED = "paused"  # an operator paused certflow (certflow pause): no stop, no advance


@dataclass(frozen=True, slots=True)
class Member:
    """One Vault member (a task Swarm wants running), as the leader sees it.

    ``sealed``/``proven``/``active`` come from the probe its node's distributor runs inside the
    container (local_members.py); None: no probe yet. ``proven``: it serves the leaf installed on
    its node and that chain verifies against the trust Vault's clients use.
    """

    task_id: str
    where: str  # "slot 2 on host-b", for operators
    running: bool
    started_at: float | None = None
    sealed: bool | None = None
    proven: bool | None = None
    fingerprint: str | None = None  # the installed leaf its probe compared with
    detail: str = ""
    slot: int | None = None
    node_id: str = ""
    active: bool | None = None  # the raft leader; None: not probed, sealed or not HA
    applied: int | None = None  # raft_applied_index (the FSM's last entry); None: not known
    checked_at: float | None = None  # when its node's distributor probed it (epoch s)


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
    # Vault tasks Swarm wants running that are not running (healthy) now, labelled for operators:
    # a member that is sealed stays "starting" (the stack's healthcheck calls sealed unhealthy).
    not_back: tuple[str, ...] = ()
    # Members with no task Swarm wants running at all (also in not_back): a stopped member's
    # new task waits out the restart delay, and a lost node's task is replaced after a while.
    # Without this, that member would simply not be seen.
    missing: tuple[str, ...] = ()
    members: tuple[Member, ...] = ()
    # The stop orders recorded for this fingerprint (ROLLOUT_LABEL), oldest first.
    ordered: tuple[Ordered, ...] = ()
    # The gate (filled from the step's memory): the task it waits on, since when, and whether we
    # already moved someone else's update past it.
    gate_task: str | None = None
    gate_since: float | None = None
    advanced: bool = False
    # Since when the same members have all been running and unsealed (filled from the memory).
    # A member that has just rejoined raft is a non-voter for a while, whether certflow restarted
    # it or it came back by itself (its node returned): the one clock for every voter wait.
    all_back_since: float | None = None
    member_bound: float = 120.0  # a stopped member not back after this long halts the rollout
    voter_wait: float = 12.0  # a member back this long has become a raft voter
    paused: str | None = None  # the operator's pause (certflow pause), described; None: running
    # Catching up (filled from the memory): the restarted member's applied index when first seen
    # unsealed, and the active member's applied index probed after it started.
    catch_up: CatchUp | None = None
    clock_skew: float = 1.0  # how far the nodes' clocks may differ (seconds)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What proves that a restarted member rejoined raft and caught up, without a token.

    Its ``raft_applied_index`` is the last entry its state machine applied. After a restart the
    state machine holds what was applied before the stop, and it applies further entries only
    once the leader has told it what is committed: so an index above the one first seen
    unsealed (``first``) shows contact with the leader. And reaching ``target`` (the active
    member's index, probed after the member started) shows it holds everything committed while
    it was down. Both are indices of applied entries: raft's no-op and barrier entries, written
    at a leadership change, move neither.
    """

    task_id: str
    first: int
    target: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    message: str = ""
    fingerprint: str | None = None
    nodes: tuple[str, ...] = ()  # lagging or waited-for nodes
    left_out: tuple[str, ...] = ()  # Vault nodes that are down and were not asked
    member: Member | None = None  # RESTART: the member to stop; GATE: the one asked to stop
    resend: bool = False  # GATE: the stop order is due to be sent again (same task)
    # GATE: members whose nodes should probe them now (the gate waits on their answer), rather
    # than at their next pass.
    probe: tuple[Member, ...] = ()


def _label(node: str, nodes: Mapping[str, NodeInfo]) -> str:
    info = nodes.get(node)
    return f"{info.hostname} ({node})" if info and info.hostname else node


def _live(node: str, nodes: Mapping[str, NodeInfo]) -> bool:
    info = nodes.get(node)
    # A node the list does not know is not assumed dead: the task list says a task runs there.
    return info is None or info.state == "ready"


def serves(member: Member, fp: str) -> bool:
    """Running, unsealed, and proven to serve ``fp`` trusted by Vault's clients."""
    return bool(
        member.running and member.sealed is False and member.proven and member.fingerprint == fp
    )


def decide(obs: Observed) -> Decision:
    if not obs.is_leader:
        return Decision(Kind.SYNC_ONLY, "not the swarm leader")
    fp = obs.fingerprint
    if fp is None:
        return Decision(Kind.WAIT, "no pair installed on this node yet")
    state = obs.update_state
    if state == "updating":
        # Someone else's update (a stack deploy, say): gated the same way, one member at a time.
        return gate(obs, fp)
    if state in BUSY_UPDATE_STATES:
        return Decision(Kind.WAIT, f"another vault update is {state}; waiting", fingerprint=fp)
    if state in PAUSED_UPDATE_STATES:
        detail = f": {obs.update_message}" if obs.update_message else ""
        return Decision(
            Kind.FAILED,
            f"vault's own update is {state}{detail}; certflow restarts no member until an "
            "operator resumes it (docker service update) or rolls it back",
            fingerprint=fp,
        )
    if obs.label == fp:
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
    if obs.ordered:
        waiting = rollout_gate(obs, fp, obs.ordered[-1])
        if waiting is not None:
            return waiting
    return _next(obs, fp)


def _next(obs: Observed, fp: str) -> Decision:
    """No member in flight: hold, wait for the nodes, record, or stop the next member."""
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
    if lagging:
        return _lagging(obs, fp, lagging)
    unprobed = tuple(f"{m.where}: not probed yet" for m in obs.members if m.sealed is None)
    if unprobed or not obs.members:
        # Who to restart is decided on what the members serve: wait for their probes.
        unprobed = unprobed or ("no member reported by its node's distributor yet",)
        return Decision(Kind.WAIT, "waiting for " + "; ".join(unprobed), fp, nodes=unprobed)
    todo = [m for m in obs.members if not serves(m, fp)]
    if not todo:
        why = (
            "every member restarted onto the installed certificate"
            if obs.ordered
            else "every member already serves the installed certificate (no restart needed)"
        )
        return Decision(Kind.ADOPT, f"{why}; recording it", fp)
    done_slots = {o.slot for o in obs.ordered}
    again = [m for m in todo if m.slot in done_slots]
    if again:
        # A member restarts once per certificate: a second stop would not fix what the first
        # restart did not, and could be the one that costs the cluster its quorum.
        return Decision(
            Kind.HALTED,
            "vault rollout halted: restarted once for this certificate and still not serving it: "
            + "; ".join(f"{m.where}: {_problem(m, fp) or 'not proven'}" for m in again)
            + "; the members not restarted yet keep serving. Fix the member (its node's "
            "installed pair, its trust), or restart it by hand",
            fp,
            nodes=tuple(m.where for m in again),
        )
    if (left := _voter_wait_left(obs)) > 0 and not _restarted_caught_up(obs):
        # A member back after a fault (its node returned, its dockerd restarted) rejoined raft
        # as a non-voter: stopping another one now could leave raft without quorum.
        return Decision(
            Kind.WAIT,
            f"every member back; {left:.0f}s more before the next restart, for members that "
            "rejoined to become raft voters",
            fp,
        )
    # Standbys first, the active member last: leadership moves once, when its turn comes.
    pick = min(todo, key=lambda m: (m.active is True, m.active is None, m.slot or 0, m.task_id))
    role = {True: "the active member", False: "a standby", None: "role unknown"}[pick.active]
    return Decision(
        Kind.RESTART,
        f"every vault node has the pair; restarting {pick.where} ({role}), "
        f"{len(todo) - 1} more after it",
        fp,
        member=pick,
    )


def _restarted_caught_up(obs: Observed) -> bool:
    """The member certflow restarted last has proven by its raft index that it caught up: it
    needs no voter wait (a restart keeps its place in raft's configuration)."""
    if not obs.ordered:
        return False
    member = replacement(obs, obs.ordered[-1])
    return member is not None and caught_up(obs, member)[0] is True


def _lagging(obs: Observed, fp: str, lagging: tuple[str, ...]) -> Decision:
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
        )
    return Decision(Kind.WAIT, "waiting for node(s): " + "; ".join(why), fp, nodes=lagging)


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


def _others(obs: Observed, watched: Member | None, skip: str = "") -> list[str]:
    """What keeps the gate shut besides the watched member: another member not running or not
    proven unsealed, a Vault node down, a member with no task. Stopping the next member while
    another vote is missing could leave raft without quorum."""
    problems = [
        f"{m.where}: {'not running' if not m.running else 'sealed' if m.sealed else 'not probed'}"
        for m in obs.members
        if m is not watched and m.task_id != skip and (not m.running or m.sealed is not False)
    ]
    problems += [
        f"{_label(n, obs.nodes)}: node down"
        for n in sorted(obs.vault_nodes)
        if not _live(n, obs.nodes)
    ]
    return problems + list(obs.missing)


def _wait_or_halt(obs: Observed, fp: str, problems: list[str], what: str) -> Decision:
    since = obs.gate_since if obs.gate_since is not None else obs.now
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
    return Decision(Kind.GATE, f"{what} waits: " + "; ".join(problems), fp, nodes=nodes)


def _voter_wait_left(obs: Observed) -> float:
    """Seconds until the members, all back, have been so for ``voter_wait``: raft makes a
    rejoined member a voter only after autopilot's stabilization time."""
    since = obs.all_back_since if obs.all_back_since is not None else obs.now
    return obs.voter_wait - (obs.now - since)


def replacement(obs: Observed, stopped: Ordered) -> Member | None:
    """The member that took over ``stopped``'s slot (Swarm's restart of it), if any yet."""
    found = [m for m in obs.members if m.slot == stopped.slot and m.task_id != stopped.task_id]
    return max(found, key=lambda m: (m.running, m.started_at or 0.0, m.task_id), default=None)


def rollout_gate(obs: Observed, fp: str, stopped: Ordered) -> Decision | None:
    """The gate after certflow asked ``stopped`` to stop; None once it is open."""
    still = next((m for m in obs.members if m.task_id == stopped.task_id and m.running), None)
    if still is not None:
        # Asked, not stopped yet: the order is on its way (or was lost: it is sent again).
        waited = obs.now - (obs.gate_since if obs.gate_since is not None else obs.now)
        problem = f"{still.where}: asked to stop {waited:.0f}s ago, still running"
        decision = _wait_or_halt(obs, fp, [problem], "vault rollout")
        return replace(decision, member=still)
    member = replacement(obs, stopped)
    if member is None:
        problems = [f"slot {stopped.slot}: stopped, Swarm has not started it again yet"]
    elif why := _problem(member, fp):
        problems = [f"{member.where}: {why}"]
    else:
        problems = []
    others = _others(obs, member, skip=stopped.task_id)
    problems += [p for p in others if not p.startswith(f"slot {stopped.slot}:")]
    if problems:
        decision = _wait_or_halt(obs, fp, problems, "vault rollout")
        if decision.kind is Kind.GATE and member is not None and member.running:
            return replace(decision, probe=_probe_now(obs, (member,)))
        return decision
    assert member is not None  # no problem means the member is there
    verdict, progress = caught_up(obs, member)
    if verdict:
        return None
    # Its node probes it at once, and while the active member's index is needed, every other
    # unsealed member's node too: leadership may have moved since their last probe (the
    # active member restarted last hands it over), so "which one is active" is not known yet.
    wanted: tuple[Member, ...] = (member,)
    if obs.catch_up is None or obs.catch_up.target is None:
        wanted += tuple(
            m for m in obs.members if m.task_id != member.task_id and m.running and not m.sealed
        )
    if verdict is False:
        # Writes were committed while it was down and it does not hold them yet: the next stop
        # could leave raft one member short of a quorum that can commit.
        decision = _wait_or_halt(
            obs, fp, [f"{member.where}: catching up with raft ({progress})"], "vault rollout"
        )
        return (
            replace(decision, probe=_probe_now(obs, wanted))
            if decision.kind is Kind.GATE
            else decision
        )
    if (left := _voter_wait_left(obs)) <= 0:
        # No index can tell (no write since it started: a quiet cluster): back for as long as
        # raft takes to count a rejoined member as a voter.
        return None
    return Decision(
        Kind.GATE,
        f"vault rollout: {member.where} is back, catching up ({progress}); {left:.0f}s more "
        "unless its raft index proves it sooner",
        fp,
        nodes=(member.where,),
        probe=_probe_now(obs, wanted),
    )


# Ask the nodes to probe at once only for this long into a gate: past it (a member that stays
# sealed, a halt), their own pace is enough and costs less (each probe runs Vault's CLI twice).
PROBE_NOW_FOR = 60.0


def _probe_now(obs: Observed, members: tuple[Member, ...]) -> tuple[Member, ...]:
    since = obs.gate_since if obs.gate_since is not None else obs.now
    return members if obs.now - since < PROBE_NOW_FOR else ()


def fresh_active(obs: Observed, member: Member) -> Member | None:
    """The active member (not ``member``) as probed after ``member``'s task started: its applied
    index then covers every write committed while ``member`` was down."""
    if member.started_at is None:
        return None
    for m in obs.members:
        if (
            m.task_id != member.task_id
            and m.running
            and m.sealed is False
            and m.active
            and m.applied is not None
            and m.checked_at is not None
            and m.checked_at >= member.started_at + obs.clock_skew
        ):
            return m
    return None


def caught_up(obs: Observed, member: Member) -> tuple[bool | None, str]:
    """Whether ``member`` (restarted, unsealed) has caught up with raft (see :class:`CatchUp`):
    True proven, False proven not yet (writes came while it was down and it lacks them), None
    no index can tell yet. Also where it is, in a few words for /health."""
    if member.active:
        return True, "it leads"  # a leader holds every committed entry
    got = obs.catch_up
    if got is None or got.task_id != member.task_id or member.applied is None:
        return None, "no raft index yet"
    if got.target is None:
        return None, f"applied index {member.applied}; the active member's not read yet"
    if member.applied >= got.target and member.applied > got.first:
        return True, f"applied index {member.applied}, active member's {got.target}"
    if got.target > got.first:
        return False, f"applied index {member.applied} of {got.target}"
    return None, f"applied index {member.applied}, no write since it started to prove it"


def newest_member(members: tuple[Member, ...]) -> Member | None:
    """The member a rolling update touched last: one not running yet, else the newest start."""
    if not members:
        return None
    starting = [m for m in members if not m.running]
    if starting:
        return min(starting, key=lambda m: m.task_id)
    return max(members, key=lambda m: (m.started_at or 0.0, m.task_id))


def gate(obs: Observed, fp: str) -> Decision:
    """Someone else's rolling update restarts one member, then Swarm waits (the stack's long
    ``delay``). It moves on only when that member is back (as for certflow's own restarts:
    :func:`rollout_gate`). Past ``member_bound`` it is reported halted, and never moved on.
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
    problems += _others(obs, newest)
    if problems:
        return _wait_or_halt(obs, fp, problems, "vault rolling update")
    if (left := _voter_wait_left(obs)) > 0:
        return Decision(
            Kind.GATE,
            f"vault rolling update: {newest.where} is back; {left:.0f}s more for it to become "
            "a raft voter",
            fp,
        )
    return Decision(Kind.ADVANCE, f"vault rolling update: {newest.where} is back; moving on", fp)


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
    """What the decision remembers between steps, for one certificate.

    Nothing here must survive a leader change: which members were asked to stop is in the
    service label. The rest only times things (how long nodes lag, how long the gate waits, when
    an order was last sent), and a new leader that starts them from zero only waits a little
    longer, or sends an order once more (which is harmless: it names one task).
    """

    fingerprint: str | None = None
    pending_since: float | None = None  # first seen waiting for nodes
    gate_task: str | None = None  # the task the gate waits on (asked to stop, or updated)
    gate_since: float | None = None  # since when it waits on it
    advanced: bool = False  # we moved someone else's update past gate_task
    sent_at: float | None = None  # the stop order for gate_task was last sent
    all_back_since: float | None = None  # every member running and unsealed since
    back_tasks: frozenset[str] = frozenset()  # the members (task IDs) all_back_since is about
    catch_up: CatchUp | None = None  # the restarted member the gate waits on, catching up


@dataclass(frozen=True, slots=True)
class Limits:
    lag_timeout: float = 300.0
    member_bound: float = 120.0
    voter_wait: float = 12.0
    resend_every: float = 10.0  # a stop order not carried out is sent again this often
    clock_skew: float = 1.0  # how far the nodes' clocks may differ


def _watched(obs: Observed) -> str | None:
    """The task the gate waits on: the one certflow asked to stop last, or the one someone
    else's rolling update replaced last."""
    if obs.update_state == "updating":
        newest = newest_member(obs.members)
        return newest.task_id if newest is not None else None
    if obs.ordered and obs.label != obs.fingerprint:
        return obs.ordered[-1].task_id
    return None


# What a pause holds back: every act on a member or on Swarm's update. Recording a rollout that
# is already done (ADOPT) restarts nothing and stays allowed.
_HELD_BY_PAUSE = frozenset({Kind.RESTART, Kind.ADVANCE})


def paused(decision: Decision, pause: str) -> Decision:
    """``decision`` under an operator's pause: no member is stopped, no stop order sent again and
    no update moved on. The memory is left as it was, so that a resume continues at the same
    member, and the stop orders already recorded (the rollout label) are never repeated."""
    if decision.kind in _HELD_BY_PAUSE:
        return Decision(
            Kind.PAUSED,
            f"{pause}; held: {decision.message}; `certflow resume` continues from here",
            fingerprint=decision.fingerprint,
            member=decision.member,
        )
    if decision.kind in {Kind.SYNC_ONLY, Kind.DONE, Kind.ADOPT}:
        return decision
    return replace(decision, message=f"{decision.message} ({pause})", resend=False)


def _catch_up(obs: Observed, known: CatchUp | None, skew: float) -> CatchUp | None:
    """The catching-up record of the member restarted last, updated with this observation."""
    if not obs.ordered or obs.label == obs.fingerprint or obs.update_state == "updating":
        return None
    member = replacement(obs, obs.ordered[-1])
    if member is None or not member.running or member.sealed is not False:
        return None
    if member.applied is None:
        return known if known is not None and known.task_id == member.task_id else None
    if known is None or known.task_id != member.task_id:
        known = CatchUp(member.task_id, member.applied)
    if known.target is None:
        active = fresh_active(replace(obs, clock_skew=skew), member)
        if active is not None and active.applied is not None:
            known = replace(known, target=active.applied)
    return known


def step(obs: Observed, memory: Memory, limits: Limits) -> tuple[Decision, Memory]:
    """One decision with its memory: the timing fields of ``obs`` (pending_since, the gate's)
    are filled from ``memory`` and ``limits`` here, and the memory for the next step comes back.
    """
    fp = obs.fingerprint
    if memory.fingerprint != fp:
        # Since when the members are all back is about them, not the certificate: a renewal
        # does not restart that clock (it would hold the first stop for a voter wait).
        memory = Memory(
            fingerprint=fp, all_back_since=memory.all_back_since, back_tasks=memory.back_tasks
        )
    waiting = fp is not None and obs.label != fp
    if waiting and memory.pending_since is None:
        memory = replace(memory, pending_since=obs.now)
    elif not waiting:
        memory = replace(memory, pending_since=None)
    all_back = (
        bool(obs.members)
        and not obs.not_back
        and all(m.running and m.sealed is False for m in obs.members)
    )
    tasks = frozenset(m.task_id for m in obs.members)
    if not all_back:
        memory = replace(memory, all_back_since=None, back_tasks=frozenset())
    elif memory.all_back_since is None or memory.back_tasks != tasks:
        # Other members than last time (a restarted one under a new task ID): its clock starts
        # now, even if no step saw it down.
        memory = replace(memory, all_back_since=obs.now, back_tasks=tasks)
    task = _watched(obs)
    if task is None:
        memory = replace(memory, gate_task=None, gate_since=None, advanced=False, sent_at=None)
    elif memory.gate_task != task:
        memory = replace(memory, gate_task=task, gate_since=obs.now, advanced=False, sent_at=None)
    memory = replace(memory, catch_up=_catch_up(obs, memory.catch_up, limits.clock_skew))
    decision = decide(
        replace(
            obs,
            catch_up=memory.catch_up,
            clock_skew=limits.clock_skew,
            gate_task=memory.gate_task,
            gate_since=memory.gate_since,
            advanced=memory.advanced,
            all_back_since=memory.all_back_since,
            member_bound=limits.member_bound,
            voter_wait=limits.voter_wait,
            pending_since=memory.pending_since,
            lag_timeout=limits.lag_timeout,
        )
    )
    if obs.paused is not None:
        return paused(decision, obs.paused), memory
    if decision.kind is Kind.RESTART and decision.member is not None:
        # The order goes out now; the gate watches this task from here.
        memory = replace(
            memory,
            gate_task=decision.member.task_id,
            gate_since=obs.now,
            advanced=False,
            sent_at=obs.now,
        )
    elif decision.kind in {Kind.GATE, Kind.HALTED} and decision.member is not None:
        due = memory.sent_at is None or obs.now - memory.sent_at >= limits.resend_every
        if due:
            decision = replace(decision, resend=True)
            memory = replace(memory, sent_at=obs.now)
    elif decision.kind is Kind.ADOPT:
        memory = Memory(
            fingerprint=fp, all_back_since=memory.all_back_since, back_tasks=memory.back_tasks
        )
    elif decision.kind is Kind.ADVANCE:
        memory = replace(memory, advanced=True)
    return decision, memory
