"""Test-side helpers to run the double as a real process (not used by the double itself).

``TlsMaterial.create`` makes a throwaway CA and a server certificate; ``SimProcess`` starts
``python -m tests.vaultsim`` on a port, waits until TLS answers, restarts it (state kept, sealed
again), sends SIGHUP, and talks to it with httpx (server name checked, connection to 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.pki import CA

ROOT = Path(__file__).resolve().parents[2]
SERVER_NAME = "vault.iklim.co"


@dataclass
class TlsMaterial:
    ca: CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        names: Sequence[str] = (SERVER_NAME,),
        ip_addresses: Sequence[str] = (),
        ca: CA | None = None,
    ) -> TlsMaterial:
        directory.mkdir(parents=True, exist_ok=True)
        ca = ca or CA("vaultsim test")
        leaf = ca.leaf(names, ip_addresses=ip_addresses)
        material = cls(ca, directory / "ca.pem", directory / "vault.crt", directory / "vault.key")
        material.ca_file.write_bytes(ca.root_pem)
        material.cert_file.write_bytes(ca.fullchain(leaf))
        material.key_file.write_bytes(leaf.key_pem)
        material.key_file.chmod(0o600)
        return material

    def reissue(self, names: Sequence[str] = (SERVER_NAME,)) -> bytes:
        """Write a new leaf from the same CA; returns its PEM (to compare after a reload)."""
        leaf = self.ca.leaf(names)
        self.cert_file.write_bytes(self.ca.fullchain(leaf))
        self.key_file.write_bytes(leaf.key_pem)
        return leaf.cert_pem

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    def __init__(
        self,
        tls: TlsMaterial,
        data: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        log_file: Path | None = None,
    ) -> None:
        self.tls = tls
        self.data = data
        self.port = port or free_port()
        self.args = list(args)
        self.log_file = log_file or data.with_name(data.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.vaultsim",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data",
            str(self.data),
            "--tls-cert",
            str(self.tls.cert_file),
            "--tls-key",
            str(self.tls.key_file),
            *self.args,
        ]

    def start(self, *, wait: bool = True) -> SimProcess:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> float:
        """Block until a TLS handshake succeeds; return the monotonic time it first did."""
        deadline = time.monotonic() + timeout
        context = self.tls.client_context()
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vaultsim exited with {self.proc.returncode}: {self.logs()}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    context.wrap_socket(raw, server_hostname=SERVER_NAME),
                ):
                    return time.monotonic()
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vaultsim on {self.port} not ready") from None
                time.sleep(0.01)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, wait: bool = True) -> SimProcess:
        self.stop(signal.SIGKILL)  # a crash or a Swarm kill: the next process starts sealed
        return self.start(wait=wait)

    def sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def logs(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- talking to it ---------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.address, verify=self.tls.client_context(), timeout=5)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.request(method, path, extensions={"sni_hostname": SERVER_NAME}, **kwargs)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", "/v1/sys/seal-status").json()
        return body

    def init(self, shares: int = 1, threshold: int = 1) -> dict[str, Any]:
        response = self.request(
            "PUT", "/v1/sys/init", json={"secret_shares": shares, "secret_threshold": threshold}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def unseal(self, key: str) -> httpx.Response:
        return self.request("PUT", "/v1/sys/unseal", json={"key": key})


@contextlib.contextmanager
def running(sim: SimProcess) -> Any:
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
