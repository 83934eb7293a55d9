"""A real Docker engine for the integration and e2e tiers.

``ensure_engine()`` returns a docker-py client for a running dockerd in swarm mode. If no engine
answers, it starts the Debian ``dockerd`` (installed by .ci/run) in the background and runs
``docker swarm init``. With ``CERTFLOW_REQUIRE_DOCKER=1`` (set by .ci/run) a missing engine is an
error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

_LOG = Path("/tmp/certflow-dockerd.log")
# The engine outlives the test session on purpose; holding the handle keeps Popen.__del__ from
# warning "still running" (an error under filterwarnings=error) when it would be collected.
_STARTED: list[subprocess.Popen[bytes]] = []


def _ping() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    result = subprocess.run(
        [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=20
    )
    return result.returncode == 0


def _unavailable(reason: str) -> None:
    if os.environ.get("CERTFLOW_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker engine required but unavailable: {reason}")
    pytest.skip(f"no Docker engine: {reason}")


def ensure_engine() -> Any:
    """A docker-py client for a running engine that is a swarm manager."""
    import docker

    if not _ping():
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            _unavailable("dockerd is not installed or we are not root (.ci/run installs docker.io)")
        with _LOG.open("ab") as log:
            _STARTED.append(
                subprocess.Popen(
                    [str(dockerd)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.monotonic() + 60
        while not _ping():
            if time.monotonic() > deadline:
                _unavailable(f"dockerd did not answer within 60 s; see {_LOG}")
            time.sleep(0.5)
    client = docker.from_env(use_context=False) if _accepts_use_context() else docker.from_env()
    swarm = client.info().get("Swarm", {})
    if swarm.get("LocalNodeState") != "active":
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            check=True,
            capture_output=True,
        )
    return client


def _accepts_use_context() -> bool:
    import inspect

    import docker

    return "use_context" in inspect.signature(docker.from_env).parameters
