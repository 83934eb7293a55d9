"""The labels certflow keeps on the Vault service, and what they say about a rollout (pure).

``certflow.fingerprint``: the certificate every member serves (its rollout is done).
``certflow.rollout``: the members asked to stop for the certificate being rolled out, in order.
The distributor's coordinator writes them; ``certflow verify`` reads them.

``certflow.paused`` (on the cert-distributor service, written by ``certflow pause``): the
maintenance switch. Not on the Vault service: any write of a Vault service label moves a gated
rolling update on by one member, which a pause must never do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Service label holding the fingerprint every Vault member serves: the rollout of that certificate
# is done. (Older certflow versions also put it on the containers of a forced update.)
FINGERPRINT_LABEL = "certflow.fingerprint"

# Service label the coordinator writes to move a gated rolling update on: the task ID of the
# member just proven back (any new value makes Swarm go on with the next member). Only rolling
# updates certflow did not start use it (an operator's `docker stack deploy`): certflow restarts
# members itself (the ``ROLLOUT_LABEL``).
ADVANCE_LABEL = "certflow.advanced-past"

# Service label naming the members the coordinator has asked to stop for one certificate, in
# order: "<fingerprint> <slot>:<task id>,<slot>:<task id>". Written before each stop order, so a
# new Swarm leader's coordinator knows which slots already had their one restart.
ROLLOUT_LABEL = "certflow.rollout"


@dataclass(frozen=True, slots=True)
class Ordered:
    """One stop order of a rollout: the member's slot and the task asked to stop."""

    slot: int
    task_id: str


def rollout_from_label(value: str | None, fingerprint: str | None) -> tuple[Ordered, ...]:
    """The stop orders recorded for ``fingerprint``; () for another certificate or a bad label."""
    if not value or fingerprint is None:
        return ()
    fp, _, orders = value.partition(" ")
    if fp != fingerprint:
        return ()
    out: list[Ordered] = []
    for item in filter(None, orders.split(",")):
        slot, sep, task = item.partition(":")
        if not sep or not slot.isdigit() or not task:
            return ()
        out.append(Ordered(int(slot), task))
    return tuple(out)


def rollout_label(fingerprint: str, orders: tuple[Ordered, ...]) -> str:
    return f"{fingerprint} " + ",".join(f"{o.slot}:{o.task_id}" for o in orders)


def rollout_in_progress(labels: dict[str, str]) -> tuple[str, tuple[Ordered, ...]] | None:
    """The certificate being rolled out and its stop orders so far, from a Vault service's
    labels; None when no rollout is under way (none began, or the last one is recorded done)."""
    value = labels.get(ROLLOUT_LABEL) or ""
    fingerprint = value.partition(" ")[0]
    if not fingerprint or labels.get(FINGERPRINT_LABEL) == fingerprint:
        return None
    return fingerprint, rollout_from_label(value, fingerprint)


# Service label of the cert-distributor service while an operator has paused certflow's actions on
# Vault (``certflow pause``): JSON {"since": ISO time, "reason": text, "by": host}.
PAUSE_LABEL = "certflow.paused"
# Label of the vault-unsealer service while paused: its replica count before the pause scaled it
# to 0 (``certflow resume`` restores it).
PAUSED_REPLICAS_LABEL = "certflow.paused-replicas"


@dataclass(frozen=True, slots=True)
class Pause:
    since: str
    reason: str
    by: str = ""

    def describe(self) -> str:
        who = f" on {self.by}" if self.by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"paused by an operator since {self.since or '?'}{who}{why}"


def pause_label(pause: Pause) -> str:
    return json.dumps({"since": pause.since, "reason": pause.reason, "by": pause.by})


def pause_from_labels(labels: dict[str, str]) -> Pause | None:
    """The pause recorded in ``labels``; a label that cannot be read still pauses (fail safe)."""
    value = labels.get(PAUSE_LABEL)
    if value is None:
        return None
    try:
        doc = json.loads(value)
        return Pause(str(doc.get("since", "")), str(doc.get("reason", "")), str(doc.get("by", "")))
    except (ValueError, AttributeError):
        return Pause(since="", reason=f"unreadable {PAUSE_LABEL} label")
