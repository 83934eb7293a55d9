"""The receiving side of reload orders: restart or signal one consumer task, once."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace

import pytest
from structlog.testing import capture_logs

from services.distributor import task_reload
from services.distributor.local_members import TASK_ID_LABEL
from services.distributor.task_order import ReloadOrder, encode
from services.distributor.task_reload import OUTCOMES, LocalTaskReloader, consumer_refusal
from shared.errors import DockerError
from shared.manifest_auth import MacKeys
from shared.swarm import ContainerInfo
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.unit

KEY = b"k" * 32
KEYS = MacKeys.of(KEY)
SIGNAL = ReloadOrder("web", "task2-abcdefghijkl", "2", "signal", "SIGHUP", "AA:NEW", 1000.0)
RESTART = replace(SIGNAL, action="restart", signal="SIGTERM")


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def _container(cid: str, task_id: str) -> ContainerInfo:
    return ContainerInfo(cid, {TASK_ID_LABEL: task_id}, 1.0)


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine(node_id="n1")
    engine.add_service("web")
    engine.add_container("web", "n1", _container("c1", "task1"))
    engine.add_container("web", "n1", _container("c2", SIGNAL.task_id))
    engine.add_container("web", "n2", _container("c3", "task3"))
    engine.add_container("other", "n1", _container("c4", "task4"))
    return engine


@dataclass
class Installed:
    """This node's installed certificate, read by the reloader at each order."""

    fingerprint: str | None

    def __call__(self) -> str | None:
        return self.fingerprint


@dataclass
class Rig:
    clock: Clock
    outcomes: list[str]
    installed: Installed
    reloader: LocalTaskReloader


def _rig(
    engine: FakeEngine,
    *,
    installed: str | None = "AA:NEW",
    node: str = "n1",
    keys: MacKeys | None = KEYS,
    read_keys: bool = False,  # keys given as a callable (read at each order)
) -> Rig:
    clock, current = Clock(), Installed(installed)
    outcomes: list[str] = []
    reloader = LocalTaskReloader(
        engine,
        node_id=lambda: node,
        installed=current,
        keys=(lambda: keys) if read_keys else keys,
        clock=clock,
        kill_after=30.0,
        on_outcome=outcomes.append,
    )
    return Rig(clock, outcomes, current, reloader)


def test_a_signal_is_sent_once_however_often_the_order_comes(engine: FakeEngine) -> None:
    rig = _rig(engine)
    raw = encode(SIGNAL, KEYS)
    assert rig.reloader.receive(raw)[0] == 202
    status, message = rig.reloader.receive(raw)
    assert (status, "already signalled" in message) == (200, True)
    rig.clock.now += 100.0
    assert rig.reloader.act(SIGNAL)[0] == 200  # the leader's own node, in-process
    assert engine.signalled == [("c2", "SIGHUP")]
    assert rig.outcomes == ["signalled", "already_signalled", "already_signalled"]
    assert set(rig.outcomes) <= set(OUTCOMES)


def test_the_next_certificate_signals_the_same_container_again(engine: FakeEngine) -> None:
    rig = _rig(engine)
    assert rig.reloader.act(SIGNAL)[0] == 202
    rig.installed.fingerprint = "BB:NEWER"
    assert rig.reloader.act(replace(SIGNAL, fingerprint="BB:NEWER"))[0] == 202
    assert rig.reloader.act(replace(SIGNAL, fingerprint="BB:NEWER"))[0] == 200
    assert engine.signalled == [("c2", "SIGHUP"), ("c2", "SIGHUP")]


def test_concurrent_copies_of_one_order_signal_once(engine: FakeEngine) -> None:
    rig = _rig(engine)
    raw = encode(SIGNAL, KEYS)
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(rig.reloader.receive(raw)[0]))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] * 7 + [202]
    assert engine.signalled == [("c2", "SIGHUP")]


def test_a_restart_stops_then_kills_a_task_that_hangs(engine: FakeEngine) -> None:
    rig = _rig(engine)
    raw = encode(RESTART, KEYS)
    assert rig.reloader.receive(raw)[0] == 202
    rig.clock.now += 10.0
    assert rig.reloader.receive(raw)[0] == 202  # still within kill_after: nothing more sent
    rig.clock.now += 25.0
    assert rig.reloader.act(RESTART)[0] == 202  # 35 s after SIGTERM and still running
    assert engine.signalled == [("c2", "SIGTERM"), ("c2", "SIGKILL")]
    assert rig.outcomes == ["stopped", "stopping", "killed"]


