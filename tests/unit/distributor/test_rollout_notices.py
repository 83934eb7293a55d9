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
        # the rest of the way tells nothing
        (Seen(Kind.WAIT, FP), d(Kind.RESTART), []),
        (Seen(Kind.RESTART, FP), d(Kind.GATE), []),
        (Seen(Kind.GATE, FP), d(Kind.HELD), []),
        (None, Decision(Kind.SYNC_ONLY), []),
    ],
)
def test_rollout_notices(previous: Seen | None, decision: Decision, expected: list[str]) -> None:
    assert [e.kind.value for e in rollout_notices(previous, decision)] == expected


def test_a_halt_names_the_member_and_shares_its_subject_with_its_resume() -> None:
    (event,) = rollout_notices(Seen(Kind.GATE, FP), d(Kind.HALTED, member=M))
    assert event.fields == {
        "decision": "halted",
        "fingerprint": FP,
        "member": "slot 2 on vm2",
        "slot": 2,
    }
    assert event.subject == FP  # its resume's too: the resume ends it (shared.notify.RESOLVES)
    assert event.summary == "halted message"


P = "paused by an operator since 2026-12-06T06:00:00+00:00 on vm: restore"


@pytest.mark.parametrize(
    ("previous", "decision", "pause", "expected"),
    [
        # the operator's pause notifies when it starts and when it ends, once each
        (Seen(Kind.GATE, FP), d(Kind.PAUSED), P, ["rollout.paused"]),
        (Seen(Kind.PAUSED, FP, P), d(Kind.PAUSED), P, []),
        # a member held sealed during the pause is not a resume
        (Seen(Kind.PAUSED, FP, P), d(Kind.HELD), P, []),
        (Seen(Kind.HELD, FP, P), d(Kind.RESTART), None, ["rollout.resumed"]),
        (Seen(Kind.PAUSED, FP, P), d(Kind.RESTART), None, ["rollout.resumed"]),
        # a process that starts during a pause has nothing to compare with
        (None, d(Kind.PAUSED), P, []),
        # a halt that clears while paused is a resume of the halt, not of the pause
        (Seen(Kind.HALTED, FP, P), d(Kind.GATE), P, ["rollout.resumed"]),
    ],
)
def test_the_operator_pause_notifies_by_its_own_transitions(
    previous: Seen | None, decision: Decision, pause: str | None, expected: list[str]
) -> None:
    events = rollout_notices(previous, decision, pause)
    assert [e.kind.value for e in events] == expected
    if expected == ["rollout.paused"]:
        assert events[0].summary == P
        assert events[0].subject == f"operator {P}"
    if expected == ["rollout.resumed"] and previous is not None and previous.pause and not pause:
        assert events[0].subject == f"operator {P}"  # ends that pause (RESOLVES)


def test_a_second_halt_after_a_resume_is_news_not_a_duplicate() -> None:
    from shared.notify import RESOLVES
    from shared.notify_policy import Limits, Memory, Verdict, admit

    limits = Limits(dedup_seconds=3600, per_minute=20)
    memory = Memory()
    seen: list[Verdict] = []
    previous: Seen | None = Seen(Kind.GATE, FP)
    for t, decision in enumerate(
        [d(Kind.HALTED, member=M), d(Kind.GATE), d(Kind.HALTED, member=M)]
    ):
        for event in rollout_notices(previous, decision):
            clears = tuple((k.value, event.subject) for k in RESOLVES.get(event.kind, ()))
            verdict, memory = admit(
                (event.kind.value, event.subject), memory, float(t), limits, clears
            )
            seen.append(verdict)
        previous = Seen(decision.kind, decision.fingerprint)
    assert seen == [Verdict.SEND, Verdict.SEND, Verdict.SEND]  # halted, resumed, halted
