"""Docker effects of the distributor: open the client, restart Vault once, wait, send SIGHUP.

Every docker-py/requests error is translated into :class:`shared.errors.DockerError` here.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests

from shared.errors import DockerError, UpdateOutOfSequence
from shared.logs import get_logger
from shared.retry import retrying
from shared.swarm import ServiceState, service_attrs, service_state, service_state_from_dict

from .catchup import LocalReplica
from .coordinator import FAILED_UPDATE_STATES, FINGERPRINT_LABEL

_log = get_logger(__name__)


def open_client(timeout: float = 30.0) -> Any:
    """docker-py client honouring DOCKER_HOST; DockerError when no engine answers."""
    client: Any = None
    try:
        try:
            # docker-py >= 7.2 would otherwise prefer the CLI's active context over DOCKER_HOST.
            # It takes the flag through **kwargs, so only a call tells whether it is understood.
            client = docker.from_env(use_context=False, timeout=int(timeout))
        except TypeError:
            client = docker.from_env(timeout=int(timeout))
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        if client is not None:
            client.close()
        raise DockerError(f"no Docker engine reachable: {exc}") from exc
    return client


@dataclass(frozen=True, slots=True)
class RestartOutcome:
    restarted: bool  # False: the label already held the fingerprint (someone else did it)
    version: int  # service version the update was posted against
    attempts: int
    conflicts: int  # "update out of sequence" answers that were retried


def _spec_with(attrs: dict[str, Any], fingerprint: str, *, force: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(attrs["Spec"])
    spec["Labels"] = {**(spec.get("Labels") or {}), FINGERPRINT_LABEL: fingerprint}
    template = spec.setdefault("TaskTemplate", {})
    if force:
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        # Stamped on the containers this restart creates: a replica that starts before its node
        # has the pair can then be found and caught up locally (catchup.py).
        container = template.setdefault("ContainerSpec", {})
        container["Labels"] = {**(container.get("Labels") or {}), FINGERPRINT_LABEL: fingerprint}
    if "Networks" in spec and not template.get("Networks"):
        # Old API versions kept networks at the top level; the update endpoint wants them here.
        template["Networks"] = spec.pop("Networks")
    return spec


def _post_update(client: Any, service_id: str, version: int, spec: dict[str, Any]) -> None:
    try:
        client.api.update_service(
            service_id,
            version,
            task_template=spec.get("TaskTemplate"),
            name=spec.get("Name"),
            labels=spec.get("Labels"),
            mode=spec.get("Mode"),
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
            fetch_current_spec=False,
        )
    except docker.errors.APIError as exc:
        if "update out of sequence" in str(exc.explanation or exc):
            raise UpdateOutOfSequence(f"service {service_id} changed under us") from exc
        raise DockerError(f"updating service {service_id} failed: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise DockerError(f"updating service {service_id} failed: {exc}") from exc


def _cas_update(
    client: Any,
    service: str,
    *,
    what: str,
    observed: dict[str, Any] | None,
    attempts: int,
    spec_for: Callable[[dict[str, Any], ServiceState], dict[str, Any] | None],
) -> RestartOutcome:
    """Post ``spec_for(attrs, state)`` against the version it was built from; compare-and-swap.

    The first try uses ``observed`` (what the decision was made on), every retry a fresh inspect.
    On "update out of sequence" the spec is rebuilt from the new state; ``spec_for`` returning
    None means the precondition no longer holds (someone else acted) and nothing is posted.
    """
    state: dict[str, Any] = {"attrs": observed, "attempts": 0, "conflicts": 0}

    def attempt() -> RestartOutcome:
        attrs = state["attrs"] if state["attrs"] is not None else service_attrs(client, service)
        state["attrs"] = None  # every retry starts from a fresh inspect
        state["attempts"] += 1
        current = service_state_from_dict(attrs)
        spec = spec_for(attrs, current)
        if spec is None:
            return RestartOutcome(False, current.version, state["attempts"], state["conflicts"])
        try:
            _post_update(client, current.service_id, current.version, spec)
        except UpdateOutOfSequence:
            state["conflicts"] += 1
            _log.info("vault.update_conflict", service=service, version=current.version)
            raise
        return RestartOutcome(True, current.version, state["attempts"], state["conflicts"])

    for retry in retrying(
        f"{what} of {service}", on=(UpdateOutOfSequence,), attempts=attempts, timeout=60
    ):
        with retry:
            outcome = attempt()
    return outcome


def force_update_once(
    client: Any,
    service: str,
    fingerprint: str,
    *,
    observed: dict[str, Any] | None = None,
    attempts: int = 6,
    force: bool = True,
) -> RestartOutcome:
    """One forced rolling update that also records ``fingerprint`` in the service label.

    Compare-and-swap (:func:`_cas_update`): if the label already holds the fingerprint, a
    concurrent coordinator did the restart and we do nothing. ``force=False`` only records the
    label (a service-level label change does not replace tasks).
    """

    def spec_for(attrs: dict[str, Any], current: ServiceState) -> dict[str, Any] | None:
        if current.labels.get(FINGERPRINT_LABEL) == fingerprint:
            return None
        return _spec_with(attrs, fingerprint, force=force)

    outcome = _cas_update(
        client, service, what="force update", observed=observed, attempts=attempts,
        spec_for=spec_for,
    )  # fmt: skip
    if outcome.restarted:
        _log.info(
            "vault.restart_requested" if force else "vault.label_recorded",
            service=service,
            fingerprint=fingerprint,
            version=outcome.version,
            conflicts=outcome.conflicts,
        )
    return outcome


def resume_update(
    client: Any, service: str, fingerprint: str, *, observed: dict[str, Any], attempts: int = 6
) -> bool:
    """Post the service's own spec again so that Swarm resumes our paused rolling update.

    Swarm resets UpdateStatus on every spec write and then replaces only the tasks whose spec is
    out of date, so the replicas already restarted for ``fingerprint`` are left alone and
    ForceUpdate is not touched. Compare-and-swap: False when the service no longer carries our
    label or is no longer paused (someone else acted).
    """

    def spec_for(attrs: dict[str, Any], current: ServiceState) -> dict[str, Any] | None:
        if current.labels.get(FINGERPRINT_LABEL) != fingerprint or current.update_state != "paused":
            return None
        return _spec_with(attrs, fingerprint, force=False)

    outcome = _cas_update(
        client, service, what="resume update", observed=observed, attempts=attempts,
        spec_for=spec_for,
    )  # fmt: skip
    if outcome.restarted:
        _log.info("vault.update_resumed", service=service, fingerprint=fingerprint)
    return outcome.restarted


@dataclass(frozen=True, slots=True)
class UpdateResult:
    ok: bool
    state: str | None
    message: str


def wait_for_update(
    client: Any,
    service: str,
    *,
    timeout: float,
    stop: threading.Event | None = None,
    interval: float = 0.2,
) -> UpdateResult:
    """Poll UpdateStatus the way ``docker service update`` does until completed/paused/rolled back.

    Absent right after the POST (Swarm resets it) means "not started yet": keep polling.
    """
    deadline = time.monotonic() + timeout
    stop = stop or threading.Event()
    last: ServiceState | None = None
    while time.monotonic() < deadline and not stop.is_set():
        last = service_state(client, service)
        if last.update_state == "completed":
            return UpdateResult(True, last.update_state, last.update_message)
        if last.update_state in FAILED_UPDATE_STATES - {"rollback_started"}:
            return UpdateResult(False, last.update_state, last.update_message)
        stop.wait(interval)
    state = last.update_state if last else None
    why = "stopped" if stop.is_set() else f"not finished after {timeout:.0f}s"
    return UpdateResult(False, state, f"vault update {why} (state {state or 'absent'})")


def local_replicas(client: Any, service: str, node_id: str) -> list[LocalReplica]:
    """The running containers of ``service`` on this node, with their label and start time."""
    filters = {
        "label": [
            f"com.docker.swarm.service.name={service}",
            f"com.docker.swarm.node.id={node_id}",
        ],
        "status": "running",
    }
    try:
        containers = client.containers.list(filters=filters)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"listing containers of {service} failed: {exc}") from exc
    found = []
    for container in containers:
        labels = container.labels or {}
        if labels.get("com.docker.swarm.service.name") != service:
            continue
        started = _engine_time(str(container.attrs.get("State", {}).get("StartedAt") or ""))
        if started is None:
            continue
        found.append(LocalReplica(container.id, labels.get(FINGERPRINT_LABEL), started))
    return found


def _engine_time(value: str) -> float | None:
    """The engine's RFC 3339 time with nanoseconds, as epoch seconds."""
    if not value or value.startswith("0001-"):
        return None
    head, _, fraction = value.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return None
    digits = "".join(ch for ch in fraction if ch.isdigit())[:6]
    return moment.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def signal_local_containers(
    client: Any, service: str, node_id: str, signal: str = "SIGHUP"
) -> list[str]:
    """Send ``signal`` to the containers of ``service`` on this node only; their IDs."""
    filters = {
        "label": [
            f"com.docker.swarm.service.name={service}",
            f"com.docker.swarm.node.id={node_id}",
        ],
        "status": "running",
    }
    try:
        containers = client.containers.list(filters=filters)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"listing containers of {service} failed: {exc}") from exc
    sent: list[str] = []
    for container in containers:
        labels = container.labels or {}
        # Re-checked here: the label filter is the engine's, this is what we act on.
        if labels.get("com.docker.swarm.service.name") != service:
            continue
        try:
            container.kill(signal=signal)
        except docker.errors.NotFound:
            continue  # stopped between list and kill: it will start with the new pair anyway
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise DockerError(f"signalling container {container.short_id} failed: {exc}") from exc
        sent.append(container.id)
    if sent:
        _log.info("vault.signalled", service=service, signal=signal, containers=len(sent))
    return sent


def signal_container(client: Any, container_id: str, signal: str = "SIGHUP") -> bool:
    """Send ``signal`` to one container; False when it is already gone."""
    try:
        client.containers.get(container_id).kill(signal=signal)
    except docker.errors.NotFound:
        return False
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise DockerError(f"signalling container {container_id[:12]} failed: {exc}") from exc
    return True
