"""Settings of ``certflow reloader``, validated once at start (names are the operator interface)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import (
    CertPairSettings,
    NotifySettings,
    OptionalInt,
    OptionalPath,
    TrustBundleSetting,
    TrustNameSetting,
)


class ReloaderSettings(CertPairSettings, NotifySettings):
    source_dir: Path = Field(
        Path("/swag-config/etc/letsencrypt/live/iklim.co"),
        alias="RELOADER_SOURCE_DIR",
        description="certbot's live directory holding fullchain.pem and privkey.pem (read only)",
    )
    # Symlinks in the live dir may only lead inside this directory. Empty: the letsencrypt
    # directory two levels above the source dir (``<root>/live/<domain>``), as certbot lays it out.
    source_root: OptionalPath = Field(
        None,
        alias="RELOADER_SOURCE_ROOT",
        description="Directory the live symlinks must resolve inside; empty: the letsencrypt dir",
    )
    target_dir: Path = Field(
        Path("/mnt/storagebox/ssl"),
        alias="RELOADER_TARGET_DIR",
        description="Storage Box directory the pair and certflow-manifest.json are published to",
    )
    check_interval: float = Field(
        60.0,
        alias="RELOADER_CHECK_INTERVAL",
        gt=0,
        le=86400,
        description="Seconds between periodic source checks (inotify events wake it sooner)",
    )
    debounce: float = Field(
        0.5,
        alias="RELOADER_DEBOUNCE",
        ge=0,
        le=60,
        description="Seconds without file changes before a check runs (one renewal, one publish)",
    )
    allow_downgrade: bool = Field(
        False,
        alias="RELOADER_ALLOW_DOWNGRADE",
        description="Publish a certificate that expires before the one already published",
    )
    poll_only: bool = Field(
        False,
        alias="RELOADER_POLL_ONLY",
        description="Use no inotify watch: notice changes only at the periodic check",
    )
    key_mode: int = Field(
        0o600,
        alias="RELOADER_KEY_MODE",
        description="Octal file mode of the published key (owner must read, nothing for others)",
    )
    cert_mode: int = Field(
        0o644,
        alias="RELOADER_CERT_MODE",
        description="Octal file mode of the published certificate",
    )
    file_uid: OptionalInt = Field(
        None,
        alias="RELOADER_FILE_UID",
        ge=0,
        description="Owner uid of the published files; unset: the uid the reloader runs as",
    )
    file_gid: OptionalInt = Field(
        None,
        alias="RELOADER_FILE_GID",
        ge=0,
        description="Owner gid of the published files; unset: the gid the reloader runs as",
    )
    invalid_grace: float = Field(
        600.0,
        alias="RELOADER_INVALID_GRACE",
        ge=0,
        description="Seconds a refused source pair reports degraded before /health fails",
    )
    warn_days: float = Field(
        14.0,
        alias="RELOADER_WARN_DAYS",
        ge=0,
        description="Days left on the published certificate below which /health is degraded",
    )
    # The trust check: the chain must verify, for the name Vault's clients dial, against the CA
    # bundle they use. Unset: not checked (the pair is still validated on its own).
    trust_bundle: TrustBundleSetting = Field(
        None,
        alias="RELOADER_TRUST_BUNDLE",
        description="PEM CA bundle of Vault's clients; set: a chain that does not verify against "
        "it is refused before publishing",
    )
    trust_name: TrustNameSetting = Field(
        None,
        alias="RELOADER_TRUST_NAME",
        description="DNS name the chain must verify for (Vault's TLS name, e.g. vault.iklim.co); "
        "unset: the leaf's first name, a wildcard's * replaced by certflow-check",
    )
    retry_max: float = Field(
        60.0,
        alias="RELOADER_RETRY_MAX",
        gt=0,
        le=3600,
        description="Longest wait in seconds between retries while source or Storage Box fail",
    )

    @property
    def volume_root(self) -> Path:
        return self.source_root if self.source_root is not None else self.source_dir.parent.parent

    @property
    def archive_dir(self) -> Path:
        return self.volume_root / "archive" / self.source_dir.name
