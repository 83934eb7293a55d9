"""Stop orders: signed by the coordinator, checked and carried out by the member's node."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from services.distributor.stop_order import (
    LocalTask,
    OrderRefused,
    StopOrder,
    decode,
    encode,
    judge,
)
from shared.manifest_auth import MacKeys, sign_manifest
from shared.rollout import Ordered, rollout_from_label, rollout_label

pytestmark = pytest.mark.unit

KEY = b"a" * 32
KEYS = MacKeys.of(KEY)
ORDER = StopOrder("iklimco_vault", 2, "task2", "AA:NEW", 1000.0)


def test_an_order_round_trips_and_holds_no_key_material() -> None:
    raw = encode(ORDER, KEYS)
    assert decode(raw, KEYS, now=1010.0) == ORDER
    assert KEY not in raw
    # A rotated key set still accepts an order signed with a key it lists.
    assert decode(raw, MacKeys.of(b"b" * 32, KEY), now=1000.0) == ORDER


def _tampered(**fields: object) -> bytes:
    doc = json.loads(encode(ORDER, KEYS))
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "keys", "now", "reason", "status"),
    [
        (encode(ORDER, KEYS), MacKeys.of(b"b" * 32), 1000.0, "unauthenticated", 401),
        (_tampered(task_id="task3"), KEYS, 1000.0, "unauthenticated", 401),
        (_tampered(mac="hmac-sha256:00000000:" + "0" * 64), KEYS, 1000.0, "unauthenticated", 401),
        (_tampered(mac=None), KEYS, 1000.0, "unauthenticated", 401),
        (encode(ORDER, KEYS), None, 1000.0, "no_key", 401),
        (encode(ORDER, KEYS), KEYS, 1121.0, "stale", 401),
        (encode(ORDER, KEYS), KEYS, 879.0, "stale", 401),
        (b"not json", KEYS, 1000.0, "malformed", 400),
        (_tampered(kind="other"), KEYS, 1000.0, "malformed", 400),
        (encode(replace(ORDER, slot=0), KEYS), KEYS, 1000.0, "malformed", 400),
    ],
    ids=[
        "other key",
        "changed after signing",
        "forged tag",
        "no tag",
        "no key here",
        "too old",
        "too far ahead",
        "not json",
        "not an order",
        "bad slot",
    ],
)
def test_orders_that_are_refused(
    raw: bytes, keys: MacKeys | None, now: float, reason: str, status: int
) -> None:
    with pytest.raises(OrderRefused) as refused:
        decode(raw, keys, now=now)
    assert (refused.value.reason, refused.value.status) == (reason, status)
    assert KEY.decode() not in str(refused.value)


def test_a_signed_manifest_is_not_an_order() -> None:
    manifest = json.dumps({**ORDER.fields(), "generation": 1}).encode()
    with pytest.raises(OrderRefused):
        decode(sign_manifest(KEYS, manifest), KEYS, now=1000.0)


LOCAL = [LocalTask("c1", "task1", serves=True), LocalTask("c2", "task2", serves=False)]


def test_judge_stops_the_named_task_only() -> None:
    assert judge(ORDER, service="iklimco_vault", installed="AA:NEW", local=LOCAL) == LOCAL[1]


def test_judge_a_task_that_no_longer_runs_here_is_nothing_to_do() -> None:
    gone = replace(ORDER, task_id="task9")
    assert judge(gone, service="iklimco_vault", installed="AA:NEW", local=LOCAL) is None


@pytest.mark.parametrize(
    ("order", "service", "installed", "reason"),
    [
        (ORDER, "other_vault", "AA:NEW", "not_ours"),
        (ORDER, "iklimco_vault", "BB:OLD", "not_installed"),
        (ORDER, "iklimco_vault", None, "not_installed"),
        (replace(ORDER, task_id="task1", slot=1), "iklimco_vault", "AA:NEW", "already_serves"),
    ],
)
def test_judge_refuses(order: StopOrder, service: str, installed: str | None, reason: str) -> None:
    with pytest.raises(OrderRefused) as refused:
        judge(order, service=service, installed=installed, local=LOCAL)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("value", "fingerprint", "orders"),
    [
        ("AA:NEW 2:t2,1:t1", "AA:NEW", (Ordered(2, "t2"), Ordered(1, "t1"))),
        ("AA:NEW 2:t2", "BB:OTHER", ()),
        ("AA:NEW ", "AA:NEW", ()),
        (None, "AA:NEW", ()),
        ("AA:NEW 2:t2", None, ()),
        ("AA:NEW x:t2", "AA:NEW", ()),
        ("AA:NEW 2:", "AA:NEW", ()),
        ("garbage", "AA:NEW", ()),
    ],
)
def test_the_rollout_label(
    value: str | None, fingerprint: str | None, orders: tuple[Ordered, ...]
) -> None:
    assert rollout_from_label(value, fingerprint) == orders
    if orders and fingerprint:
        assert rollout_label(fingerprint, orders) == value
