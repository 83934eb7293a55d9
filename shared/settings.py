"""Configuration: environment variables, validated once at start.

Each service declares a subclass of :class:`ServiceSettings` whose fields carry the environment
variable name as their alias. Every setting can also be given as ``<NAME>_FILE`` (the path of a file
holding the value, as Docker secrets are mounted); an explicit ``<NAME>`` wins over ``<NAME>_FILE``.
:func:`load_settings` turns any problem into one :class:`~shared.errors.ConfigError` that names the
variables and what is wrong, and never echoes the values (some are secret).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.certs import required_names
from shared.errors import ConfigError
from shared.manifest_auth import MacKeys, parse_key_files
from shared.notify_targets import NotifyUrl, parse_apprise_urls, parse_webhook_url
from shared.trust import TrustBundle, load_bundle

_FILE_SUFFIX = "_FILE"


def env_name(field: FieldInfo, field_name: str) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return alias or field_name.upper()


class EnvironmentSource(PydanticBaseSettingsSource):
    """Values from an environment mapping, by exact (case-sensitive) variable name.

    ``<NAME>`` wins; otherwise ``<NAME>_FILE`` names a file whose text (one trailing newline
    stripped) is the value.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field, field_name)
        if name in self._environ:
            return self._environ[name], name, False
        path = self._environ.get(name + _FILE_SUFFIX)
        if path is None:
            return None, name, False
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{name}{_FILE_SUFFIX}: cannot read {path}: {exc.strerror or exc}"
            ) from None
        return text.removesuffix("\n").removesuffix("\r"), name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


def empty_is_none(value: object) -> object:
    """An empty variable means "not set" for optional settings (``FOO=`` in a stack file)."""
    return None if value == "" else value


# Optional settings where an empty value means unset.
OptionalInt = Annotated[int | None, BeforeValidator(empty_is_none)]
OptionalPath = Annotated[Path | None, BeforeValidator(empty_is_none)]


def _trust_bundle(value: object) -> TrustBundle | None:
    """A CA bundle path -> the parsed bundle, read once at start (unreadable/not PEM: refused)."""
    value = empty_is_none(value)
    if value is None or isinstance(value, TrustBundle):
        return value
    if not isinstance(value, str | Path):
        raise ValueError("must be the path of a PEM CA bundle")
    return load_bundle(Path(value))


def _dns_name(value: object) -> str | None:
    value = empty_is_none(value)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a DNS name")
    name = value.strip().lower().rstrip(".")
    if not name or "*" in name or "/" in name or " " in name or ":" in name:
        raise ValueError("must be a DNS name a client dials, such as vault.iklim.co (no wildcard)")
    return name


# Settings whose value is loaded and checked when the settings are built, so a bad file stops the
# service at start (naming the variable) and the rest of the code receives the parsed object.
TrustBundleSetting = Annotated[
    TrustBundle | None,
    PlainValidator(_trust_bundle),
    PlainSerializer(lambda b: b.source if b is not None else None),
]
TrustNameSetting = Annotated[str | None, PlainValidator(_dns_name)]
ManifestKeysSetting = Annotated[
    MacKeys | None,
    PlainValidator(parse_key_files),
    # Never the key bytes: a dump of the settings shows the key ids only.
    PlainSerializer(lambda k: list(k.ids) if k is not None else None),
]


def _webhook_url(value: object) -> NotifyUrl | None:
    value = empty_is_none(value)
    if value is None or isinstance(value, NotifyUrl):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an http:// or https:// URL")
    return parse_webhook_url(value)


def _apprise_urls(value: object) -> tuple[NotifyUrl, ...]:
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(v, NotifyUrl) for v in value):
        return value
    if not isinstance(value, str):
        raise ValueError("must be apprise URLs separated by commas or spaces")
    return parse_apprise_urls(value)


# Notification URLs can carry tokens: a dump of the settings shows scheme and host only.
WebhookUrlSetting = Annotated[
    NotifyUrl | None,
    PlainValidator(_webhook_url),
    PlainSerializer(lambda u: u.name if u is not None else None),
]
AppriseUrlsSetting = Annotated[
    tuple[NotifyUrl, ...],
    PlainValidator(_apprise_urls),
    PlainSerializer(lambda urls: [u.name for u in urls]),
]


class ServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        populate_by_name=False,
        validate_default=True,
        frozen=True,
    )

    log_format: Literal["json", "text"] = Field(
        "json",
        alias="LOG_FORMAT",
        description="Log output: json (one object per line) or text (for people)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", alias="LOG_LEVEL", description="Lowest level logged: debug, info, warning or error"
    )
    health_host: str = Field(
        "0.0.0.0",  # noqa: S104 - a container service
        alias="HEALTH_HOST",
        description="Address the /health, /livez and /metrics HTTP server listens on",
    )
    health_port: int = Field(
        8080,
        alias="HEALTH_PORT",
        ge=0,
        le=65535,
        description="Port of the /health, /livez and /metrics HTTP server (0: any free port)",
    )
    node_name: str = Field(
        default_factory=socket.gethostname,
        alias="CERTFLOW_NODE_NAME",
        description="Node name shown in logs, /health and the manifest (default: the hostname)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load_settings() passes in: it reads the environment through EnvironmentSource.
        return (init_settings,)


class NotifySettings(ServiceSettings):
    """Notifications (webhook, chat, email), the same for every service that sends them.

    Read by :meth:`shared.notifier.Notifier.from_settings`; no URL set: notifications are off.
    """

    notify_webhook_url: WebhookUrlSetting = Field(
        None,
        alias="CERTFLOW_NOTIFY_WEBHOOK_URL",
        description="http(s) URL that receives each notification as a JSON POST; unset: no webhook",
    )
    notify_urls: AppriseUrlsSetting = Field(
        (),
        alias="CERTFLOW_NOTIFY_URLS",
        description="apprise URLs (chat, email ...: slack://, mailtos://, json:// ...) separated "
        "by commas or spaces; unset: none",
    )
    notify_timeout: float = Field(
        5.0,
        alias="CERTFLOW_NOTIFY_TIMEOUT",
        gt=0,
        le=120,
        description="Seconds one delivery to one target may take before it counts as failed",
    )
    notify_queue_size: int = Field(
        100,
        alias="CERTFLOW_NOTIFY_QUEUE_SIZE",
        ge=1,
        le=100000,
        description="Notifications waiting for delivery; more are dropped (and counted)",
    )
    notify_dedup_seconds: float = Field(
        3600.0,
        alias="CERTFLOW_NOTIFY_DEDUP_SECONDS",
        ge=0,
        description="The same kind about the same subject is sent once within this many seconds "
        "(0: no deduplication)",
    )
    notify_rate_per_minute: int = Field(
        20,
        alias="CERTFLOW_NOTIFY_RATE_PER_MINUTE",
        ge=1,
        description="At most this many notifications per minute; more are dropped (and counted)",
    )


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build and validate ``cls`` from ``environ`` (default: the process environment).

    Raises :class:`ConfigError` with one line per bad variable, never including the value.
    """
    values = EnvironmentSource(cls, os.environ if environ is None else environ)()
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(part) for part in err["loc"]) or "settings"
            problems.append(f"{loc}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def parse_octal_mode(value: object) -> object:
    """``0600``/``600``/``0o600`` -> 384; non-strings are left for pydantic to check."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise ValueError("must be an octal file mode such as 0600")
        return int(text, 8)
    return value


class CertPairSettings(ServiceSettings):
    """Settings of the services that handle the certificate pair (reloader and distributor).

    Subclasses declare ``key_mode``/``cert_mode`` under their own variable names
    (``RELOADER_KEY_MODE``, ``DISTRIBUTOR_KEY_MODE`` ...); the rules for them live here once.
    """

    domain: str = Field(
        "iklim.co",
        alias="CERTFLOW_DOMAIN",
        min_length=1,
        description="Domain the certificate must cover, together with its wildcard `*.<domain>`",
    )
    cert_name: str = Field(
        "STAR.iklim.co.full.crt",
        alias="CERTFLOW_CERT_NAME",
        min_length=1,
        description="Certificate (full chain) file name on the Storage Box and on each Vault node",
    )
    key_name: str = Field(
        "STAR.iklim.co_key.pem",
        alias="CERTFLOW_KEY_NAME",
        min_length=1,
        description="Private key file name on the Storage Box and on each Vault node",
    )
    required_names_raw: str = Field(
        "",
        alias="CERTFLOW_REQUIRED_NAMES",
        description="Comma-separated names the certificate must cover; empty: domain and wildcard",
    )
    manifest_keys: ManifestKeysSetting = Field(
        None,
        alias="CERTFLOW_MANIFEST_KEY_FILES",
        description="Comma-separated HMAC key files (32+ bytes, mode 0400/0600) authenticating "
        "the manifest: the reloader signs with the first, distributors accept any; "
        "unset: manifests are not authenticated (reported on /health and in metrics)",
    )

    @field_validator("key_mode", "cert_mode", mode="before", check_fields=False)
    @classmethod
    def _octal(cls, value: object) -> object:
        return parse_octal_mode(value)

    @field_validator("key_mode", check_fields=False)
    @classmethod
    def _key_mode_private(cls, value: int) -> int:
        if not 0 <= value <= 0o777:
            raise ValueError("must be an octal file mode between 0000 and 0777")
        if value & 0o007:
            raise ValueError("must not grant any permission to others (e.g. 0600 or 0640)")
        if not value & 0o400:
            raise ValueError("must let the owner read the key (e.g. 0600)")
        return value

    @field_validator("cert_mode", check_fields=False)
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
    def _distinct_names(self) -> Self:
        if self.cert_name == self.key_name:
            raise ValueError("CERTFLOW_CERT_NAME and CERTFLOW_KEY_NAME must differ")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """The names the certificate must cover (CERTFLOW_REQUIRED_NAMES replaces the default)."""
        explicit = [n.strip().lower() for n in self.required_names_raw.split(",") if n.strip()]
        return tuple(dict.fromkeys(explicit)) if explicit else required_names(self.domain)
