"""Settings of ``certflow reloader``, validated once at start (names are the operator interface)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from shared.certs import required_names
from shared.settings import ServiceSettings


class ReloaderSettings(ServiceSettings):
    source_dir: Path = Field(
        Path("/swag-config/etc/letsencrypt/live/iklim.co"), alias="RELOADER_SOURCE_DIR"
    )
    # Symlinks in the live dir may only lead inside this directory. Empty: the letsencrypt
    # directory two levels above the source dir (``<root>/live/<domain>``), as certbot lays it out.
    source_root: Path | None = Field(None, alias="RELOADER_SOURCE_ROOT")
    target_dir: Path = Field(Path("/mnt/storagebox/ssl"), alias="RELOADER_TARGET_DIR")
    domain: str = Field("iklim.co", alias="CERTFLOW_DOMAIN", min_length=1)
    cert_name: str = Field("STAR.iklim.co.full.crt", alias="CERTFLOW_CERT_NAME", min_length=1)
    key_name: str = Field("STAR.iklim.co_key.pem", alias="CERTFLOW_KEY_NAME", min_length=1)
    required_names_raw: str = Field("", alias="CERTFLOW_REQUIRED_NAMES")
    check_interval: float = Field(60.0, alias="RELOADER_CHECK_INTERVAL", gt=0, le=86400)
    debounce: float = Field(0.5, alias="RELOADER_DEBOUNCE", ge=0, le=60)
    allow_downgrade: bool = Field(False, alias="RELOADER_ALLOW_DOWNGRADE")
    poll_only: bool = Field(False, alias="RELOADER_POLL_ONLY")
    key_mode: int = Field(0o600, alias="RELOADER_KEY_MODE")
    cert_mode: int = Field(0o644, alias="RELOADER_CERT_MODE")
    file_uid: int | None = Field(None, alias="RELOADER_FILE_UID", ge=0)
    file_gid: int | None = Field(None, alias="RELOADER_FILE_GID", ge=0)
    invalid_grace: float = Field(600.0, alias="RELOADER_INVALID_GRACE", ge=0)
    warn_days: float = Field(14.0, alias="RELOADER_WARN_DAYS", ge=0)
    retry_max: float = Field(60.0, alias="RELOADER_RETRY_MAX", gt=0, le=3600)

    @field_validator("source_root", "file_uid", "file_gid", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("key_mode", "cert_mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower().removeprefix("0o")
            if not text or any(c not in "01234567" for c in text):
                raise ValueError("must be an octal file mode such as 0600")
            return int(text, 8)
        return value

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
    def _distinct_names(self) -> ReloaderSettings:
        if self.cert_name == self.key_name:
            raise ValueError("CERTFLOW_CERT_NAME and CERTFLOW_KEY_NAME must differ")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The names the certificate must cover (CERTFLOW_REQUIRED_NAMES replaces the default)."""
        explicit = [n.strip().lower() for n in self.required_names_raw.split(",") if n.strip()]
        return tuple(dict.fromkeys(explicit)) if explicit else required_names(self.domain)

    @property
    def volume_root(self) -> Path:
        return self.source_root if self.source_root is not None else self.source_dir.parent.parent

    @property
    def archive_dir(self) -> Path:
        return self.volume_root / "archive" / self.source_dir.name
