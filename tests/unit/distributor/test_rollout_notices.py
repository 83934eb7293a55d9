"""Which rollout decisions notify: a table of (previous decision, new decision) -> notices."""

from __future__ import annotations

import pytest

from services.distributor.coordinator import Decision, Kind, Member
from services.distributor.rollout_notices import Seen, rollout_notices

FP, OLD = "AA:NEW", "AA:OLD"
M = Member(task_id="t2", where="slot 2 on vm2", running=True, slot=2)


def d(kind: Kind, fp: str = FP, member: Member | None = None) -> Decision:
    return Decision(kind, f"{kind.value} message", fingerprint=fp, member=member)


@pytest.mark.parametrize(
    ("previous", "decision", "expected"),
    [
        # done: only when it becomes done in this process's sight
        (Seen(Kind.GATE, FP), d(Kind.DONE), ["rollout.done"]),
        (Seen(Kind.ADOPT, FP), d(Kind.DONE), ["rollout.done"]),
        (Seen(Kind.RESTART, FP), d(Kind.DONE), ["rollout.done"]),
        (Seen(Kind.DONE, FP), d(Kind.DONE), []),
        (Seen(Kind.NOT_BACK, FP), d(Kind.DONE), []),
        (Seen(Kind.DONE, OLD), d(Kind.DONE), ["rollout.done"]),
        (None, d(Kind.DONE), []),  # a fresh process finds it done: nothing new
        (Seen(Kind.SYNC_ONLY, None), d(Kind.DONE), []),  # just became leader
        # halted: when it starts, whatever came before
        (Seen(Kind.GATE, FP), d(Kind.HALTED, member=M), ["rollout.halted"]),
        (None, d(Kind.HALTED, member=M), ["rollout.halted"]),
        (Seen(Kind.HALTED, FP), d(Kind.HALTED, member=M), []),
        # resumed: leaving a halt
        (Seen(Kind.HALTED, FP), d(Kind.GATE), ["rollout.resumed"]),
        (Seen(Kind.HALTED, FP), d(Kind.RESTART), ["rollout.resumed"]),
        (Seen(Kind.HALTED, FP), d(Kind.DONE), ["rollout.resumed", "rollout.done"]),
        (Seen(Kind.HALTED, FP), d(Kind.FAILED), ["rollout.resumed", "rollout.paused"]),
        (Seen(Kind.HALTED, FP), Decision(Kind.SYNC_ONLY), []),  # no longer the leader
        # paused: Swarm paused the Vault update
        (Seen(Kind.WAIT, FP), d(Kind.FAILED), ["rollout.paused"]),
        (Seen(Kind.FAILED, FP), d(Kind.FAILED), []),
        (Seen(Kind.FAILED, FP), d(Kind.DONE), ["rollout.done"]),
        # paused by an operator (certflow pause), and resumed
        (Seen(Kind.GATE, FP), d(Kind.PAUSED), ["rollout.paused"]),
        (Seen(Kind.PAUSED, FP), d(Kind.PAUSED), []),
        (Seen(Kind.PAUSED, FP), d(Kind.RESTART), ["rollout.resumed"]),
        # the rest of the way tells nothing
        (Seen(Kind.WAIT, FP), d(Kind.RESTART), []),
        (Seen(Kind.RESTART, FP), d(Kind.GATE), []),
        (Seen(Kind.GATE, FP), d(Kind.HELD), []),
        (None, Decision(Kind.SYNC_ONLY), []),
    ],
)
def test_rollout_notices(previous: Seen | None, decision: Decision, expected: list[str]) -> None:
    assert [e.kind.value for e in rollout_notices(previous, decision)] == expected


def test_a_halt_names_the_member_and_its_subject_tells_halts_apart() -> None:
    (event,) = rollout_notices(Seen(Kind.GATE, FP), d(Kind.HALTED, member=M))
    assert event.fields == {
        "decision": "halted",
        "fingerprint": FP,
        "member": "slot 2 on vm2",
        "slot": 2,
    }
    assert event.subject == f"{FP} slot 2 on vm2"
    assert event.summary == "halted message"
