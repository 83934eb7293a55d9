"""The distributor's Docker actions: restart Vault once, resume its paused update, signal replicas.

Built on the engine adapter (:mod:`shared.docker_engine`); what the fingerprint label means lives
here, how the engine is spoken to lives there.
"""

from __future__ import annotations

from shared.docker_engine import DockerEngine
from shared.logs import get_logger
from shared.swarm import ServiceState, SpecEdit, UpdateOutcome

from .facts import ADVANCE_LABEL, FINGERPRINT_LABEL, RESUMES_LABEL, LocalReplica, resumes_label

_log = get_logger(__name__)


def restart_edit(fingerprint: str, *, force: bool = True) -> SpecEdit:
    """Record ``fingerprint`` in the service label; with ``force`` also replace every task.

    A forced restart stamps the fingerprint on the containers it creates too: a replica that
    starts before its node has the pair can then be found and caught up locally (catchup.py).
    """
    label = {FINGERPRINT_LABEL: fingerprint}
    if not force:
        return SpecEdit(labels=label)
    return SpecEdit(labels=label, container_labels=label, force=True)


def force_update_once(
    engine: DockerEngine,
    service: str,
    fingerprint: str,
    *,
    observed: ServiceState | None = None,
    attempts: int = 6,
    force: bool = True,
) -> UpdateOutcome:
    """One forced rolling update that also records ``fingerprint`` in the service label.

    Compare-and-swap: if the label already holds the fingerprint, a concurrent coordinator did
    the restart and nothing is posted. ``force=False`` only records the label (a service-level
    label change does not replace tasks).
    """

    def edit_for(current: ServiceState) -> SpecEdit | None:
        if current.labels.get(FINGERPRINT_LABEL) == fingerprint:
            return None
        return restart_edit(fingerprint, force=force)

    outcome = engine.update_service(
        service, edit_for, what="force update", observed=observed, attempts=attempts
    )
    if outcome.posted:
        _log.info(
            "vault.restart_requested" if force else "vault.label_recorded",
            service=service,
            fingerprint=fingerprint,
            version=outcome.version,
            conflicts=outcome.conflicts,
        )
    return outcome


def resume_update(
    engine: DockerEngine,
    service: str,
    fingerprint: str,
    *,
    observed: ServiceState,
    resumes: int,
    attempts: int = 6,
) -> bool:
    """Post the service's own spec again so that Swarm resumes our paused rolling update.

    Swarm resets UpdateStatus on every spec write and then replaces only the tasks whose spec is
    out of date, so the replicas already restarted for ``fingerprint`` are left alone and
    ForceUpdate is not touched. Compare-and-swap: False when the service no longer carries our
    label or is no longer paused (someone else acted).
    """

    def edit_for(current: ServiceState) -> SpecEdit | None:
        if current.labels.get(FINGERPRINT_LABEL) != fingerprint or current.update_state != "paused":
            return None
        # The resume count travels with the resume: a new leader reads the budget left.
        return SpecEdit(
            labels={
                FINGERPRINT_LABEL: fingerprint,
                RESUMES_LABEL: resumes_label(fingerprint, resumes),
            }
        )

    outcome = engine.update_service(
        service, edit_for, what="resume update", observed=observed, attempts=attempts
    )
    if outcome.posted:
        _log.info("vault.update_resumed", service=service, fingerprint=fingerprint)
    return outcome.posted


def advance_update(
    engine: DockerEngine, service: str, past_task: str, *, observed: ServiceState
) -> bool:
    """Move Swarm's rolling update on: a service label write naming the member just proven back.

    The stack's update ``delay`` is far longer than any rollout, so after restarting one member
    Swarm waits; a spec write makes it start again at once with the next task still on the old
    spec (tasks already on the current spec are left alone; a label is not part of a task's
    spec, so nothing else restarts). Compare-and-swap: nothing is posted when the label already
    names this member or the update is no longer running.
    """

    def edit_for(current: ServiceState) -> SpecEdit | None:
        if current.labels.get(ADVANCE_LABEL) == past_task or current.update_state != "updating":
            return None
        return SpecEdit(labels={ADVANCE_LABEL: past_task})

    outcome = engine.update_service(
        service, edit_for, what="advance update", observed=observed, attempts=3
    )
    if outcome.posted:
        _log.info("vault.update_advanced", service=service, past_task=past_task)
    return outcome.posted


def local_replicas(engine: DockerEngine, service: str, node_id: str) -> list[LocalReplica]:
    """The running containers of ``service`` on this node, with their label and start time."""
    return [
        LocalReplica(c.container_id, c.labels.get(FINGERPRINT_LABEL), c.started_at)
        for c in engine.containers(service, node_id)
        if c.started_at is not None
    ]


def signal_local_containers(
    engine: DockerEngine, service: str, node_id: str, signal: str = "SIGHUP"
) -> list[str]:
    """Send ``signal`` to the containers of ``service`` on this node only; their IDs."""
    sent = [
        c.container_id
        for c in engine.containers(service, node_id)
        # one that stopped between list and kill starts with the new pair anyway
        if engine.signal_container(c.container_id, signal)
    ]
    if sent:
        _log.info("vault.signalled", service=service, signal=signal, containers=len(sent))
    return sent
