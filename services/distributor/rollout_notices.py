"""What the rollout's decisions tell people: a pure function of the previous decision and the new.

Notifications mark transitions (a halt starts, a halt clears, the rollout completes, Swarm paused
the update), never the state each pass sees again.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.notify import Event
from shared.notify import Kind as Notice

from .coordinator import Decision, Kind


@dataclass(frozen=True, slots=True)
class Seen:
    """What the previous pass decided (None: nothing yet in this process)."""

    kind: Kind
    fingerprint: str | None


# Leaving one of these is a resume: a halt cleared, or an operator's pause ended.
_HOLDS = frozenset({Kind.HALTED, Kind.PAUSED})
# Leaving these is not "done": a rollout recorded done that still has a member back to come.
_ALREADY_DONE = frozenset({Kind.DONE, Kind.NOT_BACK})


def _fields(decision: Decision) -> dict[str, str | int]:
    fields: dict[str, str | int] = {"decision": decision.kind.value}
    if decision.fingerprint:
        fields["fingerprint"] = decision.fingerprint
    member = decision.member
    if member is not None:
        fields["member"] = member.where
        if member.slot is not None:
            fields["slot"] = member.slot
    if decision.nodes:
        fields["nodes"] = "; ".join(decision.nodes)
    return fields


def rollout_notices(previous: Seen | None, decision: Decision) -> list[Event]:
    """The notifications a decision sends, given the one before it."""
    if decision.kind is Kind.SYNC_ONLY:
        return []  # not the leader: the leader tells
    # A process that just started (or just became leader) has no past to compare with.
    known = previous is not None and previous.kind is not Kind.SYNC_ONLY
    prev_kind = previous.kind if previous is not None else None
    fp = decision.fingerprint or ""
    fields = _fields(decision)
    events: list[Event] = []
    if prev_kind in _HOLDS and decision.kind is not prev_kind:
        events.append(
            Event(
                Notice.ROLLOUT_RESUMED,
                f"vault rollout no longer {prev_kind.value if prev_kind else 'held'}: "
                f"{decision.message or decision.kind.value}",
                subject=fp,
                fields=fields,
            )
        )
    if decision.kind is Kind.HALTED and prev_kind is not Kind.HALTED:
        where = decision.member.where if decision.member is not None else ""
        events.append(
            Event(
                Notice.ROLLOUT_HALTED,
                decision.message or "vault rollout halted",
                subject=f"{fp} {where}".strip(),
                fields=fields,
            )
        )
    elif decision.kind in {Kind.FAILED, Kind.PAUSED} and prev_kind is not decision.kind:
        events.append(Event(Notice.ROLLOUT_PAUSED, decision.message, subject=fp, fields=fields))
    elif (
        decision.kind is Kind.DONE
        and known
        and previous is not None
        and (previous.kind not in _ALREADY_DONE or previous.fingerprint != decision.fingerprint)
    ):
        events.append(
            Event(
                Notice.ROLLOUT_DONE,
                "vault rollout done: every member serves the installed certificate",
                subject=fp,
                fields=fields,
            )
        )
    return events
