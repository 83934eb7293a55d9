"""Discovery through the real Engine API: a swarm service's running tasks and their overlay IPs."""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from services.unsealer.discovery import Discovery
from shared.docker_engine import DockerPyEngine
from tests.integration.unsealer.conftest import wait_for
from tests.support.docker_engine import ensure_engine
from tests.support.images import ensure_base_image


@pytest.fixture
def vault_like_service() -> Iterator[tuple[Any, str, str]]:
    client = ensure_engine()
    suffix = secrets.token_hex(4)
    network = client.networks.create(
        f"cfdisc-net-{suffix}", driver="overlay", attachable=True, scope="swarm"
    )
    name = f"cfdisc-vault-{suffix}"
    client.services.create(
        ensure_base_image(),
        command=["sleep", "infinity"],
        name=name,
        networks=[network.name],
        mode=docker.types.ServiceMode("replicated", replicas=2),
        stop_grace_period=1_000_000_000,
    )
    try:
        yield client, name, network.name
    finally:
        client.services.get(name).remove()
        deadline = time.monotonic() + 60
        while True:
            try:
                network.remove()
                break
            except docker.errors.APIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # endpoints linger until the tasks are gone


def test_docker_discovery_finds_each_task_on_the_named_network(
    vault_like_service: tuple[Any, str, str],
) -> None:
    client, name, network = vault_like_service
    discovery = Discovery(
        service=name, port=8200, network=network, engine=lambda: DockerPyEngine(client)
    )
    wait_for(lambda: len(discovery.discover().replicas) == 2, timeout=90, what="two tasks")
    found = discovery.discover()
    assert found.source == "docker"
    assert not found.problem
    subnet = ipaddress.ip_network(client.networks.get(network).attrs["IPAM"]["Config"][0]["Subnet"])
    for replica in found.replicas:
        host = replica.address.removeprefix("https://").rsplit(":", 1)[0]
        assert ipaddress.ip_address(host) in subnet
        assert replica.address.endswith(":8200")
        assert replica.task_id
        assert replica.node_id
    assert len({r.task_id for r in found.replicas}) == 2


def test_unknown_service_falls_back_to_dns_and_says_why() -> None:
    client = ensure_engine()
    discovery = Discovery(
        service=f"cfdisc-none-{secrets.token_hex(4)}",
        port=8200,
        engine=lambda: DockerPyEngine(client),
    )
    found = discovery.discover()
    assert found.source == "dns"
    assert found.replicas == []
    assert "not found" in found.problem
    assert "dns tasks.cfdisc-none-" in found.problem
