"""Carry out reload orders on this node (the shell of ``task_order``): restart or signal one
consumer task's container.

Orders arrive over HTTP from the leader (:meth:`LocalTaskReloader.receive`) or, on the leader's
own node, in-process (:meth:`LocalTaskReloader.act`); one lock serialises both. What this node
did is kept in memory per container, so a repeated order neither signals twice (a signal reload
must happen exactly once per certificate) nor restarts twice (it escalates to SIGKILL instead).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from shared.consumers import LabelProblem, consumer_spec
from shared.docker_engine import DockerEngine
from shared.errors import DockerError, DockerNotFound, StorageError
from shared.logs import get_logger
from shared.manifest_auth import MacKeys
from shared.swarm import ContainerInfo

from .local_members import TASK_ID_LABEL
from .stop_order import MAX_AGE, OrderRefused
from .task_order import RESTART_SIGNAL, ReloadOrder, TaskContainer, decode, judge_reload

_log = get_logger(__name__)

KILL_AFTER = 30.0  # seconds after SIGTERM before a repeated restart order sends SIGKILL
# Containers remembered at most; far above what one node runs, so only a leak would reach it.
MAX_REMEMBERED = 1024
# Every outcome reported to ``on_outcome`` (a Prometheus label set can be made from it).
OUTCOMES = (
    "signalled",  # 202: the signal was sent
    "stopped",  # 202: SIGTERM sent
    "killed",  # 202: SIGKILL sent (still running kill_after seconds after SIGTERM)
    "stopping",  # 202: SIGTERM already sent, kill_after not reached: nothing sent
    "already_signalled",  # 200: signalled for this certificate before: nothing sent
    "gone",  # 200: the task no longer runs here
    "error",  # 503: the engine or the installed pair could not be read
    "malformed",  # 400
    "no_key",  # 401
    "unauthenticated",  # 401
    "stale",  # 401
    "bad_action",  # 400
    "bad_signal",  # 400
    "not_installed",  # 409
    "not_a_consumer",  # 409: Vault, or a service not labelled for this action
)


@dataclass(slots=True)
class _Done:
    """What this node did to one container."""

    service: str
    terminated_at: float | None = None  # first SIGTERM (restart), this reloader's clock
    signalled: set[str] = field(default_factory=set)  # fingerprints signalled for (signal)


class LocalTaskReloader:
    def __init__(
        self,
        engine: DockerEngine,
        *,
        node_id: Callable[[], str],
        installed: Callable[[], str | None],
        keys: Callable[[], MacKeys | None] | MacKeys | None,
        clock: Callable[[], float] = time.time,
        kill_after: float = KILL_AFTER,
        max_age: float = MAX_AGE,
        on_outcome: Callable[[str], None] | None = None,
        refusal: Callable[[ReloadOrder], str | None] | None = None,
    ) -> None:
        # Why an order's service may not be reloaded so (:func:`consumer_refusal`), checked
        # before anything is read or sent; None: no such check.
        self._refusal = refusal
        self.engine = engine
        self.node_id = node_id
        self.installed = installed
        if keys is None or isinstance(keys, MacKeys):
            fixed = keys
            self._keys: Callable[[], MacKeys | None] = lambda: fixed
        else:
            self._keys = keys
        self.clock = clock
        self.kill_after = kill_after
        self.max_age = max_age
        self._on_outcome = on_outcome
        self._lock = threading.Lock()
        self._done: dict[str, _Done] = {}  # container ID -> what was done to it

    def receive(self, raw: bytes) -> tuple[int, str]:
        """An order as the HTTP route hands it over: (status, message). Never raises."""
        try:
            order = decode(raw, self._keys(), now=self.clock(), max_age=self.max_age)
        except OrderRefused as exc:
            return self._refused(exc, None)
        return self.act(order)

    def act(self, order: ReloadOrder) -> tuple[int, str]:
        """Carry out an authenticated order: (status, message). Safe to repeat; never raises."""
        with self._lock:
            return self._act(order)

    # -- one order, under the lock ---------------------------------------------------------------

    def _act(self, order: ReloadOrder) -> tuple[int, str]:
        node = self.node_id()
        if not node:
            # Listing with no node would find nothing and wrongly answer "already restarted".
            return self._failed(order, "this node's ID is unknown (the engine did not answer)")
        refusal = self._refusal(order) if self._refusal is not None else None
        if refusal is not None:
            return self._refused(OrderRefused("not_a_consumer", refusal, status=409), order)
        try:
            installed = self.installed()
            containers = self.engine.containers(order.service, node)
        except (DockerError, StorageError) as exc:
            return self._failed(order, f"cannot check the order: {exc}")
        self._forget_gone(order.service, containers)
        local = [TaskContainer(c.container_id, c.labels.get(TASK_ID_LABEL, "")) for c in containers]
        try:
            task = judge_reload(order, installed=installed, local=local)
        except OrderRefused as exc:
            return self._refused(exc, order)
        if task is None:
            return self._gone(order)
        # A failed send is not remembered: a repeated signal only reloads again, a lost one
        # would leave the task serving the old pair.
        try:
            if order.action == "signal":
                return self._signal(order, task.container_id)
            return self._restart(order, task.container_id)
        except DockerError as exc:
            return self._failed(order, f"cannot signal the task: {exc}")

    def _signal(self, order: ReloadOrder, cid: str) -> tuple[int, str]:
        done = self._done.get(cid)
        if done is not None and order.fingerprint in done.signalled:
            self._log_repeat(order, cid, "already_signalled")
            return self._answer(
                "already_signalled",
                200,
                f"{self._where(order)}: already signalled ({order.signal}) for this certificate",
            )
        if not self.engine.signal_container(cid, order.signal):
            return self._gone(order)
        self._remember(cid, order.service).signalled.add(order.fingerprint)
        self._log_action("consumer.task_signalled", order, cid, order.signal)
        return self._answer("signalled", 202, f"{self._where(order)}: sent {order.signal}")

    def _restart(self, order: ReloadOrder, cid: str) -> tuple[int, str]:
        # SIGTERM, then SIGKILL when the order comes again after kill_after and the container
        # still runs (a hung shutdown), as `docker stop` does. Nothing in between: some programs
        # take a second SIGTERM as "quit now".
        now = self.clock()
        done = self._done.get(cid)
        first = done.terminated_at if done is not None else None
        if first is not None and now - first <= self.kill_after:
            self._log_repeat(order, cid, "stopping")
            return self._answer(
                "stopping",
                202,
                f"{self._where(order)}: stopping since {now - first:.0f}s (SIGKILL after "
                f"{self.kill_after:.0f}s); Swarm starts it again",
            )
        signal = RESTART_SIGNAL if first is None else "SIGKILL"
        if not self.engine.signal_container(cid, signal):
            return self._gone(order)
        if first is None:
            self._remember(cid, order.service).terminated_at = now
        self._log_action("consumer.task_stopped", order, cid, signal)
        outcome = "stopped" if first is None else "killed"
        return self._answer(
            outcome, 202, f"{self._where(order)}: stopping ({signal}); Swarm starts it again"
        )

    # -- helpers --------------------------------------------------------------------------------

    def _remember(self, cid: str, service: str) -> _Done:
        done = self._done.get(cid)
        if done is None:
            done = self._done[cid] = _Done(service)
            while len(self._done) > MAX_REMEMBERED:
                del self._done[next(iter(self._done))]  # the oldest first
        return done

    def _forget_gone(self, service: str, containers: list[ContainerInfo]) -> None:
        running = {c.container_id for c in containers}
        for cid in [c for c, d in self._done.items() if d.service == service and c not in running]:
            del self._done[cid]

    @staticmethod
    def _where(order: ReloadOrder) -> str:
        return f"{order.service} unit {order.unit}: task {order.task_id[:12]}"

    def _gone(self, order: ReloadOrder) -> tuple[int, str]:
        _log.info("consumer.task_gone", **_fields(order))
        return self._answer("gone", 200, f"{self._where(order)} no longer runs here")

    def _refused(self, exc: OrderRefused, order: ReloadOrder | None) -> tuple[int, str]:
        context = _fields(order) if order is not None else {}
        _log.warning("consumer.order_refused", reason=exc.reason, error=str(exc), **context)
        return self._answer(exc.reason, exc.status, str(exc))

    def _failed(self, order: ReloadOrder, message: str) -> tuple[int, str]:
        _log.warning("consumer.order_failed", error=message, **_fields(order))
        return self._answer("error", 503, message)

    def _log_action(self, event: str, order: ReloadOrder, cid: str, signal: str) -> None:
        _log.info(event, container=cid[:12], **{**_fields(order), "signal": signal})

    def _log_repeat(self, order: ReloadOrder, cid: str, outcome: str) -> None:
        _log.info("consumer.order_repeated", outcome=outcome, container=cid[:12], **_fields(order))

    def _answer(self, outcome: str, status: int, message: str) -> tuple[int, str]:
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return status, message


def _fields(order: ReloadOrder) -> dict[str, str]:
    """What a log line says about an order (never its MAC: the order object holds none)."""
    return {
        "service": order.service,
        "task": order.task_id[:12],
        "unit": order.unit,
        "signal": order.signal,
        "fingerprint": order.fingerprint,
    }


def consumer_refusal(
    engine: DockerEngine, protected: Collection[str]
) -> Callable[[ReloadOrder], str | None]:
    """Why an order's service may not be reloaded so, or None. ``protected`` services (Vault:
    its members restart only through stop orders, behind the gate that keeps it unsealed and in
    quorum) never are. The service's labels are read where this node can (a manager) and must
    ask for this action; a worker cannot read service specs, and there the order's MAC is what
    vouches for it."""
    never = frozenset(protected)

    def refusal(order: ReloadOrder) -> str | None:
        if order.service in never:
            return f"{order.service} is never reloaded by a reload order"
        try:
            spec = consumer_spec(order.service, engine.service(order.service).labels)
        except DockerNotFound:
            return f"no service {order.service}"
        except LabelProblem as exc:
            return f"{order.service} is not a consumer certflow may reload: {exc}"
        except DockerError:
            return None  # not a manager: it cannot read the spec
        if spec.mode != order.action or (spec.mode == "signal" and spec.signal != order.signal):
            how = spec.signal if spec.mode == "signal" else spec.mode
            return f"{order.service} is labelled for {how}, not {order.action} {order.signal}"
        return None

    return refusal
