"""Real processes for the unsealer tests: Vault doubles over TLS and ``certflow unsealer``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.vaultsim.harness import ROOT, SimProcess, TlsMaterial, free_port


class UnsealerProcess:
    """``certflow unsealer`` as a subprocess with a health port and captured output."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "unsealer") -> None:
        self.health_port = free_port()
        self.log_file = workdir / f"{name}.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
            "LOG_FORMAT": "json",
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": str(self.health_port),
            "CERTFLOW_NODE_NAME": name,
            "UNSEALER_DOCKER_DISCOVERY": "false",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "services.cli", "unsealer", *extra]

    def start(self) -> UnsealerProcess:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.health()
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"unsealer exited: {self.logs()}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command("--once"), cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.health_port}/health", timeout=5)
        body: dict[str, Any] = response.json()
        return body

    def health_text(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/health", timeout=5).text

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text

    def metric(self, name: str, replica: str) -> float:
        prefix = f'{name}{{replica="{replica}"}} '
        for line in self.metrics().splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0

    def logs(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<not json>", "line": line})
        return out

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


class Cluster:
    """Vault doubles sharing one set of keys (state copied), like the replicas of one Vault."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tls = TlsMaterial.create(root / "tls")  # SAN vault.iklim.co only: name check matters
        self.sims: list[SimProcess] = []
        self.init: dict[str, Any] = {}

    def replica(
        self, name: str, *, initialized: bool = True, args: tuple[str, ...] = ()
    ) -> SimProcess:
        data = self.root / name
        data.mkdir(parents=True)
        if initialized:
            shutil.copy(self.root / "template" / "state.json", data / "state.json")
        sim = SimProcess(self.tls, data, args=["--log-requests", *args])
        self.sims.append(sim)
        return sim.start()

    def create_keys(self, shares: int, threshold: int) -> dict[str, Any]:
        template = SimProcess(self.tls, self.root / "template").start()
        try:
            self.init = template.init(shares, threshold)
        finally:
            template.stop()
        return self.init

    def key_file(self, keys: list[str], name: str = "keys") -> Path:
        path = self.root / name
        write_atomic(path, "\n".join(keys) + "\n")
        return path

    def stop(self) -> None:
        for sim in self.sims:
            sim.stop()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o400)
    os.replace(tmp, path)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.stop()


@pytest.fixture
def unsealers(tmp_path: Path) -> Iterator[Callable[..., UnsealerProcess]]:
    started: list[UnsealerProcess] = []

    def make(env: dict[str, str], name: str = "unsealer", start: bool = True) -> UnsealerProcess:
        process = UnsealerProcess(tmp_path, env, name)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.stop()


def sealed(sim: SimProcess) -> bool:
    try:
        return bool(sim.status()["sealed"])
    except httpx.HTTPError:
        return True
