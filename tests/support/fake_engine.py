"""An in-memory Docker engine implementing ``shared.docker_engine.DockerEngine``.

It stands in for the external engine (not for certflow code), so the shells that call the engine
(the distributor's restart coordinator and pass) can be unit-tested: services with versions and a
compare-and-swap update that answers "out of sequence" like Swarm, tasks, nodes, containers that
record the signals they get. It applies a :class:`~shared.swarm.SpecEdit` the way Swarm does for
what certflow reads back: labels, ForceUpdate, container labels, secrets.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from shared.docker_engine import EditFor, leader_of
from shared.errors import DockerError, DockerNotFound, UpdateOutOfSequence
from shared.swarm import (
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    LocalNode,
    NodeInfo,
    SecretInfo,
    ServiceState,
    SpecEdit,
    TaskInfo,
    UpdateOutcome,
)


class FakeEvents:
    """An event stream of the fake engine: yields what :meth:`FakeEngine.emit` sends, for the
    containers of its service, until closed."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.queue: queue.Queue[ContainerEvent | None] = queue.Queue()
        self.closed = False

    def __iter__(self) -> Iterator[ContainerEvent]:
        while (event := self.queue.get()) is not None:
            if event.labels.get("com.docker.swarm.service.name") == self.service:
                yield event

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


