"""The maintenance switch: ``certflow pause`` and ``certflow resume``.

A pause stops certflow from acting on Vault, so that it does not fight a manual recovery:
- the coordinator (the distributor on the Swarm leader) restarts no member, sends no stop order
  again and moves no rolling update on; it reads the pause from the cert-distributor service's
  ``certflow.paused`` label (``shared.rollout``), never from the Vault service, whose label writes
  would move a gated update on;
- the vault-unsealer is scaled to 0, its replica count kept in a label, so no member is unsealed
  behind the operator's back (it has no Docker access to read a label itself, by design).
The stop orders already recorded stay recorded, so a resume continues where the rollout stopped
and restarts no member twice. Both are label and scale edits of services: nothing is redeployed
and no Vault task is replaced.

The edits are pure (``*_edit``); :func:`pause` and :func:`resume` apply them through the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from shared.errors import DockerNotFound
from shared.rollout import PAUSE_LABEL, PAUSED_REPLICAS_LABEL, Pause, pause_from_labels, pause_label
from shared.swarm import LocalNode, ServiceState, SpecEdit, TaskInfo, UpdateOutcome


class SwitchFailed(Exception):
    """The switch could not be completed; the message says what state it left."""


class SwitchEngine(Protocol):
    def local_node(self) -> LocalNode: ...
    def service(self, name: str) -> ServiceState: ...
    def tasks(self, service: str, *, running_only: bool = True) -> list[TaskInfo]: ...
    def update_service(
        self,
        service: str,
        edit_for: Callable[[ServiceState], SpecEdit | None],
        *,
        what: str,
        observed: ServiceState | None = None,
        attempts: int = 6,
    ) -> UpdateOutcome: ...


def pause_edit(state: ServiceState, pause: Pause) -> SpecEdit | None:
    """The cert-distributor's pause label; None when already paused (its first reason stays)."""
    if PAUSE_LABEL in state.labels:
        return None
    return SpecEdit(labels={PAUSE_LABEL: pause_label(pause)})


def resume_edit(state: ServiceState) -> SpecEdit | None:
    return SpecEdit(drop_labels=(PAUSE_LABEL,)) if PAUSE_LABEL in state.labels else None


def unsealer_pause_edit(state: ServiceState) -> SpecEdit | None:
    """Scale the unsealer to 0, keeping its replica count; None when already done."""
    if PAUSED_REPLICAS_LABEL in state.labels or state.mode != "replicated":
        return None
    return SpecEdit(labels={PAUSED_REPLICAS_LABEL: str(state.replicas or 0)}, replicas=0)


def unsealer_resume_edit(state: ServiceState) -> SpecEdit | None:
    """Back to the replica count before the pause (1 when the label is unreadable)."""
    value = state.labels.get(PAUSED_REPLICAS_LABEL)
    if value is None:
        return None
    replicas = int(value) if value.isdigit() and 0 < int(value) < 100 else 1
    return SpecEdit(drop_labels=(PAUSED_REPLICAS_LABEL,), replicas=replicas)


def _apply(
    engine: SwitchEngine, name: str, edit_for: Callable[[ServiceState], SpecEdit | None], what: str
) -> bool | None:
    """True: posted; False: nothing to do; None: no such service."""
    try:
        return engine.update_service(name, edit_for, what=what).posted
    except DockerNotFound:
        return None


def pause(engine: SwitchEngine, *, distributor: str, unsealer: str, pause: Pause) -> list[str]:
    """Pause certflow; what was done, one line each. Raises DockerNotFound when the
    cert-distributor service does not exist (there is nothing to pause)."""
    lines: list[str] = []
    posted = engine.update_service(
        distributor, lambda s: pause_edit(s, pause), what="pause (certflow.paused label)"
    ).posted
    if posted:
        lines.append(f"{distributor}: paused; the Vault rollout restarts no member")
    else:
        current = pause_from_labels(engine.service(distributor).labels)
        lines.append(f"{distributor}: already {current.describe() if current else 'paused'}")
    scaled = _apply(engine, unsealer, unsealer_pause_edit, "pause (scale to 0)")
    if scaled is None:
        raise SwitchFailed(
            "\n".join(
                [
                    *lines,
                    f"{unsealer}: no such service, so it was not scaled down: the unsealer may "
                    "still unseal members (is the vault stack deployed under this stack name?)",
                ]
            )
        )
    if scaled:
        lines.append(f"{unsealer}: scaled to 0; no member is unsealed until resume")
    else:
        lines.append(f"{unsealer}: already scaled down by a pause (or not replicated)")
    return lines


def resume(
    engine: SwitchEngine,
    *,
    distributor: str,
    unsealer: str,
    wait: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """End a pause; what was done, one line each. The unsealer is back and running before the
    coordinator is let go: a member it restarts must be unsealed. When the unsealer does not
    run within ``wait`` seconds, certflow stays paused (SwitchFailed says so)."""
    lines: list[str] = []
    scaled = _apply(engine, unsealer, unsealer_resume_edit, "resume (scale back)")
    if scaled is None:
        lines.append(f"{unsealer}: no such service")
    elif scaled:
        want = engine.service(unsealer).replicas or 0
        deadline = clock() + wait
        while len(engine.tasks(unsealer)) < want:
            if clock() > deadline:
                raise SwitchFailed(
                    f"{unsealer}: scaled back to {want} but not running after {wait:.0f} s; "
                    f"certflow stays paused (docker service ps {unsealer} --no-trunc says why; "
                    "run certflow resume again once it runs)"
                )
            sleep(1.0)
        lines.append(f"{unsealer}: scaled back to {want}, running")
    else:
        lines.append(f"{unsealer}: was not scaled down by a pause")
    posted = engine.update_service(distributor, resume_edit, what="resume").posted
    lines.append(
        f"{distributor}: resumed; the rollout continues where it stopped"
        if posted
        else f"{distributor}: was not paused"
    )
    return lines
