"""The project image: built from the local base, non-root, every subcommand, HEALTHCHECK works."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from services.cli import build_parser
from tests.support.e2e_names import unique

# A health server from shared.runtime inside the image; it turns failing when /tmp/fail appears.
_HEALTH_SCRIPT = """
import os, pathlib, threading, time
from prometheus_client import CollectorRegistry
from shared.health import HealthRegistry, Status
from shared.runtime import HealthServer
health = HealthRegistry(service="probe", node="n", version="0")
port = int(os.environ["HEALTH_PORT"])
server = HealthServer(health, CollectorRegistry(), host="0.0.0.0", port=port)
server.start()
while True:
    if pathlib.Path("/tmp/fail").exists():
        health.report("storage", Status.FAILING, "probe told to fail")
    time.sleep(0.2)
"""


def _docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


def test_image_runs_as_the_certflow_user(project_image: str) -> None:
    result = _docker("run", "--rm", "--entrypoint", "id", project_image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("uid=10001(certflow) gid=10001(certflow)")
    config = json.loads(_docker("image", "inspect", project_image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["certflow"]
    assert config["User"] == "10001:10001"


def test_every_subcommand_answers_help_in_the_image(project_image: str) -> None:
    _, commands = build_parser()
    listing = _docker("run", "--rm", project_image, "--help")
    assert listing.returncode == 0, listing.stderr
    assert commands, "no subcommand is built into this tree"
    for name in commands:
        assert name in listing.stdout
        result = _docker("run", "--rm", project_image, name, "--help")
        assert result.returncode == 0, f"certflow {name} --help: {result.stderr}"
        assert f"usage: certflow {name}" in result.stdout


@pytest.fixture
def probe_container(project_image: str) -> Iterator[str]:
    name = unique("certflow-health-")
    started = _docker(
        "run",
        "-d",
        "--name",
        name,
        "--health-interval",
        "1s",
        "--health-start-period",
        "0s",
        "-e",
        "HEALTH_PORT=9137",
        "--entrypoint",
        "python3",
        project_image,
        "-c",
        _HEALTH_SCRIPT,
    )
    assert started.returncode == 0, started.stderr
    yield name
    _docker("rm", "-f", name)


def _wait_health(container: str, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
        if state == wanted:
            return
        time.sleep(0.5)
    logs = _docker("logs", "--tail", "20", container)
    raise AssertionError(f"health stayed {state!r}, wanted {wanted!r}: {logs.stdout}{logs.stderr}")


def test_healthcheck_follows_health_on_the_configured_port(probe_container: str) -> None:
    _wait_health(probe_container, "healthy")
    assert _docker("exec", probe_container, "touch", "/tmp/fail").returncode == 0
    _wait_health(probe_container, "unhealthy")
