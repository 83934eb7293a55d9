"""The one adapter for the Docker Engine API: docker-py in, plain data (``shared.swarm``) out.

Every caller opens the engine through :func:`open_engine` (``DOCKER_HOST`` honoured, never the
CLI's active context) and talks to it through the :class:`DockerEngine` protocol, so unit tests
can hand in a fake engine. Every docker-py and requests error is translated here into
:class:`~shared.errors.DockerError` (:class:`~shared.errors.DockerNotFound` for a missing object,
:class:`~shared.errors.UpdateOutOfSequence` for a lost compare-and-swap).
"""

from __future__ import annotations

import contextlib
import copy
import select
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import docker
import docker.errors
import docker.types
import requests

from shared.errors import DockerError, DockerNotFound, UpdateOutOfSequence
from shared.logs import get_logger
from shared.retry import retrying
from shared.swarm import (
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    LocalNode,
    NodeInfo,
    OneOff,
    OneOffResult,
    SecretInfo,
    SecretRef,
    ServiceState,
    SpecEdit,
    TaskInfo,
    UpdateOutcome,
)

_log = get_logger(__name__)
# Label of every one-off container this adapter runs, unique per run: how it finds it to remove.
ONEOFF_RUN_LABEL = "certflow.oneoff-run"
T = TypeVar("T")
EditFor = Callable[[ServiceState], SpecEdit | None]


class EventStream(Protocol):
    """Events as they happen, until :meth:`close` (from any thread) or the engine ends it."""

    def __iter__(self) -> Iterator[ContainerEvent]: ...

    def close(self) -> None: ...


# What a member's container does that the distributor acts on at once.
MEMBER_EVENTS = ("start", "die", "health_status")


class DockerEngine(Protocol):
    """What certflow asks of the Docker engine. Methods raise DockerError, nothing else."""

    def local_node(self) -> LocalNode: ...

    def nodes(self) -> dict[str, NodeInfo]: ...

    def is_leader(self) -> bool: ...

    def service(self, name: str) -> ServiceState: ...

    def labelled_services(self, label: str) -> list[ServiceState]: ...

    def tasks(self, service: str, *, running_only: bool = True) -> list[TaskInfo]: ...

    def update_service(
        self,
        service: str,
        edit_for: EditFor,
        *,
        what: str,
        observed: ServiceState | None = None,
        attempts: int = 6,
    ) -> UpdateOutcome: ...

    def containers(self, service: str, node_id: str) -> list[ContainerInfo]: ...

    def signal_container(self, container_id: str, signal: str = "SIGHUP") -> bool: ...

    def container_events(self, service: str) -> EventStream: ...

    def exec_in_container(
        self, container_id: str, argv: Sequence[str], *, timeout: float
    ) -> ExecResult: ...

    def service_logs(self, service: str, *, tail: int) -> list[str]: ...

    def secrets(self, *, name: str | None = None, label: str | None = None) -> list[SecretInfo]: ...

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> SecretInfo: ...

    def remove_secret(self, secret_id: str) -> None: ...

    def close(self) -> None: ...


def leader_of(engine: DockerEngine) -> bool:
    """True when ``engine`` is the swarm's leader manager. Workers and non-swarm engines: False."""
    me = engine.local_node()
    if not me.active or not me.is_manager:
        return False
    node = engine.nodes().get(me.node_id)
    return node is not None and node.leader


# -- translation of engine JSON -----------------------------------------------------------------


def engine_time(value: object) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) as aware datetimes; None when absent/zero."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _secret_refs(container_spec: dict[str, Any]) -> tuple[SecretRef, ...]:
    refs = []
    for ref in container_spec.get("Secrets") or []:
        file_spec = ref.get("File") or {}
        refs.append(
            SecretRef(
                secret_id=str(ref.get("SecretID", "")),
                secret_name=str(ref.get("SecretName", "")),
                target=str(file_spec.get("Name", "")),
                uid=str(file_spec.get("UID", "0")),
                gid=str(file_spec.get("GID", "0")),
                mode=int(file_spec.get("Mode", 0o444)),
            )
        )
    return tuple(refs)


