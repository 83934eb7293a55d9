"""Adapter for one Vault replica's system endpoints over verified TLS (httpx).

A replica is reached by its task IP while the certificate is checked for the service's DNS name:
httpx's ``sni_hostname`` request extension makes the TLS layer send that name as SNI and verify the
certificate against it, so no hostname-checking is turned off. Library errors become
``VaultUnreachable`` / ``KeyRejected`` / ``VaultError``; messages never contain key material.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.unsealer.status import MemberHealth, SealStatus
from shared.errors import KeyRejected, VaultError, VaultUnreachable

_REJECTED_MARKERS = (
    "failed to decrypt",
    "message authentication failed",
    "unseal failed, invalid key",
    "failed to compute combined key",
    "must be a valid hex or base64",
    "key is shorter than",
    "key is longer than",
)


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None
    server_name: str
    skip_verify: bool = False

    def context(self) -> ssl.SSLContext:
        if self.skip_verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        cafile = str(self.ca_file) if self.ca_file is not None else None
        return ssl.create_default_context(cafile=cafile)


class VaultClient:
    """Seal/unseal/init calls against one replica address (``https://ip:port``)."""

    def __init__(
        self,
        address: str,
        tls: TlsConfig,
        *,
        connect_timeout: float = 1.0,
        request_timeout: float = 3.0,
        unseal_timeout: float = 30.0,
        context: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        # Unseal and join calls get a longer bound: a joining member answers them only once it
        # has exchanged the join challenge with the active member (seconds on a busy machine).
        self._unseal_timeout = httpx.Timeout(unseal_timeout, connect=connect_timeout)
        self._server_name = tls.server_name
        self._http = httpx.Client(
            base_url=self.address,
            verify=context or tls.context(),
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            headers={"X-Vault-Request": "true"},
            trust_env=False,  # no proxies between us and a replica
            transport=transport,  # tests: httpx.MockTransport standing in for Vault
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------
    def seal_status(self) -> SealStatus:
        return SealStatus.from_json(self._json("GET", "/v1/sys/seal-status"))

    def submit_key(self, key: str) -> SealStatus:
        return SealStatus.from_json(
            self._json(
                "PUT",
                "/v1/sys/unseal",
                {"key": key},
                secret=key,
                unseal=True,
                timeout=self._unseal_timeout,
            )
        )

    def join(self, leader: str, *, server_name: str, ca_pem: str | None) -> bool:
        """Ask this (not yet joined) member to join the raft cluster of ``leader`` (an address
        this member can reach), checking the leader's certificate for ``server_name`` against
        ``ca_pem`` (None: the member's system CAs). Returns what the member says: joined or not.
        The key is not involved: a Shamir member takes it with its next unseal call."""
        body: dict[str, Any] = {"leader_api_addr": leader, "leader_tls_servername": server_name}
        if ca_pem is not None:
            body["leader_ca_cert"] = ca_pem
        reply = self._json("POST", "/v1/sys/storage/raft/join", body, timeout=self._unseal_timeout)
        return bool(reply.get("joined"))

    def health(self) -> MemberHealth:
        """``sys/health`` with every state answered 200, so one call gives role and seal state."""
        return MemberHealth.from_json(
            self._json(
                "GET",
                "/v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200"
                "&uninitcode=200&drsecondarycode=200&performancestandbycode=200",
            )
        )

    def configure_autopilot(self, token: str, settings: dict[str, object]) -> None:
        """Set raft autopilot (the token travels as a header and is never logged)."""
        self._json(
            "POST",
            "/v1/sys/storage/raft/autopilot/configuration",
            settings,
            token=token,
            expect_body=False,
        )

    def reset(self) -> SealStatus:
        return SealStatus.from_json(self._json("PUT", "/v1/sys/unseal", {"reset": True}))

    def is_initialized(self) -> bool:
        return bool(self._json("GET", "/v1/sys/init").get("initialized"))

    def initialize(self, shares: int, threshold: int) -> dict[str, Any]:
        return self._json(
            "PUT", "/v1/sys/init", {"secret_shares": shares, "secret_threshold": threshold}
        )

    # -- plumbing --------------------------------------------------------------------------
    def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        secret: str | None = None,
        unseal: bool = False,
        token: str | None = None,
        expect_body: bool = True,
        timeout: httpx.Timeout | None = None,
    ) -> dict[str, Any]:
        where = f"{self.address}{path}"
        headers = {"X-Vault-Token": token} if token else None
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                headers=headers,
                extensions={"sni_hostname": self._server_name},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise VaultUnreachable(f"{where}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise VaultUnreachable(f"{where}: {_transport_reason(exc)}") from exc
        if response.status_code >= 400:
            message = _scrub(_scrub(_error_text(response), secret), token)
            detail = f"{method} {where}: HTTP {response.status_code}: {message}"
            lowered = message.lower()
            if (
                unseal
                and response.status_code in (400, 500)
                and any(marker in lowered for marker in _REJECTED_MARKERS)
            ):
                raise KeyRejected(detail)
            raise VaultError(detail)
        if not expect_body and (response.status_code == 204 or not response.content):
            return {}
        try:
            document = response.json()
        except ValueError as exc:
            raise VaultError(f"{method} {where}: HTTP {response.status_code}: not JSON") from exc
        if not isinstance(document, dict):
            raise VaultError(f"{method} {where}: unexpected JSON document")
        return document


def _error_text(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        return "; ".join(str(e) for e in document["errors"])[:300] or response.reason_phrase
    return response.reason_phrase


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__context__
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        cause = cause.__context__
    return text[:300]


def _scrub(message: str, secret: str | None) -> str:
    """Belt and braces: a server must never echo the key, but if one does, we do not repeat it."""
    if secret and secret in message:
        return message.replace(secret, "[redacted]")
    return message
