"""Fixtures for the reloader's integration tier: a real SWAG volume renewed by certbot against
pebble, and ``certflow reloader`` as a real subprocess with its health server on a free port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.manifest import MANIFEST_NAME
from shared.storagebox import Snapshot, read_snapshot
from tests.support.acme import Certbot, Pebble, SwagVolume
from tests.support.certflow_procs import wait_for

CERT_NAME = "STAR.iklim.co.full.crt"
KEY_NAME = "STAR.iklim.co_key.pem"
ROOT = Path(__file__).resolve().parents[3]


class Storage:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def snapshot(self) -> Snapshot:
        return read_snapshot(self.dir, cert_name=CERT_NAME, key_name=KEY_NAME)

    def generation(self) -> int | None:
        snap = self.snapshot()
        return snap.manifest.generation if snap.committed and snap.manifest else None

    def manifest_raw(self) -> bytes:
        return (self.dir / MANIFEST_NAME).read_bytes()


class ReloaderProcess:
    """``python -m services reloader`` with JSON logs captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> ReloaderProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "reloader", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.port = wait_for("the health server", self._bound_port)
        return self

    def _bound_port(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"reloader exited {self.proc.returncode}: {self.logs_text()}")
        for event in self.events("health.listening"):
            return int(event["port"])
        return None

    def logs_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.logs_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()
        return body

    def health_response(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
        match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
        if match is None:
            raise AssertionError(f"metric {name}{labels} not in /metrics")
        return float(match.group(1))

    def wait_check(self, outcome: str, after: float = 0.0, timeout: float = 30.0) -> None:
        """Wait until a check that ended after ``after`` (Unix time) had ``outcome``."""

        def probe() -> bool:
            check = self.health()["checks"].get("last_check", {})
            at = check.get("at")
            if at is None or check.get("outcome") != outcome:
                return False
            from datetime import datetime

            return datetime.fromisoformat(at).timestamp() > after

        wait_for(f"a check with outcome {outcome}", probe, timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class World:
    """A SWAG volume with a certificate issued by certbot, and an empty Storage Box."""

    def __init__(self, tmp: Path, pebble: Pebble) -> None:
        self.tmp = tmp
        self.volume = SwagVolume(tmp / "swag-config")
        self.certbot = Certbot(pebble, self.volume)
        self.storage = Storage(tmp / "storagebox" / "ssl")
        self.storage.dir.mkdir(parents=True)
        self._n = 0
        self.processes: list[ReloaderProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RELOADER_", "CERTFLOW_", "HEALTH_", "LOG_"))
        }
        env.update(
            RELOADER_SOURCE_DIR=str(self.volume.live),
            RELOADER_TARGET_DIR=str(self.storage.dir),
            HEALTH_HOST="127.0.0.1",
            HEALTH_PORT="0",
            LOG_FORMAT="json",
            CERTFLOW_NODE_NAME="test-node",
            RELOADER_CHECK_INTERVAL="30",
            RELOADER_DEBOUNCE="0.3",
        )
        env.update(extra)
        return env

    def reloader(self, **extra: str) -> ReloaderProcess:
        self._n += 1
        proc = ReloaderProcess(self.env(**extra), self.tmp / f"reloader-{self._n}.log")
        self.processes.append(proc)
        return proc.start()

    def once(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services", "reloader", "--once"],
            cwd=ROOT,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def live_pair(self) -> tuple[bytes, bytes]:
        live = self.volume.live
        return (live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes()

    def all_logs(self) -> str:
        return "\n".join(p.logs_text() for p in self.processes)

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.kill()


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble")
    # tests/support/acme.Pebble.start drops its log file object without closing it (the child
    # keeps its own descriptor); that ResourceWarning is not this code's to fail on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def world(tmp_path: Path, pebble: Pebble) -> Iterator[World]:
    w = World(tmp_path, pebble)
    w.certbot.issue()
    try:
        yield w
    finally:
        w.stop_all()