def task_from_dict(raw: dict[str, Any]) -> TaskInfo:
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    addresses: dict[str, tuple[str, ...]] = {}
    for attachment in raw.get("NetworksAttachments") or []:
        network = attachment.get("Network") or {}
        name = (network.get("Spec") or {}).get("Name") or network.get("ID", "")
        addresses[name] = tuple(a.split("/", 1)[0] for a in attachment.get("Addresses") or [])
    slot = raw.get("Slot")
    spec = raw.get("Spec") or {}
    return TaskInfo(
        task_id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=raw.get("NodeID", ""),
        slot=int(slot) if slot is not None else None,
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        container_id=container.get("ContainerID") or None,
        addresses=addresses,
        force_update=int(spec.get("ForceUpdate") or 0),
        started_at=engine_time(status.get("Timestamp")),
        error=str(status.get("Err") or status.get("Message") or ""),
        secret_ids=frozenset(r.secret_id for r in _secret_refs(spec.get("ContainerSpec") or {})),
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


def service_from_dict(raw: dict[str, Any]) -> ServiceState:
    spec = raw.get("Spec") or {}
    status = raw.get("UpdateStatus") or {}
    template = spec.get("TaskTemplate") or {}
    mode = spec.get("Mode") or {}
    replicas = (mode.get("Replicated") or {}).get("Replicas")
    return ServiceState(
        service_id=str(raw.get("ID", "")),
        name=str(spec.get("Name", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        force_update=int(template.get("ForceUpdate") or 0),
        update_state=str(status["State"]) if status.get("State") else None,
        update_message=str(status.get("Message") or ""),
        mode="global" if "Global" in mode else "replicated",
        replicas=int(replicas) if replicas is not None else None,
        secrets=_secret_refs(template.get("ContainerSpec") or {}),
        restart_condition=str((template.get("RestartPolicy") or {}).get("Condition") or "any"),
        spec=copy.deepcopy(spec),
    )


def apply_edit(spec: dict[str, Any], edit: SpecEdit) -> dict[str, Any]:
    """The spec to post: ``spec`` (the engine's, at the observed version) with ``edit`` applied."""
    out: dict[str, Any] = copy.deepcopy(spec)
    if edit.labels or edit.drop_labels:
        labels = {**(out.get("Labels") or {}), **edit.labels}
        out["Labels"] = {k: v for k, v in labels.items() if k not in edit.drop_labels}
    if edit.replicas is not None:
        out.setdefault("Mode", {})["Replicated"] = {"Replicas": edit.replicas}
    template = out.setdefault("TaskTemplate", {})
    if edit.force:
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
    if edit.container_labels or edit.secrets is not None:
        container = template.setdefault("ContainerSpec", {})
        if edit.container_labels:
            container["Labels"] = {**(container.get("Labels") or {}), **edit.container_labels}
        if edit.secrets is not None:
            container["Secrets"] = [
                {
                    "SecretID": ref.secret_id,
                    "SecretName": ref.secret_name,
                    "File": {"Name": ref.target, "UID": ref.uid, "GID": ref.gid, "Mode": ref.mode},
                }
                for ref in edit.secrets
            ]
    if "Networks" in out and not template.get("Networks"):
        # Old API versions kept networks at the top level; the update endpoint wants them here.
        template["Networks"] = out.pop("Networks")
    return out


# -- docker-py --------------------------------------------------------------------------------


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound as exc:
        raise DockerNotFound(f"{what}: not found") from exc
    except docker.errors.APIError as exc:
        if "update out of sequence" in str(exc.explanation or exc):
            raise UpdateOutOfSequence(f"{what}: the service changed under us") from exc
        raise DockerError(f"{what} failed: {exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"{what} failed: {exc}") from exc


def open_engine(timeout: float = 30.0, *, ping: bool = True) -> DockerPyEngine:
    """The engine at ``DOCKER_HOST`` (else the local socket); DockerError when none answers."""
    with _translated("connecting to the Docker engine"):
        # docker-py >= 7.1 would otherwise prefer the CLI's active context over DOCKER_HOST.
        client = docker.from_env(use_context=False, timeout=int(timeout))
    engine = DockerPyEngine(client)
    if ping:
        try:
            with _translated("connecting to the Docker engine"):
                client.ping()
        except DockerError:
            engine.close()
            raise
    return engine


class DockerPyEngine:
    """:class:`DockerEngine` over a docker-py client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def close(self) -> None:
        self._client.close()

    def local_node(self) -> LocalNode:
        with _translated("reading engine info"):
            info = self._client.info()
        swarm = info.get("Swarm") or {}
        return LocalNode(
            node_id=str(swarm.get("NodeID") or ""),
            state=str(swarm.get("LocalNodeState") or ""),
            is_manager=bool(swarm.get("ControlAvailable")),
        )

    def nodes(self) -> dict[str, NodeInfo]:
        """Every node of the swarm by ID (managers only may ask)."""
        with _translated("listing nodes"):
            infos = [node_from_dict(n.attrs) for n in self._client.nodes.list()]
        return {n.node_id: n for n in infos}

    def is_leader(self) -> bool:
        return leader_of(self)

    def service(self, name: str) -> ServiceState:
        """A fresh inspect of ``name`` (never cached)."""
        with _translated(f"inspecting service {name}"):
            attrs: dict[str, Any] = self._client.services.get(name).attrs
        return service_from_dict(attrs)

    def labelled_services(self, label: str) -> list[ServiceState]:
        """Every service whose spec carries ``label`` (any value), freshly inspected."""
        with _translated(f"listing services labelled {label}"):
            raw = self._client.api.services(filters={"label": label})
        return [service_from_dict(attrs) for attrs in raw]

    def tasks(self, service: str, *, running_only: bool = True) -> list[TaskInfo]:
        """Tasks Swarm wants running; with ``running_only`` just those running now."""
        with _translated(f"listing tasks of {service}"):
            raw = self._client.services.get(service).tasks(filters={"desired-state": "running"})
        tasks = [task_from_dict(t) for t in raw]
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
        """Post ``edit_for(state)`` against the version it was decided on: compare-and-swap.

        The first try uses ``observed`` (what the decision was made on), every retry a fresh
        inspect. On "update out of sequence" the edit is decided again from the new state;
        ``edit_for`` returning None means it is no longer needed and nothing is posted.
        """
        count = {"attempts": 0, "conflicts": 0}
        pending = observed

        def attempt() -> UpdateOutcome:
            nonlocal pending
            current = pending if pending is not None else self.service(service)
            pending = None  # every retry starts from a fresh inspect
            count["attempts"] += 1
            edit = edit_for(current)
            if edit is None:
                return UpdateOutcome(False, current.version, count["attempts"], count["conflicts"])
            try:
                self._post(current, apply_edit(dict(current.spec), edit))
            except UpdateOutOfSequence:
                count["conflicts"] += 1
                _log.info("docker.update_conflict", service=service, version=current.version)
                raise
            return UpdateOutcome(True, current.version, count["attempts"], count["conflicts"])

        outcome: UpdateOutcome | None = None
        for retry in retrying(
            f"{what} of {service}", on=(UpdateOutOfSequence,), attempts=attempts, timeout=60
        ):
            with retry:
                outcome = attempt()
        assert outcome is not None  # tenacity reraises when every attempt failed
        return outcome

    def _post(self, current: ServiceState, spec: dict[str, Any]) -> None:
        with _translated(f"updating service {current.name or current.service_id}"):
            self._client.api.update_service(
                current.service_id,
                current.version,
                task_template=spec.get("TaskTemplate"),
                name=spec.get("Name"),
                labels=spec.get("Labels"),
                mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
                fetch_current_spec=False,
            )

    def containers(self, service: str, node_id: str) -> list[ContainerInfo]:
        """The running containers of ``service`` on ``node_id``."""
        filters = {
            "label": [
                f"com.docker.swarm.service.name={service}",
                f"com.docker.swarm.node.id={node_id}",
            ],
            "status": "running",
        }
        with _translated(f"listing containers of {service}"):
            found = self._client.containers.list(filters=filters)
        out = []
        for container in found:
            labels = {str(k): str(v) for k, v in (container.labels or {}).items()}
            # Re-checked here: the label filter is the engine's, this is what callers act on.
            if labels.get("com.docker.swarm.service.name") != service:
                continue
            started = engine_time((container.attrs.get("State") or {}).get("StartedAt"))
            out.append(
                ContainerInfo(container.id, labels, started.timestamp() if started else None)
            )
        return out

    def container_events(self, service: str) -> EventStream:
        """This engine's container events (start, die, health) of ``service``'s tasks, from now
        on. DockerError when the stream cannot be opened; iterating raises DockerError when it
        breaks, and simply ends when closed."""
        filters = {
            "type": "container",
            "label": f"com.docker.swarm.service.name={service}",
            "event": list(MEMBER_EVENTS),
        }
        with _translated(f"following the events of {service}"):
            stream = self._client.events(decode=True, filters=filters)
        return _Events(stream, service)

    def signal_container(self, container_id: str, signal: str = "SIGHUP") -> bool:
        """Send ``signal`` to one container; False when it is already gone."""
        try:
            with _translated(f"signalling container {container_id[:12]}"):
                self._client.containers.get(container_id).kill(signal=signal)
        except DockerNotFound:
            return False
        return True

    def exec_in_container(
        self, container_id: str, argv: Sequence[str], *, timeout: float
    ) -> ExecResult:
        """Run ``argv`` in a running container (its user and environment); wait ``timeout`` s.

        DockerNotFound when the container is gone, DockerError on any other failure, including
        a command still running after ``timeout`` (it is left running: nothing in the Engine API
        stops an exec; commands run here must bound themselves too).
        """
        what = f"running a command in container {container_id[:12]}"
        deadline = time.monotonic() + timeout
        with _translated(what):
            api = self._client.api
            exec_id = api.exec_create(container_id, list(argv), stdout=True, stderr=True)["Id"]
            # A raw socket, not exec_run: it is the one way to bound the wait for the output.
            sock = api.exec_start(exec_id, socket=True)
            raw = getattr(sock, "_sock", sock)  # docker-py hands a SocketIO over a unix socket
            try:
                output = _read_frames(raw, deadline, what)
            finally:
                sock.close()
                raw.close()  # closing the SocketIO leaves the socket under it open
            while True:
                info = api.exec_inspect(exec_id)
                if not info.get("Running"):
                    break
                if time.monotonic() > deadline:
                    raise DockerError(f"{what}: still running after {timeout:.0f} s")
                time.sleep(0.02)
        code = info.get("ExitCode")
        return ExecResult(int(code) if code is not None else -1, output.decode("utf-8", "replace"))

    def service_logs(self, service: str, *, tail: int) -> list[str]:
        with _translated(f"reading the logs of {service}"):
            chunks = self._client.services.get(service).logs(
                stdout=True, stderr=True, tail=tail, follow=False
            )
            data = b"".join(chunks)
        return data.decode("utf-8", "replace").splitlines()

    def container_networks(self, ref: str) -> frozenset[str] | None:
        """The networks container ``ref`` (ID or name) is attached to; None: no such container."""
        try:
            with _translated(f"inspecting container {ref}"):
                attrs = self._client.api.inspect_container(ref)
        except DockerNotFound:
            return None
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return frozenset(str(name) for name in networks)

    def run_oneoff(self, oneoff: OneOff, *, timeout: float) -> OneOffResult:
        """Create, start and wait for a one-off container; its exit code and output. The
        container is removed in every case (found by a label of its own even when its creation
        failed half-way); past ``timeout`` it is killed (DockerError)."""
        what = f"running a one-off {oneoff.image} container"
        run_id = uuid.uuid4().hex
        mounts = [
            docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
            for m in oneoff.mounts
        ]
        try:
            try:
                with _translated(what):
                    container = self._client.containers.create(
                        oneoff.image,
                        list(oneoff.argv),
                        environment=dict(oneoff.env),
                        user=oneoff.user,
                        network=oneoff.network,
                        mounts=mounts,
                        labels={**oneoff.labels, ONEOFF_RUN_LABEL: run_id},
                        detach=True,
                    )
            except DockerNotFound as exc:
                raise DockerError(
                    f"{what}: the image or the network {oneoff.network} is not on this node "
                    f"(docker pull {oneoff.image}, or run it on a manager that runs the "
                    "cert-distributor)"
                ) from exc
            with _translated(what):
                container.start()
                try:
                    status = container.wait(timeout=timeout)
                except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                    # docker-py reports the read timeout of the wait as either
                    raise DockerError(f"{what}: not finished after {timeout:.0f} s") from exc
                stdout = container.logs(stdout=True, stderr=False)
                stderr = container.logs(stdout=False, stderr=True)
        finally:
            self._remove_run(run_id)
        return OneOffResult(
            int(status.get("StatusCode", -1)),
            stdout.decode("utf-8", "replace"),
            stderr.decode("utf-8", "replace"),
        )

    def _remove_run(self, run_id: str) -> None:
        try:
            with _translated("removing a one-off container"):
                for left in self._client.containers.list(
                    all=True, filters={"label": f"{ONEOFF_RUN_LABEL}={run_id}"}
                ):
                    left.remove(force=True)
        except DockerError as exc:
            _log.warning("docker.oneoff_not_removed", run=run_id[:12], error=str(exc))

    def secrets(self, *, name: str | None = None, label: str | None = None) -> list[SecretInfo]:
        filters = {k: v for k, v in (("name", name), ("label", label)) if v is not None}
        with _translated("listing secrets"):
            found = self._client.secrets.list(filters=filters)
        return [_secret_info(s.attrs) for s in found]

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> SecretInfo:
        with _translated(f"creating secret {name}"):
            secret = self._client.secrets.create(name=name, data=data, labels=labels)
            secret.reload()
        return _secret_info(secret.attrs)

    def remove_secret(self, secret_id: str) -> None:
        with _translated(f"removing secret {secret_id}"):
            self._client.api.remove_secret(secret_id)


class _Events:
    """docker-py's event stream as :class:`ContainerEvent` values, errors translated."""

    def __init__(self, stream: Any, service: str) -> None:
        self._stream = stream
        self._service = service
        self._closed = False

    def __iter__(self) -> Iterator[ContainerEvent]:
        try:
            with _translated(f"following the events of {self._service}"):
                for raw in self._stream:
                    event = container_event(raw)
                    if event is not None:
                        yield event
        except DockerError:
            if not self._closed:  # closing the stream breaks the read under it: not an error
                raise

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):  # already closed, or the engine went away
            self._stream.close()


def container_event(raw: object) -> ContainerEvent | None:
    """One decoded ``/events`` message as a :class:`ContainerEvent`; None for another shape."""
    if not isinstance(raw, dict) or raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    cid = actor.get("ID") or raw.get("id")
    action = raw.get("Action") or raw.get("status")
    if not isinstance(cid, str) or not isinstance(action, str):
        return None
    attributes = actor.get("Attributes") or {}
    labels = {str(k): str(v) for k, v in attributes.items()} if isinstance(attributes, dict) else {}
    nanos = raw.get("timeNano")
    at = nanos / 1e9 if isinstance(nanos, int) else float(raw.get("time") or time.time())
    return ContainerEvent(action, cid, labels, at)


def _read_frames(raw: Any, deadline: float, what: str) -> bytes:
    """The stdout and stderr of a non-TTY exec, read until EOF but no later than ``deadline``.

    docker-py's own frame reader polls with no timeout, so the socket is read here: select with
    the time left, then demultiplex the frames (8-byte header: stream, 3 zero bytes, length).
    """
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DockerError(f"{what}: no end of output in time")
        try:
            ready, _, _ = select.select([raw], [], [], left)
            if not ready:
                continue
            chunk = raw.recv(65536)
        except OSError as exc:
            raise DockerError(f"{what} failed: {exc}") from exc
        if not chunk:
            break
        data += chunk
    out = bytearray()
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "big")
        out += data[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out)


def _secret_info(attrs: dict[str, Any]) -> SecretInfo:
    spec = attrs.get("Spec") or {}
    return SecretInfo(
        secret_id=str(attrs.get("ID", "")),
        name=str(spec.get("Name", "")),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
    )
