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
    pause: str | None = None  # the operator's pause in force then (certflow pause), described


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


def rollout_notices(
    previous: Seen | None, decision: Decision, pause: str | None = None
) -> list[Event]:
    """The notifications a decision sends, given the one before it. ``pause``: the operator's
    pause in force now; its start and its end notify once each, whatever the decisions do
    meanwhile (a member held sealed during the pause is not a resume)."""
    if decision.kind is Kind.SYNC_ONLY:
        return []  # not the leader: the leader tells
    # A process that just started (or just became leader) has no past to compare with.
    known = previous is not None and previous.kind is not Kind.SYNC_ONLY
    prev_kind = previous.kind if previous is not None else None
    prev_pause = previous.pause if previous is not None else None
    fp = decision.fingerprint or ""
    fields = _fields(decision)
    events: list[Event] = []
    if known and pause is not None and prev_pause is None:
        events.append(
            Event(Notice.ROLLOUT_PAUSED, pause, subject=f"operator {pause}", fields=fields)
        )
    elif known and pause is None and prev_pause is not None:
        events.append(
            Event(
                Notice.ROLLOUT_RESUMED,
                f"certflow resumed: {decision.message or decision.kind.value}",
                subject=f"operator {prev_pause}",
                fields=fields,
            )
        )
    if prev_kind is Kind.HALTED and decision.kind is not Kind.HALTED:
        events.append(
            Event(
                Notice.ROLLOUT_RESUMED,
                f"vault rollout no longer halted: {decision.message or decision.kind.value}",
                subject=fp,
                fields=fields,
            )
        )
    if decision.kind is Kind.HALTED and prev_kind is not Kind.HALTED:
        # Subject: the certificate, as the resume's, so that the resume ends this halt and the
        # next halt of the same rollout is news again (shared.notify.RESOLVES).
        events.append(
            Event(
                Notice.ROLLOUT_HALTED,
                decision.message or "vault rollout halted",
                subject=fp,
                fields=fields,
            )
        )
    elif decision.kind is Kind.FAILED and prev_kind is not Kind.FAILED:
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
