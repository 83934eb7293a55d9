"""Settings of ``certflow distributor``, validated once at start (the names are the interface)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.certs import required_names
from shared.settings import ServiceSettings

ReloadMode = Literal["restart", "signal", "none"]


def parse_octal_mode(value: object) -> object:
    """``0600``/``600``/``0o600`` -> 384; anything else is left for pydantic to refuse."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise ValueError("must be an octal file mode such as 0600")
        return int(text, 8)
    return value


class DistributorSettings(ServiceSettings):
    source_dir: Path = Field(Path("/mnt/storagebox/ssl"), alias="DISTRIBUTOR_SOURCE_DIR")
    target_dir: Path = Field(Path("/opt/iklimco/ssl"), alias="DISTRIBUTOR_TARGET_DIR")
    reload_mode: ReloadMode = Field("restart", alias="DISTRIBUTOR_RELOAD_MODE")
    vault_service: str = Field("iklimco_vault", alias="DISTRIBUTOR_VAULT_SERVICE", min_length=1)
    service_name: str = Field(
        "iklimco_cert-distributor", alias="DISTRIBUTOR_SERVICE_NAME", min_length=1
    )
    # Swarm can template it: DISTRIBUTOR_NODE_ID={{.Node.ID}}; otherwise asked from the engine.
    node_id: str = Field("", alias="DISTRIBUTOR_NODE_ID")
    domain: str = Field("iklim.co", alias="CERTFLOW_DOMAIN", min_length=1)
    cert_name: str = Field("STAR.iklim.co.full.crt", alias="CERTFLOW_CERT_NAME", min_length=1)
    key_name: str = Field("STAR.iklim.co_key.pem", alias="CERTFLOW_KEY_NAME", min_length=1)
    required_names_raw: str = Field("", alias="CERTFLOW_REQUIRED_NAMES")
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

    @field_validator("file_uid", "file_gid", "peer_port", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("key_mode", "cert_mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        return parse_octal_mode(value)

    @field_validator("key_mode")
    @classmethod
    def _key_mode_private(cls, value: int) -> int:
        if not 0 <= value <= 0o777:
            raise ValueError("must be an octal file mode between 0000 and 0777")
        if value & 0o007:
            raise ValueError("must not grant any permission to others (e.g. 0600 or 0640)")
        if not value & 0o400:
            raise ValueError("must let the owner read the key (e.g. 0600)")
        return value

    @field_validator("cert_mode")
    @classmethod
    def _cert_mode_range(cls, value: int) -> int:
        if not 0o400 <= value <= 0o777:
            raise ValueError("must be an octal file mode the owner can read (e.g. 0644)")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().lower().rstrip(".")
        if not value or "/" in value or " " in value or value.startswith("*"):
            raise ValueError("must be a DNS name such as iklim.co")
        return value

    @field_validator("cert_name", "key_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or value in {".", ".."} or value.startswith("."):
            raise ValueError("must be a plain file name (no '/', not hidden)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DistributorSettings:
        if self.cert_name == self.key_name:
            raise ValueError("CERTFLOW_CERT_NAME and CERTFLOW_KEY_NAME must differ")
        if self.source_dir.resolve() == self.target_dir.resolve():
            raise ValueError("DISTRIBUTOR_SOURCE_DIR and DISTRIBUTOR_TARGET_DIR must differ")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Names the certificate must cover (CERTFLOW_REQUIRED_NAMES replaces the default)."""
        explicit = [n.strip().lower() for n in self.required_names_raw.split(",") if n.strip()]
        return tuple(dict.fromkeys(explicit)) if explicit else required_names(self.domain)

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port if self.peer_port is not None else self.health_port
