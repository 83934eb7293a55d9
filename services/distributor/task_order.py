"""Reload orders: the leader asks a consumer task's node to reload that task (pure: sign, read,
judge).

A consumer is a Swarm service labelled ``certflow.reload=restart|signal`` (``shared.consumers``).
An order names one of its tasks (by service and task ID), the unit it fills (a slot or a node,
for logs), how to reload it and the certificate it reloads for. It travels like a stop order
(``stop_order``): JSON with an HMAC by the manifest key, under a MAC prefix of its own, so a
reload order, a stop order and a manifest can never pass for one another.

Delivering a ``restart`` order twice is safe (a stopped task never runs again: Swarm starts a
new one, with a new ID); a ``signal`` order is not, so its receiver signals once per container
and certificate (``task_reload``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shared.consumers import SIGNALS
from shared.manifest_auth import MacKeys

from .stop_order import MAX_AGE, OrderRefused, seal, text_field, unseal

PATH = "/v1/reload-task"
KIND = "certflow.reload-task/1"
_DOMAIN = b"certflow reload order\n"
ACTIONS = ("restart", "signal")
# A restart is a stop: Swarm's restart policy starts the new task (SIGKILL only if it hangs).
RESTART_SIGNAL = "SIGTERM"


@dataclass(frozen=True, slots=True)
class ReloadOrder:
    service: str
    task_id: str
    unit: str  # the slot number or the node ID the task fills (for logs)
    action: str  # restart or signal
    signal: str  # signal: one of shared.consumers.SIGNALS; restart: SIGTERM
    fingerprint: str
    issued_at: float  # the leader's clock, Unix time

    def fields(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "service": self.service,
            "task_id": self.task_id,
            "unit": self.unit,
            "action": self.action,
            "signal": self.signal,
            "fingerprint": self.fingerprint,
            "issued_at": self.issued_at,
        }


def encode(order: ReloadOrder, keys: MacKeys) -> bytes:
    """The order as the JSON body of a request, with its MAC."""
    return seal(order.fields(), keys, _DOMAIN)


def decode(
    raw: bytes, keys: MacKeys | None, *, now: float, max_age: float = MAX_AGE
) -> ReloadOrder:
    """Read and authenticate an order. Raises :class:`OrderRefused` (status 400 or 401)."""
    return unseal(
        raw,
        keys,
        kind=KIND,
        domain=_DOMAIN,
        what="reload order",
        build=_reload_order,
        now=now,
        max_age=max_age,
    )


def _reload_order(doc: dict[str, Any]) -> ReloadOrder:
    return ReloadOrder(
        service=text_field(doc, "service"),
        task_id=text_field(doc, "task_id"),
        unit=text_field(doc, "unit"),
        action=text_field(doc, "action"),
        signal=text_field(doc, "signal"),
        fingerprint=text_field(doc, "fingerprint"),
        issued_at=float(doc["issued_at"]),
    )


class RunningTask(Protocol):
    """A running container of a task on this node (``TaskContainer``, ``stop_order.LocalTask``)."""

    @property
    def container_id(self) -> str: ...

    @property
    def task_id(self) -> str: ...


TaskT = TypeVar("TaskT", bound=RunningTask)


@dataclass(frozen=True, slots=True)
class TaskContainer:
    container_id: str
    task_id: str


def judge_reload(
    order: ReloadOrder, *, installed: str | None, local: Sequence[TaskT]
) -> TaskT | None:
    """The container to reload for ``order``; None when its task no longer runs here (already
    restarted: nothing to do). Raises :class:`OrderRefused`: 400 for an action or signal that is
    never a reload, 409 when this node lacks the certificate (the task would reload the old pair).
    """
    if order.action not in ACTIONS:
        raise OrderRefused(
            "bad_action",
            f"reload order action {order.action!r}: expected one of {', '.join(ACTIONS)}",
            status=400,
        )
    allowed = {RESTART_SIGNAL} if order.action == "restart" else SIGNALS
    if order.signal not in allowed:
        raise OrderRefused(
            "bad_signal",
            f"reload order signal {order.signal!r} for {order.action}: expected one of "
            f"{', '.join(sorted(allowed))}",
            status=400,
        )
    if installed != order.fingerprint:
        raise OrderRefused(
            "not_installed",
            "this node does not have the certificate the order is for installed "
            f"({installed or 'nothing'} installed); the task would reload the old pair",
        )
    return next((t for t in local if t.task_id == order.task_id), None)
