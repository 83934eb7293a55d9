"""``certflow pause`` / ``certflow resume`` on the real engine: two services standing in for the
cert-distributor and the vault-unsealer. The pause is a label on the distributor service and a
scale to 0 of the unsealer; neither edit replaces a task of the distributor; resume restores
both; each is one command, and both say what they did."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.rollout import PAUSE_LABEL, PAUSED_REPLICAS_LABEL, pause_from_labels
from tests.support.docker_engine import ensure_engine
from tests.support.e2e_names import unique
from tests.support.images import ensure_base_image


@pytest.fixture(scope="module")
def client() -> Any:
    return ensure_engine()


@pytest.fixture
def stack(client: Any) -> Iterator[str]:
    name = unique("cfpause")
    created = []
    for service in ("cert-distributor", "vault-unsealer"):
        created.append(
            client.services.create(
                ensure_base_image(),
                ["sleep", "3600"],
                name=f"{name}_{service}",
                stop_grace_period=1,
            )
        )
    yield name
    for service in created:
        service.remove()


def _certflow(stack: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFY_")}
    return subprocess.run(
        [sys.executable, "-P", "-m", "services", *argv, "--stack", stack],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _until(predicate: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.5)


def _tasks(client: Any, service: str) -> set[str]:
    return {
        t["ID"]
        for t in client.services.get(service).tasks(filters={"desired-state": "running"})
        if t["Status"]["State"] == "running"
    }


def test_pause_and_resume_are_one_command_each(client: Any, stack: str) -> None:
    distributor, unsealer = f"{stack}_cert-distributor", f"{stack}_vault-unsealer"
    _until(lambda: len(_tasks(client, distributor)) == 1 and len(_tasks(client, unsealer)) == 1)
    before = _tasks(client, distributor)

    paused = _certflow(stack, "pause", "raft", "restore")
    assert paused.returncode == 0, paused.stderr
    assert f"{distributor}: paused" in paused.stdout
    assert f"{unsealer}: scaled to 0" in paused.stdout
    labels = client.services.get(distributor).attrs["Spec"]["Labels"]
    pause = pause_from_labels(labels)
    assert pause is not None
    assert pause.reason == "raft restore"
    spec = client.services.get(unsealer).attrs["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 0
    assert spec["Labels"][PAUSED_REPLICAS_LABEL] == "1"
    _until(lambda: not _tasks(client, unsealer))

    again = _certflow(stack, "pause", "other")
    assert again.returncode == 0, again.stderr
    assert "already paused" in again.stdout
    assert "raft restore" in again.stdout

    resumed = _certflow(stack, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{distributor}: resumed" in resumed.stdout
    assert f"{unsealer}: scaled back to 1" in resumed.stdout
    assert PAUSE_LABEL not in (client.services.get(distributor).attrs["Spec"]["Labels"] or {})
    _until(lambda: len(_tasks(client, unsealer)) == 1)
    # Label edits replace no task: the distributor ran the same task throughout.
    assert _tasks(client, distributor) == before

    twice = _certflow(stack, "resume")
    assert twice.returncode == 0, twice.stderr
    assert "was not paused" in twice.stdout


def test_pause_without_the_certs_stack_says_so(client: Any) -> None:
    missing = _certflow(unique("cfnone"), "pause")
    assert missing.returncode == 2
    assert "is the certs stack deployed" in missing.stderr
