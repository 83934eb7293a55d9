"""The distributor process: sync on every pass, then reload Vault the configured way."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import __version__
from shared.atomic import write_file_atomic
from shared.errors import CertificateInvalid, DockerError, StorageError
from shared.health import HealthRegistry, StallWatch, Status
from shared.logs import get_logger
from shared.swarm import list_nodes, local_node

from .catchup import stale_replicas
from .coordinator import Decision, Kind, nodes_not_ready
from .docker_ops import local_replicas, open_client, signal_container, signal_local_containers
from .install import Installed, PairInstaller, installed_at
from .metrics import DistributorMetrics
from .peers import DistributorInfo, PeerDirectory
from .reload import RestartCoordinator
from .settings import DistributorSettings
from .sync import ChangeWatcher, Step, Syncer, SyncResult

_log = get_logger(__name__)
SIGNALLED_MARKER = ".certflow-signalled"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


_RELOAD_STATUS = {
    Kind.SYNC_ONLY: Status.OK,
    Kind.DONE: Status.OK,
    Kind.WAIT: Status.OK,
    Kind.RESTART: Status.OK,
    Kind.ADOPT: Status.OK,
    Kind.NO_TASKS: Status.DEGRADED,
    Kind.LAGGING: Status.FAILING,
    Kind.FAILED: Status.FAILING,
    Kind.RESUME: Status.DEGRADED,
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
        docker_client: Any | None = None,
        health: HealthRegistry | None = None,
        metrics: DistributorMetrics | None = None,
        peers: PeerDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or HealthRegistry(
            service="cert-distributor", node=settings.node_name, version=__version__
        )
        self.metrics = metrics or DistributorMetrics()
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
        self.syncer = Syncer(settings.source_dir, self.installer, names=settings.names)
        self.client = docker_client
        self.node_id = settings.node_id
        self.coordinator: RestartCoordinator | None = None
        if self.client is not None and settings.reload_mode == "restart":
            self.coordinator = RestartCoordinator(
                self.client,
                vault_service=settings.vault_service,
                peers=peers
                or PeerDirectory(
                    docker_client=self.client,
                    service=settings.service_name,
                    port=settings.effective_peer_port,
                    timeout=settings.peer_timeout,
                ),
                lag_timeout=settings.lag_timeout,
                clock_skew=settings.clock_skew,
                update_timeout=settings.update_timeout,
                metrics=self.metrics,
                max_resumes=settings.update_resumes,
                resume_after=settings.resume_after,
            )
        self.wake = threading.Event()
        self.state = _State()
        self._last_decision: tuple[Kind, str | None, tuple[str, ...]] | None = None
        self._caught_up: set[str] = set()  # local Vault containers already sent a catch-up SIGHUP
        self._publish_info(None)

    @classmethod
    def from_settings(cls, settings: DistributorSettings) -> Distributor:
        client = None
        if settings.reload_mode != "none":
            try:
                client = open_client()
            except DockerError as exc:
                # Without a Docker socket (or on a worker) a distributor only syncs.
                _log.warning("docker.unavailable", error=str(exc))
        return cls(settings, docker_client=client)

    # -- one pass ------------------------------------------------------------------------------

    def sync_pass(self) -> SyncResult | None:
        now = datetime.now(UTC)
        self.metrics.sync_passes.inc()
        try:
            result = self.syncer.sync_once(now)
        except CertificateInvalid as exc:
            if self.state.refused != str(exc):
                # Counted and logged once per refused pair, not once per poll.
                self.metrics.refused.labels(reason=exc.reason.value).inc()
                _log.error("cert.refused", reason=exc.reason.value, error=str(exc))
            self.state.refused = self.state.last_error = str(exc)
            self.health.report(
                "sync", Status.FAILING, f"committed pair refused, keeping the installed one: {exc}"
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
        if decision.kind is Kind.SYNC_ONLY or self.client is None:
            self.health.remove("swarm")
            return
        try:
            not_ready = nodes_not_ready(list_nodes(self.client))
        except DockerError as exc:
            self.health.report("swarm", Status.DEGRADED, f"cannot list the nodes: {exc}")
            return
        if not_ready:
            self.health.report(
                "swarm",
                Status.DEGRADED,
                "node(s) not ready, left out of Vault restarts: " + "; ".join(not_ready),
                nodes=list(not_ready),
            )
        else:
            self.health.report("swarm", Status.OK, "every node ready")

    def reload_pass(self) -> Decision | None:
        mode = self.settings.reload_mode
        if mode == "none" or self.client is None:
            return None
        try:
            installed = self.installer.installed()
        except StorageError as exc:
            self.health.report("reload", Status.DEGRADED, f"installed pair unreadable: {exc}")
            return None
        fingerprint = installed.manifest.fingerprint if installed else None
        try:
            if mode == "signal":
                self._signal_if_owed(fingerprint)
                return None
            self._catch_up(installed)
            if self.coordinator is None:
                return None
            decision = self.coordinator.step(fingerprint)
        except DockerError as exc:
            self.health.report("reload", Status.DEGRADED, f"docker: {exc}")
            return None
        self.health.report(
            "reload",
            _RELOAD_STATUS[decision.kind],
            decision.message,
            decision=decision.kind.value,
            nodes=list(decision.nodes),
            left_out=list(decision.left_out),
        )
        self._report_swarm(decision)
        key = (decision.kind, decision.fingerprint, decision.nodes)
        if key != self._last_decision:
            # One line per change of state, not one per poll.
            self._last_decision = key
            log = _log.error if decision.kind in {Kind.LAGGING, Kind.FAILED} else _log.info
            log("vault.reload", decision=decision.kind.value, message=decision.message)
        return decision

    def _catch_up(self, installed: Installed | None) -> None:
        """SIGHUP a local Vault replica created for this pair but started before it was here."""
        if installed is None:
            return
        at = installed_at(installed.directory)
        stale = stale_replicas(
            local_replicas(self.client, self.settings.vault_service, self._node_id()),
            installed=installed.manifest.fingerprint,
            installed_at=at.timestamp() if at else None,
            signalled=frozenset(self._caught_up),
        )
        for container_id in stale:
            if signal_container(self.client, container_id):
                self.metrics.signals.inc()
                _log.warning(
                    "vault.catch_up",
                    container=container_id[:12],
                    why="replica started before this node had the pair it was restarted for",
                )
            self._caught_up.add(container_id)

    def _signal_if_owed(self, fingerprint: str | None) -> None:
        """SIGHUP local Vault containers once per installed fingerprint.

        The fingerprint last signalled is kept in a file beside the pair, so a distributor killed
        between installing and signalling still sends the SIGHUP after it restarts.
        """
        marker = self.settings.target_dir / SIGNALLED_MARKER
        try:
            done = marker.read_text().strip() if marker.exists() else None
        except OSError:
            done = None
        if fingerprint is None or done == fingerprint:
            return
        sent = signal_local_containers(self.client, self.settings.vault_service, self._node_id())
        self.metrics.signals.inc(len(sent))
        try:
            write_file_atomic(marker, f"{fingerprint}\n".encode())
        except StorageError as exc:
            _log.warning("signal.marker_failed", error=str(exc))
        self.health.report(
            "reload", Status.OK, f"SIGHUP sent to {len(sent)} local vault container(s)"
        )

    def _node_id(self) -> str:
        if not self.node_id and self.client is not None:
            try:
                self.node_id = local_node(self.client).node_id
            except DockerError:
                return ""
        return self.node_id

    def _publish_info(self, result: SyncResult | None) -> None:
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
            installed_at=_iso(installed_at(installed.directory)) if installed else None,
            storagebox_generation=self.state.seen_generation,
            last_sync=self.state.last_sync.isoformat() if self.state.last_sync else None,
            last_error=self.state.last_error,
        )
        self.health.set_info(**info.model_dump(mode="json"))

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        try:
            self.installer.clean_start()
        except StorageError as exc:
            _log.error("install.clean_failed", error=str(exc))
        watcher = ChangeWatcher(self.settings.source_dir, self.wake)
        if not self.settings.poll_only:
            watcher.start()
        _log.info(
            "distributor.started",
            source=str(self.settings.source_dir),
            target=str(self.settings.target_dir),
            reload_mode=self.settings.reload_mode,
            docker=self.client is not None,
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
                self.wake.clear()
                if not self.settings.poll_only and not watcher.watching:
                    watcher.start(quiet=True)  # the mount may have appeared since the start
                stall.begin()
                try:
                    self.sync_pass()
                finally:
                    stall.end()
                if stop.is_set():
                    break
                self.reload_pass()
                self._sleep(stop)
        finally:
            stall.stop()
            watcher.stop()
        return 0

    def _sleep(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.settings.poll_interval
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.wake.wait(min(remaining, 0.25)):
                # Let a burst of writes (files, then the manifest) settle before reading.
                stop.wait(0.05)
                return
