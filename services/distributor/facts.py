"""What the distributor's decisions read: peer reports, local replicas, the fingerprint label.

Plain data only, so the pure modules (``coordinator``, ``catchup``) and the effectful ones
(``peers``, ``docker_ops``) share these types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

# Service label (and container label) holding the fingerprint Vault was last restarted for.
FINGERPRINT_LABEL = "certflow.fingerprint"

# Service label holding how many times this certificate's paused update was resumed, as
# "<fingerprint> <count>": the resume budget then holds across leader changes.
RESUMES_LABEL = "certflow.resumes"

# Service label the coordinator writes to move a gated rolling update on: the task ID of the
# member just proven back (any new value makes Swarm go on with the next member).
ADVANCE_LABEL = "certflow.advanced-past"


def resumes_from_label(value: str | None, fingerprint: str | None) -> int:
    """The resume count recorded for ``fingerprint`` ("<fp> <n>"); 0 for another or none."""
    if not value or fingerprint is None:
        return 0
    fp, _, count = value.rpartition(" ")
    return int(count) if fp == fingerprint and count.isdigit() else 0


def resumes_label(fingerprint: str, count: int) -> str:
    return f"{fingerprint} {count}"


class MemberProbe(BaseModel):
    """One local Vault member as its node's distributor last probed it (local_members.py).

    ``serves_installed``: the member's TLS listener serves exactly the leaf installed on its node
    (``fingerprint``), proven by a handshake that trusts only that leaf. ``trusted``: it also
    passes the check Vault's clients make (the CA bundle). None: the probe could not tell.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    slot: int | None = None  # Swarm task slot (com.docker.swarm.task.name <svc>.<slot>.<id>)
    task_id: str = ""
    container_id: str = ""
    fingerprint: str | None = None  # the installed leaf the probe compared with
    sealed: bool | None = None
    serves_installed: bool | None = None
    trusted: bool | None = None
    detail: str = ""  # short reason, never a secret
    checked_at: str | None = None  # ISO time of the probe

    @property
    def proven(self) -> bool:
        """Serves the installed leaf, trusted by Vault's clients."""
        return self.serves_installed is True and self.trusted is True


class DistributorInfo(BaseModel):
    """What each distributor reports in ``/health`` (``info``); the coordinator parses it back."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str = ""
    hostname: str = ""
    fingerprint: str | None = None  # installed leaf fingerprint
    generation: int | None = None  # installed generation
    storagebox_generation: int | None = None  # newest committed generation seen on the Storage Box
    installed_at: str | None = None  # ISO time the installed generation was put in place
    last_sync: str | None = None  # ISO time of the last complete pass
    last_error: str | None = None
    members: list[MemberProbe] = []  # this node's Vault members; older peers report none


@dataclass(frozen=True, slots=True)
class LocalReplica:
    container_id: str
    fingerprint: str | None  # the certflow.fingerprint container label, if the restart set one
    started_at: float  # epoch seconds, the engine's clock (the same node as the install)
