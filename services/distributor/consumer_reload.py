"""The leader's pass over the consumers: observe each labelled service, ask the consumer gate,
act on it (record, order a reload, record done), and report (effect shell of consumer_gate).

Each consumer is stepped on its own, and a failure of one (Docker, its check, its node) is
reported for that one only: Vault's rollout and the other consumers never wait on it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.certs import name_covered, read_leaf
from shared.consumers import (
    DONE_LABEL,
    RELOAD_LABEL,
    RELOADED_LABEL,
    Check,
    ConsumerReport,
    ConsumerSpec,
    ConsumerTask,
    LabelProblem,
    Reloaded,
    State,
    consumer_spec,
    reloaded_from_label,
    reloaded_label,
)
from shared.docker_engine import DockerEngine, engine_time
from shared.errors import CertificateInvalid, DockerError, DockerNotFound
from shared.logs import get_logger
from shared.manifest_auth import MacKeys
from shared.rollout import pause_from_labels
from shared.status import iso
from shared.swarm import NodeInfo, ServiceState, SpecEdit, TaskInfo
from shared.trust import TrustBundle, verify_chain

from .consumer_check import check_pairs
from .consumer_gate import Decision, Limits, Memory, Observed, Task, Verdict, accepted, step
from .metrics import DistributorMetrics
from .peers import PeerDirectory
from .task_order import PATH, ReloadOrder, encode

_log = get_logger(__name__)

# Carries out a reload order on this node (the task is local): HTTP status and message.
LocalOrder = Callable[[ReloadOrder], tuple[int, str]]

# Seconds before a task seen serving the installed leaf is checked again (a task not serving it
# yet, or not read, is checked on every pass: the gate waits on it).
RECHECK = 60.0


@dataclass(frozen=True, slots=True)
class _Seen:
    state: ServiceState
    spec: ConsumerSpec | None
    problem: str | None
    tasks: list[TaskInfo]
    error: str = ""  # its tasks could not be listed


@dataclass(frozen=True, slots=True)
class _Checked:
    at: float
    result: tuple[str | None, str]  # (fingerprint served, why not read)


STATE_OF = {
    Verdict.REPORTED: State.REPORTED,
    Verdict.WATCHED: State.WATCHED,
    Verdict.WAIT: State.WAITING,
    Verdict.RELOAD: State.RELOADING,
    Verdict.GATE: State.RELOADING,
    Verdict.HALTED: State.HALTED,
    Verdict.RECORD: State.DONE,
    Verdict.DONE: State.DONE,
    Verdict.PAUSED: State.PAUSED,
}


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    bound: float = 120.0
    resend_every: float = 10.0
    check_timeout: float = 3.0


class ConsumerCoordinator:
    """Steps every consumer on the Swarm leader; ``reports`` is what /health shows."""

    def __init__(
        self,
        engine: DockerEngine,
        *,
        peers: PeerDirectory,
        keys: MacKeys | None,
        local_order: LocalOrder,
        node_id: Callable[[], str],
        fullchain: Callable[[], bytes | None],
        metrics: DistributorMetrics | None = None,
        trust: TrustBundle | None = None,
        own_service: str | None = None,
        settings: ConsumerSettings | None = None,
        clock: Callable[[], float] = time.time,
        leader: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.peers = peers
        self.keys = keys
        self.local_order = local_order
        self._node_id = node_id
        self._fullchain = fullchain
        self.metrics = metrics or DistributorMetrics()
        self.trust = trust
        self.own_service = own_service
        self.settings = settings or ConsumerSettings()
        self.limits = Limits(bound=self.settings.bound, resend_every=self.settings.resend_every)
        self.clock = clock
        self._leader = leader or engine.is_leader
        self._memory: dict[str, Memory] = {}
        self._since: dict[str, tuple[State, str | None]] = {}
        self._logged: dict[str, tuple[Verdict, str | None]] = {}
        self._trust_cache: dict[tuple[str, str], str | None] = {}
        self._checked: dict[str, _Checked] = {}  # task ID -> its last check
        self._answers: dict[str, tuple[int, str]] = {}  # task ID -> its node's last answer
        self.reports: list[ConsumerReport] = []

    @property
    def busy(self) -> bool:
        """A reload is in flight: the next pass should come at the gate's pace."""
        return any(r.state is State.RELOADING for r in self.reports)

    def step(self, fingerprint: str | None) -> list[ConsumerReport]:
        """One pass over every consumer. Raises DockerError when the services cannot be listed."""
        if not self._leader():
            self._forget_all()
            return []
        services = sorted(self.engine.labelled_services(RELOAD_LABEL), key=lambda s: s.name)
        if not services:
            self._forget_all()
            return []
        installed: dict[str, tuple[str | None, float | None]] = {}
        if fingerprint is not None:
            survey = self.peers.survey()
            for node, info in survey.reports.items():
                at = engine_time(info.installed_at)
                installed[node] = (info.fingerprint, at.timestamp() if at else None)
        nodes = self.engine.nodes()
        paused = self._pause()
        seen = [self._read(s, fingerprint) for s in services]
        checked = self._check(seen, fingerprint)
        reports = [
            self._one(
                v, fingerprint, installed=installed, nodes=nodes, paused=paused, checked=checked
            )
            for v in seen
        ]
        names = {r.service for r in reports}
        for gone in (set(self._memory) | set(self._since)) - names:
            self._forget(gone)
        self.reports = reports
        return reports

    # -- one consumer -----------------------------------------------------------------------

    def _read(self, state: ServiceState, fingerprint: str | None) -> _Seen:
        """A consumer's spec, the problem that keeps it from being reloaded, and its tasks."""
        spec: ConsumerSpec | None = None
        try:
            spec = consumer_spec(state.name, state.labels)
            problem = _policy_problem(spec, state) or self._trust_problem(spec, fingerprint)
        except LabelProblem as exc:
            problem = str(exc)
        try:
            tasks = self.engine.tasks(state.name, running_only=False)
        except DockerNotFound:
            tasks = []  # removed since it was listed: gone next pass
        except DockerError as exc:
            return _Seen(state, spec, problem, [], f"docker: {exc}")
        return _Seen(state, spec, problem, tasks)

    def _check(self, seen: list[_Seen], fingerprint: str | None) -> dict[str, _Checked]:
        """What every running task of every consumer with a check serves, all at once (so one
        address that hangs costs one timeout a pass, not one per consumer). A task last seen
        serving the installed leaf is asked again only every RECHECK seconds."""
        now = self.clock()
        pairs: list[tuple[TaskInfo, Check]] = []
        present: set[str] = set()
        for view in seen:
            check = view.spec.check if view.spec is not None else None
            if check is None or view.problem is not None:
                continue
            for task in view.tasks:
                if task.state != "running":
                    continue
                present.add(task.task_id)
                last = self._checked.get(task.task_id)
                fresh = last is not None and now - last.at < RECHECK
                if not (fresh and last is not None and last.result[0] == fingerprint):
                    pairs.append((task, check))
        for task_id, result in check_pairs(pairs, timeout=self.settings.check_timeout).items():
            self._checked[task_id] = _Checked(now, result)
        self._checked = {k: v for k, v in self._checked.items() if k in present}
        return self._checked

    def _one(
        self,
        view: _Seen,
        fingerprint: str | None,
        *,
        installed: Mapping[str, tuple[str | None, float | None]],
        nodes: Mapping[str, NodeInfo],
        paused: str | None,
        checked: Mapping[str, _Checked],
    ) -> ConsumerReport:
        state, spec, problem = view.state, view.spec, view.problem
        name = state.name
        if view.error:
            return self._report(
                name,
                spec,
                fingerprint,
                state=State.WAITING,
                message=view.error,
                tasks=(),
                reloaded=(),
            )
        results = {k: v.result for k, v in checked.items()}
        tasks = tuple(_task(t, nodes, results) for t in view.tasks)
        observed = Observed(
            now=self.clock(),
            spec=spec,
            problem=problem,
            fingerprint=fingerprint,
            done=state.labels.get(DONE_LABEL),
            reloaded=reloaded_from_label(state.labels.get(RELOADED_LABEL), fingerprint),
            tasks=tasks,
            installed=installed,
            down=frozenset(n for n, info in nodes.items() if info.state != "ready"),
            paused=paused,
            global_mode=state.mode == "global",
            down_hosts=tuple(
                sorted(info.hostname or n for n, info in nodes.items() if info.state != "ready")
            ),
        )
        decision, memory = step(observed, self._memory.get(name, Memory()), self.limits)
        if fingerprint is not None and spec is not None:
            try:
                memory, decision = self._act(state, spec, fingerprint, decision, memory)
            except DockerError as exc:
                # Its label could not be written (nothing was sent): this consumer waits, and
                # the pass goes on to the others. Tried again next pass.
                self._memory[name] = memory
                _log.warning("consumer.record_failed", service=name, error=str(exc))
                return self._report(
                    name,
                    spec,
                    fingerprint,
                    state=State.WAITING,
                    message=f"docker: {exc}",
                    tasks=tasks,
                    reloaded=observed.reloaded,
                )
        self._memory[name] = memory
        self._log(name, decision)
        message = decision.message
        answer = self._answers.get(decision.waits_on or "")
        if decision.verdict in {Verdict.GATE, Verdict.HALTED} and answer is not None:
            status, said = answer
            if not 200 <= status < 300:
                # Why its order was not carried out, in the operator's words.
                heard = f"its node answered {status}" if status else "its node was not reached"
                message = f"{message} ({heard}: {said})"
        return self._report(
            name,
            spec,
            fingerprint,
            state=STATE_OF[decision.verdict],
            message=message,
            tasks=tasks,
            reloaded=observed.reloaded,
        )

    def _act(
        self,
        state: ServiceState,
        spec: ConsumerSpec,
        fingerprint: str,
        decision: Decision,
        memory: Memory,
    ) -> tuple[Memory, Decision]:
        task = decision.task
        if decision.verdict is Verdict.RELOAD and task is not None:
            recorded = self._record_reload(state, fingerprint, Reloaded(task.unit, task.task_id))
            if recorded is None:
                # Another order for this unit, or done meanwhile: nothing of ours to follow.
                return Memory(fingerprint=fingerprint), decision
            if recorded:
                self.metrics.consumer_reloads.labels(consumer=spec.service, action=spec.mode).inc()
            memory = self._send(spec, fingerprint, task, memory)
        elif decision.send and task is not None:
            memory = self._send(spec, fingerprint, task, memory, again=True)
        elif decision.verdict is Verdict.RECORD:
            self._record_done(state, fingerprint)
        return memory, decision

    def _send(
        self,
        spec: ConsumerSpec,
        fingerprint: str,
        task: Task,
        memory: Memory,
        *,
        again: bool = False,
    ) -> Memory:
        order = ReloadOrder(
            service=spec.service,
            task_id=task.task_id,
            unit=task.unit,
            action=spec.mode,
            signal=spec.signal if spec.mode == "signal" else "SIGTERM",
            fingerprint=fingerprint,
            issued_at=self.clock(),
        )
        try:
            local = task.node_id == self._node_id()
        except DockerError:
            local = False
        if local:
            status, message = self.local_order(order)
        elif self.keys is None:
            status, message = 0, "no manifest key to sign the order with"
        else:
            status, message = self.peers.post(task.node_id, PATH, encode(order, self.keys))
        ok = 200 <= status < 300
        self._answers[task.task_id] = (status, message)
        if len(self._answers) > 256:  # only the last answers matter
            self._answers = dict(list(self._answers.items())[-128:])
        (_log.info if ok else _log.warning)(
            "consumer.reload_ordered",
            service=spec.service,
            task=task.task_id[:12],
            where=task.where,
            action=spec.mode,
            again=again,
            status=status,
            answer=message,
        )
        return accepted(memory, task.task_id) if ok else memory

    def _record_reload(self, state: ServiceState, fingerprint: str, item: Reloaded) -> bool | None:
        """Write ``item`` into RELOADED_LABEL before its order goes out (compare-and-swap). True:
        recorded by this write; False: the same order was recorded already; None: the unit had
        another order for this certificate, or the consumer is recorded done (send nothing)."""
        verdict: list[bool | None] = []

        def edit_for(current: ServiceState) -> SpecEdit | None:
            verdict.clear()
            if current.labels.get(DONE_LABEL) == fingerprint:
                verdict.append(None)
                return None
            items = reloaded_from_label(current.labels.get(RELOADED_LABEL), fingerprint)
            same = [r for r in items if r.unit == item.unit]
            if same:
                verdict.append(False if same == [item] else None)
                return None
            verdict.append(True)
            return SpecEdit(labels={RELOADED_LABEL: reloaded_label(fingerprint, (*items, item))})

        outcome = self.engine.update_service(
            state.name, edit_for, what="record consumer reload", observed=state, attempts=6
        )
        self.metrics.update_conflicts.inc(outcome.conflicts)
        return verdict[0] if verdict else None

    def _record_done(self, state: ServiceState, fingerprint: str) -> None:
        def edit_for(current: ServiceState) -> SpecEdit | None:
            if current.labels.get(DONE_LABEL) == fingerprint:
                return None
            return SpecEdit(labels={DONE_LABEL: fingerprint})

        outcome = self.engine.update_service(
            state.name, edit_for, what="record consumer done", observed=state, attempts=6
        )
        self.metrics.update_conflicts.inc(outcome.conflicts)

    # -- checks before any reload -----------------------------------------------------------

    def _trust_problem(self, spec: ConsumerSpec, fingerprint: str | None) -> str | None:
        """Why the installed certificate would fail this consumer's check address (its clients
        would refuse it there), or None. Such a consumer is reported and never reloaded."""
        check = spec.check
        if check is None or fingerprint is None:
            return None
        # By address, not name: the verdict's message names the address (name and port).
        key = (fingerprint, check.address)
        if key not in self._trust_cache:
            chain = self._fullchain()
            if chain is None:
                return None  # not readable now: judged again next pass, not cached as trusted
            self._trust_cache = {k: v for k, v in self._trust_cache.items() if k[0] == fingerprint}
            self._trust_cache[key] = self._judge_trust(chain, check.name, check.address)
        return self._trust_cache[key]

    def _judge_trust(self, chain: bytes, name: str, address: str) -> str | None:
        try:
            if self.trust is not None:
                verify_chain(chain, self.trust, name=name, now=datetime.now(UTC))
            else:
                leaf = read_leaf(chain)
                if not name_covered(name, leaf.sans):
                    return (
                        f"check address {address} fails the trust check: the installed "
                        f"certificate is not valid for {name} (its names: {', '.join(leaf.sans)});"
                        " not reloaded"
                    )
        except CertificateInvalid as exc:
            return f"check address {address} fails the trust check: {exc}; not reloaded"
        return None

    # -- reporting --------------------------------------------------------------------------

    def _pause(self) -> str | None:
        if self.own_service is None:
            return None
        try:
            pause = pause_from_labels(self.engine.service(self.own_service).labels)
        except DockerNotFound:
            return None
        return pause.describe() if pause is not None else None

    def _report(
        self,
        name: str,
        spec: ConsumerSpec | None,
        fingerprint: str | None,
        *,
        state: State,
        message: str,
        tasks: tuple[Task, ...],
        reloaded: tuple[Reloaded, ...],
    ) -> ConsumerReport:
        known = self._since.get(name)
        if known is None or known[0] is not state:
            known = (state, iso(self.clock()))
            self._since[name] = known
        report = ConsumerReport(
            service=name,
            mode=spec.mode if spec else "",
            signal=spec.signal if spec and spec.mode == "signal" else "",
            check=spec.check.address if spec and spec.check else "",
            state=state,
            message=message,
            since=known[1],
            fingerprint=fingerprint,
            reloads=len(reloaded),
            tasks=[
                ConsumerTask(
                    where=t.where,
                    task_id=t.task_id,
                    running=t.running,
                    serves=t.serves,
                    detail=t.detail,
                )
                for t in sorted(tasks, key=lambda t: (t.unit, not t.running, t.task_id))
            ],
        )
        for each in State:
            self.metrics.consumer_state.labels(consumer=name, state=each.value).set(
                1 if each is state else 0
            )
        self.metrics.consumer_serving_old.labels(consumer=name).set(len(report.serves_older))
        return report

    def _log(self, name: str, decision: Decision) -> None:
        task = decision.task.task_id if decision.task else None
        key = (decision.verdict, decision.waits_on or task)
        if self._logged.get(name) == key:
            return  # one line per change, not one per pass
        self._logged[name] = key
        log = _log.error if decision.verdict in {Verdict.HALTED, Verdict.REPORTED} else _log.info
        log(
            "consumer.reload",
            service=name,
            decision=decision.verdict.value,
            message=decision.message,
        )

    def _forget(self, name: str) -> None:
        self._memory.pop(name, None)
        self._since.pop(name, None)
        self._logged.pop(name, None)
        for each in State:
            with contextlib.suppress(KeyError):  # never reported
                self.metrics.consumer_state.remove(name, each.value)
        with contextlib.suppress(KeyError):
            self.metrics.consumer_serving_old.remove(name)

    def _forget_all(self) -> None:
        for name in set(self._memory) | set(self._since):
            self._forget(name)
        self.reports = []


