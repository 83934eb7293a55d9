"""What ``certflow verify`` observed, as plain data: the input of the pure checks.

``observe.py`` fills these from Docker, the filesystem and TLS handshakes; tests build them by hand.
An observation that failed carries the error text instead of the value, so a check can say what
could not be seen and where to look next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """One Swarm service: how many tasks Swarm wants running and how many are."""

    name: str
    found: bool
    mode: str = ""  # "replicated" or "global"
    desired: int = 0  # replicas, or for global the tasks Swarm wants running (one per node)
    running: int = 0
    update_state: str | None = None  # UpdateStatus.State, None when no update ever ran
    update_message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    task_errors: tuple[str, ...] = ()  # Status.Err of tasks that should run but do not
    error: str = ""  # the Engine API could not be asked


@dataclass(frozen=True, slots=True)
class LogFacts:
    service: str
    lines: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class CertFacts:
    """The leaf of a certificate: what must be equal everywhere."""

    not_after: datetime
    fingerprint: str
    sha256: str = ""  # digest of the file's bytes, when the facts come from a file


@dataclass(frozen=True, slots=True)
class DirFacts:
    """The pair in a directory (``/opt/iklimco/ssl`` or the Storage Box)."""

    label: str
    path: str
    cert: CertFacts | None = None
    state: str = ""  # Storage Box: the manifest state (committed, inconsistent ...)
    generation: int | None = None
    manifest_cert_sha256: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaFacts:
    """One Vault task, reached on its overlay address."""

    task_id: str
    node: str
    address: str
    served: CertFacts | None = None
    initialized: bool | None = None
    sealed: bool | None = None
    standby: bool | None = None  # None: an older answer without the field
    error: str = ""


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """One named check of a certflow ``/health``: status, message, since and its details."""

    name: str
    status: str
    message: str = ""
    since: str = ""
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """One certflow task's ``/health``, read on its address on the Vault network."""

    service: str
    node: str
    address: str = ""
    status: str = ""  # ok, degraded, failing
    since: str = ""  # when the service entered that status
    problems: tuple[str, ...] = ()  # "check: status: message (since ...)" for each check not ok
    error: str = ""  # could not be read
    task_id: str = ""
    checks: tuple[CheckFacts, ...] = ()  # every check, ok ones too (certflow status shows them)
    info: dict[str, object] = field(default_factory=dict)  # the service's ``info`` block

    def check(self, name: str) -> CheckFacts | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass(frozen=True, slots=True)
class Observation:
    services: tuple[ServiceFacts, ...]
    reloader_logs: LogFacts
    installed: DirFacts
    published: DirFacts
    replicas: tuple[ReplicaFacts, ...]
    replicas_error: str = ""
    names: dict[str, str] = field(default_factory=dict)  # role -> service name, for hints
    health: tuple[HealthFacts, ...] = ()  # every certflow task's /health
    health_error: str = ""  # the tasks could not be listed
