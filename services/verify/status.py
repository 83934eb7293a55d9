"""``certflow status``: the flow as it stands, from one :class:`Observation` (pure).

verify answers "does everything hold?"; status answers "where is it, and is it moving?". It
tells a rollout in progress (the gate waiting on a member that is coming back) from one that is
stuck (halted, or waiting longer than :data:`STUCK_AFTER`), shows each Vault member's role and
the leaf it serves, and whether the trust check and the manifest authentication pass on every
node, and every service labelled ``certflow.reload`` (a consumer) with what its tasks serve.
Everything comes from the facts verify already gathers, including each certflow task's
``/health`` (the leader's ``reload`` check is the gate's own account of the rollout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.verify.checks import role_of
from services.verify.consumer_checks import UNDER_WAY, issues, read_consumers, served
from services.verify.facts import CheckFacts, HealthFacts, Observation, ReplicaFacts
from services.verify.result import short
from shared.rollout import pause_from_labels

# The leader's rollout decisions that mean "moving, by itself" (coordinator.Kind values).
MOVING = frozenset({"wait", "restart", "gate", "advance", "adopt"})
# Decisions that hold the rollout while a member is not back: moving for a while, then stuck.
HOLDING = frozenset({"held", "not_back"})
STOPPED = frozenset({"halted", "lagging", "failed", "no_tasks"})
# A hold older than this is reported as stuck (the gate's own bound, DISTRIBUTOR_MEMBER_BOUND,
# is 120 s by default; a member restarted outside a rollout is back well within this).
STUCK_AFTER = 300.0
# Manifest refusals (shared.errors.AuthReason) and certificate refusals of the trust check.
TRUST_REASONS = frozenset({"untrusted"})


class State(StrEnum):
    OK = "ok"  # everything holds
    ROLLING = "rolling"  # a rollout is moving within its bounds: wait
    ATTENTION = "attention"  # something needs an operator
    PAUSED = "paused"  # an operator paused certflow (certflow pause)


EXIT_CODES = {State.OK: 0, State.ATTENTION: 1, State.ROLLING: 3, State.PAUSED: 4}


@dataclass(frozen=True, slots=True)
class TaskLine:
    service: str
    node: str
    task: str
    state: str  # ok, degraded, failing, unreachable
    since: str
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberLine:
    task: str
    node: str
    address: str
    role: str  # active, standby, sealed, not initialized, unreachable
    not_after: str = ""
    fingerprint: str = ""
    serves_published: bool | None = None
    gate: str = ""  # what its node's distributor proved: "proven" or why not
    error: str = ""


@dataclass(frozen=True, slots=True)
class Rollout:
    leader: str  # the node whose distributor coordinates
    decision: str
    message: str
    since: str
    certificate: str = ""  # the fingerprint in flight
    member: str = ""  # the member the gate is about
    state: State = State.OK


@dataclass(frozen=True, slots=True)
class NodeCopy:
    node: str
    generation: int | None
    fingerprint: str
    manifest: str  # "authenticated (key id k1)", "refused since ...: ...", "not authenticated"
    trust: str  # "passed", "refused since ...: ..."


@dataclass(frozen=True, slots=True)
class ConsumerTaskLine:
    where: str  # "slot 2 on host-b"
    serves: str  # "sha256 AA:BB:...", "not running", or why it is not known


@dataclass(frozen=True, slots=True)
class ConsumerLine:
    """A service labelled certflow.reload, as the leader's distributor reports it."""

    service: str
    mode: str
    check: str  # tls://<name>:<port>, "" when none
    state: str  # shared.consumers.State
    since: str
    message: str
    tasks: tuple[ConsumerTaskLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    reasons: tuple[str, ...]
    published: str  # the Storage Box's committed pair, or why there is none
    published_fingerprint: str
    rollout: Rollout | None
    nodes: tuple[NodeCopy, ...]
    members: tuple[MemberLine, ...]
    tasks: tuple[TaskLine, ...]
    trust_ok: bool
    manifest_ok: bool
    notes: tuple[str, ...] = field(default_factory=tuple)
    consumers: tuple[ConsumerLine, ...] = ()
    consumers_source: str = ""  # the node whose distributor reported them

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]


