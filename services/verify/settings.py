"""Settings of ``certflow verify``: ``VERIFY_*`` variables (flags of the command set the same)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from shared.settings import OptionalPath, ServiceSettings


class VerifySettings(ServiceSettings):
    stack: str = Field(
        "iklimco",
        alias="VERIFY_STACK",
        min_length=1,
        description="stack name; the four service names and the Vault network derive from it",
    )
    reloader_service: str = Field(
        "", alias="VERIFY_RELOADER_SERVICE", description="empty: `<stack>_cert-reloader`"
    )
    distributor_service: str = Field(
        "", alias="VERIFY_DISTRIBUTOR_SERVICE", description="empty: `<stack>_cert-distributor`"
    )
    vault_service: str = Field(
        "", alias="VERIFY_VAULT_SERVICE", description="empty: `<stack>_vault`"
    )
    unsealer_service: str = Field(
        "", alias="VERIFY_UNSEALER_SERVICE", description="empty: `<stack>_vault-unsealer`"
    )
    vault_network: str = Field(
        "",
        alias="VERIFY_VAULT_NETWORK",
        description="network whose task addresses are checked; empty: `<stack>_vault`",
    )
    vault_port: int = Field(
        8200, alias="VERIFY_VAULT_PORT", ge=1, le=65535, description="Vault's TLS port"
    )
    vault_server_name: str = Field(
        "vault.iklim.co",
        alias="VERIFY_VAULT_SERVER_NAME",
        min_length=1,
        description="name Vault's certificate must be valid for (sent as SNI to each task IP)",
    )
    vault_ca_file: OptionalPath = Field(
        None,
        alias="VERIFY_VAULT_CA_FILE",
        description="CA bundle for Vault's certificate; unset: the system trust store",
    )
    ssl_dir: Path = Field(
        Path("/opt/iklimco/ssl"),
        alias="VERIFY_SSL_DIR",
        description="this node's installed pair (what Vault mounts as /vault/certs)",
    )
    storagebox_dir: Path = Field(
        Path("/mnt/storagebox/ssl"),
        alias="VERIFY_STORAGEBOX_DIR",
        description="the Storage Box directory with certflow-manifest.json",
    )
    cert_name: str = Field(
        "STAR.iklim.co.full.crt",
        alias="VERIFY_CERT_NAME",
        min_length=1,
        description="certificate file name in both directories",
    )
    key_name: str = Field(
        "STAR.iklim.co_key.pem",
        alias="VERIFY_KEY_NAME",
        min_length=1,
        description="key file name (only its digest on the Storage Box is compared)",
    )
    log_tail: int = Field(
        20,
        alias="VERIFY_LOG_TAIL",
        ge=1,
        le=10000,
        description="recent cert-reloader log lines scanned for error events",
    )
    timeout: float = Field(
        5.0,
        alias="VERIFY_TIMEOUT",
        gt=0,
        le=120,
        description="seconds per connection (a Vault member, a certflow task's /health)",
    )
    read_timeout: float = Field(
        10.0,
        alias="VERIFY_READ_TIMEOUT",
        gt=0,
        le=600,
        description="seconds a read of the installed pair or the Storage Box may take before "
        "verify reports it hung (a network mount not answering)",
    )
    health_port: int = Field(
        8080,
        alias="VERIFY_HEALTH_PORT",
        ge=1,
        le=65535,
        description="port of /health on every certflow task (the stacks' HEALTH_PORT)",
    )

    @field_validator("vault_ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("is not a readable file")
        return value

    def service(self, role: str) -> str:
        """The Swarm service name of ``role`` (reloader, distributor, vault, unsealer)."""
        explicit = {
            "reloader": self.reloader_service,
            "distributor": self.distributor_service,
            "vault": self.vault_service,
            "unsealer": self.unsealer_service,
        }[role]
        default = {
            "reloader": "cert-reloader",
            "distributor": "cert-distributor",
            "vault": "vault",
            "unsealer": "vault-unsealer",
        }[role]
        return explicit or f"{self.stack}_{default}"

    @property
    def network(self) -> str:
        return self.vault_network or f"{self.stack}_vault"
