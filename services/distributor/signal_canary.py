"""Signal mode's canary: which local Vault members to SIGHUP now (pure).

A SIGHUP makes Vault reload its listener certificate without sealing; a reload that fails (an
unreadable key, a bad pair) keeps the old certificate and says so only in Vault's log. So one
member goes first and must prove the new certificate before any other member is touched:

- the canary is the member with the lowest slot among every member known, from this node's probe
  and the peers' reports; only its node signals it;
- every other member, on any node, waits until a report shows the canary serving the installed
  leaf (its node installed our fingerprint, the probe proved the leaf and the clients' trust);
- then each node signals its remaining members that do not serve the pair yet. A member that
  serves it is never signalled, and no container is signalled twice for one fingerprint;
- a canary not proven within the timeout halts the rollout (failing, named, nothing else
  signalled); it continues by itself once the canary is proven (a new generation re-arms it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.status import Status, iso

from .facts import MemberProbe


class Step(StrEnum):
    IDLE = "idle"  # nothing installed, or no member known
    SIGNAL_CANARY = "signal_canary"  # this node holds the canary: SIGHUP it, alone
    WAIT_CANARY = "wait_canary"  # the canary has not proven the new certificate yet
    HALTED = "halted"  # ... and not within the timeout: signal nothing
    ROLL = "roll"  # the canary is proven: SIGHUP the local members still on the old one
    WAIT = "wait"  # nothing to signal; some local member does not serve the pair (yet)
    DONE = "done"  # every local member serves the installed pair


@dataclass(frozen=True, slots=True)
class Member:
    """A member as some node's distributor reports it."""

    node_id: str
    node_name: str
    node_fingerprint: str | None  # what that node has installed
    probe: MemberProbe

    @property
    def label(self) -> str:
        slot = f"slot {self.probe.slot}" if self.probe.slot is not None else "a member"
        return f"{slot} ({self.probe.container_id[:12]}) on {self.node_name or self.node_id}"


@dataclass(frozen=True, slots=True)
class View:
    now: float
    fingerprint: str | None  # installed on this node
    node_id: str
    node_name: str
    local: Sequence[MemberProbe]  # this node's members, just probed
    remote: Sequence[Member]  # the peers' members from their reports
    signalled: frozenset[str]  # containers already sent a SIGHUP for ``fingerprint``
    waiting_since: float | None  # when this node began waiting on the canary for ``fingerprint``
    timeout: float


@dataclass(frozen=True, slots=True)
class Plan:
    step: Step
    status: Status
    message: str
    signal: tuple[str, ...] = ()  # container IDs to SIGHUP now, in order
    canary: Member | None = None
    waiting: bool = False  # the canary owes the pair: keep (or start) the waiting clock


def serves(probe: MemberProbe, fingerprint: str) -> bool:
    return probe.fingerprint == fingerprint and probe.serves_installed is True


def proven(member: Member, fingerprint: str) -> bool:
    return (
        member.node_fingerprint == fingerprint
        and serves(member.probe, fingerprint)
        and (member.probe.trusted is True)
    )


def _rank(member: Member) -> tuple[bool, int, str, str]:
    slot = member.probe.slot
    return (slot is None, slot or 0, member.node_id, member.probe.container_id)


def plan(view: View) -> Plan:
    fp = view.fingerprint
    if fp is None:
        return Plan(Step.IDLE, Status.OK, "no pair installed yet")
    local = [Member(view.node_id, view.node_name, fp, p) for p in view.local]
    known = local + [m for m in view.remote if m.node_id != view.node_id]
    if not known:
        return Plan(Step.IDLE, Status.OK, "no Vault member known")
    canary = min(known, key=_rank)
    if not proven(canary, fp):
        return _canary_owed(view, fp, canary)
    ready = [
        m.probe.container_id
        for m in local
        if m.probe.fingerprint == fp
        and m.probe.serves_installed is False
        and m.probe.container_id not in view.signalled
    ]
    if ready:
        return Plan(
            Step.ROLL,
            Status.OK,
            f"canary {canary.label} serves the new certificate; SIGHUP to "
            f"{len(ready)} local member(s)",
            signal=tuple(ready),
            canary=canary,
        )
    behind = [m for m in local if not serves(m.probe, fp)]
    if not behind:
        return Plan(
            Step.DONE,
            Status.OK,
            "every local Vault member serves the installed certificate",
            canary=canary,
        )
    failed = [m for m in behind if m.probe.container_id in view.signalled]
    if failed:
        names = "; ".join(f"{m.label}: {m.probe.detail}" for m in failed)
        return Plan(
            Step.WAIT,
            Status.DEGRADED,
            f"signalled but not serving the installed certificate: {names}",
            canary=canary,
        )
    names = "; ".join(f"{m.label}: {m.probe.detail}" for m in behind)
    return Plan(Step.WAIT, Status.OK, f"waiting for the probe to tell: {names}", canary=canary)


def _canary_owed(view: View, fp: str, canary: Member) -> Plan:
    probe = canary.probe
    if (
        canary.node_id == view.node_id
        and probe.fingerprint == fp
        and probe.serves_installed is False
        and probe.container_id not in view.signalled
    ):
        return Plan(
            Step.SIGNAL_CANARY,
            Status.OK,
            f"SIGHUP to the canary {canary.label} first",
            signal=(probe.container_id,),
            canary=canary,
            waiting=True,
        )
    if canary.node_fingerprint != fp:
        why = "its node has not installed this certificate"
    elif probe.fingerprint != fp:
        why = "not probed on this certificate yet"
    else:
        why = probe.detail or "no probe result"
    since = view.waiting_since if view.waiting_since is not None else view.now
    if view.now - since >= view.timeout:
        return Plan(
            Step.HALTED,
            Status.FAILING,
            f"signal rollout halted: canary {canary.label} does not serve the installed "
            f"certificate since {iso(since)}: {why}; no other member is signalled",
            canary=canary,
            waiting=True,
        )
    return Plan(
        Step.WAIT_CANARY,
        Status.OK,
        f"waiting for the canary {canary.label} to serve the new certificate: {why}",
        canary=canary,
        waiting=True,
    )


# -- the marker beside the pair: what was signalled for which fingerprint -----------------------


def read_marker(text: str) -> tuple[str | None, frozenset[str] | None]:
    """(fingerprint, containers signalled for it). Containers None: an older distributor wrote
    a bare fingerprint, meaning every local container then was signalled."""
    text = text.strip()
    if not text:
        return None, frozenset()
    if not text.startswith("{"):
        return text, None
    try:
        doc = json.loads(text)
    except ValueError:
        return None, frozenset()
    if not isinstance(doc, dict) or not isinstance(doc.get("fingerprint"), str):
        return None, frozenset()
    ids = doc.get("containers")
    containers = frozenset(str(i) for i in ids) if isinstance(ids, list) else frozenset()
    return doc["fingerprint"], containers


def render_marker(fingerprint: str, containers: frozenset[str]) -> str:
    return json.dumps({"fingerprint": fingerprint, "containers": sorted(containers)}) + "\n"
