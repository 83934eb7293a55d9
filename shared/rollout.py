"""The labels certflow keeps on the Vault service, and what they say about a rollout (pure).

``certflow.fingerprint``: the certificate every member serves (its rollout is done).
``certflow.rollout``: the members asked to stop for the certificate being rolled out, in order.
The distributor's coordinator writes them; ``certflow verify`` reads them.
"""

from __future__ import annotations

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
