"""Prometheus metrics of the reloader, on its own registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.errors import AuthReason, Reason


class ReloaderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.not_after = Gauge(
            "certflow_cert_not_after_timestamp_seconds",
            "notAfter of the certificate committed on the Storage Box (Unix time)",
            registry=self.registry,
        )
        self.publishes = Counter(
            "certflow_reloader_publishes_total",
            "Pairs published (committed) to the Storage Box by this process",
            registry=self.registry,
        )
        self.validation_failures = Counter(
            "certflow_reloader_validation_failures_total",
            "Source pairs refused, by reason (counted once per distinct source content)",
            ["reason"],
            registry=self.registry,
        )
        self.storage_errors = Counter(
            "certflow_reloader_storage_errors_total",
            "Checks that failed because the Storage Box or the source could not be read/written",
            registry=self.registry,
        )
        self.last_check = Gauge(
            "certflow_reloader_last_check_timestamp_seconds",
            "When the last complete check ended (Unix time)",
            registry=self.registry,
        )
        self.generation = Gauge(
            "certflow_reloader_generation",
            "Generation of the pair committed on the Storage Box",
            registry=self.registry,
        )
        self.manifest_refused = Counter(
            "certflow_reloader_manifest_refused_total",
            "Storage Box manifests that did not authenticate (then republished), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.resigns = Counter(
            "certflow_reloader_manifest_resigns_total",
            "Committed manifests signed again because the signing key changed (key rotation)",
            registry=self.registry,
        )
        self.auth_enabled = Gauge(
            "certflow_manifest_auth_enabled",
            "1 when manifests are authenticated (CERTFLOW_MANIFEST_KEY_FILES set), else 0",
            registry=self.registry,
        )
        for auth_reason in AuthReason:
            self.manifest_refused.labels(reason=auth_reason.value)
        for reason in Reason:
            # Every reason appears at 0 so rate() and alerts work before the first refusal.
            self.validation_failures.labels(reason=reason.value)
