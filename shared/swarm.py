"""Docker Swarm facts through docker-py, translated into plain data (no docker types leak out).

Owned by the distributor work; the unsealer and verify import from here rather than re-querying
the Engine API their own way.
"""

from __future__ import annotations

from dataclasses import dataclass
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
