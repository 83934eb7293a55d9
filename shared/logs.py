"""Structured logs: one event per line, context (service, node) bound once.

JSON by default (``docker service logs`` + ``jq``), ``LOG_FORMAT=text`` for people. Values of
fields whose name suggests key material are replaced before rendering, as a last line of defence;
the code itself never passes key material to a logger.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_FIELD_MARKERS = ("unseal_key", "private_key", "root_token", "password", "secret_value")


def is_secret_field(name: str) -> bool:
    """Whether a field of this name may hold key material (logs and notifications drop it)."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_FIELD_MARKERS) or lowered in {
        "key",
        "keys",
        "token",
    }


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event_dict):
        if is_secret_field(name):
            event_dict[name] = "[redacted]"
    return event_dict


def configure_logging(
    *,
    service: str,
    node: str,
    fmt: str = "json",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and stdlib logging, for libraries) for one service process."""
    out = stream if stream is not None else sys.stdout
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=28)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.add_log_level,
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, node=node)
    # Libraries (uvicorn, urllib3, docker) log through stdlib: keep their warnings, drop chatter.
    logging.basicConfig(level=logging.WARNING, stream=out, force=True)
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
