"""Docker Swarm facts as plain data: what decisions read and what the engine adapter returns.

Nothing here talks to Docker. :mod:`shared.docker_engine` fills these types from the Engine API;
pure decision modules import them without importing the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# UpdateStatus.State values after which a rolling update did not finish as asked: Swarm paused it
# (a task failed) or rolled it back. Every caller that judges an update uses this one set.
FAILED_UPDATE_STATES = frozenset(
    {"paused", "rollback_started", "rollback_paused", "rollback_completed"}
)


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
    error: str = ""  # Status.Err, else Status.Message
    secret_ids: frozenset[str] = frozenset()  # secrets its container spec mounts


@dataclass(frozen=True, slots=True)
class LocalNode:
    """What this engine says about itself (its ``Swarm`` info)."""

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
class SecretRef:
    """One secret mounted by a service: which secret, under which file name, owner and mode."""

    secret_id: str
    secret_name: str
    target: str  # the file name under /run/secrets
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A service's spec facts at one ``version`` (one inspect)."""

    service_id: str
    name: str
    version: int
    labels: dict[str, str]
    force_update: int
    update_state: str | None  # UpdateStatus.State; None when absent (never updated, or just posted)
    update_message: str
    mode: str = "replicated"  # or "global"
    replicas: int | None = None  # replicated services only
    secrets: tuple[SecretRef, ...] = ()
    # Its tasks' restart policy condition: any (Swarm's default), on-failure or none.
    restart_condition: str = "any"
    # The engine's own spec at ``version``, kept for the adapter's compare-and-swap update.
    spec: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SpecEdit:
    """A change to a service spec, applied by the adapter to the version it was decided on."""

    labels: Mapping[str, str] = field(default_factory=dict)  # merged into the service labels
    container_labels: Mapping[str, str] = field(default_factory=dict)  # on the containers
    force: bool = False  # ForceUpdate + 1: replace every task
    secrets: tuple[SecretRef, ...] | None = None  # replaces the container spec's secrets
    drop_labels: tuple[str, ...] = ()  # service labels removed
    replicas: int | None = None  # a replicated service's new replica count


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    posted: bool  # False: the edit was no longer needed (someone else acted)
    version: int  # service version the update was posted against
    attempts: int
    conflicts: int  # "update out of sequence" answers that were retried


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    container_id: str
    labels: dict[str, str]
    started_at: float | None  # epoch seconds; None when the engine reports none


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One event of a container on this engine (``docker events``), as the watcher needs it."""

    action: str  # start, die, health_status: healthy, ...
    container_id: str
    labels: dict[str, str]  # the container's labels (Swarm's task ID and name among them)
    at: float  # epoch seconds, as the engine stamped it


@dataclass(frozen=True, slots=True)
class SecretInfo:
    secret_id: str
    name: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class ExecResult:
    """One command run inside a container: its exit code and its stdout and stderr, interleaved."""

    exit_code: int
    output: str


@dataclass(frozen=True, slots=True)
class BindMount:
    source: str  # a path on the node
    target: str  # where the container sees it
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class OneOff:
    """A one-off container: run ``argv`` in ``image`` on ``network``, then remove it."""

    image: str
    argv: tuple[str, ...]
    network: str
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[BindMount, ...] = ()
    user: str = "0:0"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OneOffResult:
    exit_code: int
    stdout: str
    stderr: str


def manager_problem(local: LocalNode) -> str | None:
    """Why an operator command (status, verify, pause, resume) cannot act for the swarm on
    this engine, or None: it must be an active manager."""
    if not local.active:
        state = local.state or "inactive"
        return (
            f"this Docker engine is not part of an active swarm (swarm state: {state}); run it "
            "on a manager of the swarm that runs certflow"
        )
    if not local.is_manager:
        return (
            "this node is a swarm worker; the services and tasks can only be read on a manager "
            "(`docker node ls` there lists them): run it on a manager"
        )
    return None
