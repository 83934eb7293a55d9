"""Discovery's pure parts: task addresses, URL forms, DNS and static sources (DNS injected)."""

from __future__ import annotations

import socket

import pytest

from services.unsealer.discovery import Discovery, replicas_from_tasks, url_for
from shared.swarm import TaskInfo


def task(task_id: str, addresses: dict[str, tuple[str, ...]]) -> TaskInfo:
    return TaskInfo(task_id, "svc", f"node-{task_id}", 1, "running", "running", "c", addresses, 0)


def test_addresses_on_the_named_network_only() -> None:
    tasks = [
        task("t1", {"ingress": ("10.0.0.5",), "vault": ("10.0.1.5",)}),
        task("t2", {"ingress": ("10.0.0.6",)}),
    ]
    replicas = replicas_from_tasks(tasks, network="vault", port=8200)
    assert [(r.address, r.task_id, r.node_id) for r in replicas] == [
        ("https://10.0.1.5:8200", "t1", "node-t1")
    ]


def test_without_a_network_name_the_first_non_ingress_network() -> None:
    tasks = [task("t1", {"ingress": ("10.0.0.5",), "b_net": ("10.0.2.5",), "a_net": ("10.0.3.5",)})]
    assert replicas_from_tasks(tasks, network="", port=8200)[0].address == "https://10.0.3.5:8200"


def test_ipv6_urls_are_bracketed() -> None:
    assert url_for("fd00::5", 8200) == "https://[fd00::5]:8200"
    assert url_for("vault.iklim.co", 8200) == "https://vault.iklim.co:8200"


def test_static_list_wins() -> None:
    discovery = Discovery(service="x", port=8200, static=("https://10.0.0.1:8200",))
    found = discovery.discover()
    assert found.source == "static"
    assert [r.address for r in found.replicas] == ["https://10.0.0.1:8200"]


def test_dns_tasks_name() -> None:
    asked: list[str] = []

    def resolve(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["10.0.1.7", "10.0.1.6"]

    found = Discovery(
        service="iklimco_vault", port=8200, use_docker=False, resolve=resolve
    ).discover()
    assert asked == ["tasks.iklimco_vault"]
    assert [r.address for r in found.replicas] == ["https://10.0.1.7:8200", "https://10.0.1.6:8200"]


def test_dns_name_override() -> None:
    asked: list[str] = []

    def resolve(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["10.0.1.9"]

    Discovery(
        service="iklimco_vault",
        port=8200,
        use_docker=False,
        dns_name="tasks.vault",
        resolve=resolve,
    ).discover()
    assert asked == ["tasks.vault"]


def test_dns_failure_is_a_problem_not_a_crash() -> None:
    def resolve(name: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    found = Discovery(service="v", port=8200, use_docker=False, resolve=resolve).discover()
    assert found.replicas == []
    assert "dns tasks.v: Name or service not known" in found.problem


def test_docker_discovery_includes_members_that_are_still_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sealed member stays "starting" (the stack's healthcheck), and it is the one to unseal;
    # a task not yet started has no process to reach.
    from tests.support.fake_engine import FakeEngine

    engine = FakeEngine(node_id="n1")
    engine.add_service("vault")
    engine.run_task("vault", "n1", state="running", addresses={"net": ("10.0.1.5",)})
    engine.run_task("vault", "n1", state="starting", addresses={"net": ("10.0.1.6",)})
    engine.run_task("vault", "n1", state="preparing", addresses={"net": ("10.0.1.7",)})
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # the engine is injected
    found = Discovery(service="vault", port=8200, network="net", engine=lambda: engine).discover()
    assert found.source == "docker"
    assert [r.address for r in found.replicas] == [
        "https://10.0.1.5:8200",
        "https://10.0.1.6:8200",
    ]
