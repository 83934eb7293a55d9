"""The leader's consumer pass (``ConsumerCoordinator``: observe, ask the gate, act, report).

The Docker engine is the in-memory fake (it is external); the peers' network is an httpx mock
transport under the real ``PeerDirectory``. The gate, the labels, the compare-and-swap rules,
the signed orders, the trust check and the TLS check (a real server on loopback) are the real
ones.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from services.distributor.consumer_reload import ConsumerCoordinator, ConsumerSettings
from services.distributor.facts import DistributorInfo
from services.distributor.peers import PeerDirectory
from services.distributor.task_order import PATH, ReloadOrder, decode
from shared.certs import fingerprint
from shared.consumers import (
    CHECK_LABEL,
    DONE_LABEL,
    RELOAD_LABEL,
    RELOADED_LABEL,
    SIGNAL_LABEL,
    ConsumerReport,
    State,
)
from shared.errors import DockerError
from shared.manifest_auth import MacKeys
from shared.rollout import PAUSE_LABEL, Pause, pause_label
from shared.status import iso
from tests.support.fake_engine import FakeEngine
from tests.support.pki import CA
from tests.unit.distributor.test_consumer_check import tls_server

pytestmark = pytest.mark.unit

FP = "AA:NEW"
STARTED = 500.0  # the consumer's tasks started then...
INSTALLED = 900.0  # ... before every node had the pair
WEB = "web"
DISTRIBUTOR = "certflow_cert-distributor"
KEYS = MacKeys.of(secrets.token_hex(32).encode())
RELOADS = "certflow_distributor_consumer_reloads_total"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Network:
    """The peers' distributors as the network answers them: /health reports every node with the
    pair (``installed``), POSTs kept in ``posts`` (node, path, body) and answered from
    ``answers`` (a status, or "down": the connection fails), then 202."""

    installed: dict[str, str | None]
    answers: list[int | str] = field(default_factory=list)
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)
    surveys: int = 0
    engine: FakeEngine | None = None
    label_at_post: list[str | None] = field(default_factory=list)

    def answer(self, request: httpx.Request) -> httpx.Response:
        node = request.url.host
        if request.method == "POST":
            self.posts.append((node, request.url.path, request.content))
            if self.engine is not None:
                self.label_at_post.append(self.engine.services[WEB].labels.get(RELOADED_LABEL))
            answer = self.answers.pop(0) if self.answers else 202
            if answer == "down":
                raise httpx.ConnectError("connection refused", request=request)
            assert isinstance(answer, int)
            return httpx.Response(answer, json={"message": f"answered {answer}"})
        self.surveys += 1
        info = DistributorInfo(
            node_id=node, fingerprint=self.installed[node], installed_at=iso(INSTALLED)
        )
        return httpx.Response(200, json={"info": info.model_dump(mode="json")})

    def directory(self) -> PeerDirectory:
        return PeerDirectory(
            engine=None,
            service="unused",
            port=1,
            static={node: f"http://{node}/health" for node in self.installed},
            transport=httpx.MockTransport(self.answer),
            sync_transport=httpx.MockTransport(self.answer),
        )


@dataclass
class LocalOrders:
    """This node's side of an order (in-process): kept, with the reloaded label at that time."""

    engine: FakeEngine
    orders: list[ReloadOrder] = field(default_factory=list)
    label_at_order: list[str | None] = field(default_factory=list)

    def __call__(self, order: ReloadOrder) -> tuple[int, str]:
        self.orders.append(order)
        self.label_at_order.append(self.engine.services[order.service].labels.get(RELOADED_LABEL))
        return 202, "reloading"


@pytest.fixture
def engine() -> FakeEngine:
    fake = FakeEngine(node_id="n1")
    fake.add_node("n1", leader=True)
    fake.add_node("n2")
    return fake


@pytest.fixture
def network(engine: FakeEngine) -> Network:
    return Network(installed={"n1": FP, "n2": FP}, engine=engine)


@pytest.fixture
def local(engine: FakeEngine) -> LocalOrders:
    return LocalOrders(engine)


def coordinator(
    engine: FakeEngine,
    network: Network,
    local: LocalOrders,
    clock: Clock,
    *,
    keys: MacKeys | None = KEYS,
    fullchain: bytes | None = None,
    own_service: str | None = None,
) -> ConsumerCoordinator:
    return ConsumerCoordinator(
        engine,
        peers=network.directory(),
        keys=keys,
        local_order=local,
        node_id=lambda: engine.node_id,
        fullchain=lambda: fullchain,
        own_service=own_service,
        settings=ConsumerSettings(bound=120.0, resend_every=10.0, check_timeout=2.0),
        clock=clock,
    )


