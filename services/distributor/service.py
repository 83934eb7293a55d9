"""The distributor process: a sync loop (Storage Box -> this node) and, beside it, a reload loop
(probe the local members; on the Swarm leader, coordinate the rollout)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shared import __version__
from shared.atomic import write_file_atomic
from shared.consumers import ConsumerReport
from shared.consumers import State as ConsumerState
from shared.docker_engine import DockerEngine, open_engine
from shared.errors import (
    CertificateInvalid,
    ChainUntrusted,
    DockerError,
    DockerNotFound,
    ManifestUnauthenticated,
    StorageError,
)
from shared.health import HealthRegistry, StallWatch, Status, report_manifest_auth
from shared.logs import get_logger
from shared.notifier import Notifier
from shared.notify import Event
from shared.notify import Kind as Notice
from shared.rollout import pause_from_labels
from shared.status import iso
from shared.swarm import ContainerEvent
from shared.watch import ChangeWatcher, Wake

from .consumer_notices import consumer_notices
from .consumer_reload import ConsumerCoordinator, ConsumerSettings
from .coordinator import Decision, Kind, nodes_not_ready
from .facts import DistributorInfo, MemberProbe
from .install import PairInstaller, installed_at
from .local_members import TASK_ID_LABEL, LocalMemberProber
from .member_events import MemberEventWatch
from .metrics import DistributorMetrics
from .peers import PeerDirectory
from .reload import PROBE_PATH, RestartCoordinator
from .rollout_notices import Seen, rollout_notices
from .settings import DistributorSettings
from .signal_canary import Member, Plan, View, plan, read_marker, render_marker, serves
from .signal_canary import Step as CanaryStep
from .stop_order import PATH as STOP_PATH
from .stop_order import LocalTask, OrderRefused, StopOrder, decode, judge
from .sync import Step, Syncer, SyncResult
from .task_order import PATH as RELOAD_TASK_PATH
from .task_reload import LocalTaskReloader, consumer_refusal

_log = get_logger(__name__)
SIGNALLED_MARKER = ".certflow-signalled"
# A member still running this long after its SIGTERM is killed when its stop order comes again
# (the stack's stop_grace_period for Vault is 20 s).
KILL_AFTER = 30.0
# Quiet period after a Storage Box event before the pass reads the files.
_SETTLE = 0.05
# A reload pass normally takes seconds (member probes are CLI runs in their containers, peers
# answer within DISTRIBUTOR_PEER_TIMEOUT); one that has not returned in this long is stuck.
_RELOAD_STALL = 120.0
_MAX_PROBE_TASKS = 16
FAST_FOR = 180.0  # seconds a rollout may keep the reload passes at the gate's pace
_MAX_PROBE_BODY = 4096
# Decisions with a rollout in flight: the next pass comes at the gate's pace.
_IN_FLIGHT = frozenset({Kind.RESTART, Kind.GATE, Kind.ADVANCE, Kind.WAIT})
_CANARY_IN_FLIGHT = frozenset(
    {CanaryStep.SIGNAL_CANARY, CanaryStep.WAIT_CANARY, CanaryStep.ROLL, CanaryStep.WAIT}
)


_RELOAD_STATUS = {
    Kind.SYNC_ONLY: Status.OK,
    Kind.DONE: Status.OK,
    Kind.WAIT: Status.OK,
    Kind.RESTART: Status.OK,
    Kind.ADOPT: Status.OK,
    Kind.NO_TASKS: Status.DEGRADED,
    Kind.LAGGING: Status.FAILING,
    Kind.FAILED: Status.FAILING,
    Kind.HELD: Status.DEGRADED,
    Kind.NOT_BACK: Status.DEGRADED,
    Kind.GATE: Status.OK,
    Kind.HALTED: Status.FAILING,
    Kind.ADVANCE: Status.OK,
    Kind.PAUSED: Status.DEGRADED,
}


@dataclass
class _State:
    last_sync: datetime | None = None
    last_error: str | None = None
    seen_generation: int | None = None
    refused: str | None = None  # why the committed pair was last refused (log it once)


class Distributor:
    def __init__(
        self,
        settings: DistributorSettings,
        *,
        engine: DockerEngine | None = None,
        health: HealthRegistry | None = None,
        metrics: DistributorMetrics | None = None,
        peers: PeerDirectory | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or HealthRegistry(
            service="cert-distributor", node=settings.node_name, version=__version__
        )
        self.metrics = metrics or DistributorMetrics()
        # From CERTFLOW_NOTIFY_*: no URL set, no thread. The owner closes it (close()).
        self.notifier = notifier or Notifier.from_settings(
            settings,
            service="cert-distributor",
            node=settings.node_name,
            registry=self.metrics.registry,
        )
        self._seen: Seen | None = None  # the previous rollout decision, for its notices
        self.installer = PairInstaller(
            settings.target_dir,
            cert_name=settings.cert_name,
            key_name=settings.key_name,
            key_mode=settings.key_mode,
            cert_mode=settings.cert_mode,
            uid=settings.file_uid,
            gid=settings.file_gid,
            keep=settings.keep,
        )
        self.syncer = Syncer(
            settings.source_dir,
            self.installer,
            names=settings.names,
            keys=settings.manifest_keys,
            trust=settings.trust_bundle,
            trust_name=settings.trust_name,
        )
        self.engine = engine
        self.node_id = settings.node_id
        self.coordinator: RestartCoordinator | None = None
        self.peers = peers or PeerDirectory(
            engine=self.engine,
            service=settings.service_name,
            port=settings.effective_peer_port,
            timeout=settings.peer_timeout,
        )
        self.prober: LocalMemberProber | None = None
        # Probed in every mode, "none" included: the reports tell the leader (and operators)
        # what each Vault member serves, whoever reloads it.
        if self.engine is not None:
            self.prober = LocalMemberProber(
                self.engine, service=settings.vault_service, interval=settings.probe_interval
            )
        if self.engine is not None and settings.reload_mode == "restart":
            self.coordinator = RestartCoordinator(
                self.engine,
                vault_service=settings.vault_service,
                peers=self.peers,
                lag_timeout=settings.lag_timeout,
                keys=settings.manifest_keys,
                local_stop=self.stop_member,
                node_id=self._node_id,
                metrics=self.metrics,
                member_bound=settings.member_bound,
                voter_wait=settings.voter_wait,
                own_service=settings.service_name,
                local_probe=self.probe_soon,
                clock_skew=settings.clock_skew,
            )
        # Consumers (services labelled certflow.reload): any node carries out a reload order for
        # its local task; the Swarm leader's distributor decides them.
        self.task_reloader: LocalTaskReloader | None = None
        self.consumers: ConsumerCoordinator | None = None
        if self.engine is not None:
            self.task_reloader = LocalTaskReloader(
                self.engine,
                node_id=self._node_id,
                installed=self._installed_fingerprint,
                keys=settings.manifest_keys,
                refusal=consumer_refusal(self.engine, (settings.vault_service,)),
                on_outcome=lambda outcome: self.metrics.consumer_orders.labels(
                    outcome=outcome
                ).inc(),
            )
            if settings.consumers:
                self.consumers = ConsumerCoordinator(
                    self.engine,
                    peers=self.peers,
                    keys=settings.manifest_keys,
                    local_order=self.task_reloader.act,
                    node_id=self._node_id,
                    fullchain=self._installed_chain,
                    metrics=self.metrics,
                    trust=settings.trust_bundle,
                    own_service=settings.service_name,
                    settings=ConsumerSettings(
                        bound=settings.consumer_bound,
                        check_timeout=settings.consumer_check_timeout,
                    ),
                )
        self.consumer_reports: list[ConsumerReport] = []
        self.state = _State()
        self._last_decision: tuple[Kind, str | None, tuple[str, ...]] | None = None
        self.members: list[MemberProbe] = []  # this node's Vault members, as last probed
        self.paused: str | None = None  # the operator's pause as this node last read it
        self._pause_known = False  # this node read the pause itself (a manager)
        self._decision_since: tuple[Kind, datetime] | None = None
        self._canary_wait: tuple[str, float] | None = None  # fingerprint, waiting since
        self._canary_logged: set[tuple[str, str, str]] = set()  # (fingerprint, event, container)
        self._stop_lock = threading.Lock()  # stop orders arrive on the HTTP server's thread
        self._terminated: dict[str, float] = {}  # container -> when it was first sent SIGTERM
        self._info_lock = threading.Lock()  # both loops publish the info block
        self._reload_due = threading.Event()  # set by the sync loop when it installed a pair
        self._consumers_due = threading.Event()  # the same, for the consumers' loop
        # A rollout in flight (a member stopped, a canary signalled): passes come every
        # DISTRIBUTOR_GATE_INTERVAL, not every poll interval, so the gate opens when it can.
        self._busy = False
        self._busy_since: float | None = None  # monotonic: since when passes come fast
        self._probe_lock = threading.Lock()
        self._probe_asked: set[str] = set()  # task IDs to probe on the next pass (the gate's)
        self._healthy_seen: set[str] = set()  # containers whose turn to healthy woke a pass
        self._report_auth()
        self._publish_info(None)

    def _report_auth(self) -> None:
        keys = self.settings.manifest_keys
        report_manifest_auth(
            self.health,
            self.metrics.auth_enabled,
            keys,
            message=f"manifests accepted from key id(s) {', '.join(keys.ids)}" if keys else "",
            accepted_keys=list(keys.ids) if keys else [],
        )

    @classmethod
    def from_settings(cls, settings: DistributorSettings) -> Distributor:
        engine = None
        if settings.reload_mode != "none":
            try:
                engine = open_engine()
            except DockerError as exc:
                # Without a Docker socket (or on a worker) a distributor only syncs.
                _log.warning("docker.unavailable", error=str(exc))
        return cls(settings, engine=engine)

    # -- one pass ------------------------------------------------------------------------------

    def sync_pass(self) -> SyncResult | None:
        now = datetime.now(UTC)
        self.metrics.sync_passes.inc()
        try:
            result = self.syncer.sync_once(now)
        except ManifestUnauthenticated as exc:
            signer = exc.key_id or "unsigned"
            if self.state.refused != str(exc):
                # Counted and logged once per refused manifest, not once per poll.
                self.metrics.manifest_refused.labels(reason=exc.reason.value).inc()
                _log.error(
                    "manifest.refused", reason=exc.reason.value, key_id=signer, error=str(exc)
                )
                self.notifier.notify(
                    Event(
                        Notice.MANIFEST_REFUSED,
                        f"Storage Box manifest refused (key id {signer}), keeping the installed "
                        f"pair: {exc}",
                        subject=f"{exc.reason.value}:{signer}",
                        fields={"reason": exc.reason.value, "key_id": signer},
                    )
                )
            self.state.refused = self.state.last_error = str(exc)
            self.health.report(
                "sync",
                Status.FAILING,
                f"Storage Box manifest refused (key id {signer}), keeping the installed pair: "
                f"{exc}",
                reason=exc.reason.value,
                key_id=signer,
            )
            self._publish_info(None)
            return None
        except CertificateInvalid as exc:
            if self.state.refused != str(exc):
                # Counted and logged once per refused pair, not once per poll.
                self.metrics.refused.labels(reason=exc.reason.value).inc()
                _log.error("cert.refused", reason=exc.reason.value, error=str(exc))
                if isinstance(exc, ChainUntrusted):
                    self.notifier.notify(
                        Event(
                            Notice.TRUST_FAILED,
                            f"committed chain not trusted, keeping the installed pair: {exc}",
                            subject=f"{exc.reason.value}:{exc.name}",
                            fields={
                                "reason": exc.reason.value,
                                "error": exc.message,
                                "trust_name": exc.name,
                            },
                        )
                    )
            self.state.refused = self.state.last_error = str(exc)
            self.health.report(
                "sync",
                Status.FAILING,
                f"committed pair refused, keeping the installed one: {exc}",
                reason=exc.reason.value,
            )
            self._publish_info(None)
            return None
        except (StorageError, OSError) as exc:
            # A bare OSError too: exiting would not help, and on a dead network mount Swarm
            # could not even start our replacement (its bind mount hangs in "Preparing").
            if not isinstance(exc, StorageError):
                exc = StorageError.from_oserror("syncing", exc)
            self.metrics.sync_errors.inc()
            if self.state.last_error != str(exc):
                _log.warning("sync.storage_error", error=str(exc), errno=exc.errno_name)
            self.state.last_error = str(exc)
            self.health.report("sync", Status.FAILING, str(exc), errno=exc.errno_name)
            self._publish_info(None)
            return None
        self.state.refused = None
        self.state.last_error = None
        self.state.last_sync = now
        self.state.seen_generation = result.seen_generation
        self.metrics.last_sync.set(now.timestamp())
        if result.seen_generation is not None:
            self.metrics.storagebox_generation.set(result.seen_generation)
        if result.newly_installed:
            self.metrics.installs.inc()
        if result.installed is not None:
            self.metrics.installed_generation.set(result.installed.manifest.generation)
            self.metrics.installed_not_after.set(
                result.installed.manifest.leaf.not_after.timestamp()
            )
        if result.step is Step.WAIT:
            self.health.report("sync", Status.DEGRADED, result.detail)
        else:
            self.health.report("sync", Status.OK, result.step.value)
        self._publish_info(result)
        return result

    def _report_swarm(self, decision: Decision) -> None:
        """On the leader: a ``swarm`` check naming the nodes that are not ready."""
        if decision.kind is Kind.SYNC_ONLY or self.engine is None:
            self.health.remove("swarm")
            return
        try:
            not_ready = nodes_not_ready(self.engine.nodes())
        except DockerError as exc:
            self.health.report("swarm", Status.DEGRADED, f"cannot list the nodes: {exc}")
            return
        if not_ready:
            self.health.report(
                "swarm",
                Status.DEGRADED,
                "node(s) not ready (a Vault node down holds Vault restarts): "
                + "; ".join(not_ready),
                nodes=list(not_ready),
            )
        else:
            self.health.report("swarm", Status.OK, "every node ready")

    def reload_pass(self) -> Decision | None:
        mode = self.settings.reload_mode
        if self.engine is None:
            return None
        try:
            installed = self.installer.installed()
        except StorageError as exc:
            self.health.report("reload", Status.DEGRADED, f"installed pair unreadable: {exc}")
            return None
        fingerprint = installed.manifest.fingerprint if installed else None
        try:
            self._probe_members(fingerprint)
            self._busy = False
            if mode == "none":
                return None
            if mode == "signal":
                self._signal_canary(self.engine, fingerprint)
                return None
            if self.coordinator is None:
                return None
            decision = self.coordinator.step(fingerprint)
            self._busy = decision.kind in _IN_FLIGHT
        except DockerError as exc:
            self.health.report("reload", Status.DEGRADED, f"docker: {exc}")
            return None
        if self._decision_since is None or self._decision_since[0] is not decision.kind:
            # The check's own `since` moves only when its status does (held, not_back and
            # paused are all degraded); status needs how long this decision has lasted.
            self._decision_since = (decision.kind, datetime.now(UTC))
        self.health.report(
            "reload",
            _RELOAD_STATUS[decision.kind],
            decision.message,
            decision=decision.kind.value,
            decision_since=self._decision_since[1],
            fingerprint=decision.fingerprint,
            member=decision.member.where if decision.member is not None else None,
            nodes=list(decision.nodes),
            left_out=list(decision.left_out),
        )
        self.metrics.rollout_halted.set(1 if decision.kind is Kind.HALTED else 0)
        self._report_swarm(decision)
        pause = self.coordinator.last_pause if self.coordinator is not None else None
        for event in rollout_notices(self._seen, decision, pause):
            self.notifier.notify(event)
        self._seen = Seen(decision.kind, decision.fingerprint, pause)
        key = (decision.kind, decision.fingerprint, decision.nodes)
        if key != self._last_decision:
            # One line per change of state, not one per poll.
            self._last_decision = key
            log = (
                _log.error
                if decision.kind in {Kind.LAGGING, Kind.FAILED, Kind.HALTED}
                else _log.info
            )
            log("vault.reload", decision=decision.kind.value, message=decision.message)
        return decision

    def consumer_pass(self) -> list[ConsumerReport] | None:
        """On the Swarm leader: step every consumer (its own check in /health); elsewhere
        nothing. Apart from Vault's pass, so that neither waits on the other."""
        if self.consumers is None:
            return None
        try:
            reports = self.consumers.step(self._installed_fingerprint())
        except DockerError as exc:
            self.health.report("consumers", Status.DEGRADED, f"docker: {exc}")
            return None
        if reports != self.consumer_reports:
            before = {r.service: r for r in self.consumer_reports}
            self.consumer_reports = reports
            self._publish_info(None)
            for event in consumer_notices(before, reports):
                self.notifier.notify(event)
        if not reports:
            self.health.remove("consumers")
            return reports
        status = Status.OK
        if any(r.state is ConsumerState.HALTED for r in reports):
            status = Status.FAILING
        elif any(
            r.state in {ConsumerState.REPORTED, ConsumerState.PAUSED, ConsumerState.WAITING}
            or r.serves_older
            for r in reports
            if r.state is not ConsumerState.RELOADING
        ):
            # Waiting too: a consumer held (a task not back, a node down) is not serving the
            # installed certificate everywhere yet.
            status = Status.DEGRADED
        self.health.report(
            "consumers",
            status,
            "; ".join(
                f"{r.service}: {r.state.value}"
                + ("" if r.state is ConsumerState.DONE else f" ({r.message})")
                for r in reports
            ),
            services=[r.service for r in reports],
        )
        return reports

    def _installed_fingerprint(self) -> str | None:
        try:
            installed = self.installer.installed()
        except StorageError:
            return None
        return installed.manifest.fingerprint if installed else None

    def _installed_chain(self) -> bytes | None:
        """The installed full chain (the trust check of consumers' check names)."""
        try:
            installed = self.installer.installed()
            if installed is None:
                return None
            directory = self.installer.target / installed.directory
            return (directory / self.installer.cert_name).read_bytes()
        except (StorageError, OSError):
            return None

    def _pace(self, now: float) -> float:
        """Seconds until the next reload pass: the gate's pace while a rollout is in flight, for
        at most FAST_FOR (a member that stays sealed, a canary that never proves: polling fast
        would only cost each pass's survey and probes), else the poll interval."""
        if not self._busy:
            self._busy_since = None
            return self.settings.poll_interval
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since < FAST_FOR:
            return min(self.settings.gate_interval, self.settings.poll_interval)
        return self.settings.poll_interval

    def probe_soon(self, task_ids: Collection[str]) -> None:
        """Probe these local members on the next pass, whether due or not (the gate waits on
        them). Called from the coordinator (this thread) and for a peer's request."""
        with self._probe_lock:
            self._probe_asked.update(task_ids)

    def member_event(self, event: ContainerEvent) -> None:
        """A local member started, died or turned healthy: pass now, not at the next tick. A
        started member and one that just turned healthy (its listener answers) are probed on
        that pass whether due or not."""
        if event.action == "health_status: healthy":
            if event.container_id in self._healthy_seen:
                return  # still healthy: nothing new
            self._healthy_seen.add(event.container_id)
        elif event.action.startswith("health_status"):
            self._healthy_seen.discard(event.container_id)
            return
        elif event.action == "die":
            self._healthy_seen.discard(event.container_id)
        task = event.labels.get(TASK_ID_LABEL)
        if task and event.action != "die":
            self.probe_soon([task])
        self._reload_due.set()

    def receive_probe_request(self, raw: bytes) -> tuple[int, str]:
        """The leader's gate asks for these members' probes now: ``{"tasks": [task IDs]}``. It
        only brings a probe forward (no state changes, nothing is signalled), so it needs no
        signature; the request is bounded all the same."""
        if len(raw) > _MAX_PROBE_BODY:
            return 413, f"request body over {_MAX_PROBE_BODY} bytes"
        try:
            body = json.loads(raw)
            tasks = body["tasks"] if isinstance(body, dict) else None
            if (
                not isinstance(tasks, list)
                or len(tasks) > _MAX_PROBE_TASKS
                or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tasks)
            ):
                raise ValueError
        except (ValueError, KeyError):
            return 400, 'expected {"tasks": [up to 16 task IDs]}'
        self.probe_soon(tasks)
        self._reload_due.set()
        return 202, f"probing {len(tasks)} member(s) now"

    def _probe_members(self, fingerprint: str | None) -> None:
        """Probe the local Vault members (due ones only) and publish them in /health."""
        if self.prober is None:
            return
        with self._probe_lock:
            asked, self._probe_asked = self._probe_asked, set()
        if asked:
            self.prober.forget_tasks(asked)
        before = self.prober.probes
        self.members = self.prober.probe(self._node_id(), fingerprint)
        self.metrics.member_probes.inc(self.prober.probes - before)
        self._publish_info(None)

    def _signalled_for(self, fingerprint: str) -> frozenset[str]:
        """Containers already sent a SIGHUP for ``fingerprint`` (kept beside the pair, so a
        distributor killed between installing and signalling still knows after it restarts)."""
        marker = self.settings.target_dir / SIGNALLED_MARKER
        try:
            text = marker.read_text() if marker.exists() else ""
        except OSError:
            text = ""
        done, containers = read_marker(text)
        if done != fingerprint:
            return frozenset()
        if containers is None:  # an older distributor signalled every local container then
            return frozenset(m.container_id for m in self.members)
        return containers

    def _remember_signalled(self, fingerprint: str, containers: frozenset[str]) -> None:
        marker = self.settings.target_dir / SIGNALLED_MARKER
        try:
            write_file_atomic(marker, render_marker(fingerprint, containers).encode())
        except StorageError as exc:
            _log.warning("signal.marker_failed", error=str(exc))

    def _remote_members(self) -> tuple[list[Member], Mapping[str, DistributorInfo]]:
        """The peers' members, and the peers' reports they came from (one survey a pass)."""
        survey = self.peers.survey()
        me = self._node_id()
        members = [
            Member(node, report.hostname, report.fingerprint, probe)
            for node, report in sorted(survey.reports.items())
            if me not in (node, report.node_id)
            for probe in report.members
        ]
        return members, survey.reports

    def _read_pause(
        self, engine: DockerEngine, reports: Mapping[str, DistributorInfo] | None
    ) -> str | None:
        """The operator's pause (``certflow pause``), from this distributor's own service (every
        pass on a manager, so that what it publishes for the workers is current); on a worker,
        which cannot read services, from a manager's report among this pass's ``reports`` (None:
        no survey this pass, as no local member lacks the pair: nothing to hold). A worker that
        hears no manager cannot tell, and holds: a pause must never fail open."""
        try:
            pause = pause_from_labels(engine.service(self.settings.service_name).labels)
        except DockerNotFound:
            pause = None  # not run as that service (a hand-started process)
        except DockerError:
            if reports is None:
                return None
            managers = [r for r in reports.values() if r.pause_known]
            if not managers:
                return (
                    "pause state unknown: this node cannot read services and no manager's "
                    "distributor answered"
                )
            return next((r.paused for r in managers if r.paused), None)
        text = pause.describe() if pause is not None else None
        if text != self.paused or not self._pause_known:
            self.paused, self._pause_known = text, True
            self._publish_info(None)
        return text

    def _signal_canary(self, engine: DockerEngine, fingerprint: str | None) -> None:
        """Signal mode: the canary member first, the others once it serves the new pair."""
        now = time.time()
        signalled = self._signalled_for(fingerprint) if fingerprint else frozenset()
        # Peers are asked only while a local member still lacks the pair.
        behind = fingerprint is not None and any(not serves(m, fingerprint) for m in self.members)
        remote, reports = self._remote_members() if behind else ([], None)
        wait = self._canary_wait
        decided = plan(
            View(
                now=now,
                fingerprint=fingerprint,
                node_id=self._node_id(),
                node_name=self.settings.node_name,
                local=self.members,
                remote=remote,
                signalled=signalled,
                waiting_since=wait[1] if wait and wait[0] == fingerprint else None,
                timeout=self.settings.canary_timeout,
            )
        )
        self._busy = decided.step in _CANARY_IN_FLIGHT
        if decided.waiting and fingerprint is not None:
            if wait is None or wait[0] != fingerprint:
                self._canary_wait = (fingerprint, now)
        else:
            self._canary_wait = None
        pause = self._read_pause(engine, reports)
        if fingerprint is not None:
            self._log_canary(fingerprint, decided)
            if pause is None:
                self._send(engine, fingerprint, decided, signalled)
        if pause is not None:
            self.health.report(
                "reload",
                Status.DEGRADED,
                f"{pause}; held: {decided.message}; `certflow resume` continues from here",
                decision="paused",
                step=decided.step.value,
                canary=decided.canary.label if decided.canary else None,
            )
            return
        self.health.report(
            "reload",
            decided.status,
            decided.message,
            step=decided.step.value,
            canary=decided.canary.label if decided.canary else None,
        )

    def _send(
        self, engine: DockerEngine, fingerprint: str, decided: Plan, signalled: frozenset[str]
    ) -> None:
        slots = {m.container_id: m.slot for m in self.members}
        canary = decided.canary.probe.container_id if decided.canary else None
        for container_id in decided.signal:
            # Recorded before the signal: a crash in between costs a SIGHUP, never a second one.
            signalled = signalled | {container_id}
            self._remember_signalled(fingerprint, signalled)
            if engine.signal_container(container_id):
                self.metrics.signals.inc()
                _log.info(
                    "vault.signalled",
                    container=container_id[:12],
                    slot=slots.get(container_id),
                    canary=container_id == canary,
                    fingerprint=fingerprint,
                )
            if self.prober is not None:
                self.prober.forget(container_id)
        if decided.signal:
            # Probe what was signalled on the next pass, at once: a member reloads its listener
            # within milliseconds of the SIGHUP, and the others wait for the canary's proof.
            self._reload_due.set()

    def _log_canary(self, fingerprint: str, decided: Plan) -> None:
        """One line per canary outcome and fingerprint, not one per pass."""
        if decided.canary is None:
            return
        container = decided.canary.probe.container_id
        if decided.step is CanaryStep.HALTED:
            key = (fingerprint, "failed", container)
            if key not in self._canary_logged:
                self._canary_logged.add(key)
                self.metrics.canary_failures.inc()
                _log.error(
                    "vault.canary_failed",
                    canary=decided.canary.label,
                    slot=decided.canary.probe.slot,
                    detail=decided.canary.probe.detail,
                    message=decided.message,
                )
                slot = decided.canary.probe.slot
                self.notifier.notify(
                    Event(
                        Notice.CANARY_FAILED,
                        decided.message,
                        subject=f"{fingerprint} {decided.canary.label}",
                        fields={
                            "fingerprint": fingerprint,
                            "canary": decided.canary.label,
                            "detail": decided.canary.probe.detail,
                            **({"slot": slot} if slot is not None else {}),
                        },
                    )
                )
        elif decided.step in {CanaryStep.ROLL, CanaryStep.WAIT, CanaryStep.DONE}:
            key = (fingerprint, "proven", container)
            if key not in self._canary_logged:
                self._canary_logged.add(key)
                _log.info(
                    "vault.canary_proven",
                    canary=decided.canary.label,
                    slot=decided.canary.probe.slot,
                    fingerprint=fingerprint,
                )

    def _node_id(self) -> str:
        if not self.node_id and self.engine is not None:
            try:
                self.node_id = self.engine.local_node().node_id
            except DockerError:
                return ""
        return self.node_id

    def _publish_info(self, result: SyncResult | None) -> None:
        with self._info_lock:  # one whole snapshot at a time, from either loop
            self._publish_info_locked(result)

    def _publish_info_locked(self, result: SyncResult | None) -> None:
        installed = result.installed if result is not None else None
        if result is None:
            try:
                installed = self.installer.installed()
            except StorageError:
                installed = None
        info = DistributorInfo(
            node_id=self._node_id(),
            hostname=self.settings.node_name,
            fingerprint=installed.manifest.fingerprint if installed else None,
            generation=installed.manifest.generation if installed else None,
            installed_at=iso(installed_at(installed.directory)) if installed else None,
            storagebox_generation=self.state.seen_generation,
            last_sync=iso(self.state.last_sync),
            last_error=self.state.last_error,
            members=self.members,
            paused=self.paused,
            pause_known=self._pause_known,
            consumers=self.consumer_reports,
        )
        self.health.set_info(**info.model_dump(mode="json"))

    # -- stop orders (restart mode: the coordinator restarts a member through its node) ---------

    def receive_stop_order(self, raw: bytes) -> tuple[int, str]:
        """An order from the coordinator, as the HTTP route hands it over: (status, message)."""
        try:
            order = decode(raw, self.settings.manifest_keys, now=time.time())
        except OrderRefused as exc:
            self.metrics.stop_orders.labels(outcome=exc.reason).inc()
            _log.warning("vault.stop_refused", reason=exc.reason, error=str(exc))
            return exc.status, str(exc)
        return self.stop_member(order)

    def stop_member(self, order: StopOrder) -> tuple[int, str]:
        """Stop the local member ``order`` names (SIGTERM: an active member steps down first;
        Swarm's restart policy starts it again on the installed pair). Safe to repeat."""
        if self.engine is None or self.settings.reload_mode != "restart":
            self.metrics.stop_orders.labels(outcome="not_restart_mode").inc()
            return 409, "this distributor does not restart Vault (DISTRIBUTOR_RELOAD_MODE)"
        with self._stop_lock:
            try:
                installed = self.installer.installed()
                containers = self.engine.containers(self.settings.vault_service, self._node_id())
            except (StorageError, DockerError) as exc:
                self.metrics.stop_orders.labels(outcome="error").inc()
                return 503, f"cannot check the order: {exc}"
            fp = installed.manifest.fingerprint if installed else None
            running = {c.container_id for c in containers}
            self._terminated = {c: t for c, t in self._terminated.items() if c in running}
            probes = {m.container_id: m for m in self.members}
            local = [
                LocalTask(
                    c.container_id,
                    c.labels.get(TASK_ID_LABEL, ""),
                    serves=fp is not None
                    and (p := probes.get(c.container_id)) is not None
                    and p.proven
                    and p.sealed is False
                    and p.fingerprint == fp,
                )
                for c in containers
            ]
            try:
                task = judge(order, service=self.settings.vault_service, installed=fp, local=local)
            except OrderRefused as exc:
                self.metrics.stop_orders.labels(outcome=exc.reason).inc()
                _log.warning("vault.stop_refused", reason=exc.reason, error=str(exc))
                return exc.status, str(exc)
            if task is None:
                self.metrics.stop_orders.labels(outcome="gone").inc()
                return 200, f"slot {order.slot}: task {order.task_id[:12]} no longer runs here"
            # SIGTERM: Vault steps down and exits. A member still running long after it (a
            # hung shutdown) gets SIGKILL when the order comes again, as `docker stop` would.
            first = self._terminated.setdefault(task.container_id, time.monotonic())
            signal = "SIGKILL" if time.monotonic() - first > KILL_AFTER else "SIGTERM"
            try:
                sent = self.engine.signal_container(task.container_id, signal)
            except DockerError as exc:
                self.metrics.stop_orders.labels(outcome="error").inc()
                return 503, f"cannot stop the member: {exc}"
            if self.prober is not None:
                self.prober.forget(task.container_id)
        self.metrics.stop_orders.labels(outcome="stopped" if sent else "gone").inc()
        _log.info(
            "vault.member_stopped",
            slot=order.slot,
            task=order.task_id[:12],
            container=task.container_id[:12],
            signal=signal,
            fingerprint=order.fingerprint,
        )
        return 202, f"slot {order.slot}: stopping ({signal}); Swarm starts it again"

    def receive_reload_order(self, raw: bytes) -> tuple[int, str]:
        """A consumer task's reload order from the leader, as the HTTP route hands it over."""
        if self.task_reloader is None:
            return 409, "this distributor has no Docker engine to reload a task with"
        return self.task_reloader.receive(raw)

    def routes(self, app: FastAPI) -> None:
        """The distributor's own HTTP routes, beside /health and /metrics."""

        @app.post(PROBE_PATH)
        async def post_probe_members(request: Request) -> JSONResponse:
            raw = await request.body()
            status, message = self.receive_probe_request(raw)
            return JSONResponse({"message": message}, status_code=status)

        @app.post(RELOAD_TASK_PATH)
        async def post_reload_task(request: Request) -> JSONResponse:
            raw = await request.body()
            status, message = await run_in_threadpool(self.receive_reload_order, raw)
            return JSONResponse({"message": message}, status_code=status)

        @app.post(STOP_PATH)
        async def post_stop_member(request: Request) -> JSONResponse:
            raw = await request.body()
            status, message = await run_in_threadpool(self.receive_stop_order, raw)
            return JSONResponse({"message": message}, status_code=status)

    # -- the loops ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """The sync loop on this thread, the reload loop on another: a Storage Box read that
        hangs (a dead network mount) must not blind the coordinator, which is what names the
        down node and holds the rollout meanwhile."""
        try:
            self.installer.clean_start()
        except StorageError as exc:
            _log.error("install.clean_failed", error=str(exc))
        _log.info(
            "distributor.started",
            source=str(self.settings.source_dir),
            target=str(self.settings.target_dir),
            reload_mode=self.settings.reload_mode,
            docker=self.engine is not None,
        )
        reloader: threading.Thread | None = None
        events: MemberEventWatch | None = None
        if self.engine is not None:
            events = MemberEventWatch(self.engine, self.settings.vault_service, self.member_event)
            events.start()
            reloader = threading.Thread(
                target=self._reload_loop, args=(stop,), name="reload", daemon=True
            )
            reloader.start()
        consumers: threading.Thread | None = None
        if self.consumers is not None:
            consumers = threading.Thread(
                target=self._consumer_loop, args=(stop,), name="consumers", daemon=True
            )
            consumers.start()
        try:
            self._sync_loop(stop)
        finally:
            stop.set()
            self._reload_due.set()
            self._consumers_due.set()
            if events is not None:
                events.stop()
            if reloader is not None:
                reloader.join(30)
            if consumers is not None:
                consumers.join(30)
        return 0

    def _sync_loop(self, stop: threading.Event) -> None:
        # Flat directory, so not recursive; the short debounce lets a burst of writes (files, then
        # the manifest) settle before the pass reads them.
        watcher = ChangeWatcher(
            self.settings.source_dir,
            debounce=_SETTLE,
            use_inotify=not self.settings.poll_only,
            recursive=False,
        )
        # A pass normally takes milliseconds; one blocked on a dead mount shows as failing.
        stall = StallWatch(
            self.health,
            "sync",
            limit=max(10.0, 2 * self.settings.poll_interval),
            what=f"reading the Storage Box ({self.settings.source_dir})",
        )
        stall.start()
        try:
            while not stop.is_set():
                watcher.ensure_started()  # the mount may have appeared since the start
                stall.begin()
                try:
                    result = self.sync_pass()
                finally:
                    stall.end()
                if result is not None and result.newly_installed:
                    self._reload_due.set()  # probe and coordinate now, not at the next tick
                    self._consumers_due.set()
                if watcher.wait(stop, self.settings.poll_interval) is Wake.STOP:
                    break
        finally:
            stall.stop()
            watcher.stop()

    def _reload_loop(self, stop: threading.Event) -> None:
        stall = StallWatch(
            self.health,
            "reload",
            limit=max(_RELOAD_STALL, 4 * self.settings.poll_interval),
            what="the reload pass (Docker, a member probe or a peer)",
        )
        stall.start()
        failed: str | None = None
        try:
            while not stop.is_set():
                stall.begin()
                try:
                    self.reload_pass()
                    failed = None
                except Exception as exc:  # the sync loop goes on; /health says it
                    if failed != repr(exc):  # one traceback per distinct failure, not per pass
                        _log.exception("reload.pass_failed", error=str(exc))
                    failed = repr(exc)
                    self.health.report("reload", Status.FAILING, f"reload pass failed: {exc}")
                finally:
                    stall.end()
                self._reload_due.wait(self._pace(time.monotonic()))
                self._reload_due.clear()
        finally:
            stall.stop()

    def _consumer_loop(self, stop: threading.Event) -> None:
        """The consumers' passes, on their own thread: a consumer whose check address hangs
        (up to DISTRIBUTOR_CONSUMER_CHECK_TIMEOUT) never slows Vault's gate."""
        stall = StallWatch(
            self.health,
            "consumers",
            limit=max(_RELOAD_STALL, 4 * self.settings.poll_interval),
            what="the consumers' pass (Docker, a check address or a peer)",
        )
        stall.start()
        failed: str | None = None
        fast_since: float | None = None
        try:
            while not stop.is_set():
                stall.begin()
                try:
                    self.consumer_pass()
                    failed = None
                except Exception as exc:  # Vault's loop goes on; /health says it
                    if failed != repr(exc):  # one traceback per distinct failure
                        _log.exception("consumers.pass_failed", error=str(exc))
                    failed = repr(exc)
                    self.health.report("consumers", Status.FAILING, f"consumer pass failed: {exc}")
                finally:
                    stall.end()
                now = time.monotonic()
                busy = self.consumers is not None and self.consumers.busy
                fast_since = (fast_since if fast_since is not None else now) if busy else None
                fast = fast_since is not None and now - fast_since < FAST_FOR
                pace = self.settings.gate_interval if fast else self.settings.poll_interval
                self._consumers_due.wait(min(pace, self.settings.poll_interval))
                self._consumers_due.clear()
        finally:
            stall.stop()
