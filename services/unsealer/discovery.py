"""Where the Vault replicas are, asked again on every cycle.

Order: the static ``UNSEALER_VAULT_ADDRS`` when set; else the Docker Engine API (the service's
running tasks and their addresses on the shared network) when a socket is there and this node is a
manager; else DNS ``tasks.<service>``. The API also sees tasks that DNS hides (a task whose
healthcheck has not passed yet is not in ``tasks.<service>``: Swarm's DNS lists healthy tasks only).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.docker_engine import DockerEngine, open_engine
from shared.errors import DockerError
from shared.logs import get_logger
from shared.swarm import TaskInfo

_log = get_logger(__name__)
_DOCKER_SOCKET = Path("/var/run/docker.sock")


@dataclass(frozen=True)
class Replica:
    address: str  # https://ip:port
    task_id: str = ""
    node_id: str = ""


@dataclass(frozen=True)
class Found:
    replicas: list[Replica]
    source: str  # static | docker | dns
    problem: str = ""  # why a preferred source was not used, or why nothing was found


def url_for(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"https://[{host}]:{port}"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def task_address(task: TaskInfo, network: str) -> str | None:
    """The task's IP on ``network``; without a name, the first non-ingress network's."""
    if network:
        ips = task.addresses.get(network, ())
        return ips[0] if ips else None
    for name, ips in sorted(task.addresses.items()):
        if name != "ingress" and ips:
            return ips[0]
    return None


def replicas_from_tasks(tasks: list[TaskInfo], *, network: str, port: int) -> list[Replica]:
    out = []
    for task in tasks:
        ip = task_address(task, network)
        if ip:
            out.append(Replica(url_for(ip, port), task_id=task.task_id, node_id=task.node_id))
    return sorted(out, key=lambda r: r.address)


def docker_available() -> bool:
    return bool(os.environ.get("DOCKER_HOST")) or _DOCKER_SOCKET.exists()


def _open_engine() -> DockerEngine:
    return open_engine(ping=False)


class Discovery:
    def __init__(
        self,
        *,
        service: str,
        port: int,
        network: str = "",
        static: tuple[str, ...] = (),
        use_docker: bool = True,
        dns_name: str = "",
        engine: Callable[[], DockerEngine] = _open_engine,
        resolve: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self.service = service
        self.port = port
        self.network = network
        self.static = static
        self.use_docker = use_docker and not static
        self._engine_factory = engine
        self._engine: DockerEngine | None = None
        self._resolve = resolve or _resolve_tasks
        self.dns_name = dns_name or f"tasks.{service}"

    def discover(self) -> Found:
        if self.static:
            return Found([Replica(address) for address in self.static], "static")
        problem = ""
        if self.use_docker and docker_available():
            try:
                if self._engine is None:
                    self._engine = self._engine_factory()
                # Starting tasks too: a sealed member stays "starting" until it is unsealed
                # (the stack's healthcheck), and it is exactly the one to reach.
                tasks = [
                    t
                    for t in self._engine.tasks(self.service, running_only=False)
                    if t.state in ("starting", "running")
                ]
                return Found(
                    replicas_from_tasks(tasks, network=self.network, port=self.port), "docker"
                )
            except DockerError as exc:
                problem = f"docker: {exc}"
        name = self.dns_name
        try:
            ips = self._resolve(name, self.port)
        except OSError as exc:
            reason = f"dns {name}: {exc.strerror or exc}"
            return Found([], "dns", problem="; ".join(p for p in (problem, reason) if p))
        replicas = [Replica(url_for(ip, self.port)) for ip in ips]
        return Found(replicas, "dns", problem=problem)


def _resolve_tasks(name: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})
