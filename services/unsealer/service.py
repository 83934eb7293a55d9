"""The unsealer loop: discover members, observe each, let the machine decide, act, report.

One cycle observes every member in parallel (a slow or dead member must not delay the others),
builds the cluster view (roles, who may get the key: :mod:`services.unsealer.cluster`), then drives
each member to the end of its attempt at once (submit, read the reply, re-poll, decide again), so a
member that answers sealed is unsealed within the same cycle. A key is proven once it has unsealed
a member in this process; until then it goes to one joined member only. The key file is read at
most once per cycle, when some member needs a key or the last read failed (a fix is seen at once);
the keys are dropped when the cycle ends. A key file its group or others may read is refused
(``keys`` check, ``keys.insecure_file`` once) and its keys go to nobody. Every call is bounded
by the client's timeouts. A key document that names the cluster an unsealed member reports is
proven at once; one that names another cluster is given to nobody.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.unsealer.cluster import (
    NO_OWNER,
    KeyOwner,
    KeyPlan,
    MemberView,
    Owner,
    cluster_exists,
    judge,
    key_owner,
    plan_keys,
    roles,
    unsealed_cluster_ids,
)
from services.unsealer.discovery import Discovery, Replica
from services.unsealer.keys import KeyFile, KeyFileError, KeyFileInsecure, UnsealKeys
from services.unsealer.machine import (
    Context,
    Kind,
    Memory,
    after_join,
    after_rejection,
    after_reset,
    after_submit,
    after_unseal_error,
    decide,
    sealed_too_long,
)
from services.unsealer.metrics import UnsealerMetrics
from services.unsealer.settings import UnsealerSettings
from services.unsealer.status import MemberHealth, Role, SealStatus
from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.errors import KeyRejected, VaultError, VaultUnreachable
from shared.health import HealthRegistry, Status
from shared.logs import get_logger
from shared.notifier import Notifier
from shared.notify import Event
from shared.notify import Kind as Notice
from shared.retry import backoff_delay

_log = get_logger(__name__)
_SUSPECT = (
    "key withheld: a member stopped answering when it was given this key, which is what a wrong "
    "key does to a member still joining; replace the key file (or restart that member)"
)
ClientFactory = Callable[[str], VaultClient]


@dataclass
class ReplicaState:
    replica: Replica
    memory: Memory
    client: VaultClient | None = None
    status: SealStatus | None = None
    health: MemberHealth | None = None
    role: Role = Role.UNREACHABLE
    last_seen: float | None = None
    last_error: str = ""
    problem_since: float | None = None  # unreachable or uninitialized since
    reported: str = ""  # the last logged condition, to log transitions only
    decision: str = ""
    sealed_told: float | None = None  # the sealed spell (its start) already notified

    @property
    def unsealed(self) -> bool:
        return self.status is not None and self.status.initialized and not self.status.sealed

    def view(self) -> MemberView:
        health = None if self.status is None else self.health
        # A member we joined by address answers a wrong key with an error, never a lock.
        joining = self.memory.seen_uninitialized and not self.memory.joined_by_us
        return MemberView(self.replica.address, health, joining)


@dataclass(frozen=True)
class CycleResult:
    replicas: int
    unsealed: int
    busy: bool  # something is sealed, changing or unreachable: poll fast
    reachable: int = 0

    @property
    def all_unsealed(self) -> bool:
        """Every member that answered is unsealed (and at least one answered)."""
        return self.reachable > 0 and self.unsealed == self.reachable


class _CycleKeys:
    """The key file, read at most once per cycle, on first need, shared by the worker threads."""

    def __init__(self, key_file: KeyFile) -> None:
        self._file = key_file
        self._lock = threading.Lock()
        self.loaded = False
        self.keys: UnsealKeys | None = None
        self.failure: KeyFileError | None = None

    @property
    def error(self) -> str:
        return str(self.failure) if self.failure else ""

    def get(self) -> UnsealKeys | None:
        with self._lock:
            if not self.loaded:
                self.loaded = True
                try:
                    self.keys = self._file.read()
                except KeyFileError as exc:
                    self.failure = exc
            return self.keys

    def check_mode(self) -> None:
        """Without a read this cycle: the mode alone (a stat), so a loosened file is still seen."""
        with self._lock:
            if not self.loaded:
                try:
                    self._file.check_mode()
                except KeyFileInsecure as exc:
                    self.failure = exc


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
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.health = health
        self.metrics = metrics
        self.clock = clock
        # Off unless the service passes its notifier (built from CERTFLOW_NOTIFY_*).
        self.notifier = notifier or Notifier((), service="vault-unsealer", node=settings.node_name)
        self.discovery = discovery or Discovery(
            service=settings.vault_service,
            port=settings.vault_port,
            network=settings.vault_network,
            static=settings.vault_addrs,
            use_docker=settings.docker_discovery,
            dns_name=settings.vault_dns,
        )
        self.key_file = key_file or KeyFile(
            settings.key_file, group_read=settings.key_file_group_read
        )
        tls = TlsConfig(settings.ca_file, settings.tls_server_name, settings.skip_verify)
        context = tls.context()  # built once: loading the CA bundle per replica is wasted work
        self._client_factory = client_factory or (
            lambda address: VaultClient(
                address,
                tls,
                connect_timeout=settings.connect_timeout,
                request_timeout=settings.request_timeout,
                unseal_timeout=settings.unseal_timeout,
                context=context,
            )
        )
        self._states: dict[str, ReplicaState] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="replica")
        self._last_fingerprint: str | None = None
        self._proven_fingerprint: str | None = None  # unsealed a member in this process
        self._suspect_fingerprint: str | None = None  # a member stopped answering when given it
        self._key_refusal = ""  # this cycle: the key document is another cluster's (why)
        self._owner_said: tuple[str | None, KeyOwner] = (None, NO_OWNER)  # logged last
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
        states = list(self._states.values())
        self._parallel(self._observe, states)
        keys = _CycleKeys(self.key_file)
        views = [state.view() for state in states]
        exists = cluster_exists(views)
        leader = self._join_target(views)
        busy = self._drive_all(states, keys, exists, leader)
        self._report_keys(keys)
        now = self.clock()
        member_roles = roles([state.view() for state in states])
        for state in states:
            state.role = member_roles[state.replica.address]
            self._publish(state)
        self._report_cluster(member_roles)
        self.metrics.replicas.set(len(states))
        self.metrics.last_cycle.set(now)
        unsealed = sum(1 for s in states if s.unsealed)
        reachable = sum(1 for s in states if s.status is not None)
        busy = busy or not states or unsealed < len(states)
        return CycleResult(
            replicas=len(states),
            unsealed=unsealed,
            busy=busy,
            reachable=reachable,
        )

    def _parallel(self, work: Callable[[ReplicaState], bool], states: list[ReplicaState]) -> bool:
        """Run ``work`` on every state at once; True if any asked for fast polling."""
        # copy_context: worker threads log with the service/node fields bound in the main thread
        contexts = [contextvars.copy_context() for _ in states]
        return any(list(self._pool.map(lambda c, s: c.run(work, s), contexts, states)))

    def _join_target(self, views: list[MemberView]) -> str:
        """The address members that have not joined are joined to: the one active member."""
        if not self.settings.raft_join:
            return ""
        active = [a for a, role in roles(views).items() if role is Role.ACTIVE]
        return active[0] if len(active) == 1 else ""

    def _drive_all(
        self, states: list[ReplicaState], keys: _CycleKeys, exists: bool, leader: str
    ) -> bool:
        """Give keys where the plan allows; once a key is proven, a second round for the rest."""
        sealed = [
            s for s in states if s.status is not None and s.status.initialized and s.status.sealed
        ]
        loaded = keys.get() if sealed else None
        fingerprint = loaded.fingerprint if loaded else None
        # Compared once, over every member: the later round sees only the members left sealed.
        owner = NO_OWNER
        if loaded is not None:
            ids = unsealed_cluster_ids([s.view() for s in states])
            owner = key_owner(loaded.cluster_id, ids)
        self._say_owner(fingerprint, loaded.cluster_id if loaded else None, owner)
        self._key_refusal = ""
        busy = False
        todo = [s for s in states if s.status is not None]
        for _ in range(2):
            proven = fingerprint is not None and fingerprint == self._proven_fingerprint
            plan = plan_keys([s.view() for s in todo], key_proven=proven, owner=owner)
            self._key_refusal = self._key_refusal or plan.refused
            if fingerprint is not None and fingerprint == self._suspect_fingerprint:
                plan = KeyPlan(frozenset(), {s.replica.address: _SUSPECT for s in sealed})
            drive = functools.partial(
                self._drive, keys=keys, exists=exists, plan=plan, leader=leader
            )
            busy = self._parallel(drive, todo) or busy
            newly_proven = not proven and fingerprint == self._proven_fingerprint
            todo = [s for s in todo if s.replica.address in plan.withheld]
            if not (newly_proven and todo):
                break
        return busy

    def _say_owner(self, fingerprint: str | None, document_id: str | None, owner: KeyOwner) -> None:
        """Log what the key document's cluster id says, when that changes (not every pass)."""
        if (fingerprint, owner) == self._owner_said:
            return
        self._owner_said = (fingerprint, owner)
        if owner.owner is Owner.OTHER:
            _log.error("keys.other_cluster", key_cluster=document_id, detail=owner.message)
        elif owner.owner is Owner.THIS:
            _log.info("keys.cluster_matches", key_cluster=document_id)
        elif owner.message:
            _log.warning("keys.clusters_differ", key_cluster=document_id, detail=owner.message)

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
        if not keys.loaded:
            # No member needed a key. A file refused last time is read again now, so its fix
            # shows at once; otherwise a stat, so a file loosened meanwhile is still refused.
            if self._last_key_error:
                keys.get()
            else:
                keys.check_mode()
        if keys.failure is not None:
            path = str(self.key_file.path)
            mode = keys.failure.mode if isinstance(keys.failure, KeyFileInsecure) else None
            if keys.error != self._last_key_error:  # once per problem, not per pass
                if mode is not None:
                    _log.error("keys.insecure_file", path=path, mode=mode, error=keys.error)
                else:
                    _log.error("keys.unusable", error=keys.error)
                self._last_key_error = keys.error
            self.health.report("keys", Status.FAILING, keys.error, path=path, mode=mode)
            return
        if keys.keys is None:
            return  # not read this cycle: nothing new to say
        if self._last_key_error:
            _log.info("keys.usable_again", path=str(self.key_file.path))
        self._last_key_error = ""
        if keys.keys.fingerprint != self._last_fingerprint:
            if self._last_fingerprint is not None:
                _log.info("keys.changed", count=len(keys.keys.keys))
            self._last_fingerprint = keys.keys.fingerprint
        self.health.report(
            "keys",
            Status.OK,
            f"{len(keys.keys.keys)} key(s) readable",
            path=str(self.key_file.path),
            cluster_id=keys.keys.cluster_id,
        )

    # -- one replica -----------------------------------------------------------------------
    def _observe(self, state: ReplicaState) -> bool:
        """One look at a member: ``sys/health`` always, ``seal-status`` when an attempt matters."""
        address = state.replica.address
        try:
            if state.client is None:
                state.client = self._client_factory(address)
            health = state.client.health()
            state.health = health
            if health.initialized and health.sealed:
                self._seen(state, state.client.seal_status())
            else:
                # Health has no shares/threshold: keep what the last seal status said.
                known = state.status
                status = health.seal_status()
                if known is not None and known.initialized:
                    status = replace(status, t=known.t, n=known.n)
                self._seen(state, status)
        except VaultError as exc:
            self._failed(state, exc)
        return True

    def _drive(
        self, state: ReplicaState, keys: _CycleKeys, exists: bool, plan: KeyPlan, leader: str
    ) -> bool:
        """Drive one observed member. Returns True when it needs fast polling."""
        try:
            return self._drive_member(state, keys, exists, plan, leader)
        except VaultError as exc:
            self._failed(state, exc)
            return True

    def _drive_member(
        self, state: ReplicaState, keys: _CycleKeys, exists: bool, plan: KeyPlan, leader: str
    ) -> bool:
        assert state.client is not None
        assert state.status is not None
        address = state.replica.address
        status = state.status
        was_sealed = status.sealed
        withheld = plan.withheld.get(address, "")
        # Enough steps for a full attempt, a reset and a fresh attempt; then wait for next cycle.
        for _ in range(2 * max(status.t, 1) + 6):
            loaded = keys.get() if status.initialized and status.sealed else None
            ctx = Context(
                now=self.clock(),
                key_count=len(loaded.keys) if loaded else 0,
                fingerprint=loaded.fingerprint if loaded else None,
                stall_timeout=self.settings.stall_timeout,
                cluster_exists=exists,
                withheld=withheld,
                leader=leader if leader != address else "",
            )
            decision = decide(status, state.memory, ctx)
            state.memory = decision.memory
            state.decision = decision.reason
            if decision.kind is Kind.JOIN:
                status = self._join(state, ctx.leader)
                continue
            if decision.kind is Kind.SUBMIT and loaded is not None:
                if decision.reason == "join attempt":
                    _log.info("unseal.joining", replica=address, progress=status.progress)
                try:
                    reply = state.client.submit_key(loaded.keys[decision.index])
                except VaultUnreachable:
                    state.memory = after_unseal_error(state.memory)
                    # A key known to be this cluster's (plan.proven) is not what stopped it.
                    if (
                        not plan.proven
                        and ctx.fingerprint != self._proven_fingerprint
                        and not state.memory.joined_by_us
                    ):
                        # A wrong key given to a member joining by its own retry_join never
                        # returns and locks it: stop handing this key out until the file changes.
                        self._suspect_fingerprint = ctx.fingerprint
                        _log.error("unseal.member_stopped_answering", replica=address)
                    raise
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
                    if state.memory.rejections == 1:  # the first of a streak, not each retry
                        self.notifier.notify(
                            Event(
                                Notice.UNSEAL_KEY_REJECTED,
                                f"vault member {address} rejected the unseal key; it stays "
                                "sealed until the key file is replaced",
                                subject=address,
                                fields={
                                    "replica": address,
                                    "task": state.replica.task_id or "",
                                    "error": str(exc),
                                },
                            )
                        )
                    return True
                except VaultError:
                    state.memory = after_unseal_error(state.memory)
                    raise
                self.metrics.submissions.labels(address).inc()
                state.memory = after_submit(
                    state.memory,
                    decision.index,
                    reply,
                    now=self.clock(),
                    settle=self.settings.join_settle,
                )
                if reply.initialized and not reply.sealed:
                    # Trust the member, not its reply: look again before calling it unsealed.
                    reply = state.client.seal_status()
                    if reply.initialized and not reply.sealed:
                        self.metrics.unseals.labels(address).inc()
                        self._proven_fingerprint = ctx.fingerprint
                status = reply
                self._seen(state, status)
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
            if state.health is not None:
                state.health = replace(state.health, sealed=False)
            _log.info("unseal.succeeded", replica=address, task=state.replica.task_id or None)
        return not (status.initialized and not status.sealed)

    def _join(self, state: ReplicaState, leader: str) -> SealStatus:
        """Join a member that has not joined to the active member; returns its new status."""
        assert state.client is not None
        address = state.replica.address
        ca_pem = self._ca_pem()
        try:
            joined = state.client.join(
                leader, server_name=self.settings.tls_server_name, ca_pem=ca_pem
            )
        except VaultError as exc:
            state.memory = after_join(
                state.memory, now=self.clock(), ok=False, retry=self.settings.join_retry
            )
            state.last_error = f"join to {leader} failed: {exc}"
            _log.warning("raft.join_failed", replica=address, leader=leader, error=str(exc))
            raise
        state.memory = after_join(
            state.memory, now=self.clock(), ok=joined, retry=self.settings.join_retry
        )
        self.metrics.joins.labels(address).inc()
        _log.info("raft.joined", replica=address, leader=leader, joined=joined)
        status = state.client.seal_status()
        self._seen(state, status)
        return status

    def _ca_pem(self) -> str | None:
        """The bundle a joining member checks the active member's certificate against: ours."""
        if self.settings.ca_file is None:
            return None
        try:
            return self.settings.ca_file.read_text()
        except OSError as exc:
            raise VaultError(f"cannot read UNSEALER_CA_FILE for a join: {exc}") from exc

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
                # Not joined yet (the cluster exists) or a Vault nobody initialized: the cycle's
                # cluster view tells which; the unsealer never initializes either.
                _log.warning("replica.uninitialized", replica=state.replica.address)
            elif condition == "unsealed" and state.reported in ("sealed", "uninitialized"):
                _log.info("replica.unsealed", replica=state.replica.address)
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
            "role": state.role.value,
            "task": state.replica.task_id or None,
            "node": state.replica.node_id or None,
            "initialized": status.initialized if status else None,
            "sealed": status.sealed if status else None,
            "t": status.t if status else None,
            "n": status.n if status else None,
            "progress": status.progress if status else None,
            "version": status.version if status else None,
            "cluster_id": status.cluster_id if status else None,
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
        elif state.role is Role.NOT_JOINED:
            level = Status.FAILING if long_problem else Status.DEGRADED
            message = (
                f"not joined yet ({state.decision or 'joining'}): it is joined to the active "
                "member, then unsealed; never initialized by certflow"
            )
        elif not status.initialized:
            level = Status.FAILING if long_problem else Status.DEGRADED
            message = "not initialized (run certflow vault-bootstrap; never done automatically)"
        elif not status.sealed:
            level, message = Status.OK, f"unsealed, {state.role.value}"
        elif memory.rejections:
            level, message = Status.FAILING, "key rejected; backing off"
        elif sealed_too_long(memory, now, alert):
            level = Status.FAILING
            message = f"sealed for {int(now - (memory.sealed_since or now))} s ({state.decision})"
        else:
            level, message = Status.DEGRADED, f"sealed ({state.decision or 'unsealing'})"
        self.health.report(f"vault:{address}", level, message, **details)
        m = self.metrics
        for role in Role:
            m.role.labels(address, role.value).set(1 if role is state.role else 0)
        m.reachable.labels(address).set(0 if status is None else 1)
        if status is not None:
            m.sealed.labels(address).set(1 if status.sealed else 0)
            m.initialized.labels(address).set(1 if status.initialized else 0)
            m.progress.labels(address).set(status.progress)
        if state.last_seen is not None:
            m.last_seen.labels(address).set(state.last_seen)
        sealed_for = now - memory.sealed_since if memory.sealed_since is not None else 0.0
        m.sealed_seconds.labels(address).set(sealed_for)
        self._notify_sealed(state, now)

    def _notify_sealed(self, state: ReplicaState, now: float) -> None:
        """Once per sealed spell, when it passes UNSEALER_SEALED_ALERT."""
        since = state.memory.sealed_since
        sealed = state.status is not None and state.status.initialized and state.status.sealed
        if not sealed or since is None:
            state.sealed_told = None
            return
        alert = self.settings.sealed_alert
        if state.sealed_told == since or not sealed_too_long(state.memory, now, alert):
            return
        state.sealed_told = since
        address = state.replica.address
        self.notifier.notify(
            Event(
                Notice.MEMBER_SEALED,
                f"vault member {address} sealed for {int(now - since)} s "
                f"(alert after {alert:g} s): {state.decision or 'not unsealed'}",
                subject=f"{address} since {_iso(since)}",
                fields={
                    "replica": address,
                    "task": state.replica.task_id or "",
                    "node": state.replica.node_id or "",
                    "sealed_since": _iso(since) or "",
                    "sealed_alert": alert,
                    "key_rejections": state.memory.rejections,
                },
            )
        )

    def _report_cluster(self, member_roles: dict[str, Role]) -> None:
        verdict = judge(member_roles)
        self.metrics.active_members.set(verdict.counts.get(Role.ACTIVE.value, 0))
        level = Status.OK if verdict.ok else Status.FAILING
        message = verdict.message
        if self._key_refusal:  # sealed members stay sealed until the key file is replaced
            level = Status.FAILING
            message = f"{message}; no key given: {self._key_refusal}"
        self.health.report("cluster", level, message, members=verdict.counts)

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
