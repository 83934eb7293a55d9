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
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.errors import ConfigError

_FILE_SUFFIX = "_FILE"


def env_name(field: FieldInfo, field_name: str) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return alias or field_name.upper()


class _FileEnvSource(PydanticBaseSettingsSource):
    """Values from ``<NAME>_FILE``: read the file, strip one trailing newline."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field, field_name)
        path = self._environ.get(name + _FILE_SUFFIX)
        if path is None or name in self._environ:
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


class ServiceSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        populate_by_name=False,
        validate_default=True,
        frozen=True,
    )

    log_format: Literal["json", "text"] = Field("json", alias="LOG_FORMAT")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    health_host: str = Field("0.0.0.0", alias="HEALTH_HOST")  # noqa: S104 - a container service
    health_port: int = Field(8080, alias="HEALTH_PORT", ge=0, le=65535)
    node_name: str = Field(default_factory=socket.gethostname, alias="CERTFLOW_NODE_NAME")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON_OVERRIDE if _ENVIRON_OVERRIDE is not None else dict(os.environ)
        return (
            init_settings,
            _DictEnvSource(settings_cls, environ),
            _FileEnvSource(settings_cls, environ),
        )


class _DictEnvSource(PydanticBaseSettingsSource):
    """Values from an environment mapping, by exact (case-sensitive) variable name."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field, field_name)
        return self._environ.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


_ENVIRON_OVERRIDE: dict[str, str] | None = None

S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], environ: dict[str, str] | None = None) -> S:
    """Build and validate ``cls`` from ``environ`` (default: the process environment).

    Raises :class:`ConfigError` with one line per bad variable, never including the value.
    """
    global _ENVIRON_OVERRIDE  # noqa: PLW0603 - pydantic-settings builds sources from a classmethod
    _ENVIRON_OVERRIDE = environ
    try:
        return cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(part) for part in err["loc"]) or "settings"
            problems.append(f"{loc}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    finally:
        _ENVIRON_OVERRIDE = None


def parse_bool_env(value: str) -> bool:
    """Strict boolean for operator-facing flags: true/false/1/0/yes/no (any case)."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got a value of length {len(value)}")
