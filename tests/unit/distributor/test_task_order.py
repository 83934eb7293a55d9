"""Reload orders: signed by the leader, checked by the consumer task's node."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from services.distributor import stop_order, task_order
from services.distributor.stop_order import LocalTask, OrderRefused, StopOrder
from services.distributor.task_order import ReloadOrder, TaskContainer, decode, encode, judge_reload
from shared.errors import AuthReason, ManifestUnauthenticated
from shared.manifest_auth import MacKeys, authenticate_manifest, sign_manifest

pytestmark = pytest.mark.unit

KEY = b"a" * 32
KEYS = MacKeys.of(KEY)
ORDER = ReloadOrder("web", "task2", "2", "signal", "SIGHUP", "AA:NEW", 1000.0)
STOP = StopOrder("iklimco_vault", 2, "task2", "AA:NEW", 1000.0)


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
        (_tampered(signal="SIGUSR1"), KEYS, 1000.0, "unauthenticated", 401),
        (_tampered(action="restart"), KEYS, 1000.0, "unauthenticated", 401),
        (_tampered(mac="hmac-sha256:00000000:" + "0" * 64), KEYS, 1000.0, "unauthenticated", 401),
        (_tampered(mac=None), KEYS, 1000.0, "unauthenticated", 401),
        (encode(ORDER, KEYS), None, 1000.0, "no_key", 401),
        (encode(ORDER, KEYS), KEYS, 1121.0, "stale", 401),
        (encode(ORDER, KEYS), KEYS, 879.0, "stale", 401),
        (b"not json", KEYS, 1000.0, "malformed", 400),
        (b"[1]", KEYS, 1000.0, "malformed", 400),
        (_tampered(kind=stop_order.KIND), KEYS, 1000.0, "malformed", 400),
        (encode(replace(ORDER, unit=""), KEYS), KEYS, 1000.0, "malformed", 400),
        (encode(replace(ORDER, task_id=""), KEYS), KEYS, 1000.0, "malformed", 400),
    ],
    ids=[
        "other key",
        "signal changed after signing",
        "action changed after signing",
        "forged tag",
        "no tag",
        "no key here",
        "too old",
        "too far ahead",
        "not json",
        "not an object",
        "a stop order's kind",
        "no unit",
        "no task",
    ],
)
def test_orders_that_are_refused(
    raw: bytes, keys: MacKeys | None, now: float, reason: str, status: int
) -> None:
    with pytest.raises(OrderRefused) as refused:
        decode(raw, keys, now=now)
    assert (refused.value.reason, refused.value.status) == (reason, status)
    assert KEY.decode() not in str(refused.value)


def test_a_stop_order_is_not_a_reload_order_and_back() -> None:
    with pytest.raises(OrderRefused) as refused:
        decode(stop_order.encode(STOP, KEYS), KEYS, now=1000.0)
    assert refused.value.status == 400
    with pytest.raises(OrderRefused) as refused:
        stop_order.decode(encode(ORDER, KEYS), KEYS, now=1000.0)
    assert refused.value.status == 400


def test_the_mac_domains_differ_even_when_the_fields_agree() -> None:
    # The kind alone tells orders apart only while nobody reuses one; the MAC's prefix makes a
    # signature of one domain worthless in the other whatever the fields say.
    as_stop = stop_order.seal(ORDER.fields(), KEYS, b"certflow stop order\n")
    with pytest.raises(OrderRefused) as refused:
        decode(as_stop, KEYS, now=1000.0)
    assert refused.value.reason == "unauthenticated"
    as_reload = stop_order.seal(
        {**STOP.fields(), "kind": task_order.KIND}, KEYS, b"certflow reload order\n"
    )
    doc = {**json.loads(as_reload), "kind": stop_order.KIND}
    with pytest.raises(OrderRefused) as refused:
        stop_order.decode(json.dumps(doc).encode(), KEYS, now=1000.0)
    assert refused.value.reason == "unauthenticated"


def test_a_signed_manifest_is_not_a_reload_order_and_back() -> None:
    manifest = json.dumps({**ORDER.fields(), "generation": 1}).encode()
    with pytest.raises(OrderRefused) as refused:
        decode(sign_manifest(KEYS, manifest), KEYS, now=1000.0)
    assert refused.value.reason == "unauthenticated"
    with pytest.raises(ManifestUnauthenticated) as unauthenticated:
        authenticate_manifest(KEYS, encode(ORDER, KEYS))
    assert unauthenticated.value.reason == AuthReason.BAD_MAC


LOCAL = [TaskContainer("c1", "task1"), TaskContainer("c2", "task2")]


@pytest.mark.parametrize(
    "order",
    [
        ORDER,
        replace(ORDER, signal="SIGUSR2"),
        replace(ORDER, action="restart", signal="SIGTERM"),
    ],
    ids=["signal", "another signal", "restart"],
)
def test_judge_reloads_the_named_task_only(order: ReloadOrder) -> None:
    assert judge_reload(order, installed="AA:NEW", local=LOCAL) == LOCAL[1]


def test_judge_a_task_that_no_longer_runs_here_is_nothing_to_do() -> None:
    gone = replace(ORDER, task_id="task9")
    assert judge_reload(gone, installed="AA:NEW", local=LOCAL) is None
    assert judge_reload(ORDER, installed="AA:NEW", local=[]) is None


def test_judge_takes_the_vault_receivers_tasks_too() -> None:
    vault = [LocalTask("c2", "task2", serves=False)]
    assert judge_reload(ORDER, installed="AA:NEW", local=vault) == vault[0]


@pytest.mark.parametrize(
    ("order", "installed", "reason", "status"),
    [
        (ORDER, "BB:OLD", "not_installed", 409),
        (ORDER, None, "not_installed", 409),
        (replace(ORDER, action="none"), "AA:NEW", "bad_action", 400),
        (replace(ORDER, action="exec"), "AA:NEW", "bad_action", 400),
        (replace(ORDER, signal="SIGKILL"), "AA:NEW", "bad_signal", 400),
        (replace(ORDER, signal="SIGSTOP"), "AA:NEW", "bad_signal", 400),
        (replace(ORDER, signal="HUP"), "AA:NEW", "bad_signal", 400),
        (replace(ORDER, action="restart", signal="SIGHUP"), "AA:NEW", "bad_signal", 400),
        (replace(ORDER, action="restart", signal="SIGKILL"), "AA:NEW", "bad_signal", 400),
    ],
    ids=[
        "other certificate installed",
        "nothing installed",
        "watched only",
        "unknown action",
        "SIGKILL is no reload",
        "SIGSTOP is no reload",
        "signal without SIG",
        "restart by SIGHUP",
        "restart by SIGKILL",
    ],
)
def test_judge_refuses(order: ReloadOrder, installed: str | None, reason: str, status: int) -> None:
    with pytest.raises(OrderRefused) as refused:
        judge_reload(order, installed=installed, local=LOCAL)
    assert (refused.value.reason, refused.value.status) == (reason, status)