def _policy_problem(spec: ConsumerSpec, state: ServiceState) -> str | None:
    """Why a restart would lose the consumer's task: a container stopped with SIGTERM often
    exits 0, and only the restart condition ``any`` makes Swarm start it again."""
    if spec.mode != "restart" or state.restart_condition == "any":
        return None
    return (
        f"certflow.reload=restart needs the restart policy condition 'any' (it is "
        f"'{state.restart_condition}'): a task stopped for its reload would not be started "
        "again; not reloaded"
    )


def _task(
    raw: TaskInfo, nodes: Mapping[str, NodeInfo], checked: Mapping[str, tuple[str | None, str]]
) -> Task:
    info = nodes.get(raw.node_id)
    host = info.hostname if info and info.hostname else (raw.node_id or "no node")
    unit = str(raw.slot) if raw.slot is not None else raw.node_id
    where = f"slot {raw.slot} on {host}" if raw.slot is not None else host
    serves, detail = checked.get(raw.task_id, (None, ""))
    return Task(
        task_id=raw.task_id,
        unit=unit,
        where=where,
        node_id=raw.node_id,
        running=raw.state == "running",
        started_at=raw.started_at.timestamp() if raw.started_at else None,
        serves=serves,
        detail=detail or ("" if raw.state == "running" else raw.state),
    )