def test_a_restarted_task_is_gone_and_its_container_forgotten(engine: FakeEngine) -> None:
    rig = _rig(engine)
    assert rig.reloader.act(RESTART)[0] == 202
    stopped = engine.container_list.pop(1)
    status, message = rig.reloader.act(RESTART)
    assert (status, "no longer runs here" in message) == (200, True)
    # Forgotten once gone: the same container back (in a test only) starts from SIGTERM again.
    engine.container_list.append(stopped)
    rig.clock.now += 100.0
    assert rig.reloader.act(RESTART)[0] == 202
    assert engine.signalled == [("c2", "SIGTERM"), ("c2", "SIGTERM")]
    assert rig.outcomes == ["stopped", "gone", "stopped"]


def test_the_memory_is_bounded(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_reload, "MAX_REMEMBERED", 1)
    rig = _rig(engine)
    first = replace(SIGNAL, task_id="task1", unit="1")
    assert rig.reloader.act(first)[0] == 202
    assert rig.reloader.act(SIGNAL)[0] == 202
    assert rig.reloader.act(first)[0] == 202  # pushed out by the second


@pytest.mark.parametrize(
    "order",
    [
        replace(SIGNAL, task_id="task9"),
        replace(SIGNAL, task_id="task3"),  # runs, but on node n2
        replace(SIGNAL, service="other"),  # another service's task ID
        replace(RESTART, task_id="task9"),
    ],
    ids=["not running", "another node's task", "another service", "restart, not running"],
)
def test_a_task_that_does_not_run_here_is_nothing_to_do(
    engine: FakeEngine, order: ReloadOrder
) -> None:
    rig = _rig(engine)
    status, message = rig.reloader.act(order)
    assert (status, "no longer runs here" in message) == (200, True)
    assert engine.signalled == []
    assert rig.outcomes == ["gone"]


def test_an_engine_that_fails_is_a_503_and_the_order_can_come_again(engine: FakeEngine) -> None:
    rig = _rig(engine)
    engine.down = True
    status, message = rig.reloader.act(SIGNAL)
    assert (status, "engine unreachable" in message) == (503, True)
    engine.down = False
    assert rig.reloader.act(SIGNAL)[0] == 202
    assert rig.outcomes == ["error", "signalled"]


