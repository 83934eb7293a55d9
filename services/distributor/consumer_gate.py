"""Whether to reload a task of a consumer now, and which: a pure function of what the leader saw.

A consumer is a Swarm service labelled ``certflow.reload`` (``shared.consumers``). Its tasks take
a new pair one at a time, through the same gate as Vault's members: a task is asked to reload
(restarted: its node stops its container and Swarm starts it again on the installed pair; or
signalled), and the next one waits until that one is back: running (Swarm counts a task running
once its healthcheck passed) and, where the consumer names a check address, serving the installed
leaf there. A task not back within the bound halts that consumer, and only that one: its other
tasks keep what they serve, and Vault and the other consumers go on.

Exactly one reload per unit (a replicated service's slot, a global service's node) per
certificate: each order is recorded in the consumer's ``certflow.reloaded`` label before it goes
out, and a unit recorded there is never ordered again for that certificate, by this leader or
the next. The same order (same task) is only sent again while that task still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from shared.consumers import ConsumerSpec, Reloaded


class Verdict(StrEnum):
    REPORTED = "reported"  # bad labels or a check name the certificate fails: never reloaded
    WATCHED = "watched"  # certflow.reload=none: shown, nothing done
    WAIT = "wait"  # not yet (nodes without the pair, a task not back, a node down)
    RELOAD = "reload"  # this task reloads now
    GATE = "gate"  # a reloaded task is not back yet (within the bound)
    HALTED = "halted"  # ... past the bound: this consumer stops here
    RECORD = "record"  # every task has the pair: record it done
    DONE = "done"  # recorded done for the installed certificate
    PAUSED = "paused"  # an operator paused certflow: no order goes out


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a consumer that Swarm wants running."""

    task_id: str
    unit: str  # its slot (replicated) or its node ID (global): one reload per unit
    where: str  # "slot 2 on host-b", for operators
    node_id: str
    running: bool
    started_at: float | None = None  # when it reached its state (Swarm's status time)
    serves: str | None = None  # leaf fingerprint served at the check address; None: not read
    detail: str = ""  # why ``serves`` is None although a check is set


@dataclass(frozen=True, slots=True)
class Observed:
    now: float
    spec: ConsumerSpec | None
    problem: str | None  # why it is reported and skipped (its labels, its check name)
    fingerprint: str | None  # the pair installed on the leader's node
    done: str | None  # its certflow.fingerprint label
    reloaded: tuple[Reloaded, ...]  # its certflow.reloaded label, for ``fingerprint``
    tasks: tuple[Task, ...]
    # node ID -> (fingerprint installed there, when): from the distributors' reports
    installed: Mapping[str, tuple[str | None, float | None]]
    down: frozenset[str] = frozenset()  # nodes that are not ready
    paused: str | None = None
    delivered: frozenset[str] = frozenset()  # (from the memory) tasks whose order was accepted
    global_mode: bool = False  # one task per node (its unit is the node)
    down_hosts: tuple[str, ...] = ()  # the down nodes, named for operators


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    message: str
    task: Task | None = None  # RELOAD: the task to reload; GATE/HALTED: the one waited on
    send: bool = False  # GATE/HALTED: send the order for ``task`` (again) now
    waits_on: str | None = None  # GATE/HALTED: the task ID the order named
    left_out: tuple[str, ...] = ()  # tasks on nodes that are down, not waited on


@dataclass(frozen=True, slots=True)
class Memory:
    """Per consumer, between steps. Only timing and deliveries: which units were ordered is in
    the service label, so a new leader that starts this from nothing waits a little longer."""

    fingerprint: str | None = None
    gate_task: str | None = None
    gate_since: float | None = None
    sent_at: float | None = None
    delivered: frozenset[str] = frozenset()  # tasks whose order a node accepted (2xx)


@dataclass(frozen=True, slots=True)
class Limits:
    bound: float = 120.0  # a reloaded task not back after this long halts the consumer
    resend_every: float = 10.0  # an order not carried out is sent again this often


def short(fingerprint: str | None) -> str:
    return fingerprint.replace(":", "")[:12].lower() if fingerprint else "nothing"


def current(tasks: tuple[Task, ...], unit: str) -> Task | None:
    """The unit's task now: a running one (the newest), else the newest that is not."""
    mine = [t for t in tasks if t.unit == unit]
    return max(mine, key=lambda t: (t.running, t.started_at or 0.0, t.task_id), default=None)


