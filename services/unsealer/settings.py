"""Settings of ``certflow unsealer``, validated once at start (names are the operator interface)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from shared.settings import NotifySettings, OptionalPath


class UnsealerSettings(NotifySettings):
    key_file: Path = Field(
        Path("/run/secrets/vault_unseal_key"),
        alias="UNSEALER_KEY_FILE",
        description="The unseal keys: one per line, or `vault operator init -format=json` output",
    )
    # Off: any group or other bit refuses the file (a stack's default secret mount is 0444).
    key_file_group_read: bool = Field(
        False,
        alias="UNSEALER_KEY_FILE_GROUP_READ",
        description="Accept a key file its group may read (0440/0640), for a stack that mounts "
        "the secret for a group on purpose; never others, never a group write "
        "(docs/unseal-key-file.md)",
    )
    vault_service: str = Field(
        "iklimco_vault",
        alias="UNSEALER_VAULT_SERVICE",
        min_length=1,
        description="Swarm service of the Vault replicas (Docker API tasks, DNS tasks.<service>)",
    )
    vault_addrs_raw: str = Field(
        "",
        alias="UNSEALER_VAULT_ADDRS",
        description="Static https://host:port list instead of discovery (comma-separated)",
    )
    vault_network: str = Field(
        "",
        alias="UNSEALER_VAULT_NETWORK",
        description="Network whose task addresses to use (default: the first non-ingress one)",
    )
    # DNS name listing the replicas when the Docker API is not used; empty: tasks.<service>.
    vault_dns: str = Field(
        "",
        alias="UNSEALER_VAULT_DNS",
        description="DNS name of the replicas without the Docker API (default tasks.<service>)",
    )
    vault_port: int = Field(
        8200,
        alias="UNSEALER_VAULT_PORT",
        ge=1,
        le=65535,
        description="Vault's listener port on each replica",
    )
    ca_file: OptionalPath = Field(
        None,
        alias="UNSEALER_CA_FILE",
        description="CA bundle that Vault's certificate must chain to (default: system CAs)",
    )
    tls_server_name: str = Field(
        "vault.iklim.co",
        alias="UNSEALER_TLS_SERVER_NAME",
        min_length=1,
        description="SNI name checked in Vault's certificate (replicas are dialled by IP)",
    )
    skip_verify: bool = Field(
        False,
        alias="UNSEALER_SKIP_VERIFY",
        description="Turn TLS verification off (logged as a warning); never in production",
    )
    # The slow interval bounds how late a restarted replica is noticed while all looked unsealed;
    # keep it under the 2 s unseal promise (a sealed or unreachable replica switches to fast).
    fast_interval: float = Field(
        0.25,
        alias="UNSEALER_FAST_INTERVAL",
        gt=0,
        le=60,
        description="Seconds between passes while a replica is sealed, unreachable or changing",
    )
    slow_interval: float = Field(
        1.0,
        alias="UNSEALER_SLOW_INTERVAL",
        gt=0,
        le=600,
        description="Seconds between passes while all are unsealed (how late a restart is seen)",
    )
    stall_timeout: float = Field(
        30.0,
        alias="UNSEALER_STALL_TIMEOUT",
        gt=0,
        le=86400,
        description="Seconds an attempt we cannot move may stay unchanged before we reset it",
    )
    sealed_alert: float = Field(
        60.0,
        alias="UNSEALER_SEALED_ALERT",
        gt=0,
        le=86400,
        description="Seconds sealed, uninitialized or unreachable before /health fails",
    )
    backoff_initial: float = Field(
        1.0,
        alias="UNSEALER_BACKOFF_INITIAL",
        gt=0,
        le=3600,
        description="First wait after a rejected key (doubles per rejection, with jitter)",
    )
    backoff_max: float = Field(
        60.0,
        alias="UNSEALER_BACKOFF_MAX",
        gt=0,
        le=86400,
        description="Longest wait between attempts with a rejected key",
    )
    connect_timeout: float = Field(
        1.0,
        alias="UNSEALER_CONNECT_TIMEOUT",
        gt=0,
        le=60,
        description="TCP/TLS connect timeout per replica call (seconds)",
    )
    request_timeout: float = Field(
        3.0,
        alias="UNSEALER_REQUEST_TIMEOUT",
        gt=0,
        le=120,
        description="Whole-request timeout per replica call (seconds)",
    )
    unseal_timeout: float = Field(
        30.0,
        alias="UNSEALER_UNSEAL_TIMEOUT",
        gt=0,
        le=300,
        description="Timeout of one unseal or raft join call (seconds): a joining member "
        "answers them only once it has spoken to the active member",
    )
    raft_join: bool = Field(
        True,
        alias="UNSEALER_RAFT_JOIN",
        description="Join a member that has not joined the raft cluster to the active member, "
        "by address; false when Vault's own retry_join stanzas name every member",
    )
    join_retry: float = Field(
        5.0,
        alias="UNSEALER_JOIN_RETRY",
        gt=0,
        le=600,
        description="Seconds between join calls to a member that has not joined yet",
    )
    join_settle: float = Field(
        5.0,
        alias="UNSEALER_JOIN_SETTLE",
        ge=0,
        le=600,
        description="After the last key share a joining raft member may still say sealed: how "
        "long it is given to finish before it is sent a key again (seconds)",
    )
    once_wait: float = Field(
        30.0,
        alias="UNSEALER_ONCE_WAIT",
        ge=0,
        le=3600,
        description="--once: how long to keep passing over the members while some are sealed or "
        "still joining (seconds)",
    )
    docker_discovery: bool = Field(
        True,
        alias="UNSEALER_DOCKER_DISCOVERY",
        description="Ask the Docker API for tasks when a socket is there (needs a manager)",
    )

    @field_validator("vault_addrs_raw")
    @classmethod
    def _addresses(cls, value: str) -> str:
        for item in _split(value):
            parts = urlsplit(item)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError("each address must look like https://host:port")
            if parts.path not in ("", "/") or parts.query:
                raise ValueError("addresses take no path or query (https://host:port)")
            try:
                _ = parts.port
            except ValueError as exc:
                raise ValueError("an address has an invalid port") from exc
        return value

    @model_validator(mode="after")
    def _tls(self) -> UnsealerSettings:
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"UNSEALER_CA_FILE: {self.ca_file} is not a readable file")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("UNSEALER_BACKOFF_MAX must be >= UNSEALER_BACKOFF_INITIAL")
        return self

    @property
    def vault_addrs(self) -> tuple[str, ...]:
        return tuple(item.rstrip("/") for item in _split(self.vault_addrs_raw))


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