@dataclass
class FakeEngine:
    node_id: str = "n1"
    services: dict[str, ServiceState] = field(default_factory=dict)
    service_tasks: dict[str, list[TaskInfo]] = field(default_factory=dict)
    node_list: dict[str, NodeInfo] = field(default_factory=dict)
    container_list: list[tuple[str, str, ContainerInfo]] = field(default_factory=list)
    secret_list: dict[str, SecretInfo] = field(default_factory=dict)
    secret_data: dict[str, bytes] = field(default_factory=dict)  # what each secret was made of
    posted: list[tuple[str, SpecEdit]] = field(default_factory=list)
    signalled: list[tuple[str, str]] = field(default_factory=list)
    # Called before each posted update; it may change the service (a concurrent writer).
    before_post: Callable[[FakeEngine, str], None] | None = None
    down: bool = False  # every call raises DockerError, like an engine that went away
    # What a command run in a container answers: (container ID, argv) -> result. Stands in for
    # the program inside the container (a Vault CLI); None: every exec exits 127.
    exec_handler: Callable[[str, Sequence[str]], ExecResult] | None = None
    executed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    streams: list[FakeEvents] = field(default_factory=list)  # event streams opened

    # -- set-up helpers ------------------------------------------------------------------------

    def add_service(self, name: str, *, labels: dict[str, str] | None = None) -> ServiceState:
        state = ServiceState(
            service_id=f"id-{name}",
            name=name,
            version=1,
            labels=dict(labels or {}),
            force_update=0,
            update_state=None,
            update_message="",
            replicas=1,
        )
        self.services[name] = state
        return state

    def set_update_state(self, name: str, state: str | None, message: str = "") -> None:
        self.services[name] = replace(
            self.services[name], update_state=state, update_message=message
        )

    def add_node(self, node_id: str, *, state: str = "ready", leader: bool = False) -> None:
        self.node_list[node_id] = NodeInfo(
            node_id, f"host-{node_id}", state, "active", "manager", leader
        )

    def run_task(
        self,
        service: str,
        node_id: str,
        *,
        started_at: float | None = None,
        state: str = "running",
        addresses: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        from datetime import UTC, datetime

        at = datetime.fromtimestamp(started_at, UTC) if started_at is not None else None
        tasks = self.service_tasks.setdefault(service, [])
        tasks.append(
            TaskInfo(
                task_id=f"t{len(tasks)}-{node_id}",
                service_id=f"id-{service}",
                node_id=node_id,
                slot=len(tasks) + 1,
                state=state,
                desired_state="running",
                container_id=None,
                addresses=dict(addresses or {}),
                force_update=0,
                started_at=at,
            )
        )

    def restart_task(self, service: str, task_id: str, *, state: str = "running") -> str:
        """What Swarm's restart policy does once a task's container stopped: a new task (new
        ID) in the same slot on the same node. Returns the new task's ID."""
        tasks = self.service_tasks[service]
        index = next(i for i, t in enumerate(tasks) if t.task_id == task_id)
        old = tasks[index]
        new_id = f"r{sum(t.task_id.startswith('r') for t in tasks)}-{old.node_id}"
        tasks[index] = replace(old, task_id=new_id, state=state)
        return new_id

    def add_container(self, service: str, node_id: str, container: ContainerInfo) -> None:
        self.container_list.append((service, node_id, container))

    # -- DockerEngine --------------------------------------------------------------------------

    def emit(self, event: ContainerEvent) -> None:
        """Deliver ``event`` to every open event stream (what the engine would send)."""
        for stream in list(self.streams):
            stream.queue.put(event)

    def container_events(self, service: str) -> FakeEvents:
        self._check()
        stream = FakeEvents(service)
        self.streams.append(stream)
        return stream

    def _check(self) -> None:
        if self.down:
            raise DockerError("engine unreachable")

    def local_node(self) -> LocalNode:
        self._check()
        return LocalNode(self.node_id, "active", is_manager=True)

    def nodes(self) -> dict[str, NodeInfo]:
        self._check()
        return dict(self.node_list)

    def is_leader(self) -> bool:
        return leader_of(self)

    def service(self, name: str) -> ServiceState:
        self._check()
        if name not in self.services:
            raise DockerNotFound(f"inspecting service {name}: not found")
        return self.services[name]

    def labelled_services(self, label: str) -> list[ServiceState]:
        self._check()
        return [s for s in self.services.values() if label in s.labels]

    def tasks(self, service: str, *, running_only: bool = True) -> list[TaskInfo]:
        self.service(service)
        tasks = list(self.service_tasks.get(service, []))
        return [t for t in tasks if t.state == "running"] if running_only else tasks

    def update_service(
        self,
        service: str,
        edit_for: EditFor,
        *,
        what: str,
        observed: ServiceState | None = None,
        attempts: int = 6,
    ) -> UpdateOutcome:
        conflicts = 0
        current = observed or self.service(service)
        for attempt in range(1, attempts + 1):
            edit = edit_for(current)
            if edit is None:
                return UpdateOutcome(False, current.version, attempt, conflicts)
            if self.before_post is not None:
                self.before_post(self, service)
            now = self.service(service)
            if now.version != current.version:
                conflicts += 1
                current = now
                continue
            self.posted.append((service, edit))
            self.services[service] = replace(
                now,
                version=now.version + 1,
                labels={**now.labels, **edit.labels},
                force_update=now.force_update + (1 if edit.force else 0),
                secrets=edit.secrets if edit.secrets is not None else now.secrets,
                update_state=None,  # Swarm resets UpdateStatus on every spec write
                update_message="",
            )
            return UpdateOutcome(True, now.version, attempt, conflicts)
        raise UpdateOutOfSequence(f"{what} of {service}: the service changed under us")

    def containers(self, service: str, node_id: str) -> list[ContainerInfo]:
        self._check()
        return [c for s, n, c in self.container_list if s == service and n == node_id]

    def signal_container(self, container_id: str, signal: str = "SIGHUP") -> bool:
        self._check()
        if not any(c.container_id == container_id for _, _, c in self.container_list):
            return False
        self.signalled.append((container_id, signal))
        return True

    def exec_in_container(
        self, container_id: str, argv: Sequence[str], *, timeout: float
    ) -> ExecResult:
        self._check()
        if not any(c.container_id == container_id for _, _, c in self.container_list):
            raise DockerNotFound(f"running a command in container {container_id[:12]}: not found")
        self.executed.append((container_id, tuple(argv)))
        if self.exec_handler is None:
            return ExecResult(127, "sh: not found\n")
        return self.exec_handler(container_id, argv)

    def service_logs(self, service: str, *, tail: int) -> list[str]:
        self.service(service)
        return []

    def secrets(self, *, name: str | None = None, label: str | None = None) -> list[SecretInfo]:
        self._check()
        found = list(self.secret_list.values())
        if name is not None:
            found = [s for s in found if s.name.startswith(name)]
        if label is not None:
            key, _, value = label.partition("=")
            found = [s for s in found if s.labels.get(key) == value]
        return found

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> SecretInfo:
        self._check()
        secret = SecretInfo(f"sid-{len(self.secret_list)}", name, dict(labels))
        self.secret_list[secret.secret_id] = secret
        self.secret_data[secret.secret_id] = data
        return secret

    def remove_secret(self, secret_id: str) -> None:
        self._check()
        if self.secret_list.pop(secret_id, None) is None:
            raise DockerNotFound(f"removing secret {secret_id}: not found")

    def close(self) -> None:
        pass
