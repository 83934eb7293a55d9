"""What each distributor reports in ``/health`` (``info``), and the coordinator's fan-out to it.

:class:`DistributorInfo` (in ``facts``) is the one definition both sides use: a distributor
publishes it with ``HealthRegistry.set_info(**info.model_dump(mode="json"))`` and the coordinator
parses peers' ``/health`` back into it. The HTTP client takes an injectable transport (tests,
benchmarks).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from shared.docker_engine import DockerEngine
from shared.errors import DockerError

from .facts import DistributorInfo


@dataclass(frozen=True, slots=True)
class PeerFailure:
    """A peer that could not be asked (or answered nonsense); ``reason`` is safe to show."""

    url: str
    reason: str


PeerAnswer = DistributorInfo | PeerFailure


def parse_health(body: object) -> DistributorInfo:
    if not isinstance(body, dict) or not isinstance(body.get("info"), dict):
        raise ValueError("no info object in /health")
    return DistributorInfo.model_validate(body["info"])


async def _ask(client: httpx.AsyncClient, url: str) -> PeerAnswer:
    try:
        # /health answers 503 while the peer is failing; its info is still what we need.
        response = await client.get(url)
        return parse_health(response.json())
    except httpx.HTTPError as exc:
        return PeerFailure(url, f"{type(exc).__name__}: {exc}")
    except (ValueError, ValidationError) as exc:
        return PeerFailure(url, f"unusable /health answer: {str(exc).splitlines()[0]}")


async def _ask_all(
    urls: Iterable[str], timeout: float, transport: httpx.AsyncBaseTransport | None
) -> list[PeerAnswer]:
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
        return list(await asyncio.gather(*(_ask(client, url) for url in urls)))


def fan_out(
    urls: Iterable[str],
    *,
    timeout: float = 3.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[PeerAnswer]:
    """Ask every URL concurrently; one answer (report or failure) per URL, in order."""
    return asyncio.run(_ask_all(list(urls), timeout, transport))


def reports_by_node(
    answers: Iterable[PeerAnswer],
) -> tuple[dict[str, DistributorInfo], list[PeerFailure]]:
    """Index reports by the node they say they run on (DNS discovery does not know it)."""
    reports: dict[str, DistributorInfo] = {}
    failures: list[PeerFailure] = []
    for answer in answers:
        if isinstance(answer, PeerFailure):
            failures.append(answer)
        elif answer.node_id:
            reports[answer.node_id] = answer
        else:
            failures.append(PeerFailure("?", "peer reports no node_id"))
    return reports, failures


def health_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/health"


# -- discovery ---------------------------------------------------------------------------------


def urls_from_tasks(engine: DockerEngine, service: str, port: int) -> dict[str, str]:
    """node ID -> /health URL of each running task of our own service (needs a manager)."""
    urls: dict[str, str] = {}
    for task in engine.tasks(service):
        addresses = [
            ip for network, ips in task.addresses.items() if network != "ingress" for ip in ips
        ]
        if addresses:
            urls[task.node_id] = health_url(addresses[0], port)
    return urls


def urls_from_dns(service: str, port: int) -> list[str]:
    """``tasks.<service>`` as Swarm's embedded DNS answers it (node IDs come from the reports)."""
    try:
        infos = socket.getaddrinfo(f"tasks.{service}", port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({health_url(str(info[4][0]), port) for info in infos})


@dataclass(frozen=True, slots=True)
class PeerSurvey:
    reports: dict[str, DistributorInfo]
    failures: dict[str, str]  # node ID (or URL when unknown) -> reason
    seconds: float


class PeerDirectory:
    """Finds peers via the task list, falling back to DNS, and asks them all at once."""

    def __init__(
        self,
        *,
        engine: DockerEngine | None,
        service: str,
        port: int,
        timeout: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
        static: Mapping[str, str] | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.service = service
        self.port = port
        self.timeout = timeout
        self.transport = transport
        self.static = dict(static) if static is not None else None
        self._sync_transport = sync_transport

    def url_of(self, node_id: str, path: str) -> str | None:
        """The URL of ``path`` on the distributor of ``node_id`` (from the task list: a manager)."""
        if self.static is not None:
            base = self.static.get(node_id)
        elif self.engine is not None:
            try:
                base = urls_from_tasks(self.engine, self.service, self.port).get(node_id)
            except DockerError:
                base = None
        else:
            base = None
        return base.removesuffix("/health") + path if base else None

    def post(self, node_id: str, path: str, body: bytes) -> tuple[int, str]:
        """POST ``body`` (JSON) to ``path`` on the distributor of ``node_id``: (HTTP status, its
        answer's message). Status 0 when it could not be asked; never raises."""
        url = self.url_of(node_id, path)
        if url is None:
            return 0, f"no distributor task found on node {node_id}"
        try:
            with httpx.Client(timeout=self.timeout, transport=self._sync_transport) as client:
                response = client.post(
                    url, content=body, headers={"Content-Type": "application/json"}
                )
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        try:
            answer = response.json()
            message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        except ValueError:
            message = response.text[:200]
        return response.status_code, message

    def survey(self) -> PeerSurvey:
        started = time.monotonic()
        by_node: dict[str, str] = {}
        if self.static is not None:
            by_node = dict(self.static)
        elif self.engine is not None:
            try:
                by_node = urls_from_tasks(self.engine, self.service, self.port)
            except DockerError:
                by_node = {}
        if by_node:
            nodes = list(by_node)
            answers = fan_out(by_node.values(), timeout=self.timeout, transport=self.transport)
            reports: dict[str, DistributorInfo] = {}
            failures: dict[str, str] = {}
            for node, answer in zip(nodes, answers, strict=True):
                if isinstance(answer, PeerFailure):
                    failures[node] = answer.reason
                else:
                    # The task list knows where the task runs; that beats self-reporting.
                    reports[node] = answer
            return PeerSurvey(reports, failures, time.monotonic() - started)
        urls = urls_from_dns(self.service, self.port)
        reports, failed = reports_by_node(
            fan_out(urls, timeout=self.timeout, transport=self.transport)
        )
        return PeerSurvey(reports, {f.url: f.reason for f in failed}, time.monotonic() - started)
