"""Fixtures of the verify tests that use the real engine: the client, and an attachable overlay
network removed afterwards (once the containers on it have detached)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from tests.support.docker_engine import ensure_engine
from tests.support.e2e_names import unique


@pytest.fixture(scope="module")
def client() -> Any:
    return ensure_engine()


@pytest.fixture
def network(client: Any) -> Iterator[str]:
    net = client.networks.create(unique("certflow-verify-net-"), driver="overlay", attachable=True)
    yield net.name
    for attempt in range(30):  # tasks and containers detach a moment after they are removed
        try:
            net.remove()
            return
        except docker.errors.APIError:
            if attempt == 29:
                raise
            time.sleep(1)
