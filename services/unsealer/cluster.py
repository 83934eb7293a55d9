"""The cluster view: each member's role, whether the cluster is whole, and who may get the key.

Pure functions of what the members said in one cycle. Why the key plan looks like this: a raft
member that has not finished joining shows exactly what a restarted member shows (initialized,
sealed, progress 0), yet a wrong key given to it never returns and locks it until it is killed,
while a joined member answers a wrong key with a clean 400. So a key that has not unsealed anything
yet (unproven) goes to one member first, one that was never seen joining; only once it has
unsealed a member is it given to everyone, joiners included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class KeyPlan:
    recipients: frozenset[str]  # sealed, initialized members that may be given the key now
    withheld: dict[str, str]  # sealed, initialized members that must wait, and why


def plan_keys(members: Sequence[MemberView], *, key_proven: bool) -> KeyPlan:
    sealed = sorted(
        (m for m in members if m.health is not None and m.health.initialized and m.health.sealed),
        key=lambda m: m.address,
    )
    if key_proven:
        return KeyPlan(frozenset(m.address for m in sealed), {})
    joined = [m for m in sealed if not m.seen_joining]
    withheld = {
        m.address: "joining: the key is given only after it has unsealed a joined member"
        for m in sealed
        if m.seen_joining
    }
    if not joined:
        return KeyPlan(frozenset(), withheld)
    prover, rest = joined[0], joined[1:]
    for m in rest:
        withheld[m.address] = f"waiting: the key is tried on {prover.address} first"
    return KeyPlan(frozenset({prover.address}), withheld)
