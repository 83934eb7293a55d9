"""Stop orders: the coordinator asks a member's node to stop that member (pure: sign and read).

An order names one Vault task (by service, slot and task ID) and the certificate it is stopped
for. It travels over the distributors' network as JSON with an HMAC by the manifest key
(``shared.manifest_auth``), which only certflow holds: the network carries the order, the key
authorizes it. The MAC covers a prefix of its own, so a signed manifest can never pass as an
order or an order as a manifest. :func:`seal` and :func:`unseal` are shared with reload orders
(``task_order``), each kind under its own prefix.

An order is safe to deliver twice: it names one task, and a stopped task never runs again (Swarm
starts a new task, with a new ID). ``MAX_AGE`` bounds how long a copied order stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shared.manifest_auth import MAC_FIELD, MacKeys, canonical, sign, tag_key_id, verify

PATH = "/v1/stop-member"
KIND = "certflow.stop-member/1"
_DOMAIN = b"certflow stop order\n"
# Seconds an order stays valid either side of its issue time (clocks differ between nodes).
MAX_AGE = 120.0


class OrderRefused(Exception):
    """An order that is not carried out; the message is safe to show (no key material)."""

    def __init__(self, reason: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class Issued(Protocol):
    @property
    def issued_at(self) -> float: ...


OrderT = TypeVar("OrderT", bound=Issued)


def seal(fields: dict[str, Any], keys: MacKeys, domain: bytes) -> bytes:
    """``fields`` as the JSON body of a request, with their MAC under ``domain``."""
    doc = dict(fields)
    doc[MAC_FIELD] = sign(keys, domain + canonical(doc))
    return json.dumps(doc, sort_keys=True).encode()


def unseal(
    raw: bytes,
    keys: MacKeys | None,
    *,
    kind: str,
    domain: bytes,
    what: str,
    build: Callable[[dict[str, Any]], OrderT],
    now: float,
    max_age: float,
) -> OrderT:
    """Read and authenticate a signed order of ``kind`` (``what`` names it in messages): JSON,
    kind, key, MAC under ``domain``, fields (``build``), age, in that order. Raises
    :class:`OrderRefused` with status 400 (malformed) or 401 (no key, bad MAC, stale)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise OrderRefused("malformed", "the order is not JSON", status=400) from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise OrderRefused("malformed", f"not a {kind} order", status=400)
    if keys is None:
        raise OrderRefused(
            "no_key",
            "this distributor has no manifest key (CERTFLOW_MANIFEST_KEY_FILES) to authenticate "
            f"{what}s with",
            status=401,
        )
    tag = doc.get(MAC_FIELD)
    if not isinstance(tag, str) or not verify(keys, domain + canonical(doc), tag):
        kid = tag_key_id(tag) if isinstance(tag, str) else None
        signer = f"key id {kid}" if kid else "no valid MAC"
        raise OrderRefused(
            "unauthenticated",
            f"{what} refused: its MAC does not verify ({signer}; accepted: {', '.join(keys.ids)})",
            status=401,
        )
    try:
        order = build(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise OrderRefused(
            "malformed", f"{what} field missing or wrong: {exc}", status=400
        ) from None
    if abs(now - order.issued_at) > max_age:
        raise OrderRefused(
            "stale",
            f"{what} issued {now - order.issued_at:.0f}s from this node's clock "
            f"(accepted: within {max_age:.0f}s)",
            status=401,
        )
    return order


@dataclass(frozen=True, slots=True)
class StopOrder:
    service: str
    slot: int
    task_id: str
    fingerprint: str
    issued_at: float  # the coordinator's clock, Unix time

    def fields(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "service": self.service,
            "slot": self.slot,
            "task_id": self.task_id,
            "fingerprint": self.fingerprint,
            "issued_at": self.issued_at,
        }


def encode(order: StopOrder, keys: MacKeys) -> bytes:
    """The order as the JSON body of a request, with its MAC."""
    return seal(order.fields(), keys, _DOMAIN)


def decode(raw: bytes, keys: MacKeys | None, *, now: float, max_age: float = MAX_AGE) -> StopOrder:
    """Read and authenticate an order. Raises :class:`OrderRefused` (status 400 or 401)."""
    return unseal(
        raw,
        keys,
        kind=KIND,
        domain=_DOMAIN,
        what="stop order",
        build=_stop_order,
        now=now,
        max_age=max_age,
    )


def _stop_order(doc: dict[str, Any]) -> StopOrder:
    return StopOrder(
        service=text_field(doc, "service"),
        slot=_int(doc, "slot"),
        task_id=text_field(doc, "task_id"),
        fingerprint=text_field(doc, "fingerprint"),
        issued_at=float(doc["issued_at"]),
    )


def text_field(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value


@dataclass(frozen=True, slots=True)
class LocalTask:
    """A running container of the Vault service on this node, as the order's receiver sees it."""

    container_id: str
    task_id: str
    serves: bool  # last probed unsealed and serving the installed leaf, trusted


def judge(
    order: StopOrder, *, service: str, installed: str | None, local: list[LocalTask]
) -> LocalTask | None:
    """The container to stop for ``order``; None when its task no longer runs here (already
    stopped: nothing to do). Raises :class:`OrderRefused` when stopping it would be wrong."""
    if order.service != service:
        raise OrderRefused("not_ours", f"this distributor reloads {service}, not {order.service}")
    if installed != order.fingerprint:
        raise OrderRefused(
            "not_installed",
            "this node does not have the certificate the order is for installed "
            f"({installed or 'nothing'} installed); the member would restart on the old pair",
        )
    task = next((t for t in local if t.task_id == order.task_id), None)
    if task is None:
        return None
    if task.serves:
        raise OrderRefused(
            "already_serves", f"slot {order.slot} already serves the certificate: not stopped"
        )
    return task
