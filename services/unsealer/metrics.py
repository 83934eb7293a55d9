"""Prometheus metrics of the unsealer, per replica, on its own registry (served at /metrics)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.unsealer.status import Role

ROLE_NAMES = tuple(role.value for role in Role)


class UnsealerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["replica"]
        self.sealed = Gauge(
            "certflow_vault_sealed",
            "1 if the replica reports sealed",
            labels,
            registry=self.registry,
        )
        self.initialized = Gauge(
            "certflow_vault_initialized",
            "1 if the replica reports initialized",
            labels,
            registry=self.registry,
        )
        self.reachable = Gauge(
            "certflow_vault_reachable",
            "1 if the replica answered the last seal-status call",
            labels,
            registry=self.registry,
        )
        self.progress = Gauge(
            "certflow_vault_unseal_progress",
            "Shares accepted in the replica's current unseal attempt",
            labels,
            registry=self.registry,
        )
        self.sealed_seconds = Gauge(
            "certflow_vault_sealed_seconds",
            "How long the replica has been seen sealed (0 when unsealed)",
            labels,
            registry=self.registry,
        )
        self.last_seen = Gauge(
            "certflow_vault_last_seen_timestamp_seconds",
            "When the replica last answered (Unix time)",
            labels,
            registry=self.registry,
        )
        self.unseals = Counter(
            "certflow_unsealer_unseals_total",
            "Replicas this process brought from sealed to unsealed",
            labels,
            registry=self.registry,
        )
        self.submissions = Counter(
            "certflow_unsealer_key_submissions_total",
            "Key shares submitted",
            labels,
            registry=self.registry,
        )
        self.rejections = Counter(
            "certflow_unsealer_key_rejections_total",
            "Unseal attempts that failed because our key was rejected",
            labels,
            registry=self.registry,
        )
        self.joins = Counter(
            "certflow_unsealer_raft_joins_total",
            "Members this process joined to the active member (sys/storage/raft/join)",
            labels,
            registry=self.registry,
        )
        self.resets = Counter(
            "certflow_unsealer_resets_total",
            "Stalled unseal attempts reset",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "certflow_unsealer_errors_total",
            "Calls to a replica that failed (unreachable or an unexpected error)",
            labels,
            registry=self.registry,
        )
        self.replicas = Gauge(
            "certflow_unsealer_replicas", "Replicas found by discovery", registry=self.registry
        )
        self.last_cycle = Gauge(
            "certflow_unsealer_last_cycle_timestamp_seconds",
            "When the last pass over all replicas ended (Unix time)",
            registry=self.registry,
        )
        self.role = Gauge(
            "certflow_unsealer_member_role",
            "1 for the member's current role (active, standby, sealed, not joined, "
            "uninitialized, unreachable), 0 for the others",
            ["replica", "role"],
            registry=self.registry,
        )
        self.active_members = Gauge(
            "certflow_unsealer_active_members",
            "Members answering as active (exactly 1 is healthy)",
            registry=self.registry,
        )
        self._per_replica = [
            self.sealed,
            self.initialized,
            self.reachable,
            self.progress,
            self.sealed_seconds,
            self.last_seen,
            self.unseals,
            self.submissions,
            self.rejections,
            self.joins,
            self.resets,
            self.errors,
        ]

    def forget(self, replica: str) -> None:
        """Drop a replica's series once discovery no longer finds it."""
        for metric in self._per_replica:
            with contextlib.suppress(KeyError):
                metric.remove(replica)
        for role in ROLE_NAMES:
            with contextlib.suppress(KeyError):
                self.role.remove(replica, role)