def restarted(engine: FakeEngine, service: str, task_id: str, *, at: float) -> str:
    """Swarm's restart of ``task_id``: a new task in its slot, started at ``at``."""
    new_id = engine.restart_task(service, task_id)
    tasks = engine.service_tasks[service]
    index = next(i for i, t in enumerate(tasks) if t.task_id == new_id)
    tasks[index] = replace(tasks[index], started_at=iso_time(at))
    return new_id


def iso_time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def reloads(c: ConsumerCoordinator, service: str = WEB, action: str = "restart") -> float | None:
    return c.metrics.registry.get_sample_value(RELOADS, {"consumer": service, "action": action})


def only(reports: list[ConsumerReport]) -> ConsumerReport:
    assert len(reports) == 1
    return reports[0]


def order_in(body: bytes, now: float) -> ReloadOrder:
    """The order a peer would read from ``body`` (the same keys)."""
    return decode(body, KEYS, now=now)


# -- who steps ---------------------------------------------------------------------------------


def test_not_the_leader_reports_nothing_and_sends_nothing(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.node_list["n1"] = replace(engine.node_list["n1"], leader=False)
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n1", started_at=STARTED)
    c = coordinator(engine, network, local, Clock())

    assert c.step(FP) == []
    assert c.reports == []
    assert (network.surveys, network.posts, local.orders, engine.posted) == (0, [], [], [])


def test_no_labelled_service_is_an_empty_pass(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service("other", labels={"com.example": "x"})
    c = coordinator(engine, network, local, Clock())

    assert c.step(FP) == []
    assert network.surveys == 0


# -- a reload, unit by unit ----------------------------------------------------------------------


def test_each_unit_is_recorded_then_ordered_once_and_the_consumer_recorded_done(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n1", started_at=STARTED)  # slot 1, this node
    engine.run_task(WEB, "n2", started_at=STARTED)  # slot 2, a peer
    clock = Clock(1000.0)
    c = coordinator(engine, network, local, clock)

    report = only(c.step(FP))

    first = f"{FP} 1=t0-n1"
    assert report.state is State.RELOADING
    assert engine.services[WEB].labels[RELOADED_LABEL] == first
    assert local.label_at_order == [first]  # recorded before the order went out
    assert local.orders == [
        ReloadOrder(
            service=WEB,
            task_id="t0-n1",
            unit="1",
            action="restart",
            signal="SIGTERM",
            fingerprint=FP,
            issued_at=1000.0,
        )
    ]
    assert network.posts == []
    assert reloads(c) == 1.0

    clock.now = 1005.0  # the task still runs, within the resend interval
    assert only(c.step(FP)).state is State.RELOADING
    assert len(local.orders) == 1

    clock.now = 1010.0  # still running at the interval: the same order (same task) again
    assert only(c.step(FP)).state is State.RELOADING
    assert [o.task_id for o in local.orders] == ["t0-n1", "t0-n1"]
    assert reloads(c) == 1.0  # a resend is not another reload
    assert engine.services[WEB].labels[RELOADED_LABEL] == first

    new_first = restarted(engine, WEB, "t0-n1", at=1012.0)
    clock.now = 1015.0
    report = only(c.step(FP))

    second = f"{FP} 1=t0-n1,2=t1-n2"
    assert report.state is State.RELOADING
    assert engine.services[WEB].labels[RELOADED_LABEL] == second
    assert network.label_at_post == [second]
    assert [(node, path) for node, path, _ in network.posts] == [("n2", PATH)]
    sent = order_in(network.posts[0][2], clock.now)
    assert sent == ReloadOrder(
        service=WEB,
        task_id="t1-n2",
        unit="2",
        action="restart",
        signal="SIGTERM",
        fingerprint=FP,
        issued_at=1015.0,
    )
    assert reloads(c) == 2.0

    restarted(engine, WEB, "t1-n2", at=1020.0)
    clock.now = 1025.0
    report = only(c.step(FP))

    assert report.state is State.DONE
    assert report.reloads == 2
    assert engine.services[WEB].labels[DONE_LABEL] == FP
    assert {t.task_id for t in report.tasks} == {new_first, "r1-n2"}

    writes = len(engine.posted)
    clock.now = 1100.0
    report = only(c.step(FP))
    assert (report.state, report.reloads) == (State.DONE, 2)
    assert len(engine.posted) == writes  # done is read back, not written again
    assert len(local.orders) == 2
    assert len(network.posts) == 1


def test_a_unit_another_coordinator_recorded_for_another_task_gets_no_order(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n1", started_at=STARTED)

    def concurrent(fake: FakeEngine, service: str) -> None:
        fake.before_post = None  # once
        now = fake.services[service]
        fake.services[service] = replace(
            now,
            version=now.version + 1,
            labels={**now.labels, RELOADED_LABEL: f"{FP} 1=t-elsewhere"},
        )

    engine.before_post = concurrent
    clock = Clock(1000.0)
    c = coordinator(engine, network, local, clock)

    c.step(FP)
    clock.now = 1100.0  # past any resend interval
    c.step(FP)

    assert engine.services[WEB].labels[RELOADED_LABEL] == f"{FP} 1=t-elsewhere"
    assert engine.posted == []  # the CAS lost, and nothing of ours was written after
    assert (local.orders, network.posts) == ([], [])
    assert reloads(c) is None


def test_the_same_order_recorded_by_another_coordinator_is_sent_but_not_counted(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n1", started_at=STARTED)

    def concurrent(fake: FakeEngine, service: str) -> None:
        fake.before_post = None
        now = fake.services[service]
        fake.services[service] = replace(
            now, version=now.version + 1, labels={**now.labels, RELOADED_LABEL: f"{FP} 1=t0-n1"}
        )

    engine.before_post = concurrent
    c = coordinator(engine, network, local, Clock())

    assert only(c.step(FP)).state is State.RELOADING
    assert [o.task_id for o in local.orders] == ["t0-n1"]
    assert reloads(c) is None  # counted by the one that recorded it


def test_a_label_write_docker_refuses_holds_that_consumer_only(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service("api", labels={RELOAD_LABEL: "restart"})
    engine.run_task("api", "n2", started_at=STARTED)
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n2", started_at=STARTED)

    def refuse_api(_fake: FakeEngine, service: str) -> None:
        if service == "api":  # e.g. a spec that refers to a secret removed since
            raise DockerError("updating service api: secret not found")

    engine.before_post = refuse_api
    clock = Clock(1000.0)
    c = coordinator(engine, network, local, clock)

    reports = {r.service: r for r in c.step(FP)}

    assert reports["api"].state is State.WAITING
    assert reports["api"].message == "docker: updating service api: secret not found"
    assert RELOADED_LABEL not in engine.services["api"].labels
    assert reports[WEB].state is State.RELOADING  # not held by the other consumer
    assert [order_in(body, clock.now).service for _, _, body in network.posts] == [WEB]

    engine.before_post = None  # the engine takes the write again: api goes on by itself
    clock.now = 1001.0
    reports = {r.service: r for r in c.step(FP)}

    assert reports["api"].state is State.RELOADING
    assert engine.services["api"].labels[RELOADED_LABEL] == f"{FP} 1=t0-n2"
    assert [order_in(body, clock.now).service for _, _, body in network.posts] == [WEB, "api"]


# -- consumers that are reported, never reloaded -----------------------------------------------


def test_a_bad_reload_label_is_reported_and_nothing_is_done(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "bounce"})
    engine.run_task(WEB, "n2", started_at=STARTED)
    c = coordinator(engine, network, local, Clock())

    report = only(c.step(FP))

    assert report.state is State.REPORTED
    assert "certflow.reload='bounce'" in report.message
    assert report.mode == ""
    assert (engine.posted, network.posts, local.orders) == ([], [], [])
    state = c.metrics.registry.get_sample_value(
        "certflow_distributor_consumer_state", {"consumer": WEB, "state": "reported"}
    )
    assert state == 1.0


def test_a_check_name_the_certificate_is_not_valid_for_is_reported(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    ca = CA()
    chain = ca.fullchain(ca.leaf(("iklim.co", "*.iklim.co")))
    engine.add_service(
        WEB, labels={RELOAD_LABEL: "restart", CHECK_LABEL: "tls://web.example.org:8443"}
    )
    engine.run_task(WEB, "n2", started_at=STARTED)
    c = coordinator(engine, network, local, Clock(), fullchain=chain)

    report = only(c.step(FP))

    assert report.state is State.REPORTED
    assert "tls://web.example.org:8443 fails the trust check" in report.message
    assert "not valid for web.example.org" in report.message
    assert report.check == "tls://web.example.org:8443"
    assert (engine.posted, network.posts, local.orders) == ([], [], [])


def test_each_consumer_is_reported_with_its_own_check_address(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    ca = CA()
    chain = ca.fullchain(ca.leaf(("iklim.co", "*.iklim.co")))
    for name, port in (("api", 8443), (WEB, 9443)):
        engine.add_service(
            name, labels={RELOAD_LABEL: "restart", CHECK_LABEL: f"tls://web.example.org:{port}"}
        )
    c = coordinator(engine, network, local, Clock(), fullchain=chain)

    reports = {r.service: r for r in c.step(FP)}

    assert reports["api"].message.startswith(
        "not reloaded: check address tls://web.example.org:8443 fails"
    )
    assert reports[WEB].message.startswith(
        "not reloaded: check address tls://web.example.org:9443 fails"
    )


def test_a_trust_check_without_the_chain_is_made_again_once_it_can_be_read(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    ca = CA()
    chains: list[bytes | None] = [None, ca.fullchain(ca.leaf(("iklim.co", "*.iklim.co")))]
    engine.add_service(
        WEB, labels={RELOAD_LABEL: "restart", CHECK_LABEL: "tls://web.example.org:8443"}
    )
    engine.run_task(WEB, "n2", started_at=STARTED)
    network.installed = {"n1": FP, "n2": None}  # n2 has no pair yet: nothing to reload
    c = ConsumerCoordinator(
        engine,
        peers=network.directory(),
        keys=KEYS,
        local_order=local,
        node_id=lambda: engine.node_id,
        fullchain=lambda: chains[0],
        clock=Clock(),
    )

    assert only(c.step(FP)).state is State.WAITING  # the chain could not be read
    chains.pop(0)
    report = only(c.step(FP))

    assert report.state is State.REPORTED
    assert "fails the trust check" in report.message
    assert (engine.posted, network.posts, local.orders) == ([], [], [])


# -- checked consumers: what each task serves, over real TLS ------------------------------------


@pytest.fixture
def pki() -> CA:
    return CA()


@dataclass(frozen=True)
class Served:
    port: int  # where a task's TLS listener is (on 127.0.0.1)
    fingerprint: str  # the leaf it serves
    chain: bytes  # that leaf's full chain


@pytest.fixture
def served(pki: CA, tmp_path: Path) -> Iterator[Served]:
    leaf = pki.leaf(("iklim.co", "*.iklim.co"))
    with tls_server(pki, leaf, tmp_path) as server:
        yield Served(server.port, fingerprint(leaf.cert), pki.fullchain(leaf))


def test_a_task_already_serving_the_installed_leaf_is_not_reloaded(
    engine: FakeEngine, network: Network, local: LocalOrders, served: Served
) -> None:
    port, installed = served.port, served.fingerprint
    network.installed = {"n1": installed, "n2": installed}
    engine.add_service(
        WEB, labels={RELOAD_LABEL: "restart", CHECK_LABEL: f"tls://web.iklim.co:{port}"}
    )
    engine.run_task(WEB, "n2", started_at=STARTED, addresses={"net": ("127.0.0.1",)})
    c = coordinator(engine, network, local, Clock(), fullchain=served.chain)

    report = only(c.step(installed))

    assert report.state is State.DONE
    assert [t.serves for t in report.tasks] == [installed]
    assert engine.services[WEB].labels[DONE_LABEL] == installed
    assert (network.posts, local.orders, report.reloads) == ([], [], 0)


def test_a_task_serving_another_leaf_is_reloaded_and_counted_as_serving_old(
    engine: FakeEngine, network: Network, local: LocalOrders, served: Served
) -> None:
    port, old = served.port, served.fingerprint  # not what was installed (FP)
    engine.add_service(
        WEB, labels={RELOAD_LABEL: "restart", CHECK_LABEL: f"tls://web.iklim.co:{port}"}
    )
    engine.run_task(WEB, "n2", started_at=STARTED, addresses={"net": ("127.0.0.1",)})
    c = coordinator(engine, network, local, Clock())

    report = only(c.step(FP))

    assert report.state is State.RELOADING
    assert [t.serves for t in report.serves_older] == [old]
    assert [node for node, _, _ in network.posts] == ["n2"]
    serving_old = c.metrics.registry.get_sample_value(
        "certflow_distributor_consumer_tasks_serving_old", {"consumer": WEB}
    )
    assert serving_old == 1.0


# -- orders that do not get through --------------------------------------------------------------


def test_a_signal_order_a_peer_did_not_accept_is_sent_again_at_the_interval(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "signal", SIGNAL_LABEL: "USR1"})
    engine.run_task(WEB, "n2", started_at=STARTED)
    network.answers = [503, "down", 202]
    clock = Clock(1000.0)
    c = coordinator(engine, network, local, clock)

    assert only(c.step(FP)).state is State.RELOADING  # 503
    assert len(network.posts) == 1

    clock.now = 1005.0
    report = only(c.step(FP))
    assert "signal not delivered yet" in report.message  # not marked delivered
    assert len(network.posts) == 1  # within the interval

    clock.now = 1010.0
    c.step(FP)  # sent again: the connection fails (status 0)
    assert len(network.posts) == 2

    clock.now = 1020.0
    c.step(FP)  # sent again: 202, delivered
    assert len(network.posts) == 3

    clock.now = 1030.0
    report = only(c.step(FP))
    assert report.state is State.DONE
    assert len(network.posts) == 3  # a delivered signal is never sent again
    orders = [order_in(body, 1020.0) for _, _, body in network.posts]
    assert {(o.task_id, o.action, o.signal) for o in orders} == {("t0-n2", "signal", "SIGUSR1")}
    assert [o.issued_at for o in orders] == [1000.0, 1010.0, 1020.0]
    assert reloads(c, action="signal") == 1.0


def test_without_a_key_a_remote_order_is_not_sent_and_the_log_says_why(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n2", started_at=STARTED)
    c = coordinator(engine, network, local, Clock(), keys=None)

    with capture_logs() as logs:
        report = only(c.step(FP))

    assert report.state is State.RELOADING
    assert engine.services[WEB].labels[RELOADED_LABEL] == f"{FP} 1=t0-n2"
    assert (network.posts, local.orders) == ([], [])
    ordered = [e for e in logs if e["event"] == "consumer.reload_ordered"]
    assert [(e["status"], e["answer"]) for e in ordered] == [
        (0, "no manifest key to sign the order with")
    ]
    assert ordered[0]["log_level"] == "warning"
    # /health says it too, while the gate waits on that task.
    waiting = only(c.step(FP))
    assert waiting.state is State.RELOADING
    assert "its node was not reached: no manifest key to sign the order with" in waiting.message


# -- pause and removal ---------------------------------------------------------------------------


def test_a_paused_certflow_holds_the_reload(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    pause = Pause(since="2026-12-06T10:00:00+00:00", reason="maintenance", by="ops")
    engine.add_service(DISTRIBUTOR, labels={PAUSE_LABEL: pause_label(pause)})
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.run_task(WEB, "n2", started_at=STARTED)
    c = coordinator(engine, network, local, Clock(), own_service=DISTRIBUTOR)

    report = only(c.step(FP))

    assert report.state is State.PAUSED
    assert pause.describe() in report.message
    assert (engine.posted, network.posts, local.orders) == ([], [], [])


def test_a_removed_consumer_loses_its_report_and_its_metrics(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service("api", labels={RELOAD_LABEL: "none"})
    engine.add_service(WEB, labels={RELOAD_LABEL: "none"})
    c = coordinator(engine, network, local, Clock())
    state = "certflow_distributor_consumer_state"
    old = "certflow_distributor_consumer_tasks_serving_old"

    assert [r.service for r in c.step(FP)] == ["api", WEB]
    assert c.metrics.registry.get_sample_value(state, {"consumer": WEB, "state": "watched"}) == 1.0

    del engine.services[WEB]
    reports = c.step(FP)

    assert [(r.service, r.state) for r in reports] == [("api", State.WATCHED)]
    for each in State:
        labels = {"consumer": WEB, "state": each.value}
        assert c.metrics.registry.get_sample_value(state, labels) is None
    assert c.metrics.registry.get_sample_value(old, {"consumer": WEB}) is None
    assert (
        c.metrics.registry.get_sample_value(state, {"consumer": "api", "state": "watched"}) == 1.0
    )


def test_a_restart_consumer_swarm_would_not_start_again_is_reported(
    engine: FakeEngine, network: Network, local: LocalOrders
) -> None:
    engine.add_service(WEB, labels={RELOAD_LABEL: "restart"})
    engine.services[WEB] = replace(engine.services[WEB], restart_condition="on-failure")
    engine.run_task(WEB, "n2", started_at=STARTED)
    c = coordinator(engine, network, local, Clock())

    report = only(c.step(FP))

    assert report.state is State.REPORTED
    assert "restart policy condition 'any' (it is 'on-failure')" in report.message
    assert (network.posts, local.orders) == ([], [])
    assert RELOADED_LABEL not in engine.services[WEB].labels