def _started_after_install(obs: Observed, task: Task, fp: str) -> bool:
    got, at = obs.installed.get(task.node_id, (None, None))
    return got == fp and at is not None and task.started_at is not None and task.started_at >= at


def lacks(obs: Observed, task: Task, fp: str) -> bool:
    """Proven not to have the pair: its check shows another leaf, or (no check) it started
    before its node installed the pair. Unknown is not proof."""
    if obs.spec is not None and obs.spec.check is not None and task.serves is not None:
        return task.serves != fp
    got, at = obs.installed.get(task.node_id, (None, None))
    return got == fp and at is not None and task.started_at is not None and task.started_at < at


def has_pair(obs: Observed, task: Task, fp: str) -> bool:
    """Whether ``task`` serves (or, without a check, was started on) the installed pair."""
    if obs.spec is not None and obs.spec.check is not None and task.serves is not None:
        return task.serves == fp
    return _started_after_install(obs, task, fp)


def back(obs: Observed, order: Reloaded, fp: str) -> tuple[bool, str]:
    """Whether the unit reloaded by ``order`` is back on the pair; else why not."""
    task = current(obs.tasks, order.unit)
    if task is None:
        return False, "no task (Swarm has not started it again yet)"
    if not task.running:
        return False, f"{task.where}: not running yet"
    assert obs.spec is not None
    check = obs.spec.check
    if task.task_id == order.task_id:
        if obs.spec.mode == "restart":
            return False, f"{task.where}: asked to restart, still running"
        if task.task_id not in obs.delivered:
            return False, f"{task.where}: signal not delivered yet"
        if check is None:
            return True, ""  # signalled, and running still: nothing more can be proven
    elif check is None:
        if _started_after_install(obs, task, fp):
            return True, ""
        return False, f"{task.where}: started before its node had the pair"
    if task.serves == fp:
        return True, ""
    if task.serves is None:
        return False, f"{task.where}: {check.address} not read: {task.detail or 'no answer'}"
    return False, f"{task.where}: serves {short(task.serves)} at {check.address}, not {short(fp)}"


def decide(obs: Observed, memory: Memory, limits: Limits) -> Decision:
    spec = obs.spec
    if spec is None or obs.problem:
        return Decision(Verdict.REPORTED, f"not reloaded: {obs.problem or 'no spec'}")
    fp = obs.fingerprint
    if fp is None:
        return Decision(Verdict.WAIT, "no pair installed on this node yet")
    if spec.mode == "none":
        return Decision(Verdict.WATCHED, "certflow.reload=none: watched, never reloaded")
    units = sorted({t.unit for t in obs.tasks}, key=_unit_order)
    now_of = {u: t for u in units if (t := current(obs.tasks, u)) is not None}
    ordered = {r.unit for r in obs.reloaded}
    # Away: on a node that is down, or waiting for one (Swarm's replacement of a lost node's
    # task that no node can take yet). Not waited on, never recorded done while away.
    down_units = {u for u, t in now_of.items() if _away(obs, t)}
    left_out = tuple(now_of[u].where for u in units if u in down_units)
    reachable = [t for u, t in now_of.items() if u not in down_units]
    if obs.done == fp:
        # Done stays done, unless the check shows a task never reloaded for this certificate
        # serving another leaf: one Swarm started later on an older pair (its node was down or
        # new, and ran it before its distributor installed the pair). That one is reloaded,
        # once. Start times are no proof here: a pair installed again moves its install time.
        stale = [
            t
            for t in reachable
            if t.running and t.unit not in ordered and t.serves is not None and lacks(obs, t, fp)
        ]
        if not stale:
            return Decision(Verdict.DONE, "every task took the installed certificate")
    live = [t for t in obs.tasks if not _away(obs, t)]
    lacking = [t.where for t in live if obs.installed.get(t.node_id, (None, None))[0] != fp]
    if lacking:
        return Decision(
            Verdict.WAIT, "waiting for the pair on the node(s) of: " + "; ".join(lacking)
        )
    for order in obs.reloaded:  # in the order they were given
        # (A global consumer's unit is its node: Swarm shuts a down node's task down, so it
        # has no task to wait on until the node is back.)
        if order.unit in down_units or order.unit in obs.down:
            continue
        ok, why = back(obs, order, fp)
        if not ok:
            return _gate(obs, memory, limits, order=order, why=why, left_out=left_out)
    not_running = [t.where for t in reachable if not t.running]
    if not_running:
        return Decision(
            Verdict.WAIT,
            "no reload while task(s) are not running (one more down could leave it without a "
            "task): " + "; ".join(not_running),
            left_out=left_out,
        )
    todo = [t for t in reachable if t.unit not in ordered and not has_pair(obs, t, fp)]
    if todo:
        task = todo[0]
        how = f"signal {spec.signal}" if spec.mode == "signal" else "restart"
        decision = Decision(Verdict.RELOAD, f"{task.where}: {how} onto {short(fp)}", task=task)
        if obs.paused is not None:
            return Decision(Verdict.PAUSED, f"{obs.paused}; held: {decision.message}")
        return decision
    if left_out:
        return Decision(
            Verdict.WAIT,
            "every reachable task has the pair; waiting for node(s) that are down: "
            + "; ".join(left_out),
            left_out=left_out,
        )
    if obs.global_mode and obs.down_hosts:
        # Swarm shut the task of a down node down; the node gets one again when it is back.
        return Decision(
            Verdict.WAIT,
            "every running task has the pair; waiting for node(s) that are down, each to run "
            "its task again: " + "; ".join(obs.down_hosts),
            left_out=obs.down_hosts,
        )
    if not units:
        # Scaled to 0: nothing serves the old pair, and a task started later reads this one.
        return Decision(Verdict.RECORD, "no task running: nothing to reload; recording it")
    return Decision(Verdict.RECORD, "every task has the installed certificate; recording it")