def _age(since: str, now: datetime) -> float | None:
    try:
        return (now - datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return None


def _task_line(h: HealthFacts) -> TaskLine:
    return TaskLine(
        service=h.service,
        node=h.node,
        task=h.task_id[:12],
        state="unreachable" if h.error else h.status,
        since=h.since,
        problems=(h.error,) if h.error else h.problems,
    )


def _leader(health: tuple[HealthFacts, ...]) -> HealthFacts | None:
    """The distributor that coordinates: the one whose ``reload`` decides more than sync_only."""
    for h in health:
        reload = h.check("reload")
        if reload is not None and reload.details.get("decision") not in (None, "sync_only"):
            return h
    return None


def _rollout(leader: HealthFacts | None, now: datetime) -> Rollout | None:
    if leader is None:
        return None
    reload = leader.check("reload")
    assert reload is not None  # _leader found it
    decision = str(reload.details.get("decision", ""))
    # How long this decision has lasted (the check's own since moves only with its status).
    since = str(reload.details.get("decision_since") or reload.since)
    if decision == "paused":
        state = State.PAUSED
    elif decision in MOVING:
        state = State.ROLLING
    elif decision in HOLDING:
        age = _age(since, now)
        state = State.ATTENTION if age is not None and age > STUCK_AFTER else State.ROLLING
    elif decision in STOPPED or reload.status == "failing":
        state = State.ATTENTION
    else:
        state = State.OK
    return Rollout(
        leader=leader.node,
        decision=decision,
        message=reload.message,
        since=since,
        certificate=str(reload.details.get("fingerprint") or ""),
        member=str(reload.details.get("member") or ""),
        state=state,
    )


def _refused(sync: CheckFacts | None, reasons: frozenset[str] | None) -> str:
    """ "refused since ...: message" when ``sync`` failed for one of ``reasons`` (None: any
    manifest refusal, recognised by its key id detail), else ""."""
    if sync is None or sync.status == "ok":
        return ""
    reason = str(sync.details.get("reason", ""))
    matched = "key_id" in sync.details if reasons is None else reason in reasons
    return f"refused since {sync.since}: {sync.message}" if matched else ""


def _node_copy(h: HealthFacts) -> NodeCopy:
    sync = h.check("sync")
    auth = h.check("manifest_auth")
    manifest = _refused(sync, None)
    if not manifest:
        if auth is None:
            manifest = "unknown (no manifest_auth check)"
        elif auth.details.get("enabled") is False:
            manifest = "not authenticated (CERTFLOW_MANIFEST_KEY_FILES unset)"
        else:
            manifest = "authenticated"
    trust = _refused(sync, TRUST_REASONS) or "passed"
    generation = h.info.get("generation")
    return NodeCopy(
        node=h.node,
        generation=generation if isinstance(generation, int) else None,
        fingerprint=str(h.info.get("fingerprint") or ""),
        manifest=manifest,
        trust=trust,
    )


def _probes(health: tuple[HealthFacts, ...]) -> dict[str, dict[str, object]]:
    """task ID -> the member probe its node's distributor published (``info.members``)."""
    found: dict[str, dict[str, object]] = {}
    for h in health:
        members = h.info.get("members")
        for member in members if isinstance(members, list) else ():
            if isinstance(member, dict) and member.get("task_id"):
                found[str(member["task_id"])] = member
    return found


def _gate_view(probe: dict[str, object] | None) -> str:
    if probe is None:
        return "not probed"
    if probe.get("serves_installed") is True and probe.get("trusted") is True:
        return "proven"
    return str(probe.get("detail") or "not proven")


def _member(r: ReplicaFacts, published: str, probe: dict[str, object] | None) -> MemberLine:
    served = r.served
    return MemberLine(
        task=r.task_id[:12],
        node=r.node,
        address=r.address,
        role=role_of(r),
        not_after=served.not_after.isoformat() if served else "",
        fingerprint=short(served.fingerprint) if served else "",
        serves_published=(served.fingerprint == published) if served and published else None,
        gate=_gate_view(probe),
        error=r.error,
    )


def summarize(obs: Observation, *, now: datetime) -> Status:
    """The whole status, and whether it is ok, rolling (wait) or needs attention (and why)."""
    attention: list[str] = []
    rolling: list[str] = []
    pub = obs.published
    published_fp = pub.cert.fingerprint if pub.cert else ""
    if pub.cert is not None:
        published = f"generation {pub.generation}, notAfter {pub.cert.not_after.isoformat()}, "
        published += f"sha256 {short(pub.cert.fingerprint)}"
    else:
        published = pub.error or pub.state or "nothing committed"
        attention.append(f"Storage Box: {published}")

    for s in obs.services:
        if not s.found:
            attention.append(f"service {s.name}: {s.error or 'not found'}")
    if obs.health_error:
        attention.append(f"certflow tasks: {obs.health_error}")

    leader = _leader(obs.health)
    rollout = _rollout(leader, now)
    if rollout is not None and rollout.state is State.ATTENTION:
        attention.append(f"rollout ({rollout.decision}) since {rollout.since}: {rollout.message}")
    moving = rollout is not None and rollout.state is State.ROLLING
    if moving and rollout is not None:
        rolling.append(f"rollout ({rollout.decision}): {rollout.message}")

    tasks = tuple(_task_line(h) for h in obs.health)
    for h, line in zip(obs.health, tasks, strict=True):
        if line.state == "ok":
            continue
        if h is leader and rollout is not None and rollout.state is State.ROLLING:
            # The gate's own waiting is the rollout in progress, already counted.
            others = [c for c in h.checks if c.status != "ok" and c.name != "reload"]
            if not others:
                continue
        if moving and line.state == "degraded" and h.service == obs.names.get("unsealer"):
            continue  # a member restarted by the rollout is sealed until unsealed: expected
        where = f"{h.service} on {h.node}"
        attention.append(f"{where}: {line.state}: {'; '.join(line.problems)}")

    probes = _probes(obs.health)
    members = tuple(_member(r, published_fp, probes.get(r.task_id)) for r in obs.replicas)
    if obs.replicas_error:
        attention.append(f"vault members: {obs.replicas_error}")
    active = [m for m in members if m.role == "active"]
    if members and len(active) != 1:
        attention.append(f"vault: {len(active)} active members (exactly one is needed)")
    for m in members:
        problem = (
            m.role not in ("active", "standby") and f"{m.role}{f' ({m.error})' if m.error else ''}"
        ) or (m.serves_published is False and "serves another certificate than published")
        if not problem:
            continue
        text = f"vault member {m.task} on {m.node}: {problem}"
        (rolling if moving else attention).append(text)

    nodes = tuple(_node_copy(h) for h in obs.health if h.service == obs.names.get("distributor"))
    for n in nodes:
        if n.manifest.startswith("refused"):
            attention.append(f"manifest on {n.node}: {n.manifest}")
        if n.trust != "passed":
            attention.append(f"trust check on {n.node}: {n.trust}")
        if published_fp and n.fingerprint and n.fingerprint != published_fp:
            text = f"{n.node} has not installed the published pair yet"
            (rolling if moving else attention).append(text)

    consumers = read_consumers(obs.health, obs.names.get("distributor", ""))
    attention += [f"consumers: {problem}" for problem in consumers.problems]
    for report in consumers.reports:
        wrong = [f"consumer {text}" for text in issues(report)]
        if report.state not in UNDER_WAY:
            attention += wrong
            continue
        # Reloading or waiting moves by itself, like the Vault rollout, until it lasts too long.
        age = _age(report.since or "", now)
        under_way = f"consumer {report.service}: {report.state.value} since {report.since or '?'}"
        shown = wrong or [f"{under_way}: {report.message}" if report.message else under_way]
        (attention if age is not None and age > STUCK_AFTER else rolling).extend(shown)

    distributor = next((s for s in obs.services if s.name == obs.names.get("distributor")), None)
    pause = pause_from_labels(distributor.labels) if distributor is not None else None
    if pause is not None:
        state = State.PAUSED
        reasons = (f"certflow is {pause.describe()}; `certflow resume` ends it", *attention)
    else:
        state = State.ATTENTION if attention else State.ROLLING if rolling else State.OK
        reasons = tuple(attention or rolling)
    return Status(
        state=state,
        reasons=reasons,
        published=published,
        published_fingerprint=published_fp,
        rollout=rollout,
        nodes=nodes,
        members=members,
        tasks=tasks,
        trust_ok=all(n.trust == "passed" for n in nodes),
        manifest_ok=not any(n.manifest.startswith("refused") for n in nodes),
        consumers=tuple(
            ConsumerLine(
                service=r.service,
                mode=r.mode,
                check=r.check,
                state=r.state.value,
                since=r.since or "",
                message=r.message,
                tasks=tuple(ConsumerTaskLine(t.where, served(t)) for t in r.tasks),
            )
            for r in consumers.reports
        ),
        consumers_source=consumers.source,
    )
