"""Settings of ``certflow distributor``, validated once at start (the names are the interface)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shared.settings import (
    CertPairSettings,
    NotifySettings,
    OptionalInt,
    TrustBundleSetting,
    TrustNameSetting,
)

ReloadMode = Literal["restart", "signal", "none"]


class DistributorSettings(CertPairSettings, NotifySettings):
    source_dir: Path = Field(
        Path("/mnt/storagebox/ssl"),
        alias="DISTRIBUTOR_SOURCE_DIR",
        description="Storage Box directory the published pair and manifest are read from",
    )
    target_dir: Path = Field(
        Path("/opt/iklimco/ssl"),
        alias="DISTRIBUTOR_TARGET_DIR",
        description="Where this node's pair is installed (what Vault mounts as /vault/certs)",
    )
    reload_mode: ReloadMode = Field(
        "restart",
        alias="DISTRIBUTOR_RELOAD_MODE",
        description="How Vault loads a new pair: restart (rolling update), signal (SIGHUP), none",
    )
    vault_service: str = Field(
        "iklimco_vault",
        alias="DISTRIBUTOR_VAULT_SERVICE",
        min_length=1,
        description="Swarm service of Vault that is restarted or signalled",
    )
    service_name: str = Field(
        "iklimco_cert-distributor",
        alias="DISTRIBUTOR_SERVICE_NAME",
        min_length=1,
        description="Own Swarm service name; the leader finds the peer distributors through it",
    )
    # Swarm can template it: DISTRIBUTOR_NODE_ID={{.Node.ID}}; otherwise asked from the engine.
    node_id: str = Field(
        "",
        alias="DISTRIBUTOR_NODE_ID",
        description="This node's Swarm node ID; empty: asked from the Docker engine",
    )
    poll_interval: float = Field(
        5.0,
        alias="DISTRIBUTOR_POLL_INTERVAL",
        gt=0,
        le=3600,
        description="Seconds between Storage Box checks (file events can wake it sooner)",
    )
    # Polling is the source of truth; watchdog events only wake the loop early where they arrive.
    poll_only: bool = Field(
        False,
        alias="DISTRIBUTOR_POLL_ONLY",
        description="Use no file watch at all: notice new pairs only by polling",
    )
    key_mode: int = Field(
        0o600,
        alias="DISTRIBUTOR_KEY_MODE",
        description="Octal file mode of the installed key (owner must read, nothing for others)",
    )
    cert_mode: int = Field(
        0o644,
        alias="DISTRIBUTOR_CERT_MODE",
        description="Octal file mode of the installed certificate",
    )
    file_uid: OptionalInt = Field(
        None,
        alias="DISTRIBUTOR_FILE_UID",
        ge=0,
        description="Owner uid of the installed files (Vault's user); unset: the distributor's",
    )
    file_gid: OptionalInt = Field(
        None,
        alias="DISTRIBUTOR_FILE_GID",
        ge=0,
        description="Owner gid of the installed files (Vault's group); unset: the distributor's",
    )
    peer_port: OptionalInt = Field(
        None,
        alias="DISTRIBUTOR_PEER_PORT",
        ge=1,
        le=65535,
        description="Port of the peer distributors' /health the leader asks; unset: HEALTH_PORT",
    )
    peer_timeout: float = Field(
        3.0,
        alias="DISTRIBUTOR_PEER_TIMEOUT",
        gt=0,
        le=60,
        description="Seconds to wait for each peer distributor's /health answer",
    )
    lag_timeout: float = Field(
        300.0,
        alias="DISTRIBUTOR_LAG_TIMEOUT",
        gt=0,
        le=86400,
        description="Seconds the leader waits for Vault nodes to install a pair before failing",
    )
    keep: int = Field(
        2,
        alias="DISTRIBUTOR_KEEP",
        ge=2,
        le=100,
        description="Installed generations kept on disk, the current one included (at least 2)",
    )
    member_bound: float = Field(
        120.0,
        alias="DISTRIBUTOR_MEMBER_BOUND",
        gt=0,
        le=86400,
        description="restart mode: seconds a restarted Vault member may take to be back "
        "(unsealed, serving the installed pair, trusted) before the rollout is reported halted",
    )
    voter_wait: float = Field(
        12.0,
        alias="DISTRIBUTOR_VOTER_WAIT",
        ge=0,
        le=3600,
        description="restart mode: seconds a member back after a fault (or a restarted one in a "
        "cluster with no write to prove it caught up) must be back before the next one stops "
        "(raft makes a rejoined member a voter after autopilot's stabilization time, 10 s)",
    )

    gate_interval: float = Field(
        0.5,
        alias="DISTRIBUTOR_GATE_INTERVAL",
        gt=0,
        le=60,
        description="Seconds between reload passes while a rollout is in flight (a member "
        "stopped and not yet caught up, a canary not yet proven): how late the gate sees it open",
    )
    clock_skew: float = Field(
        1.0,
        alias="DISTRIBUTOR_CLOCK_SKEW",
        ge=0,
        le=300,
        description="restart mode: how far the nodes' clocks may differ (seconds); the active "
        "member's raft index counts for a restarted member only if probed this long after it "
        "started",
    )

    # Each probe runs the member's Vault CLI twice inside its container (a Go program start).
    probe_interval: float = Field(
        60.0,
        alias="DISTRIBUTOR_PROBE_INTERVAL",
        ge=5,
        le=3600,
        description="Seconds between probes of a local Vault member proven to serve the "
        "installed pair (others: every pass)",
    )
    canary_timeout: float = Field(
        60.0,
        alias="DISTRIBUTOR_CANARY_TIMEOUT",
        gt=0,
        le=86400,
        description="signal mode: seconds the canary member may take to serve a new pair "
        "before the rollout halts",
    )

    # Consumers: other services that use the pair (labelled certflow.reload; shared/consumers.py).
    consumers: bool = Field(
        True,
        alias="DISTRIBUTOR_CONSUMERS",
        description="Reload the services labelled certflow.reload (the Swarm leader's "
        "distributor decides), each once the nodes of its tasks have a new pair; false: Vault "
        "only",
    )
    consumer_bound: float = Field(
        120.0,
        alias="DISTRIBUTOR_CONSUMER_BOUND",
        gt=0,
        le=86400,
        description="Seconds a reloaded consumer task may take to be back (running and, with a "
        "certflow.check label, serving the installed leaf) before that consumer is reported "
        "halted",
    )
    consumer_check_timeout: float = Field(
        3.0,
        alias="DISTRIBUTOR_CONSUMER_CHECK_TIMEOUT",
        gt=0,
        le=60,
        description="Seconds a consumer task's check address may take to answer a TLS handshake",
    )

    # The trust check: the chain must verify, for the name Vault's clients dial, against the CA
    # bundle they use. Unset: not checked (the pair is still validated on its own).
    trust_bundle: TrustBundleSetting = Field(
        None,
        alias="DISTRIBUTOR_TRUST_BUNDLE",
        description="PEM CA bundle of Vault's clients; set: a chain that does not verify against "
        "it is refused before installing",
    )
    trust_name: TrustNameSetting = Field(
        None,
        alias="DISTRIBUTOR_TRUST_NAME",
        description="DNS name the chain must verify for (Vault's TLS name, e.g. vault.iklim.co); "
        "unset: the leaf's first name, a wildcard's * replaced by certflow-check",
    )

    @model_validator(mode="after")
    def _distinct_dirs(self) -> DistributorSettings:
        if self.source_dir.resolve() == self.target_dir.resolve():
            raise ValueError("DISTRIBUTOR_SOURCE_DIR and DISTRIBUTOR_TARGET_DIR must differ")
        return self

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port if self.peer_port is not None else self.health_port