def _away(obs: Observed, task: Task) -> bool:
    return task.node_id in obs.down or (not task.running and not task.node_id)


def _unit_order(unit: str) -> tuple[int, str]:
    return (int(unit), "") if unit.isdigit() else (1 << 30, unit)


def _gate(
    obs: Observed,
    memory: Memory,
    limits: Limits,
    *,
    order: Reloaded,
    why: str,
    left_out: tuple[str, ...],
) -> Decision:
    since = memory.gate_since if memory.gate_task == order.task_id else None
    waited = obs.now - since if since is not None else 0.0
    ordered_task = next((t for t in obs.tasks if t.task_id == order.task_id), None)
    assert obs.spec is not None
    # The same order again, for the same task, while it is not carried out: a restart whose
    # task still runs, a signal not yet accepted. Never for a new task: that is a second reload.
    pending = (
        ordered_task is not None
        and ordered_task.running
        and (obs.spec.mode == "restart" or order.task_id not in obs.delivered)
    )
    due = pending and (
        memory.gate_task != order.task_id
        or memory.sent_at is None
        or obs.now - memory.sent_at >= limits.resend_every
    )
    if obs.paused is not None:
        due = False
    if waited > limits.bound:
        return Decision(
            Verdict.HALTED,
            f"reload halted for {waited:.0f}s: {why}; its other tasks keep what they serve, and "
            "it goes on by itself once this is fixed",
            task=ordered_task,
            send=due,
            waits_on=order.task_id,
            left_out=left_out,
        )
    return Decision(
        Verdict.GATE,
        f"reloading: {why} ({waited:.0f}s)",
        task=ordered_task,
        send=due,
        waits_on=order.task_id,
        left_out=left_out,
    )


def step(obs: Observed, memory: Memory, limits: Limits) -> tuple[Decision, Memory]:
    """One decision and the memory for the next step of the same consumer."""
    if memory.fingerprint != obs.fingerprint:
        memory = Memory(fingerprint=obs.fingerprint)
    decision = decide(replace(obs, delivered=memory.delivered), memory, limits)
    if decision.verdict is Verdict.RELOAD and decision.task is not None:
        memory = replace(
            memory, gate_task=decision.task.task_id, gate_since=obs.now, sent_at=obs.now
        )
    elif decision.verdict in {Verdict.GATE, Verdict.HALTED}:
        watched = decision.waits_on
        if memory.gate_task != watched:
            memory = replace(memory, gate_task=watched, gate_since=obs.now, sent_at=None)
        if decision.send:
            memory = replace(memory, sent_at=obs.now)
    elif decision.verdict in {Verdict.DONE, Verdict.RECORD}:
        memory = replace(memory, gate_task=None, gate_since=None, sent_at=None)
    return decision, memory


def accepted(memory: Memory, task_id: str) -> Memory:
    """The memory after a node accepted the order for ``task_id``."""
    return replace(memory, delivered=memory.delivered | {task_id})
