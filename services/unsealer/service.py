"""The unsealer loop: discover replicas, observe each, let the machine decide, act, report.

One cycle visits every replica in parallel (a slow or dead replica must not delay the others).
Inside a cycle a replica is driven to the end of its attempt at once (submit, read the reply,
decide again), so a replica that answers sealed is unsealed within the same cycle. The key file
is read at most once per cycle and only when some replica needs a key; the keys are dropped when
the cycle ends.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from services.unsealer.discovery import Discovery, Replica
from services.unsealer.keys import KeyFile, KeyFileError, UnsealKeys
from services.unsealer.machine import (
    Context,
    Kind,
    Memory,
    SealStatus,
    after_rejection,
    after_reset,
    after_submit,
    decide,
    sealed_too_long,
)
from services.unsealer.metrics import UnsealerMetrics
from services.unsealer.settings import UnsealerSettings
from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.errors import KeyRejected, VaultError, VaultUnreachable
from shared.health import HealthRegistry, Status
from shared.logs import get_logger
from shared.retry import backoff_delay

_log = get_logger(__name__)
ClientFactory = Callable[[str], VaultClient]


@dataclass
class ReplicaState:
    replica: Replica
    memory: Memory
    client: VaultClient | None = None
    status: SealStatus | None = None
    last_seen: float | None = None
    last_error: str = ""
    problem_since: float | None = None  # unreachable or uninitialized since
    reported: str = ""  # the last logged condition, to log transitions only
    decision: str = ""

    @property
    def unsealed(self) -> bool:
        return self.status is not None and self.status.initialized and not self.status.sealed


@dataclass(frozen=True)
class CycleResult:
    replicas: int
    unsealed: int
    busy: bool  # something is sealed, changing or unreachable: poll fast

    @property
    def all_unsealed(self) -> bool:
        return self.replicas > 0 and self.unsealed == self.replicas


class _CycleKeys:
    """The key file, read at most once per cycle, on first need, shared by the worker threads."""

    def __init__(self, key_file: KeyFile) -> None:
        self._file = key_file
        self._lock = threading.Lock()
        self._loaded = False
        self.keys: UnsealKeys | None = None
        self.error = ""

    def get(self) -> UnsealKeys | None:
        with self._lock:
            if not self._loaded:
                self._loaded = True
                try:
                    self.keys = self._file.read()
                except KeyFileError as exc:
                    self.error = str(exc)
            return self.keys


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class Unsealer:
    def __init__(
        self,
        settings: UnsealerSettings,
        *,
        health: HealthRegistry,
        metrics: UnsealerMetrics,
        discovery: Discovery | None = None,
        key_file: KeyFile | None = None,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.health = health
        self.metrics = metrics
        self.clock = clock
        self.discovery = discovery or Discovery(
            service=settings.vault_service,
            port=settings.vault_port,
            network=settings.vault_network,
            static=settings.vault_addrs,
            use_docker=settings.docker_discovery,
            dns_name=settings.vault_dns,
        )
        self.key_file = key_file or KeyFile(settings.key_file)
        tls = TlsConfig(settings.ca_file, settings.tls_server_name, settings.skip_verify)
        context = tls.context()  # built once: loading the CA bundle per replica is wasted work
        self._client_factory = client_factory or (
            lambda address: VaultClient(
                address,
                tls,
                connect_timeout=settings.connect_timeout,
                request_timeout=settings.request_timeout,
                context=context,
            )
        )
        self._states: dict[str, ReplicaState] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="replica")
        self._last_fingerprint: str | None = None
        self._last_key_error = ""
        self._discovery_source = ""

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for state in self._states.values():
            if state.client is not None:
                state.client.close()

    # -- the cycle -------------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        found = self.discovery.discover()
        if found.source != self._discovery_source:
            _log.info("discovery.source", source=found.source, problem=found.problem or None)
            self._discovery_source = found.source
        if found.replicas:
            self.health.report(
                "discovery",
                Status.OK,
                f"{len(found.replicas)} replica(s) via {found.source}",
                source=found.source,
                note=found.problem or None,
            )
        else:
            self.health.report(
                "discovery",
                Status.DEGRADED,
                f"no Vault replica found via {found.source}"
                + (f" ({found.problem})" if found.problem else ""),
                source=found.source,
            )
        self._sync_replicas(found.replicas)
        keys = _CycleKeys(self.key_file)
        states = list(self._states.values())
        # copy_context: worker threads log with the service/node fields bound in the main thread
        contexts = [contextvars.copy_context() for _ in states]
        results = list(self._pool.map(lambda c, s: c.run(self._visit, s, keys), contexts, states))
        self._report_keys(keys)
        now = self.clock()
        self.metrics.replicas.set(len(states))
        self.metrics.last_cycle.set(now)
        unsealed = sum(1 for s in states if s.unsealed)
        busy = any(results) or not states or unsealed < len(states)
        return CycleResult(replicas=len(states), unsealed=unsealed, busy=busy)

    def _sync_replicas(self, replicas: list[Replica]) -> None:
        wanted = {r.address: r for r in replicas}
        for address in list(self._states):
            if address not in wanted:
                state = self._states.pop(address)
                if state.client is not None:
                    state.client.close()
                self.health.remove(f"vault:{address}")
                self.metrics.forget(address)
                _log.info("replica.gone", replica=address, task=state.replica.task_id or None)
        for address, replica in wanted.items():
            known = self._states.get(address)
            if known is None:
                self._states[address] = ReplicaState(replica, Memory())
                _log.info(
                    "replica.found",
                    replica=address,
                    task=replica.task_id or None,
                    task_node=replica.node_id or None,
                )
            else:
                known.replica = replica  # a new task may reuse an address

    def _report_keys(self, keys: _CycleKeys) -> None:
        if keys.error:
            if keys.error != self._last_key_error:
                _log.error("keys.unusable", error=keys.error)
                self._last_key_error = keys.error
            self.health.report("keys", Status.FAILING, keys.error, path=str(self.key_file.path))
            return
        if keys.keys is None:
            return  # not read this cycle: nothing new to say
        self._last_key_error = ""
        if keys.keys.fingerprint != self._last_fingerprint:
            if self._last_fingerprint is not None:  # the start-up check already warned once
                _log.info("keys.changed", count=len(keys.keys.keys))
                loose = self.key_file.loose_permissions()
                if loose:
                    _log.warning(
                        "keys.readable_by_others", path=str(self.key_file.path), mode=loose
                    )
            self._last_fingerprint = keys.keys.fingerprint
        self.health.report(
            "keys",
            Status.OK,
            f"{len(keys.keys.keys)} key(s) readable",
            path=str(self.key_file.path),
        )

    # -- one replica -----------------------------------------------------------------------
    def _visit(self, state: ReplicaState, keys: _CycleKeys) -> bool:
        """Observe and drive one replica. Returns True when it needs fast polling."""
        address = state.replica.address
        busy = True
        try:
            if state.client is None:
                state.client = self._client_factory(address)
            status = state.client.seal_status()
            self._seen(state, status)
            busy = self._drive(state, status, keys)
        except VaultError as exc:
            self._failed(state, exc)
        self._publish(state)
        return busy

    def _drive(self, state: ReplicaState, status: SealStatus, keys: _CycleKeys) -> bool:
        assert state.client is not None
        address = state.replica.address
        was_sealed = status.sealed
        # Enough steps for a full attempt, a reset and a fresh attempt; then wait for next cycle.
        for _ in range(2 * max(status.t, 1) + 6):
            loaded = keys.get() if status.initialized and status.sealed else None
            ctx = Context(
                now=self.clock(),
                key_count=len(loaded.keys) if loaded else 0,
                fingerprint=loaded.fingerprint if loaded else None,
                stall_timeout=self.settings.stall_timeout,
            )
            decision = decide(status, state.memory, ctx)
            state.memory = decision.memory
            state.decision = decision.reason
            if decision.kind is Kind.SUBMIT and loaded is not None:
                if decision.reason == "join attempt":
                    _log.info("unseal.joining", replica=address, progress=status.progress)
                try:
                    reply = state.client.submit_key(loaded.keys[decision.index])
                except KeyRejected as exc:
                    delay = backoff_delay(
                        state.memory.rejections + 1,
                        initial=self.settings.backoff_initial,
                        maximum=self.settings.backoff_max,
                    )
                    state.memory, ours = after_rejection(
                        state.memory, now=self.clock(), fingerprint=ctx.fingerprint, delay=delay
                    )
                    if not ours:
                        _log.info("unseal.joined_attempt_failed", replica=address, error=str(exc))
                        status = state.client.seal_status()
                        self._seen(state, status)
                        continue
                    state.last_error = f"key rejected: {exc}"
                    self.metrics.rejections.labels(address).inc()
                    _log.error(
                        "unseal.key_rejected",
                        replica=address,
                        error=str(exc),
                        rejections=state.memory.rejections,
                        retry_in_s=round(delay, 2),
                    )
                    return True
                self.metrics.submissions.labels(address).inc()
                state.memory = after_submit(state.memory, decision.index, reply)
                status = reply
                self._seen(state, status)
                if not reply.sealed:
                    self.metrics.unseals.labels(address).inc()
                continue
            if decision.kind is Kind.RESET:
                _log.warning(
                    "unseal.reset_stalled",
                    replica=address,
                    progress=status.progress,
                    stalled_s=self.settings.stall_timeout,
                )
                status = state.client.reset()
                self.metrics.resets.labels(address).inc()
                state.memory = after_reset(state.memory)
                self._seen(state, status)
                continue
            break
        if was_sealed and status.initialized and not status.sealed:
            state.last_error = ""
            _log.info("unseal.succeeded", replica=address, task=state.replica.task_id or None)
        return not (status.initialized and not status.sealed)

    def _seen(self, state: ReplicaState, status: SealStatus) -> None:
        state.status = status
        state.last_seen = self.clock()
        condition = (
            "uninitialized"
            if not status.initialized
            else ("sealed" if status.sealed else "unsealed")
        )
        if condition != state.reported:
            if condition == "uninitialized":
                _log.warning(
                    "replica.uninitialized",
                    replica=state.replica.address,
                    hint="run certflow vault-bootstrap; the unsealer never initializes",
                )
            elif condition == "sealed":
                _log.info(
                    "replica.sealed",
                    replica=state.replica.address,
                    t=status.t,
                    n=status.n,
                    progress=status.progress,
                )
            state.reported = condition
        if status.initialized:
            state.problem_since = None
        elif state.problem_since is None:
            state.problem_since = state.last_seen

    def _failed(self, state: ReplicaState, exc: VaultError) -> None:
        state.last_error = str(exc)
        self.metrics.errors.labels(state.replica.address).inc()
        if isinstance(exc, VaultUnreachable):
            if state.client is not None:
                state.client.close()
                state.client = None
            state.status = None
        if state.problem_since is None:
            state.problem_since = self.clock()
        if state.reported != "unreachable":
            _log.warning("replica.unreachable", replica=state.replica.address, error=str(exc))
            state.reported = "unreachable"

    # -- reporting -------------------------------------------------------------------------
    def _publish(self, state: ReplicaState) -> None:
        now = self.clock()
        address = state.replica.address
        status, memory = state.status, state.memory
        alert = self.settings.sealed_alert
        details = {
            "address": address,
            "task": state.replica.task_id or None,
            "node": state.replica.node_id or None,
            "initialized": status.initialized if status else None,
            "sealed": status.sealed if status else None,
            "t": status.t if status else None,
            "n": status.n if status else None,
            "progress": status.progress if status else None,
            "version": status.version if status else None,
            "last_seen": _iso(state.last_seen),
            "last_error": state.last_error or None,
            "sealed_since": _iso(memory.sealed_since),
            "key_rejections": memory.rejections,
            "next_attempt": _iso(memory.retry_at) if memory.rejections else None,
        }
        long_problem = state.problem_since is not None and now - state.problem_since >= alert
        if status is None:
            level = Status.FAILING if long_problem else Status.DEGRADED
            message = f"unreachable: {state.last_error}"
        elif not status.initialized:
            level = Status.FAILING if long_problem else Status.DEGRADED
            message = "not initialized (run certflow vault-bootstrap; never done automatically)"
        elif not status.sealed:
            level, message = Status.OK, "unsealed"
        elif memory.rejections:
            level, message = Status.FAILING, "key rejected; backing off"
        elif sealed_too_long(memory, now, alert):
            level = Status.FAILING
            message = f"sealed for {int(now - (memory.sealed_since or now))} s ({state.decision})"
        else:
            level, message = Status.DEGRADED, f"sealed ({state.decision or 'unsealing'})"
        self.health.report(f"vault:{address}", level, message, **details)
        m = self.metrics
        m.reachable.labels(address).set(0 if status is None else 1)
        if status is not None:
            m.sealed.labels(address).set(1 if status.sealed else 0)
            m.initialized.labels(address).set(1 if status.initialized else 0)
            m.progress.labels(address).set(status.progress)
        if state.last_seen is not None:
            m.last_seen.labels(address).set(state.last_seen)
        sealed_for = now - memory.sealed_since if memory.sealed_since is not None else 0.0
        m.sealed_seconds.labels(address).set(sealed_for)

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        while not stop.is_set():
            try:
                result = self.cycle()
                interval = (
                    self.settings.fast_interval if result.busy else self.settings.slow_interval
                )
            except Exception as exc:
                _log.exception("cycle.failed", error=str(exc))
                self.health.report("cycle", Status.FAILING, f"{type(exc).__name__}: {exc}")
                interval = self.settings.slow_interval
            else:
                self.health.remove("cycle")
            stop.wait(interval)
        return 0
