"""``certflow distributor`` as a real subprocess (JSON logs to a file, /health on a free port),
for the integration tests that restart it with new settings (key rotation, refusals)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy (a generous bound, not a speed test)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, httpx.HTTPError, ValueError) as exc:
            last = exc  # not up yet: an error is never an answer
        else:
            last = value
            if value:
                return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELOADER_", "DISTRIBUTOR_", "CERTFLOW_", "HEALTH_", "LOG_"))
    }
    env.update(extra)
    return env


class DistributorProcess:
    """``python -m services distributor`` (reload mode none) following ``box`` into ``target``."""

    def __init__(self, box: Path, target: Path, log: Path, **extra: str) -> None:
        self.port = free_port()
        self.log = log
        self.env = clean_env(
            DISTRIBUTOR_SOURCE_DIR=str(box),
            DISTRIBUTOR_TARGET_DIR=str(target),
            DISTRIBUTOR_RELOAD_MODE="none",
            DISTRIBUTOR_POLL_INTERVAL="0.3",
            DISTRIBUTOR_POLL_ONLY="true",
            HEALTH_HOST="127.0.0.1",
            HEALTH_PORT=str(self.port),
            LOG_FORMAT="json",
            CERTFLOW_NODE_NAME="node-1",
            DISTRIBUTOR_NODE_ID="node-1",
            **extra,
        )
        out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "distributor"],
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_for("the distributor's /health", self._up, 60)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"distributor exited {self.proc.returncode}: {self.logs()}")
        return bool(self.health())

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()
        return body

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def generation(self) -> int | None:
        value = self.health()["info"].get("generation")
        return int(value) if value is not None else None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            event
            for line in self.logs().splitlines()
            if line.startswith("{")
            for event in (json.loads(line),)
            if event.get("event") == name
        ]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode
