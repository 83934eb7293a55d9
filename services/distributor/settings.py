"""Settings of ``certflow distributor``, validated once at start (the names are the interface)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.settings import CertPairSettings

ReloadMode = Literal["restart", "signal", "none"]


class DistributorSettings(CertPairSettings):
    source_dir: Path = Field(Path("/mnt/storagebox/ssl"), alias="DISTRIBUTOR_SOURCE_DIR")
    target_dir: Path = Field(Path("/opt/iklimco/ssl"), alias="DISTRIBUTOR_TARGET_DIR")
    reload_mode: ReloadMode = Field("restart", alias="DISTRIBUTOR_RELOAD_MODE")
    vault_service: str = Field("iklimco_vault", alias="DISTRIBUTOR_VAULT_SERVICE", min_length=1)
    service_name: str = Field(
        "iklimco_cert-distributor", alias="DISTRIBUTOR_SERVICE_NAME", min_length=1
    )
    # Swarm can template it: DISTRIBUTOR_NODE_ID={{.Node.ID}}; otherwise asked from the engine.
    node_id: str = Field("", alias="DISTRIBUTOR_NODE_ID")
    poll_interval: float = Field(5.0, alias="DISTRIBUTOR_POLL_INTERVAL", gt=0, le=3600)
    # Polling is the source of truth; watchdog events only wake the loop early where they arrive.
    poll_only: bool = Field(False, alias="DISTRIBUTOR_POLL_ONLY")
    key_mode: int = Field(0o600, alias="DISTRIBUTOR_KEY_MODE")
    cert_mode: int = Field(0o644, alias="DISTRIBUTOR_CERT_MODE")
    file_uid: int | None = Field(None, alias="DISTRIBUTOR_FILE_UID", ge=0)
    file_gid: int | None = Field(None, alias="DISTRIBUTOR_FILE_GID", ge=0)
    peer_port: int | None = Field(None, alias="DISTRIBUTOR_PEER_PORT", ge=1, le=65535)
    peer_timeout: float = Field(3.0, alias="DISTRIBUTOR_PEER_TIMEOUT", gt=0, le=60)
    lag_timeout: float = Field(300.0, alias="DISTRIBUTOR_LAG_TIMEOUT", gt=0, le=86400)
    # Allowance for clocks differing between nodes when judging "this Vault task started after
    # the pair was installed on its node" (then the label is recorded without a restart).
    clock_skew: float = Field(30.0, alias="DISTRIBUTOR_CLOCK_SKEW", ge=0, le=3600)
    update_timeout: float = Field(900.0, alias="DISTRIBUTOR_UPDATE_TIMEOUT", gt=0, le=86400)
    keep: int = Field(2, alias="DISTRIBUTOR_KEEP", ge=2, le=100)
    # A Vault update that Swarm paused (a node went down mid-update) is resumed this many times
    # per certificate once every Vault node is up with the pair; 0 leaves it to the operator.
    update_resumes: int = Field(3, alias="DISTRIBUTOR_UPDATE_RESUMES", ge=0, le=100)
    resume_after: float = Field(30.0, alias="DISTRIBUTOR_RESUME_AFTER", ge=0, le=86400)

    @field_validator("file_uid", "file_gid", "peer_port", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _distinct_dirs(self) -> DistributorSettings:
        if self.source_dir.resolve() == self.target_dir.resolve():
            raise ValueError("DISTRIBUTOR_SOURCE_DIR and DISTRIBUTOR_TARGET_DIR must differ")
        return self

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port if self.peer_port is not None else self.health_port
