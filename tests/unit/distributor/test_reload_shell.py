"""The coordinator's shell (observe, decide, act) against an in-memory Docker engine.

The engine is faked because it is external; the decision table, the compare-and-swap rules and
the distributor pass are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from services.distributor.coordinator import Kind
from services.distributor.facts import DistributorInfo, MemberProbe
from services.distributor.local_members import TASK_ID_LABEL
from services.distributor.peers import PeerDirectory
from services.distributor.reload import PROBE_PATH, RestartCoordinator, _members
from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from services.distributor.stop_order import PATH as STOP_PATH
from services.distributor.stop_order import StopOrder, decode, encode
from shared.errors import DockerError
from shared.health import build_app
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MacKeys, sign_manifest
from shared.rollout import FINGERPRINT_LABEL, PAUSE_LABEL, ROLLOUT_LABEL, Pause, pause_label
from shared.settings import load_settings
from shared.swarm import ContainerInfo, ExecResult, ServiceState
from tests.support.boxes import CERT, make_pair, publish
from tests.support.fake_engine import FakeEngine
from tests.support.mac_keys import write_key_file
from tests.support.pki import CA

VAULT = "iklimco_vault"
FP = "AA:NEW"


def peers_reporting(
    fingerprints: dict[str, str | None],
    engine: FakeEngine | None = None,
    *,
    on_old: Collection[str] = (),
    active: str = "",
    posts: list[tuple[str, bytes]] | None = None,
    refuse: str = "",
    probes: list[tuple[str, bytes]] | None = None,
) -> PeerDirectory:
    """Peers on fixed URLs whose /health reports ``fingerprints`` (node ID -> installed), and
    their local Vault members (``engine``'s tasks on that node) unsealed, serving that pair
    (the tasks in ``on_old``, read at each request: another one; ``active``: the leading task).
    Stop orders POSTed to them are kept in ``posts`` (URL, body) and answered 202, or 401 with
    ``refuse``; the gate's requests to probe now in ``probes``."""

    def answer(request: httpx.Request) -> httpx.Response:
        node = request.url.host
        if request.method == "POST" and request.url.path == PROBE_PATH:
            if probes is not None:
                probes.append((str(request.url), request.content))
            return httpx.Response(202, json={"message": "probing"})
        if request.method == "POST":
            if posts is not None:
                posts.append((str(request.url), request.content))
            if refuse:
                return httpx.Response(401, json={"message": refuse})
            return httpx.Response(202, json={"message": "stopping"})
        members = [
            MemberProbe(
                slot=task.slot,
                task_id=task.task_id,
                fingerprint=fingerprints[node],
                sealed=False,
                active=task.task_id == active,
                serves_installed=task.task_id not in on_old,
                trusted=True,
            )
            for task in (engine.service_tasks.get(VAULT, []) if engine else [])
            if task.node_id == node and task.state == "running"
        ]
        info = DistributorInfo(
            node_id=node, fingerprint=fingerprints[node], generation=1, members=members
        )
        return httpx.Response(200, json={"info": info.model_dump(mode="json")})

    return PeerDirectory(
        engine=None,
        service="unused",
        port=1,
        static={node: f"http://{node}/health" for node in fingerprints},
        transport=httpx.MockTransport(answer),
        sync_transport=httpx.MockTransport(answer),
    )


@pytest.fixture
def engine() -> FakeEngine:
    fake = FakeEngine(node_id="n1")
    fake.add_service(VAULT)
    for node in ("n1", "n2"):
        fake.add_node(node, leader=node == "n1")
        fake.run_task(VAULT, node)
    return fake


def coordinator(engine: FakeEngine, **peers: str | None) -> RestartCoordinator:
    return RestartCoordinator(
        engine,
        vault_service=VAULT,
        peers=peers_reporting(peers or {"n1": FP, "n2": FP}, engine),
        lag_timeout=60,
        clock=lambda: 1000.0,
        voter_wait=0.0,  # (the wait's own tests: test_coordinator.py)
    )


KEYS = MacKeys.of(b"k" * 32)


def rollout(
    engine: FakeEngine,
    *,
    on_old: Collection[str],
    posts: list[tuple[str, bytes]] | None = None,
    refuse: str = "",
    local_stop: Callable[[StopOrder], tuple[int, str]] | None = None,
    clock: Callable[[], float] = lambda: 1000.0,
    voter_wait: float = 0.0,
    member_bound: float = 120.0,
    probes: list[tuple[str, bytes]] | None = None,
    local_probe: Callable[[Collection[str]], None] | None = None,
) -> RestartCoordinator:
    """The leader's coordinator, on n1, over the fixture's members (n1's leads): those in
    ``on_old`` (a set the test may change) serve the old pair; orders to n2 land in ``posts``."""
    first = engine.service_tasks[VAULT][0].task_id
    peers = peers_reporting(
        {"n1": FP, "n2": FP},
        engine,
        on_old=on_old,
        active=first,
        posts=posts,
        refuse=refuse,
        probes=probes,
    )
    return RestartCoordinator(
        engine,
        vault_service=VAULT,
        peers=peers,
        lag_timeout=60,
        keys=KEYS,
        local_stop=local_stop,
        node_id=lambda: "n1",
        clock=clock,
        voter_wait=voter_wait,
        member_bound=member_bound,
        local_probe=local_probe,
        resend_every=10.0,
    )


def test_the_leader_restarts_each_member_once_standbys_first_through_its_node(
    engine: FakeEngine,
) -> None:
    # Slot 1 (n1, this node) leads; slot 2 (n2) is a standby. Both serve the old pair.
    now = [1000.0]
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    on_old = {first, second}
    posts: list[tuple[str, bytes]] = []
    probes: list[tuple[str, bytes]] = []
    local_probes: list[list[str]] = []
    local: list[StopOrder] = []

    def local_stop(order: StopOrder) -> tuple[int, str]:
        local.append(order)
        return 202, "stopping"

    coord = rollout(
        engine,
        on_old=on_old,
        posts=posts,
        local_stop=local_stop,
        clock=lambda: now[0],
        voter_wait=10.0,
        probes=probes,
        local_probe=lambda tasks: local_probes.append(sorted(tasks)),
    )

    def step() -> Kind:
        return coord.step(FP).kind

    now[0] = 990.0
    assert step() is Kind.WAIT  # a new coordinator first sees every member back for voter_wait
    now[0] = 1000.0
    assert step() is Kind.RESTART
    # The order is recorded in the service before it goes out, then sent to n2's distributor.
    assert engine.services[VAULT].labels[ROLLOUT_LABEL] == f"{FP} 2:{second}"
    assert [url for url, _ in posts] == ["http://n2/v1/stop-member"]
    order = decode(posts[0][1], KEYS, now=now[0])
    assert (order.slot, order.task_id, order.fingerprint) == (2, second, FP)
    now[0] = 1005.0
    assert step() is Kind.GATE  # asked, still running: not sent again before resend_every
    assert len(posts) == 1
    now[0] = 1011.0
    assert step() is Kind.GATE
    assert len(posts) == 2  # sent again: the same task
    assert decode(posts[1][1], KEYS, now=now[0]).task_id == second
    engine.restart_task(VAULT, second)  # Swarm's restart policy, on the installed pair
    assert step() is Kind.GATE  # back: the voter wait (its probe reports no raft index)
    # The gate asks n2 to probe its new member at once, and this node its active one.
    new_second = engine.service_tasks[VAULT][1].task_id
    assert probes[-1] == ("http://n2/v1/probe-members", f'{{"tasks": ["{new_second}"]}}'.encode())
    assert local_probes[-1] == [first]
    now[0] = 1022.0
    assert step() is Kind.RESTART  # the active member, last, on this node: no HTTP
    assert [(o.slot, o.task_id) for o in local] == [(1, first)]
    assert len(posts) == 2
    engine.restart_task(VAULT, first)
    now[0] = 1023.0
    assert step() is Kind.GATE
    now[0] = 1034.0
    assert step() is Kind.ADOPT
    assert engine.services[VAULT].labels[FINGERPRINT_LABEL] == FP
    assert step() is Kind.DONE
    assert coord.metrics.restarts._value.get() == 2
    assert engine.services[VAULT].force_update == 0  # no Swarm update at all


def test_a_pause_that_lands_during_a_pass_stops_its_restart(engine: FakeEngine) -> None:
    """`certflow pause` between the pass's observation and its order: the order is neither
    recorded nor sent, and after resume the same member is stopped, once."""
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    posts: list[tuple[str, bytes]] = []
    coord = rollout(engine, on_old={first, second}, posts=posts)
    coord.own_service = "iklimco_cert-distributor"
    engine.add_service(coord.own_service)
    reads = {"n": 0}
    real_service = engine.service

    def service(name: str) -> ServiceState:
        state = real_service(name)
        if name == coord.own_service:
            reads["n"] += 1
            if reads["n"] >= 2:  # the pass's second read: the operator paused meanwhile
                pause = pause_label(Pause("2026-12-06T06:30:00+00:00", "late", "vm"))
                return replace(state, labels={PAUSE_LABEL: pause})
        return state

    engine.service = service  # type: ignore[method-assign]
    decision = coord.step(FP)
    assert decision.kind is Kind.PAUSED
    assert "late" in decision.message
    assert ROLLOUT_LABEL not in engine.services[VAULT].labels
    assert posts == []
    engine.service = real_service  # type: ignore[method-assign]
    assert coord.step(FP).kind is Kind.RESTART  # resumed: the same member, once
    assert engine.services[VAULT].labels[ROLLOUT_LABEL] == f"{FP} 2:{second}"
    assert len(posts) == 1


def test_a_new_leader_sends_the_recorded_order_again_never_a_second_one(
    engine: FakeEngine,
) -> None:
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    posts: list[tuple[str, bytes]] = []

    def fresh() -> RestartCoordinator:
        return rollout(
            engine,
            on_old={first, second},
            posts=posts,
            local_stop=lambda order: (500, "unexpected"),
        )

    assert fresh().step(FP).kind is Kind.RESTART
    labels_written = len(engine.posted)
    decision = fresh().step(FP)  # the next leader, its memory empty, the order not carried out
    assert decision.kind is Kind.GATE
    assert decision.resend
    assert len(engine.posted) == labels_written
    assert [decode(body, KEYS, now=1000.0).task_id for _, body in posts] == [second, second]


def test_a_restart_that_did_not_take_halts_and_is_never_repeated(engine: FakeEngine) -> None:
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    now = [1000.0]
    on_old = {first, second}
    posts: list[tuple[str, bytes]] = []
    coord = rollout(engine, on_old=on_old, posts=posts, clock=lambda: now[0], member_bound=30.0)

    def step() -> Kind:
        return coord.step(FP).kind

    assert step() is Kind.RESTART
    new = engine.restart_task(VAULT, second)
    on_old.add(new)  # back, unsealed, and still serving another certificate
    assert step() is Kind.GATE
    now[0] = 1031.0
    halted = coord.step(FP)
    assert halted.kind is Kind.HALTED
    assert "does not serve the installed certificate" in halted.message
    assert step() is Kind.HALTED
    assert len(posts) == 1
    assert coord.metrics.restarts._value.get() == 1


def test_a_node_without_the_pair_holds_the_restart_back(engine: FakeEngine) -> None:
    decision = coordinator(engine, n1=FP, n2=None).step(FP)
    assert decision.kind is Kind.WAIT
    assert decision.nodes == ("n2",)
    assert engine.posted == []


def test_a_former_leader_stops_reporting_lagging_nodes(engine: FakeEngine) -> None:
    coord = coordinator(engine, n1=FP, n2=None)
    coord.step(FP)
    assert coord.metrics.lagging_nodes._value.get() == 1
    engine.node_list["n1"] = replace(engine.node_list["n1"], leader=False)
    assert coord.step(FP).kind is Kind.SYNC_ONLY
    assert coord.metrics.lagging_nodes._value.get() == 0


def test_a_label_set_by_another_coordinator_means_done(engine: FakeEngine) -> None:
    engine.services[VAULT] = engine.add_service(VAULT, labels={FINGERPRINT_LABEL: FP})
    assert coordinator(engine).step(FP).kind is Kind.DONE
    assert engine.posted == []


def test_a_concurrent_writer_costs_one_conflict_not_a_second_order(engine: FakeEngine) -> None:
    def operator(fake: FakeEngine, name: str) -> None:
        fake.before_post = None  # once
        state = fake.services[name]
        fake.services[name] = replace(state, version=state.version + 1)

    engine.before_post = operator
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    coord = rollout(engine, on_old={first, second})
    assert coord.step(FP).kind is Kind.RESTART
    assert coord.metrics.update_conflicts._value.get() == 1
    assert len(engine.posted) == 1


def test_a_paused_update_of_vaults_own_holds_the_rollout(engine: FakeEngine) -> None:
    engine.set_update_state(VAULT, "paused", "task failed")
    decision = rollout(engine, on_old={"t0-n1"}).step(FP)
    assert decision.kind is Kind.FAILED
    assert "task failed" in decision.message
    assert engine.posted == []


def test_a_follower_only_syncs(engine: FakeEngine) -> None:
    engine.node_list["n1"] = replace(engine.node_list["n1"], leader=False)
    assert coordinator(engine).step(FP).kind is Kind.SYNC_ONLY
    assert engine.posted == []


def settings(tmp_path: Path, mode: str, **extra: str) -> DistributorSettings:
    return load_settings(
        DistributorSettings,
        {
            "DISTRIBUTOR_SOURCE_DIR": str(tmp_path / "box"),
            "DISTRIBUTOR_TARGET_DIR": str(tmp_path / "target"),
            "DISTRIBUTOR_RELOAD_MODE": mode,
            "DISTRIBUTOR_VAULT_SERVICE": VAULT,
            "DISTRIBUTOR_NODE_ID": "n1",
            **extra,
        },
    )


def test_an_engine_that_went_away_is_degraded_health_not_a_crash(
    tmp_path: Path, engine: FakeEngine
) -> None:
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(settings(tmp_path, "restart"), engine=engine)
    dist.sync_pass()
    engine.down = True
    assert dist.reload_pass() is None
    check = dist.health.check("reload")
    assert check is not None
    assert check.status.value == "degraded"
    assert "docker: engine unreachable" in check.message


def test_a_hung_storage_box_read_does_not_blind_the_coordinator(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """Lab row 12: the Swarm leader's own mount hangs; its coordinator must still name the node
    that is down (and so hold the rollout) instead of keeping its last report for ever."""
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(
        settings(tmp_path, "restart", DISTRIBUTOR_POLL_INTERVAL="0.2"),
        engine=engine,
        peers=peers_reporting({"n1": FP, "n2": FP}, engine),
    )
    release = threading.Event()
    entered = threading.Event()

    def hung_read(now: object) -> None:
        # Stands in for the kernel: a read on a network mount whose server is gone blocks
        # (sshfs, CIFS, NFS hard mounts); a unit test cannot make a real mount hang.
        entered.set()
        release.wait(60)
        raise OSError(5, "Input/output error")

    dist.syncer.sync_once = hung_read  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    worker = threading.Thread(target=dist.run, args=(stop,))
    worker.start()
    try:
        assert entered.wait(10)
        engine.add_node("n2", state="down")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            check = dist.health.check("swarm")
            if check is not None and "host-n2 (n2): down" in check.message:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no swarm check naming the down node: {dist.health.check('swarm')}")
        assert dist.metrics.sync_passes._value.get() == 1  # its one pass is still stuck
    finally:
        stop.set()
        release.set()
        worker.join(20)
    assert not worker.is_alive()


class FakeVaultCli:
    """The Vault CLI inside each fake container, as the probe sees it: a container serves the
    leaf installed when it was last signalled (or started); the probe prints what it reads."""

    def __init__(self, engine: FakeEngine, target: Path) -> None:
        self.engine = engine
        self.target = target
        self.loaded: dict[str, bytes] = {}  # container -> leaf PEM it serves
        self.broken: set[str] = set()  # containers whose reload fails (keeps the old leaf)

    def installed(self) -> bytes:
        pem = (self.target / CERT).read_bytes()
        return pem[: pem.index(b"-----END CERTIFICATE-----") + 25]

    def __call__(self, container_id: str, argv: Sequence[str]) -> ExecResult:
        hups = sum(1 for c, _ in self.engine.signalled if c == container_id)
        key = f"{container_id}#{hups}"
        if key not in self.loaded:  # started or signalled since the last probe: (re)load
            previous = self.loaded.get(f"{container_id}#{hups - 1}")
            broken = container_id in self.broken and previous is not None
            self.loaded[key] = previous if broken and previous else self.installed()
        ok = self.loaded[key] == self.installed()
        leaf = '0\n{"sealed": false}' if ok else "1\nx509: certificate signed by unknown authority"
        text = (
            f'@@pem\n{self.installed().decode()}\n@@leaf {leaf}\n@@trust 0\n{{"sealed": false}}\n'
        )
        return ExecResult(0, text)


def _member_container(engine: FakeEngine, node: str, slot: int) -> None:
    labels = {"com.docker.swarm.task.name": f"{VAULT}.{slot}.t{slot}"}
    engine.add_container(VAULT, node, ContainerInfo(f"c{slot}", labels, 1.0))


def test_signal_mode_sends_no_sighup_while_paused_and_signals_after_resume(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """The maintenance switch in signal mode: the pause (a label on the distributor's own
    service) holds every SIGHUP; /health says so; after resume the canary goes first."""
    pause = pause_label(Pause("2026-12-06T06:00:00+00:00", "manual restore", "vm"))
    engine.add_service("iklimco_cert-distributor", labels={PAUSE_LABEL: pause})
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(settings(tmp_path, "signal"), engine=engine)
    engine.exec_handler = FakeVaultCli(engine, tmp_path / "target")
    dist.sync_pass()
    for slot in (1, 2, 3):
        _member_container(engine, "n1", slot)
    dist.reload_pass()
    publish(tmp_path / "box", make_pair(CA(), 2))
    dist.sync_pass()
    for _ in range(3):
        dist.reload_pass()
    assert engine.signalled == []
    check = dist.health.check("reload")
    assert check is not None
    assert check.details["decision"] == "paused"
    assert "manual restore" in check.message
    assert DistributorInfo.model_validate(dist.health.snapshot()["info"]).paused
    engine.services["iklimco_cert-distributor"] = replace(
        engine.services["iklimco_cert-distributor"], labels={}
    )
    dist.reload_pass()
    assert engine.signalled == [("c1", "SIGHUP")]  # the canary first, as without a pause


class _WorkerEngine(FakeEngine):
    """A worker's engine: it answers for its own containers but cannot read services."""

    def service(self, name: str) -> ServiceState:
        if name == "iklimco_cert-distributor":
            raise DockerError("This node is not a swarm manager.")
        return super().service(name)


def test_a_worker_takes_the_pause_from_a_manager_and_holds_when_it_hears_none(
    tmp_path: Path,
) -> None:
    engine = _WorkerEngine()
    engine.add_service(VAULT)
    manager: dict[str, object] = {"paused": "paused by an operator since t on m1", "known": True}
    asked = {"n": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        asked["n"] += 1
        info = DistributorInfo(
            node_id="m1",
            hostname="m1",
            paused=manager["paused"],
            pause_known=bool(manager["known"]),
        )
        return httpx.Response(200, json={"info": info.model_dump(mode="json")})

    peers = PeerDirectory(
        engine=None,
        service="unused",
        port=1,
        static={"m1": "http://m1/health"},
        transport=httpx.MockTransport(answer),
    )
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(settings(tmp_path, "signal"), engine=engine, peers=peers)
    engine.exec_handler = FakeVaultCli(engine, tmp_path / "target")
    dist.sync_pass()
    for slot in (1, 2, 3):
        _member_container(engine, "n1", slot)
    dist.reload_pass()
    assert asked["n"] == 0  # every member serves the pair: no peer asked, nothing to hold
    publish(tmp_path / "box", make_pair(CA(), 2))
    dist.sync_pass()
    dist.reload_pass()
    assert engine.signalled == []  # the manager says paused
    assert asked["n"] == 1  # one survey serves the canary plan and the pause
    manager.update(paused=None, known=False)  # a peer that never read the pause itself
    dist.reload_pass()
    assert engine.signalled == []
    check = dist.health.check("reload")
    assert check is not None
    assert "pause state unknown" in check.message
    manager.update(paused=None, known=True)  # a manager that read it: not paused
    dist.reload_pass()
    assert engine.signalled == [("c1", "SIGHUP")]


def test_signal_mode_signals_the_canary_first_then_the_rest_once(
    tmp_path: Path, engine: FakeEngine
) -> None:
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(settings(tmp_path, "signal"), engine=engine)
    cli = FakeVaultCli(engine, tmp_path / "target")
    engine.exec_handler = cli
    dist.sync_pass()
    for slot in (2, 1, 3):
        _member_container(engine, "n1", slot)
    engine.add_container(VAULT, "n2", ContainerInfo("c-elsewhere", {}, 1.0))
    dist.reload_pass()
    assert engine.signalled == []  # every member serves the installed pair already
    publish(tmp_path / "box", make_pair(CA(), 2))
    dist.sync_pass()
    dist.reload_pass()
    assert engine.signalled == [("c1", "SIGHUP")]  # the canary, alone
    dist.reload_pass()
    assert engine.signalled == [("c1", "SIGHUP"), ("c2", "SIGHUP"), ("c3", "SIGHUP")]
    for _ in range(3):
        dist.sync_pass()
        dist.reload_pass()
    assert len(engine.signalled) == 3
    check = dist.health.check("reload")
    assert check is not None
    assert check.details["step"] == "done"
    # /health shows the members as probed (the peers parse this back).
    shown = DistributorInfo.model_validate(dist.health.snapshot()["info"]).members
    assert [(m.slot, m.serves_installed, m.trusted) for m in shown] == [
        (1, True, True),
        (2, True, True),
        (3, True, True),
    ]
    # Another node's container was never touched nor probed.
    assert all(c != "c-elsewhere" for c, _ in engine.executed)


def test_a_canary_that_keeps_the_old_leaf_halts_the_rollout(
    tmp_path: Path, engine: FakeEngine
) -> None:
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(
        settings(tmp_path, "signal", DISTRIBUTOR_CANARY_TIMEOUT="0.01"), engine=engine
    )
    cli = FakeVaultCli(engine, tmp_path / "target")
    engine.exec_handler = cli
    dist.sync_pass()
    for slot in (1, 2):
        _member_container(engine, "n1", slot)
    dist.reload_pass()
    cli.broken.add("c1")
    publish(tmp_path / "box", make_pair(CA(), 2))
    dist.sync_pass()
    for _ in range(3):
        dist.reload_pass()
    assert engine.signalled == [("c1", "SIGHUP")]
    check = dist.health.check("reload")
    assert check is not None
    assert check.status.value == "failing"
    assert "halted: canary slot 1 (c1) on" in check.message
    assert dist.metrics.canary_failures._value.get() == 1


def test_a_remote_canary_gates_the_local_members(tmp_path: Path, engine: FakeEngine) -> None:
    pair = make_pair(CA(), 1)
    publish(tmp_path / "box", pair)
    fp = pair.manifest.fingerprint
    remote_serves = {"value": False}

    def answer(request: httpx.Request) -> httpx.Response:
        canary = MemberProbe(
            slot=1,
            container_id="r1",
            fingerprint=fp,
            serves_installed=remote_serves["value"],
            trusted=True,
        )
        info = DistributorInfo(node_id="n2", hostname="host-2", fingerprint=fp, members=[canary])
        return httpx.Response(200, json={"info": info.model_dump(mode="json")})

    peers = PeerDirectory(
        engine=None,
        service="unused",
        port=1,
        static={"n2": "http://n2/health"},
        transport=httpx.MockTransport(answer),
    )
    _member_container(engine, "n1", 2)
    engine.exec_handler = lambda cid, argv: ExecResult(
        0,
        "@@pem\n"
        + make_pem_of(tmp_path)
        + "\n@@leaf 1\nx509: certificate signed by unknown authority\n@@trust none\n",
    )
    dist = Distributor(settings(tmp_path, "signal"), engine=engine, peers=peers)
    dist.sync_pass()
    dist.reload_pass()
    assert engine.signalled == []
    check = dist.health.check("reload")
    assert check is not None
    assert "canary slot 1 (r1) on host-2" in check.message
    remote_serves["value"] = True
    dist.reload_pass()
    assert engine.signalled == [("c2", "SIGHUP")]


def make_pem_of(tmp_path: Path) -> str:
    pem = (tmp_path / "target" / CERT).read_text()
    return pem[: pem.index("-----END CERTIFICATE-----") + 25]


def test_no_restart_while_a_vault_member_is_still_starting(engine: FakeEngine) -> None:
    # The second member is sealed (its task "starting"): stopping another one could leave the
    # cluster without quorum, so the restart is held and the member named.
    engine.run_task(VAULT, "n2", state="starting")
    decision = coordinator(engine, n1=FP, n2=FP).step(FP)
    assert decision.kind is Kind.HELD
    assert "slot 3 on host-n2: starting" in decision.message
    assert engine.services[VAULT].labels.get(FINGERPRINT_LABEL) is None


def test_a_rolling_update_is_moved_on_once_the_restarted_member_is_back(
    engine: FakeEngine,
) -> None:
    # Swarm restarted one member (the newest task) and waits; the coordinator moves it on with
    # one label write once that member has been back for the voter wait, and only once.
    from shared.rollout import ADVANCE_LABEL

    now = [1000.0]
    coord = RestartCoordinator(
        engine,
        vault_service=VAULT,
        peers=peers_reporting({"n1": FP, "n2": FP}, engine),
        lag_timeout=60,
        clock=lambda: now[0],
        voter_wait=10.0,
    )
    engine.services[VAULT] = replace(engine.services[VAULT], labels={FINGERPRINT_LABEL: FP})
    engine.set_update_state(VAULT, "updating")
    engine.run_task(VAULT, "n2", started_at=990.0)  # the member Swarm just restarted
    assert coord.step(FP).kind is Kind.GATE
    now[0] = 1011.0
    assert coord.step(FP).kind is Kind.ADVANCE
    newest = engine.service_tasks[VAULT][-1].task_id
    assert engine.services[VAULT].labels[ADVANCE_LABEL] == newest
    posted = len(engine.posted)
    now[0] = 1012.0
    engine.set_update_state(VAULT, "updating")
    assert coord.step(FP).kind is Kind.GATE  # moved on already: no second write
    assert len(engine.posted) == posted


def test_a_stop_order_reaches_the_member_through_the_distributors_http_route(
    tmp_path: Path, engine: FakeEngine
) -> None:
    key_file = tmp_path / "manifest.key"
    keys = MacKeys.of(write_key_file(key_file))
    pair = make_pair(CA(), 1)
    box = tmp_path / "box"
    publish(box, pair)
    (box / MANIFEST_NAME).write_bytes(sign_manifest(keys, pair.manifest.to_json()))
    dist = Distributor(
        settings(tmp_path, "restart", CERTFLOW_MANIFEST_KEY_FILES=str(key_file)), engine=engine
    )
    dist.sync_pass()
    fp = pair.manifest.fingerprint
    labels = {TASK_ID_LABEL: "task2", "com.docker.swarm.task.name": f"{VAULT}.2.task2"}
    engine.add_container(VAULT, "n1", ContainerInfo("c2", labels, 1.0))
    app = build_app(dist.health, dist.metrics.registry)
    dist.routes(app)

    async def posted(body: bytes) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n1") as client:
            return (await client.post(STOP_PATH, content=body)).status_code

    def post(order: StopOrder, with_keys: MacKeys = keys) -> int:
        return asyncio.run(posted(encode(order, with_keys)))

    order = StopOrder(VAULT, 2, "task2", fp, time.time())
    assert post(order, MacKeys.of(b"x" * 32)) == 401  # not certflow's key
    assert post(replace(order, fingerprint="BB:OTHER")) == 409  # not what this node installed
    assert engine.signalled == []
    assert post(order) == 202
    assert engine.signalled == [("c2", "SIGTERM")]
    engine.container_list.clear()  # Swarm replaced the task: the same order again is a no-op
    assert post(order) == 200
    assert engine.signalled == [("c2", "SIGTERM")]
    counted = {
        s.labels["outcome"]: s.value
        for m in dist.metrics.registry.collect()
        if m.name == "certflow_distributor_stop_orders"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counted == {"unauthenticated": 1, "not_installed": 1, "stopped": 1, "gone": 1}


def test_a_refused_stop_order_is_named_on_the_gate(engine: FakeEngine) -> None:
    first, second = (t.task_id for t in engine.service_tasks[VAULT])
    refusal = "stop order refused: its MAC does not verify (key id 0badc0de)"
    coord = rollout(engine, on_old={first, second}, refuse=refusal)
    assert coord.step(FP).kind is Kind.RESTART
    gate = coord.step(FP)
    assert gate.kind is Kind.GATE
    assert f"(its node answered 401: {refusal})" in gate.message


def test_a_member_that_ignores_sigterm_gets_sigkill_when_its_order_comes_again(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = make_pair(CA(), 1)
    publish(tmp_path / "box", pair)
    dist = Distributor(settings(tmp_path, "restart"), engine=engine)
    dist.sync_pass()
    engine.add_container(VAULT, "n1", ContainerInfo("c2", {TASK_ID_LABEL: "task2"}, 1.0))
    order = StopOrder(VAULT, 2, "task2", pair.manifest.fingerprint, time.time())
    assert dist.stop_member(order)[0] == 202
    assert dist.stop_member(order)[0] == 202  # soon after: SIGTERM again, no more
    monkeypatch.setattr("services.distributor.service.KILL_AFTER", -1.0)
    status, message = dist.stop_member(order)  # still running long after its SIGTERM
    assert (status, "SIGKILL" in message) == (202, True)
    assert engine.signalled == [("c2", "SIGTERM"), ("c2", "SIGTERM"), ("c2", "SIGKILL")]


def test_the_gate_has_a_member_probed_at_once_through_the_distributors_http_route(
    tmp_path: Path, engine: FakeEngine
) -> None:
    dist = Distributor(settings(tmp_path, "none"), engine=engine)
    labels = {TASK_ID_LABEL: "task2", "com.docker.swarm.task.name": f"{VAULT}.2.task2"}
    engine.add_container(VAULT, "n1", ContainerInfo("c2", labels, 1.0))
    app = build_app(dist.health, dist.metrics.registry)
    dist.routes(app)
    assert dist.prober is not None

    async def posted(body: bytes) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n1") as client:
            return (await client.post(PROBE_PATH, content=body)).status_code

    dist.reload_pass()
    dist.reload_pass()
    assert dist.prober.probes == 1  # probed once; not due again for seconds
    assert asyncio.run(posted(b'{"tasks": ["task2"]}')) == 202
    assert dist._reload_due.is_set()  # the reload loop wakes now, not at its next tick
    dist.reload_pass()
    assert dist.prober.probes == 2
    dist.reload_pass()
    assert dist.prober.probes == 2  # one request, one probe
    for bad in (
        b"",
        b"[]",
        b'{"tasks": "task2"}',
        b'{"tasks": [1]}',
        b'{"tasks": ["' + b"x" * 65 + b'"]}',
    ):
        assert asyncio.run(posted(bad)) == 400
    assert asyncio.run(posted(json.dumps({"tasks": ["t"] * 17}).encode())) == 400
    assert asyncio.run(posted(b'{"tasks": []' + b" " * 5000 + b"}")) == 413
    assert dist.prober.probes == 2  # nothing refused was probed


def test_the_gate_reads_when_each_member_was_probed(engine: FakeEngine) -> None:
    # The catch-up proof needs the active member's index probed after a restart: the ISO time
    # its node reported comes through as epoch seconds (None when it reported none).
    tasks = engine.service_tasks[VAULT]
    probes = [
        MemberProbe(slot=t.slot, task_id=t.task_id, sealed=False, checked_at=at)
        for t, at in zip(tasks, ("2026-12-06T12:00:00.250000+00:00", None), strict=True)
    ]
    info = DistributorInfo(node_id="n1", members=probes)
    members = _members(tasks, engine.node_list, {"n1": info})
    assert [m.checked_at for m in members] == [1796558400.25, None]
