"""The signal-mode canary plan (signal_canary.py): a table of views and what each node does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.facts import MemberProbe
from services.distributor.signal_canary import (
    Member,
    Step,
    View,
    plan,
    read_marker,
    render_marker,
)
from shared.status import Status

NEW, OLD = "FP:NEW", "FP:OLD"


def probe(
    slot: int, cid: str, *, on: str = NEW, serves: bool | None, trusted: bool = True
) -> MemberProbe:
    return MemberProbe(
        slot=slot,
        container_id=cid,
        fingerprint=on,
        serves_installed=serves,
        trusted=trusted if serves is not None else None,
        sealed=False,
        detail="x509: certificate signed by unknown authority" if serves is False else "unsealed",
    )


def remote(slot: int, cid: str, *, node_fp: str = NEW, **kw: object) -> Member:
    return Member("n2", "host-2", node_fp, probe(slot, cid, **kw))  # type: ignore[arg-type]


BASE = View(
    now=1000.0,
    fingerprint=NEW,
    node_id="n1",
    node_name="host-1",
    local=(),
    remote=(),
    signalled=frozenset(),
    waiting_since=None,
    timeout=60.0,
)

# (name, view changes, step, status, containers signalled now, words in the message)
CASES: list[tuple[str, dict[str, object], Step, Status, tuple[str, ...], str]] = [
    ("nothing installed", {"fingerprint": None}, Step.IDLE, Status.OK, (), "no pair"),
    ("no member anywhere", {}, Step.IDLE, Status.OK, (), "no Vault member"),
    (
        "local canary on the old leaf: signalled alone",
        {"local": (probe(1, "c1", serves=False), probe(2, "c2", serves=False))},
        Step.SIGNAL_CANARY,
        Status.OK,
        ("c1",),
        "canary slot 1",
    ),
    (
        "local canary signalled, not proven yet: wait",
        {
            "local": (probe(1, "c1", serves=False), probe(2, "c2", serves=False)),
            "signalled": frozenset({"c1"}),
            "waiting_since": 990.0,
        },
        Step.WAIT_CANARY,
        Status.OK,
        (),
        "unknown authority",
    ),
    (
        "canary not proven within the timeout: halt, nothing else",
        {
            "local": (probe(1, "c1", serves=False), probe(2, "c2", serves=False)),
            "signalled": frozenset({"c1"}),
            "waiting_since": 900.0,
        },
        Step.HALTED,
        Status.FAILING,
        (),
        "halted: canary slot 1 (c1) on host-1",
    ),
    (
        "canary proven: the rest of the local members",
        {
            "local": (
                probe(1, "c1", serves=True),
                probe(2, "c2", serves=False),
                probe(3, "c3", serves=False),
            ),
            "signalled": frozenset({"c1"}),
        },
        Step.ROLL,
        Status.OK,
        ("c2", "c3"),
        "2 local member(s)",
    ),
    (
        "serving members are never signalled",
        {
            "local": (probe(1, "c1", serves=True), probe(2, "c2", serves=True)),
        },
        Step.DONE,
        Status.OK,
        (),
        "every local Vault member",
    ),
    (
        "canary serves but clients do not trust it: not proven, not signalled again",
        {
            "local": (probe(1, "c1", serves=True, trusted=False), probe(2, "c2", serves=False)),
            "signalled": frozenset({"c1"}),
            "waiting_since": 999.0,
        },
        Step.WAIT_CANARY,
        Status.OK,
        (),
        "canary slot 1",
    ),
    (
        "remote canary on the old leaf: local members wait",
        {
            "local": (probe(2, "c2", serves=False),),
            "remote": (remote(1, "r1", serves=False),),
        },
        Step.WAIT_CANARY,
        Status.OK,
        (),
        "canary slot 1 (r1) on host-2",
    ),
    (
        "remote canary whose node lags: wait, named",
        {
            "local": (probe(2, "c2", serves=False),),
            "remote": (remote(1, "r1", node_fp=OLD, on=OLD, serves=True),),
        },
        Step.WAIT_CANARY,
        Status.OK,
        (),
        "has not installed",
    ),
    (
        "remote canary proven: local members follow",
        {
            "local": (probe(2, "c2", serves=False), probe(3, "c3", serves=True)),
            "remote": (remote(1, "r1", serves=True),),
        },
        Step.ROLL,
        Status.OK,
        ("c2",),
        "canary slot 1 (r1) on host-2",
    ),
    (
        "a report of our own node is not a second copy of our members",
        {
            "local": (probe(2, "c2", serves=False),),
            "remote": (Member("n1", "host-1", NEW, probe(1, "ghost", serves=True)),),
        },
        Step.SIGNAL_CANARY,
        Status.OK,
        ("c2",),
        "slot 2",
    ),
    (
        "a member the probe cannot read is not signalled; the canary waits and halts",
        {"local": (probe(1, "c1", serves=None),), "waiting_since": 900.0},
        Step.HALTED,
        Status.FAILING,
        (),
        "unsealed",
    ),
    (
        "probed on an older pair: wait for a probe on this one",
        {"local": (probe(1, "c1", on=OLD, serves=True),)},
        Step.WAIT_CANARY,
        Status.OK,
        (),
        "not probed on this certificate",
    ),
    (
        "a member signalled that still serves the old one: degraded, not signalled again",
        {
            "local": (probe(1, "c1", serves=True), probe(2, "c2", serves=False)),
            "signalled": frozenset({"c1", "c2"}),
        },
        Step.WAIT,
        Status.DEGRADED,
        (),
        "signalled but not serving",
    ),
]


@pytest.mark.parametrize(
    ("changes", "step", "status", "signal", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan(
    changes: dict[str, object], step: Step, status: Status, signal: tuple[str, ...], words: str
) -> None:
    decided = plan(replace(BASE, **changes))  # type: ignore[arg-type]
    assert (decided.step, decided.status, decided.signal) == (step, status, signal), decided
    assert words in decided.message, decided.message


def test_the_waiting_clock_runs_only_while_the_canary_owes_the_pair() -> None:
    owed = plan(replace(BASE, local=(probe(1, "c1", serves=False),)))
    assert owed.waiting
    done = plan(replace(BASE, local=(probe(1, "c1", serves=True),)))
    assert not done.waiting


def test_the_halt_names_since_when() -> None:
    view = replace(
        BASE,
        local=(probe(1, "c1", serves=False),),
        signalled=frozenset({"c1"}),
        waiting_since=0.0,
    )
    assert "since 1970-01-01T00:00:00+00:00" in plan(view).message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (None, frozenset())),
        ("FP:OLD\n", ("FP:OLD", None)),  # written by an older distributor
        (render_marker("FP:NEW", frozenset({"b", "a"})), ("FP:NEW", frozenset({"a", "b"}))),
        ("{not json", (None, frozenset())),
        ('{"containers": []}', (None, frozenset())),
    ],
)
def test_marker(text: str, expected: tuple[str | None, frozenset[str] | None]) -> None:
    assert read_marker(text) == expected
