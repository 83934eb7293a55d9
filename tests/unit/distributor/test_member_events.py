"""Docker's container events wake the distributor's reload pass (the fake engine stands in for
Docker's event stream; the real one is in tests/integration/distributor)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.distributor.member_events import MemberEventWatch
from services.distributor.service import FAST_FOR, Distributor
from shared.errors import DockerError
from shared.swarm import ContainerEvent
from tests.support.fake_engine import FakeEngine, FakeEvents
from tests.unit.distributor.test_reload_shell import VAULT, settings

pytestmark = pytest.mark.unit


def event(
    action: str, cid: str = "c2", service: str = VAULT, task: str = "task2"
) -> ContainerEvent:
    labels = {"com.docker.swarm.service.name": service, "com.docker.swarm.task.id": task}
    return ContainerEvent(action, cid, labels, 1000.0)


def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_watch_hands_over_its_services_events_until_stopped() -> None:
    engine = FakeEngine()
    seen: list[ContainerEvent] = []
    watch = MemberEventWatch(engine, VAULT, seen.append)
    watch.start()
    assert watch.following.wait(5)
    engine.emit(event("start"))
    engine.emit(event("start", cid="x", service="other"))
    engine.emit(event("die"))
    until("two events", lambda: len(seen) == 2)
    watch.stop()
    assert [(e.action, e.container_id) for e in seen] == [("start", "c2"), ("die", "c2")]
    assert engine.streams[0].closed


def test_a_stream_that_fails_is_opened_again_and_polling_covers_the_gap() -> None:
    engine = FakeEngine()
    opened: list[FakeEvents] = []
    fail = threading.Event()
    fail.set()
    real = engine.container_events

    def flaky(service: str) -> FakeEvents:
        if fail.is_set():
            fail.clear()
            raise DockerError("following the events of iklimco_vault failed: EOF")
        opened.append(real(service))
        return opened[-1]

    engine.container_events = flaky  # type: ignore[method-assign]
    seen: list[ContainerEvent] = []
    watch = MemberEventWatch(engine, VAULT, seen.append, backoff_first=0.05)
    watch.start()
    try:
        assert watch.following.wait(5)
        engine.emit(event("start"))
        until("the event after the reopen", lambda: len(seen) == 1)
        opened[0].close()  # the engine ends the stream: opened again
        until("a second stream", lambda: len(opened) == 2)
    finally:
        watch.stop()


def test_a_member_event_brings_the_pass_and_the_probe_forward(tmp_path: Path) -> None:
    dist = Distributor(settings(tmp_path, "none"), engine=FakeEngine())
    dist.member_event(event("start"))
    assert dist._reload_due.is_set()
    assert dist._probe_asked == {"task2"}
    dist._reload_due.clear()
    dist._probe_asked.clear()

    dist.member_event(event("health_status: healthy"))  # its listener answers: probe it now
    assert dist._probe_asked == {"task2"}
    dist._probe_asked.clear()
    dist._reload_due.clear()
    dist.member_event(event("health_status: healthy"))  # still healthy: nothing new
    assert not dist._reload_due.is_set()
    assert dist._probe_asked == set()

    dist.member_event(event("die"))  # gone: pass now, nothing to probe
    assert dist._reload_due.is_set()
    assert dist._probe_asked == set()


def test_passes_come_at_the_gates_pace_only_while_a_rollout_is_in_flight(tmp_path: Path) -> None:
    dist = Distributor(
        settings(
            tmp_path, "restart", DISTRIBUTOR_POLL_INTERVAL="5", DISTRIBUTOR_GATE_INTERVAL="0.5"
        ),
        engine=FakeEngine(),
    )
    assert dist._pace(100.0) == 5.0
    dist._busy = True
    assert dist._pace(100.0) == 0.5
    assert dist._pace(100.0 + FAST_FOR - 1) == 0.5
    assert dist._pace(100.0 + FAST_FOR) == 5.0  # in flight for too long: polled as usual
    dist._busy = False
    assert dist._pace(1000.0) == 5.0
    dist._busy = True
    assert dist._pace(1000.0) == 0.5  # a new rollout: fast again
