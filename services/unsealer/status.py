"""What a Vault member says about itself: the data types the unseal decisions read.

Built from ``/v1/sys/seal-status`` and ``/v1/sys/health`` bodies by the HTTP adapter; read by the
pure state machine (:mod:`services.unsealer.machine`) and cluster view
(:mod:`services.unsealer.cluster`). No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


def _number(doc: dict[str, object], name: str) -> int:
    value = doc.get(name, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


MAX_CLUSTER_ID = 128  # Vault's ids are UUIDs (36); anything far longer is not an id


def _text(doc: dict[str, object], name: str) -> str | None:
    """A non-empty string field of sane length, else None (absent, null, another type)."""
    value = doc.get(name)
    if isinstance(value, str) and 0 < len(value) <= MAX_CLUSTER_ID:
        return value
    return None


@dataclass(frozen=True)
class SealStatus:
    """What ``/v1/sys/seal-status`` (or an unseal reply) said."""

    initialized: bool
    sealed: bool
    t: int = 0
    n: int = 0
    progress: int = 0
    nonce: str = ""
    version: str = ""
    cluster_id: str | None = None  # only an unsealed member says which cluster it belongs to
    cluster_name: str | None = None

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> SealStatus:
        return cls(
            initialized=bool(doc.get("initialized", False)),
            sealed=bool(doc.get("sealed", True)),
            t=_number(doc, "t"),
            n=_number(doc, "n"),
            progress=_number(doc, "progress"),
            nonce=str(doc.get("nonce") or ""),
            version=str(doc.get("version") or ""),
            cluster_id=_text(doc, "cluster_id"),
            cluster_name=_text(doc, "cluster_name"),
        )


class Role(StrEnum):
    """A member's place in the cluster, as an operator names it."""

    ACTIVE = "active"
    STANDBY = "standby"
    SEALED = "sealed"
    NOT_JOINED = "not joined"  # uninitialized while the cluster exists: to be joined to it
    UNINITIALIZED = "uninitialized"  # no member is initialized: run certflow vault-bootstrap
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class MemberHealth:
    """What ``/v1/sys/health`` said (its body carries the state whatever the status code)."""

    initialized: bool
    sealed: bool
    standby: bool
    version: str = ""
    cluster_id: str | None = None  # only an unsealed member says which cluster it belongs to

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> MemberHealth:
        return cls(
            initialized=bool(doc.get("initialized", False)),
            sealed=bool(doc.get("sealed", True)),
            standby=bool(doc.get("standby", False)),
            version=str(doc.get("version") or ""),
            cluster_id=_text(doc, "cluster_id"),
        )

    def seal_status(self) -> SealStatus:
        """Enough of a seal status for an unsealed or uninitialized member (no attempt open)."""
        return SealStatus(
            initialized=self.initialized,
            sealed=self.sealed,
            version=self.version,
            cluster_id=self.cluster_id,
        )

    def role(self, *, cluster_exists: bool) -> Role:
        if not self.initialized:
            return Role.NOT_JOINED if cluster_exists else Role.UNINITIALIZED
        if self.sealed:
            return Role.SEALED
        return Role.STANDBY if self.standby else Role.ACTIVE
