"""The maintenance switch's edits, as pure functions of a service's state."""

from __future__ import annotations

import pytest

from services.maintenance.switch import (
    pause_edit,
    resume_edit,
    unsealer_pause_edit,
    unsealer_resume_edit,
)
from shared.docker_engine import apply_edit
from shared.rollout import PAUSE_LABEL, PAUSED_REPLICAS_LABEL, Pause, pause_from_labels
from shared.swarm import ServiceState, SpecEdit

PAUSE = Pause("2026-12-06T06:00:00+00:00", "raft restore", "vm")


def _state(labels: dict[str, str] | None = None, *, mode: str = "replicated",
           replicas: int | None = 1) -> ServiceState:  # fmt: skip
    return ServiceState("s", "x", 1, labels or {}, 0, None, "", mode=mode, replicas=replicas)


def test_pause_writes_the_label_once() -> None:
    edit = pause_edit(_state({"keep": "1"}), PAUSE)
    assert edit is not None
    assert pause_from_labels(dict(edit.labels)) == PAUSE
    assert pause_edit(_state({PAUSE_LABEL: "{}"}), PAUSE) is None  # the first reason stays


def test_resume_drops_only_the_pause_label() -> None:
    edit = resume_edit(_state({PAUSE_LABEL: "{}"}))
    assert edit == SpecEdit(drop_labels=(PAUSE_LABEL,))
    spec = apply_edit({"Labels": {PAUSE_LABEL: "{}", "keep": "1"}}, edit)
    assert spec["Labels"] == {"keep": "1"}
    assert resume_edit(_state({"keep": "1"})) is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (_state(replicas=1), SpecEdit(labels={PAUSED_REPLICAS_LABEL: "1"}, replicas=0)),
        (_state(replicas=2), SpecEdit(labels={PAUSED_REPLICAS_LABEL: "2"}, replicas=0)),
        (_state({PAUSED_REPLICAS_LABEL: "1"}, replicas=0), None),  # paused already
        (_state(mode="global", replicas=None), None),  # a global service cannot be scaled
    ],
)
def test_unsealer_pause(state: ServiceState, expected: SpecEdit | None) -> None:
    assert unsealer_pause_edit(state) == expected


@pytest.mark.parametrize(
    ("label", "replicas"),
    [("1", 1), ("3", 3), ("0", 1), ("many", 1), ("-2", 1)],
)
def test_unsealer_resume_restores_the_count(label: str, replicas: int) -> None:
    edit = unsealer_resume_edit(_state({PAUSED_REPLICAS_LABEL: label}, replicas=0))
    assert edit == SpecEdit(drop_labels=(PAUSED_REPLICAS_LABEL,), replicas=replicas)
    spec = apply_edit({"Mode": {"Replicated": {"Replicas": 0}}, "Labels": {}}, edit)
    assert spec["Mode"] == {"Replicated": {"Replicas": replicas}}


def test_unsealer_resume_without_a_pause_does_nothing() -> None:
    assert unsealer_resume_edit(_state()) is None
