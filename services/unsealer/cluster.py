"""The cluster view: each member's role, whether the cluster is whole, and who may get the key.

Pure functions of what the members said in one cycle. Why the key plan looks like this: a raft
member that has not finished joining shows exactly what a restarted member shows (initialized,
sealed, progress 0), yet a wrong key given to it never returns and locks it until it is killed,
while a joined member answers a wrong key with a clean 400. So a key that has not unsealed anything
yet (unproven) goes to one member first, one that was never seen joining; only once it has
unsealed a member is it given to everyone, joiners included.

A key document written by ``certflow vault-bootstrap`` names its cluster (``cluster_id``), and an
unsealed member reports its own: the same id proves the document belongs to this cluster without
any member being put at risk, so a fresh unsealer that sees only joiners beside an unsealed leader
can still unseal them; another id means the document is for another cluster, and nobody gets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from services.unsealer.status import MemberHealth, Role


@dataclass(frozen=True)
class MemberView:
    address: str
    health: MemberHealth | None  # None: no answer this cycle
    seen_joining: bool = False  # this process saw it uninitialized and never unsealed since


def cluster_exists(members: Sequence[MemberView]) -> bool:
    return any(m.health is not None and m.health.initialized for m in members)


def roles(members: Sequence[MemberView]) -> dict[str, Role]:
    exists = cluster_exists(members)
    return {
        m.address: Role.UNREACHABLE if m.health is None else m.health.role(cluster_exists=exists)
        for m in members
    }


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    counts: dict[str, int] = field(default_factory=dict)


def judge(member_roles: Mapping[str, Role]) -> Verdict:
    """Exactly one active member is the only healthy shape; say what else is there."""
    counts = {role.value: 0 for role in Role}
    for role in member_roles.values():
        counts[role.value] += 1
    summary = ", ".join(f"{n} {role}" for role, n in counts.items() if n)
    active = counts[Role.ACTIVE.value]
    if not member_roles:
        return Verdict(False, "no Vault member found", counts)
    if active == 1:
        return Verdict(True, summary, counts)
    if active == 0:
        return Verdict(False, f"no active member ({summary})", counts)
    claim = sorted(a for a, r in member_roles.items() if r is Role.ACTIVE)
    return Verdict(False, f"{active} members claim to be active: {', '.join(claim)}", counts)


class Owner(StrEnum):
    """Whose key document this is, as far as this cycle's members tell."""

    UNKNOWN = "unknown"  # the document names no cluster, or no unsealed member to compare with
    THIS = "this cluster"
    OTHER = "another cluster"


@dataclass(frozen=True)
class KeyOwner:
    owner: Owner
    message: str = ""  # what an operator is told (cluster ids are not secret)


NO_OWNER = KeyOwner(Owner.UNKNOWN)


def unsealed_cluster_ids(members: Sequence[MemberView]) -> list[str | None]:
    """The cluster id each unsealed member reported this cycle (None: it did not say)."""
    return [
        m.health.cluster_id
        for m in members
        if m.health is not None and m.health.initialized and not m.health.sealed
    ]


def key_owner(document_id: str | None, member_ids: Iterable[str | None]) -> KeyOwner:
    """Compare the key document's cluster id with the ids unsealed members report."""
    ids = sorted({i for i in member_ids if i})
    if document_id is None or not ids:
        return NO_OWNER
    if ids == [document_id]:
        return KeyOwner(Owner.THIS, f"the key file and the members are cluster {document_id}")
    if document_id not in ids:
        return KeyOwner(
            Owner.OTHER,
            f"the key file is for cluster {document_id}, the members are cluster {', '.join(ids)}",
        )
    # Members of two clusters behind one name: which one a sealed member belongs to cannot be
    # told, so the id proves nothing and the key goes the careful way.
    return KeyOwner(Owner.UNKNOWN, f"the members report several clusters: {', '.join(ids)}")


@dataclass(frozen=True)
class KeyPlan:
    recipients: frozenset[str]  # sealed, initialized members that may be given the key now
    withheld: dict[str, str]  # sealed, initialized members that must wait, and why
    proven: bool = False  # the key is known to be this cluster's: a joiner is not at risk
    refused: str = ""  # non-empty: the key is given to nobody, and why


def plan_keys(
    members: Sequence[MemberView],
    *,
    key_proven: bool,
    owner: KeyOwner = NO_OWNER,
) -> KeyPlan:
    """Who gets the key now. ``key_proven``: it unsealed a member in this process (that wins
    over what the document says); ``owner``: what the document's cluster id says."""
    sealed = sorted(
        (m for m in members if m.health is not None and m.health.initialized and m.health.sealed),
        key=lambda m: m.address,
    )
    if key_proven:
        return KeyPlan(frozenset(m.address for m in sealed), {}, proven=True)
    if owner.owner is Owner.THIS:
        # The document is this cluster's, but its keys may be stale (a rekey the secret missed):
        # members surely joined answer a wrong key with a clean 400, so while one is sealed they
        # go first; joiners wait for it. With none, the id is all the proof there is.
        surely = frozenset(m.address for m in sealed if not m.seen_joining)
        if surely:
            why = f"joining: the key is tried on {', '.join(sorted(surely))} first"
            held = {m.address: why for m in sealed if m.address not in surely}
            return KeyPlan(surely, held, proven=True)
        return KeyPlan(frozenset(m.address for m in sealed), {}, proven=True)
    if owner.owner is Owner.OTHER:
        why = f"key withheld: {owner.message}"
        return KeyPlan(frozenset(), {m.address: why for m in sealed}, refused=owner.message)
    joined = [m for m in sealed if not m.seen_joining]
    withheld = {
        m.address: "joining: the key is given only after it has unsealed a joined member "
        "(or at once when the key file names this cluster: cluster_id)"
        for m in sealed
        if m.seen_joining
    }
    if not joined:
        return KeyPlan(frozenset(), withheld)
    prover, rest = joined[0], joined[1:]
    for m in rest:
        withheld[m.address] = f"waiting: the key is tried on {prover.address} first"
    return KeyPlan(frozenset({prover.address}), withheld)
