"""Prometheus metrics of the distributor, on its own registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.errors import AuthReason, Reason


class DistributorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.installs = Counter(
            "certflow_distributor_installs_total",
            "Generations installed into the target directory by this process",
            registry=self.registry,
        )
        self.refused = Counter(
            "certflow_distributor_refused_total",
            "Committed pairs refused by validation, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.sync_errors = Counter(
            "certflow_distributor_sync_errors_total",
            "Sync passes that failed on storage (mount, target directory)",
            registry=self.registry,
        )
        self.installed_generation = Gauge(
            "certflow_distributor_installed_generation",
            "Generation installed on this node",
            registry=self.registry,
        )
        self.installed_not_after = Gauge(
            "certflow_distributor_installed_not_after_timestamp_seconds",
            "notAfter of the certificate installed on this node (Unix time)",
            registry=self.registry,
        )
        self.storagebox_generation = Gauge(
            "certflow_distributor_storagebox_generation",
            "Newest generation committed on the Storage Box, as last seen",
            registry=self.registry,
        )
        self.sync_passes = Counter(
            "certflow_distributor_sync_passes_total",
            "Sync passes run (polls and event wake-ups)",
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "certflow_distributor_last_sync_timestamp_seconds",
            "When the last complete sync pass ended (Unix time)",
            registry=self.registry,
        )
        self.restarts = Counter(
            "certflow_distributor_vault_restarts_total",
            "Vault member restarts ordered by this process (as coordinator), one per member",
            registry=self.registry,
        )
        self.adoptions = Counter(
            "certflow_distributor_label_adoptions_total",
            "Fingerprints recorded once every Vault member served them",
            registry=self.registry,
        )
        self.advances = Counter(
            "certflow_distributor_update_advances_total",
            "Vault rolling updates certflow did not start, moved on once their member was back",
            registry=self.registry,
        )
        self.stop_orders = Counter(
            "certflow_distributor_stop_orders_total",
            "Stop orders for local Vault members received, by outcome (stopped, gone, or why "
            "refused)",
            ["outcome"],
            registry=self.registry,
        )
        self.rollout_halted = Gauge(
            "certflow_distributor_rollout_halted",
            "1 while a Vault rolling update is halted on a member that is not back",
            registry=self.registry,
        )
        self.update_conflicts = Counter(
            "certflow_distributor_update_conflicts_total",
            "'update out of sequence' answers retried",
            registry=self.registry,
        )
        self.signals = Counter(
            "certflow_distributor_vault_signals_total",
            "SIGHUPs sent to local Vault containers",
            registry=self.registry,
        )
        self.canary_failures = Counter(
            "certflow_distributor_canary_failures_total",
            "signal mode: rollouts halted because the canary did not serve the new pair in time",
            registry=self.registry,
        )
        self.member_probes = Counter(
            "certflow_distributor_member_probes_total",
            "Probes of local Vault members (each runs the Vault CLI twice in the container)",
            registry=self.registry,
        )
        self.lagging_nodes = Gauge(
            "certflow_distributor_lagging_nodes",
            "Vault nodes whose distributor has not installed the leader's pair",
            registry=self.registry,
        )
        self.fanout_seconds = Histogram(
            "certflow_distributor_peer_fanout_seconds",
            "Time to ask every peer distributor for its /health",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.manifest_refused = Counter(
            "certflow_distributor_manifest_refused_total",
            "Storage Box manifests refused because they did not authenticate, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.auth_enabled = Gauge(
            "certflow_manifest_auth_enabled",
            "1 when manifests are authenticated (CERTFLOW_MANIFEST_KEY_FILES set), else 0",
            registry=self.registry,
        )
        for reason in Reason:
            self.refused.labels(reason=reason.value)
        for auth_reason in AuthReason:
            self.manifest_refused.labels(reason=auth_reason.value)
        # Consumers (services labelled certflow.reload), as the leader's distributor sees them.
        self.consumer_reloads = Counter(
            "certflow_distributor_consumer_reloads_total",
            "Consumer task reloads ordered by this process (as leader), by consumer service and "
            "action",
            ["consumer", "action"],
            registry=self.registry,
        )
        self.consumer_orders = Counter(
            "certflow_distributor_consumer_orders_total",
            "Consumer reload orders this node received or carried out, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.consumer_state = Gauge(
            "certflow_distributor_consumer_state",
            "1 for the state each consumer is in (done, reloading, waiting, halted, reported, "
            "paused, watched), 0 for the others",
            ["consumer", "state"],
            registry=self.registry,
        )
        self.consumer_serving_old = Gauge(
            "certflow_distributor_consumer_tasks_serving_old",
            "Running tasks of a consumer whose check address serves another leaf than the one "
            "installed",
            ["consumer"],
            registry=self.registry,
        )
