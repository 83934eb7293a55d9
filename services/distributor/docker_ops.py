"""The distributor's Docker actions on the Vault service: record a finished rollout, move
someone else's update on.

Built on the engine adapter (:mod:`shared.docker_engine`); what the labels mean lives here, how
the engine is spoken to lives there.
"""

from __future__ import annotations

from shared.docker_engine import DockerEngine
from shared.logs import get_logger
from shared.rollout import ADVANCE_LABEL, FINGERPRINT_LABEL
from shared.swarm import ServiceState, SpecEdit, UpdateOutcome

_log = get_logger(__name__)


def record_fingerprint(
    engine: DockerEngine,
    service: str,
    fingerprint: str,
    *,
    observed: ServiceState | None = None,
    attempts: int = 6,
) -> UpdateOutcome:
    """Record that every member serves ``fingerprint``: the service label, nothing restarted (a
    service label is not part of a task's spec). Compare-and-swap: nothing is posted when the
    label already holds it (another coordinator recorded it)."""

    def edit_for(current: ServiceState) -> SpecEdit | None:
        if current.labels.get(FINGERPRINT_LABEL) == fingerprint:
            return None
        return SpecEdit(labels={FINGERPRINT_LABEL: fingerprint})

    outcome = engine.update_service(
        service, edit_for, what="record fingerprint", observed=observed, attempts=attempts
    )
    if outcome.posted:
        _log.info(
            "vault.label_recorded",
            service=service,
            fingerprint=fingerprint,
            version=outcome.version,
            conflicts=outcome.conflicts,
        )
    return outcome


def advance_update(
    engine: DockerEngine, service: str, past_task: str, *, observed: ServiceState
) -> bool:
    """Move someone else's rolling update on: a label write naming the member just proven back.

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
