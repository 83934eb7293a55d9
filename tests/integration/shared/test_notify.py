"""The real Notifier against a real HTTP receiver (http.server on 127.0.0.1, port 0): the generic
webhook through httpx and apprise's own json:// plugin, a receiver that answers 500 or hangs, a
full queue, an unreachable URL."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from shared.logs import configure_logging
from shared.notifier import Notifier
from shared.notify import Event, Kind
from shared.notify_policy import Limits
from shared.notify_targets import (
    AppriseTarget,
    Target,
    WebhookTarget,
    parse_apprise_urls,
    parse_webhook_url,
)
from shared.settings import NotifySettings, load_settings
from tests.support.notify_receiver import WAIT, Receiver, receiving

TOKEN = "T0K3Nsecret"


@pytest.fixture
def log() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(service="test", node="n1", stream=stream)
    return stream


def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll a counter (it has no hook to wait on), bounded generously."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def count(registry: CollectorRegistry, kind: Kind, outcome: str) -> float:
    value = registry.get_sample_value(
        "certflow_notifications_total", {"kind": kind.value, "outcome": outcome}
    )
    return value or 0.0


def webhook(url: str, timeout: float = 5.0) -> WebhookTarget:
    return WebhookTarget(parse_webhook_url(url), timeout=timeout)


def notifier(targets: list[Target], registry: CollectorRegistry, **kwargs: object) -> Notifier:
    options: dict[str, object] = {
        "service": "cert-test",
        "node": "n1",
        "timeout": 5.0,
        "limits": Limits(dedup_seconds=3600, per_minute=1000),
    }
    options.update(kwargs)
    return Notifier(targets, registry=registry, **options)  # type: ignore[arg-type]


def every_kind() -> list[Event]:
    return [
        Event(kind, f"{kind.value} happened", subject="fp-1", fields={"slot": 2, "reason": "x"})
        for kind in Kind
    ]


def test_every_kind_reaches_the_webhook_and_apprise_json(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    settings = load_settings(
        NotifySettings,
        {
            "CERTFLOW_NOTIFY_WEBHOOK_URL": f"{receiver.url}/hook/{TOKEN}",
            "CERTFLOW_NOTIFY_URLS": f"json://127.0.0.1:{receiver.port}/apprise",
        },
    )
    sender = Notifier.from_settings(settings, service="cert-test", node="n1", registry=registry)
    try:
        for event in every_kind():
            sender.notify(event)
        total = 2 * len(Kind)
        receiver.wait_for(lambda r: len(r.bodies) == total, what=f"{total} notifications")
    finally:
        sender.close()
    hooks = [b for b, p in zip(receiver.bodies, receiver.paths, strict=True) if "hook" in p]
    apprised = [b for b, p in zip(receiver.bodies, receiver.paths, strict=True) if "apprise" in p]
    assert sorted(b["kind"] for b in hooks) == sorted(k.value for k in Kind)
    for body in hooks:
        assert body["service"] == "cert-test"
        assert body["node"] == "n1"
        assert body["subject"] == "fp-1"
        assert body["fields"] == {"slot": 2, "reason": "x"}
        assert body["severity"] in {"info", "warning", "critical"}
        assert body["time"].endswith("Z")
    # apprise's json:// plugin sends its own shape: title, message, type.
    titles = sorted(b["title"] for b in apprised)
    assert len(titles) == len(Kind)
    for kind in Kind:
        assert any(f": {kind.value} on n1" in t for t in titles), kind
    assert all("happened" in b["message"] for b in apprised)
    for kind in Kind:
        assert count(registry, kind, "sent") == 2


def test_duplicates_and_a_burst_are_counted_not_sent(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    sender = notifier(
        [webhook(receiver.url)], registry, limits=Limits(dedup_seconds=3600, per_minute=3)
    )
    try:
        for _ in range(3):
            sender.notify(Event(Kind.ROLLOUT_HALTED, "halted", subject="slot 2"))
        for slot in range(3, 7):
            sender.notify(Event(Kind.MEMBER_SEALED, "sealed", subject=f"slot {slot}"))
        receiver.wait_for(lambda r: len(r.bodies) == 3, what="3 notifications")
    finally:
        sender.close()
    assert count(registry, Kind.ROLLOUT_HALTED, "deduplicated") == 2
    assert count(registry, Kind.MEMBER_SEALED, "rate_limited") == 2
    assert receiver.kinds() == ["rollout.halted", "member.sealed", "member.sealed"]


def test_a_500_costs_that_delivery_only_and_is_logged_without_the_url(
    receiver: Receiver, log: io.StringIO
) -> None:
    registry = CollectorRegistry()
    with receiving("error") as failing:
        sender = notifier(
            [webhook(f"{failing.url}/{TOKEN}"), webhook(receiver.url)],
            registry,
        )
        try:
            sender.notify(Event(Kind.TRUST_FAILED, "untrusted", subject="a"))
            sender.notify(Event(Kind.CANARY_FAILED, "canary", subject="b"))
            receiver.wait_for(lambda r: len(r.bodies) == 2, what="both on the good receiver")
            eventually(lambda: count(registry, Kind.CANARY_FAILED, "failed") == 1, "2nd failed")
        finally:
            sender.close()
    assert failing.requests == 2
    assert count(registry, Kind.TRUST_FAILED, "failed") == 1
    assert count(registry, Kind.TRUST_FAILED, "sent") == 1
    failures = [json.loads(line) for line in log.getvalue().splitlines() if "notify.failed" in line]
    assert len(failures) == 2
    assert failures[0]["target"] == f"http://127.0.0.1:{failing.port}"
    assert failures[0]["error"] == "HTTP 500"
    assert TOKEN not in log.getvalue()


def test_a_hanging_receiver_is_bounded_and_notify_never_blocks(
    receiver: Receiver, log: io.StringIO
) -> None:
    registry = CollectorRegistry()
    with receiving("hang") as hanging:
        sender = notifier(
            [webhook(f"{hanging.url}/{TOKEN}", timeout=1.0), webhook(receiver.url)],
            registry,
            timeout=1.0,
        )
        try:
            # notify() only enqueues: these return while the first send hangs.
            for subject in ("a", "b", "c"):
                sender.notify(Event(Kind.ROLLOUT_PAUSED, "paused", subject=subject))
            receiver.wait_for(lambda r: len(r.bodies) == 3, what="3 events past the hang")
            eventually(lambda: count(registry, Kind.ROLLOUT_PAUSED, "failed") == 3, "3 timeouts")
            # The receiver recovers: later events reach it again.
            hanging.mode = "ok"
            hanging.release.set()
            sender.notify(Event(Kind.ROLLOUT_RESUMED, "resumed", subject="a"))
            hanging.wait_for(lambda r: r.kinds() == ["rollout.resumed"], what="after recovery")
        finally:
            sender.close()
    assert TOKEN not in log.getvalue()
    assert "notify.failed" in log.getvalue()


def test_a_full_queue_drops_and_counts(log: io.StringIO) -> None:
    registry = CollectorRegistry()
    with receiving("hang") as hanging:
        sender = notifier(
            [webhook(hanging.url, timeout=20.0)], registry, timeout=20.0, queue_size=1
        )
        try:
            sender.notify(Event(Kind.CERT_EXPIRING, "1", subject="1"))
            hanging.wait_for(lambda r: r.requests == 1, what="the first send hangs")
            sender.notify(Event(Kind.CERT_EXPIRING, "2", subject="2"))  # waits in the queue
            assert sender.notify(Event(Kind.CERT_EXPIRING, "3", subject="3")) is None
            assert sender.notify(Event(Kind.CERT_EXPIRING, "4", subject="4")) is None
            assert count(registry, Kind.CERT_EXPIRING, "dropped") == 2
            hanging.mode = "ok"
            hanging.release.set()
            hanging.wait_for(lambda r: r.kinds() == ["cert.expiring"], what="the queued one")
        finally:
            sender.close()
    assert log.getvalue().count("notify.dropped") == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_urls_fail_counted_and_the_flow_goes_on(
    receiver: Receiver, log: io.StringIO
) -> None:
    registry = CollectorRegistry()
    port = _closed_port()
    (dead_apprise,) = parse_apprise_urls(f"json://127.0.0.1:{port}/{TOKEN}")
    sender = notifier(
        [
            webhook(f"http://127.0.0.1:{port}/{TOKEN}"),
            AppriseTarget(dead_apprise, timeout=2.0),
            webhook(receiver.url),
        ],
        registry,
    )
    try:
        sender.notify(Event(Kind.UNSEAL_KEY_REJECTED, "rejected", subject="vault-1"))
        receiver.wait_for(lambda r: len(r.bodies) == 1, what="the good target")
        eventually(lambda: count(registry, Kind.UNSEAL_KEY_REJECTED, "failed") == 2, "2 failed")
    finally:
        sender.close()
    failures = [json.loads(line) for line in log.getvalue().splitlines() if "notify.failed" in line]
    assert {f["target"] for f in failures} == {
        f"http://127.0.0.1:{port}",
        f"json://127.0.0.1:{port}",
    }
    assert TOKEN not in log.getvalue()


def test_close_delivers_what_is_queued(receiver: Receiver) -> None:
    registry = CollectorRegistry()
    sender = notifier([webhook(receiver.url)], registry)
    for event in every_kind():
        sender.notify(event)
    sender.close(timeout=WAIT)
    assert len(receiver.bodies) == len(Kind)
    assert sender.notify(Event(Kind.CERT_PUBLISHED, "late", subject="z")) is None
    assert count(registry, Kind.CERT_PUBLISHED, "dropped") == 1
