"""Peer discovery from the real task list: node ID -> /health URL on the shared overlay network."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import docker.errors
import docker.types
import pytest

from services.distributor.peers import urls_from_tasks
from shared.docker_engine import DockerPyEngine

from .conftest import unique, wait_for


@pytest.fixture
def overlay(client: Any) -> Iterator[str]:
    network = client.networks.create(unique("net"), driver="overlay", attachable=True)
    yield network.name
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        network.remove()


def test_task_list_gives_each_node_its_overlay_address(
    client: Any, base_image: str, overlay: str, node_id: str
) -> None:
    name = unique("distributor")
    service = client.services.create(
        base_image,
        command=["sleep", "infinity"],
        name=name,
        networks=[overlay],
        mode=docker.types.ServiceMode("global"),
    )
    try:
        engine = DockerPyEngine(client)
        wait_for(f"{name} running", lambda: len(engine.tasks(name)) == 1)
        urls = urls_from_tasks(engine, name, 8080)
        assert set(urls) == {node_id}
        host = urls[node_id].removeprefix("http://").split(":")[0]
        assert ipaddress.ip_address(host)
        assert urls[node_id].endswith(":8080/health")
        network = client.networks.get(overlay)
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        assert ipaddress.ip_address(host) in ipaddress.ip_network(subnet)
    finally:
        service.remove()


def test_leadership_and_nodes_as_the_engine_reports_them(client: Any, node_id: str) -> None:
    engine = DockerPyEngine(client)
    me = engine.local_node()
    assert me.active
    assert me.is_manager
    assert engine.is_leader()  # the single-node test swarm: this node leads
    nodes = engine.nodes()
    assert nodes[node_id].leader
    assert nodes[node_id].state == "ready"
