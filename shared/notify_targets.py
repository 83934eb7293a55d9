"""Where notifications go: a generic JSON webhook (httpx) and apprise's services (chat, email).

URLs can carry tokens (``slack://TokenA/TokenB``, ``https://hooks.example/T0K3N``), so a target is
only ever named by :attr:`NotifyUrl.name` (scheme and host, and for apprise schemes whose "host"
is a token, the scheme alone). Parsing happens once, at start, through :func:`parse_webhook_url`
and :func:`parse_apprise_urls`, whose errors never hold the URL.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import apprise
import httpx

from shared.notify import title_and_body

# Apprise schemes whose host part is a real host (the others put tokens there).
_HOST_SCHEMES = frozenset(
    {"json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos", "gotify", "gotifys"}
    | {"mmost", "mmosts", "ntfy", "ntfys", "matrix", "matrixs", "rocket", "rockets"}
)


@functools.cache
def _prepare_apprise() -> None:
    # apprise logs some URLs it cannot load; ours must never reach the logs.
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    # Its plugins load on first use; the email plugin imports the deprecated imghdr (Python 3.11).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="'imghdr' is deprecated", category=DeprecationWarning
        )
        apprise.Apprise.instantiate("json://localhost")


@dataclass(frozen=True, slots=True)
class NotifyUrl:
    """A delivery URL; ``repr`` and ``name`` never show more than scheme and host."""

    url: str = field(repr=False)
    name: str


def _scheme_host(url: str) -> tuple[str, str]:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "", ""
    return parts.scheme.lower(), f"{host}:{port}" if port else host


def parse_webhook_url(value: str) -> NotifyUrl:
    """An http(s) URL with a host; ValueError (without the URL) otherwise."""
    scheme, host = _scheme_host(value)
    if scheme not in {"http", "https"} or not host or any(c.isspace() for c in value.strip()):
        raise ValueError("must be an http:// or https:// URL with a host")
    return NotifyUrl(url=value.strip(), name=f"{scheme}://{host}")


def apprise_name(url: str) -> str:
    scheme, host = _scheme_host(url)
    if not scheme:
        return "apprise"
    return f"{scheme}://{host}" if scheme in _HOST_SCHEMES and host else f"{scheme}://"


def parse_apprise_urls(value: str) -> tuple[NotifyUrl, ...]:
    """Comma- or whitespace-separated apprise URLs, each one apprise can load."""
    _prepare_apprise()
    urls: list[NotifyUrl] = []
    for index, url in enumerate((u for u in re.split(r"[\s,]+", value) if u), start=1):
        if apprise.Apprise.instantiate(url) is None:
            raise ValueError(
                f"URL number {index} ({apprise_name(url).split('://')[0] or 'no scheme'}) "
                "is not one apprise can use"
            )
        urls.append(NotifyUrl(url=url, name=apprise_name(url)))
    return tuple(urls)


class DeliveryFailed(Exception):
    """A target did not take the notification. The message never holds the URL."""


class Target(Protocol):
    name: str

    def send(self, data: dict[str, Any]) -> None:
        """Deliver one payload or raise DeliveryFailed."""


class WebhookTarget:
    """HTTP POST of the payload as JSON; any 2xx is delivered."""

    def __init__(self, url: NotifyUrl, *, timeout: float) -> None:
        self.name = url.name
        self._url = url.url
        self._timeout = httpx.Timeout(timeout)

    def send(self, data: dict[str, Any]) -> None:
        try:
            response = httpx.post(self._url, json=data, timeout=self._timeout)
        except httpx.HTTPError as exc:
            # The exception text can hold the URL: only its class is kept.
            raise DeliveryFailed(type(exc).__name__) from None
        if not response.is_success:
            raise DeliveryFailed(f"HTTP {response.status_code}")


class AppriseTarget:
    """One apprise service (chat, email, ...), sent the payload's title and text."""

    def __init__(self, url: NotifyUrl, *, timeout: float) -> None:
        _prepare_apprise()
        self.name = url.name
        plugin = apprise.Apprise.instantiate(url.url)
        if plugin is None:  # parse_apprise_urls checked it at start
            raise DeliveryFailed("apprise cannot load the URL")
        plugin.socket_connect_timeout = timeout
        plugin.socket_read_timeout = timeout
        self._plugin = plugin

    def send(self, data: dict[str, Any]) -> None:
        title, body = title_and_body(data)
        notify_type = {
            "info": apprise.NotifyType.INFO,
            "warning": apprise.NotifyType.WARNING,
        }.get(data["severity"], apprise.NotifyType.FAILURE)
        try:
            ok = self._plugin.notify(body=body, title=title, notify_type=notify_type)
        except Exception as exc:  # a plugin's own bug must not end the delivery thread
            raise DeliveryFailed(type(exc).__name__) from None
        if not ok:
            raise DeliveryFailed("apprise reported the notification as not sent")