def test_a_signal_that_fails_is_not_remembered(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _rig(engine)

    def refuse(container_id: str, signal: str = "SIGHUP") -> bool:
        raise DockerError(f"signalling container {container_id}: conflict")

    monkeypatch.setattr(engine, "signal_container", refuse)
    assert rig.reloader.act(SIGNAL)[0] == 503
    monkeypatch.undo()
    assert rig.reloader.act(SIGNAL)[0] == 202
    assert engine.signalled == [("c2", "SIGHUP")]


def test_an_unknown_node_id_is_a_503_not_a_task_gone(engine: FakeEngine) -> None:
    rig = _rig(engine, node="")
    assert rig.reloader.act(SIGNAL)[0] == 503
    assert rig.outcomes == ["error"]


@pytest.mark.parametrize(
    ("installed", "order", "status", "outcome"),
    [
        ("BB:OLD", SIGNAL, 409, "not_installed"),
        (None, RESTART, 409, "not_installed"),
        ("AA:NEW", replace(SIGNAL, signal="SIGKILL"), 400, "bad_signal"),
        ("AA:NEW", replace(SIGNAL, action="none"), 400, "bad_action"),
    ],
)
def test_orders_judged_wrong_send_nothing(
    engine: FakeEngine, installed: str | None, order: ReloadOrder, status: int, outcome: str
) -> None:
    rig = _rig(engine, installed=installed)
    assert rig.reloader.act(order)[0] == status
    assert engine.signalled == []
    assert rig.outcomes == [outcome]


@pytest.mark.parametrize(
    ("raw", "keys", "status", "outcome"),
    [
        (encode(SIGNAL, MacKeys.of(b"x" * 32)), KEYS, 401, "unauthenticated"),
        (encode(SIGNAL, KEYS), None, 401, "no_key"),
        (encode(replace(SIGNAL, issued_at=500.0), KEYS), KEYS, 401, "stale"),
        (b"{", KEYS, 400, "malformed"),
    ],
    ids=["other key", "no key here", "stale", "not json"],
)
def test_orders_refused_on_receipt_send_nothing(
    engine: FakeEngine, raw: bytes, keys: MacKeys | None, status: int, outcome: str
) -> None:
    rig = _rig(engine, keys=keys)
    answer = rig.reloader.receive(raw)
    assert answer[0] == status
    assert KEY.decode() not in answer[1]
    assert engine.signalled == []
    assert rig.outcomes == [outcome]


def test_keys_may_be_read_at_each_order(engine: FakeEngine) -> None:
    rig = _rig(engine, read_keys=True)
    assert rig.reloader.receive(encode(SIGNAL, KEYS))[0] == 202


def test_each_action_logs_one_line_without_the_mac(engine: FakeEngine) -> None:
    rig = _rig(engine)
    raw = encode(SIGNAL, KEYS)
    with capture_logs() as logs:
        rig.reloader.receive(raw)
        rig.reloader.receive(raw)
        rig.reloader.act(RESTART)
        rig.reloader.receive(encode(SIGNAL, MacKeys.of(b"x" * 32)))
    assert [e["event"] for e in logs] == [
        "consumer.task_signalled",
        "consumer.order_repeated",
        "consumer.task_stopped",
        "consumer.order_refused",
    ]
    signalled = logs[0]
    assert {k: signalled[k] for k in ("service", "task", "unit", "signal", "fingerprint")} == {
        "service": "web",
        "task": SIGNAL.task_id[:12],
        "unit": "2",
        "signal": "SIGHUP",
        "fingerprint": "AA:NEW",
    }
    mac = str(json.loads(raw)["mac"])
    text = repr(logs)
    assert mac.rsplit(":", 1)[1] not in text
    assert KEY.decode() not in text


@pytest.mark.parametrize(
    ("labels", "order", "refused"),
    [
        ({"certflow.reload": "signal"}, SIGNAL, None),
        ({"certflow.reload": "restart"}, RESTART, None),
        ({"certflow.reload": "restart"}, SIGNAL, "labelled for restart, not signal SIGHUP"),
        ({"certflow.reload": "signal", "certflow.signal": "USR1"}, SIGNAL, "labelled for SIGUSR1"),
        ({}, SIGNAL, "not a consumer certflow may reload"),
        ({"certflow.reload": "bounce"}, RESTART, "not a consumer certflow may reload"),
        (None, SIGNAL, "no service web"),
    ],
)
def test_an_order_for_a_service_not_labelled_for_it_is_refused(
    labels: dict[str, str] | None, order: ReloadOrder, refused: str | None
) -> None:
    engine = FakeEngine(node_id="n1")
    if labels is not None:
        engine.add_service("web", labels=labels)
    engine.add_container("web", "n1", _container("c2", SIGNAL.task_id))
    rig = _rig(engine)
    rig.reloader = LocalTaskReloader(
        engine,
        node_id=lambda: "n1",
        installed=rig.installed,
        keys=KEYS,
        on_outcome=rig.outcomes.append,
        refusal=consumer_refusal(engine, ("vault",)),
    )
    status, message = rig.reloader.act(order)
    if refused is None:
        assert status == 202
        return
    assert (status, rig.outcomes) == (409, ["not_a_consumer"])
    assert refused in message
    assert engine.signalled == []


def test_vault_is_never_reloaded_by_a_reload_order() -> None:
    engine = FakeEngine(node_id="n1")
    engine.add_service("vault", labels={"certflow.reload": "restart"})
    refusal = consumer_refusal(engine, ("vault",))
    assert refusal(replace(RESTART, service="vault")) == (
        "vault is never reloaded by a reload order"
    )


def test_a_worker_that_cannot_read_the_spec_trusts_the_mac() -> None:
    engine = FakeEngine(node_id="n1")
    engine.add_service("web")
    engine.down = True  # every engine call fails, as a worker's service inspect does
    assert consumer_refusal(engine, ("vault",))(SIGNAL) is None
