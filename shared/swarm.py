"""Docker Swarm facts through docker-py, translated into plain data (no docker types leak out).

Owned by the distributor work; the unsealer and verify import from here rather than re-querying
the Engine API their own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker.errors
import requests

from shared.errors import DockerError


@dataclass(frozen=True, slots=True)
class TaskInfo:
    task_id: str
    service_id: str
    node_id: str
    slot: int | None
    state: str
    desired_state: str
    container_id: str | None
    addresses: dict[str, tuple[str, ...]]  # network name -> IPs (CIDR suffix stripped)
    force_update: int
    started_at: datetime | None = None  # Status.Timestamp: when the task reached its state


def parse_timestamp(value: object) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) as aware datetimes; None when absent/zero."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        count = len(rest) - len(rest.lstrip("0123456789"))
        digits, zone = rest[:count], rest[count:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def task_from_dict(raw: dict[str, Any]) -> TaskInfo:
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    addresses: dict[str, tuple[str, ...]] = {}
    for attachment in raw.get("NetworksAttachments") or []:
        network = attachment.get("Network") or {}
        name = (network.get("Spec") or {}).get("Name") or network.get("ID", "")
        addresses[name] = tuple(a.split("/", 1)[0] for a in attachment.get("Addresses") or [])
    slot = raw.get("Slot")
    return TaskInfo(
        task_id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=raw.get("NodeID", ""),
        slot=int(slot) if slot is not None else None,
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        container_id=container.get("ContainerID") or None,
        addresses=addresses,
        force_update=int(((raw.get("Spec") or {}).get("ForceUpdate")) or 0),
        started_at=parse_timestamp(status.get("Timestamp")),
    )


def running_tasks(client: Any, service: str) -> list[TaskInfo]:
    """Tasks of ``service`` that Swarm wants running and that are running now."""
    try:
        svc = client.services.get(service)
        raw_tasks = svc.tasks(filters={"desired-state": "running"})
    except docker.errors.NotFound as exc:
        raise DockerError(f"service {service} not found") from exc
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"listing tasks of {service} failed: {exc}") from exc
    tasks = [task_from_dict(t) for t in raw_tasks]
    return [t for t in tasks if t.state == "running"]


# --- Cluster-level reads (nodes, leadership, service state) ----------------------------------


@dataclass(frozen=True, slots=True)
class LocalNode:
    """What this engine says about itself (``client.info()['Swarm']``)."""

    node_id: str
    state: str  # LocalNodeState: "", inactive, pending, active, error, locked
    is_manager: bool  # ControlAvailable

    @property
    def active(self) -> bool:
        return self.state == "active" and bool(self.node_id)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    hostname: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker
    leader: bool


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A service's spec facts that reload decisions need, at one ``version``."""

    service_id: str
    name: str
    version: int
    labels: dict[str, str]
    force_update: int
    update_state: str | None  # UpdateStatus.State; None when absent (never updated, or just posted)
    update_message: str


def _docker_call(what: str, fn: Any) -> Any:
    try:
        return fn()
    except docker.errors.NotFound as exc:
        raise DockerError(f"{what}: not found") from exc
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"{what} failed: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise DockerError(f"{what} failed: {exc}") from exc


def local_node(client: Any) -> LocalNode:
    info = _docker_call("reading engine info", client.info)
    swarm = info.get("Swarm") or {}
    return LocalNode(
        node_id=str(swarm.get("NodeID") or ""),
        state=str(swarm.get("LocalNodeState") or ""),
        is_manager=bool(swarm.get("ControlAvailable")),
    )


def node_from_dict(raw: dict[str, Any]) -> NodeInfo:
    spec = raw.get("Spec") or {}
    manager = raw.get("ManagerStatus") or {}
    return NodeInfo(
        node_id=str(raw.get("ID", "")),
        hostname=str((raw.get("Description") or {}).get("Hostname", "")),
        state=str((raw.get("Status") or {}).get("State", "unknown")),
        availability=str(spec.get("Availability", "")),
        role=str(spec.get("Role", "")),
        leader=bool(manager.get("Leader")),
    )


def list_nodes(client: Any) -> dict[str, NodeInfo]:
    """Every node of the swarm by ID (managers only may ask)."""
    nodes = _docker_call("listing nodes", client.nodes.list)
    infos = [node_from_dict(n.attrs) for n in nodes]
    return {n.node_id: n for n in infos}


def is_leader(client: Any) -> bool:
    """True when this engine is the swarm's leader manager. Workers and non-swarm engines: False."""
    me = local_node(client)
    if not me.active or not me.is_manager:
        return False
    node = _docker_call(f"inspecting node {me.node_id}", lambda: client.nodes.get(me.node_id))
    return node_from_dict(node.attrs).leader


def service_state_from_dict(raw: dict[str, Any]) -> ServiceState:
    spec = raw.get("Spec") or {}
    status = raw.get("UpdateStatus") or {}
    return ServiceState(
        service_id=str(raw.get("ID", "")),
        name=str(spec.get("Name", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        force_update=int((spec.get("TaskTemplate") or {}).get("ForceUpdate") or 0),
        update_state=str(status["State"]) if status.get("State") else None,
        update_message=str(status.get("Message") or ""),
    )


def service_attrs(client: Any, service: str) -> dict[str, Any]:
    """The raw inspect of ``service`` (fresh, never cached)."""
    svc = _docker_call(f"inspecting service {service}", lambda: client.services.get(service))
    attrs: dict[str, Any] = svc.attrs
    return attrs


def service_state(client: Any, service: str) -> ServiceState:
    return service_state_from_dict(service_attrs(client, service))
