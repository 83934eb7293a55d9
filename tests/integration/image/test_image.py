"""The project image: built from the local base, non-root, every subcommand, HEALTHCHECK works."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from services.cli import build_parser
from tests.support.e2e_names import unique

# A health server from shared.runtime inside the image: /health turns failing when /tmp/fail
# appears, and the server stops answering altogether when /tmp/hang appears.
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
    if pathlib.Path("/tmp/hang").exists():
        server.stop()
        break
    time.sleep(0.2)
while True:
    time.sleep(1)
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


def _probes(container: str) -> list[dict[str, object]]:
    out = _docker("inspect", "--format", "{{json .State.Health.Log}}", container).stdout
    log: list[dict[str, object]] = json.loads(out or "[]") or []
    return log


def _started(probe: dict[str, object]) -> tuple[str, int]:
    """A probe's Start as (seconds part, nanoseconds): Go trims trailing zeros of the fraction."""
    stamp = str(probe["Start"])
    head, _, rest = stamp.partition(".")
    digits = "".join(ch for ch in rest.split("+")[0].split("Z")[0] if ch.isdigit())
    return head, int(digits.ljust(9, "0")[:9] or 0)


def _health_code(container: str) -> str:
    script = (
        "import urllib.request as u, urllib.error as e\n"
        "try:\n print(u.urlopen('http://127.0.0.1:9137/health', timeout=3).status)\n"
        "except e.HTTPError as x:\n print(x.code)"
    )
    return _docker("exec", container, "python3", "-c", script).stdout.strip()


def test_healthcheck_is_liveness_on_the_configured_port(probe_container: str) -> None:
    _wait_health(probe_container, "healthy")
    # A failing /health (a problem outside the process) must not get the task killed: the
    # HEALTHCHECK keeps passing while /health answers 503.
    assert _docker("exec", probe_container, "touch", "/tmp/fail").returncode == 0
    deadline = time.monotonic() + 30
    while _health_code(probe_container) != "503":
        assert time.monotonic() < deadline, "/health never turned 503"
        time.sleep(0.2)
    # Docker keeps the last 5 probes; wait for 3 that started after /health turned 503.
    failing_since = _started(_probes(probe_container)[-1])
    later: list[dict[str, object]] = []
    while len(later) < 3:
        assert time.monotonic() < deadline + 30, "Docker ran no new health probe"
        time.sleep(0.5)
        later = [p for p in _probes(probe_container) if _started(p) > failing_since]
    assert [probe["ExitCode"] for probe in later] == [0] * len(later)
    assert (
        _docker("inspect", "--format", "{{.State.Health.Status}}", probe_container).stdout.strip()
        == "healthy"
    )
    # A process that no longer answers is what the HEALTHCHECK is for.
    assert _docker("exec", probe_container, "touch", "/tmp/hang").returncode == 0
    _wait_health(probe_container, "unhealthy")
