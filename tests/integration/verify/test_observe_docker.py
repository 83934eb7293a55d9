"""Observing Swarm services on the real engine: convergence, task errors, logs, task addresses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.verify.checks import check_reloader_logs, check_service
from services.verify.observe import health_tasks, observe_logs, observe_service, vault_tasks
from shared.docker_engine import DockerPyEngine
from tests.support.e2e_names import unique
from tests.support.images import ensure_base_image

_LOGGER = (
    "import json, time\n"
    "print(json.dumps({'level': 'info', 'event': 'cert.unchanged'}), flush=True)\n"
    "print(json.dumps({'level': 'error', 'event': 'cert.rejected', 'error': 'expired'}),"
    " flush=True)\n"
    "time.sleep(3600)\n"
)


@pytest.fixture
def make_service(client: Any) -> Iterator[Callable[..., Any]]:
    created: list[Any] = []

    def make(**kwargs: Any) -> Any:
        service = client.services.create(name=unique("certflow-verify-"), **kwargs)
        created.append(service)
        return service

    yield make
    for service in created:
        service.remove()


def _until(predicate: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.5)


def test_a_running_service_is_converged_and_its_error_logs_are_found(
    client: Any, network: str, make_service: Callable[..., Any]
) -> None:
    # `network` before `make_service`: the service is removed first, then its network.
    image = ensure_base_image()
    service = make_service(
        image=image, command=["python3", "-c", _LOGGER], networks=[network], stop_grace_period=1
    )
    _until(lambda: observe_service(DockerPyEngine(client), service.name).running == 1)
    facts = observe_service(DockerPyEngine(client), service.name)
    assert facts.found
    assert facts.mode == "replicated"
    assert facts.desired == 1
    assert check_service(facts, deploy_hint="").ok

    _until(lambda: len(observe_logs(DockerPyEngine(client), service.name, tail=20).lines) >= 2)
    logs = observe_logs(DockerPyEngine(client), service.name, tail=20)
    assert json.loads(logs.lines[0])["event"] == "cert.unchanged"
    result = check_reloader_logs(logs, tail=20)
    assert not result.ok
    assert "cert.rejected: expired" in result.summary

    tasks = vault_tasks(DockerPyEngine(client), service.name, network)
    assert len(tasks) == 1
    task, address = tasks[0]
    assert task.state == "running"
    assert address.count(".") == 3
    assert vault_tasks(DockerPyEngine(client), service.name, "some-other-network") == []
    # The certflow services' tasks are all listed, with "" where they have no address there;
    # a service that does not exist is left to check_service.
    engine = DockerPyEngine(client)
    listed = health_tasks(engine, [service.name, "no-such-service"], network)
    found = [(name, t.task_id, a) for name, t, a in listed]
    assert found == [(service.name, task.task_id, address)]
    elsewhere = health_tasks(engine, [service.name], "some-other-network")
    assert [(t.task_id, a) for _, t, a in elsewhere] == [(task.task_id, "")]


def test_a_service_whose_image_is_missing_is_not_converged(
    client: Any, make_service: Callable[..., Any]
) -> None:
    service = make_service(image="certflow-no-such-image:missing", command=["true"])
    _until(lambda: bool(observe_service(DockerPyEngine(client), service.name).task_errors))
    facts = observe_service(DockerPyEngine(client), service.name)
    assert facts.running == 0
    result = check_service(facts, deploy_hint="")
    assert not result.ok
    assert "0/1 tasks running" in result.summary
    assert "last task error" in result.summary


def test_a_missing_service_is_reported_not_found(client: Any) -> None:
    name = unique("certflow-verify-absent-")
    assert observe_service(DockerPyEngine(client), name).found is False
    assert observe_logs(DockerPyEngine(client), name, tail=5).error == "service not found"
