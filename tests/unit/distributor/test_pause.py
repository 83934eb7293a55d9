"""The maintenance switch in the coordinator's decision: a pause stops no member, moves no
update on and sends no order again; a resume continues at the member where it stopped, and the
members already restarted for this certificate are never restarted again."""

from __future__ import annotations

import pytest

from services.distributor.coordinator import Kind, Limits, Memory, step
from shared.rollout import Ordered, Pause, pause_from_labels, pause_label
from tests.unit.distributor.test_coordinator import NEW, ON_OLD, observed, on_old

pytestmark = pytest.mark.unit

LIMITS = Limits(member_bound=60.0, voter_wait=10.0)
PAUSE = "paused by an operator since 2026-12-06T06:00:00+00:00 on vm: raft restore"


def test_a_pause_holds_the_first_restart_and_a_resume_makes_it() -> None:
    # Every member back for the voter wait (the first step starts that clock).
    _, memory = step(observed(paused=PAUSE), Memory(), LIMITS)
    decision, memory = step(observed(now=1011.0, paused=PAUSE), memory, LIMITS)
    assert decision.kind is Kind.PAUSED
    assert decision.member == ON_OLD[1]  # who would go next
    assert PAUSE in decision.message
    assert "certflow resume" in decision.message
    assert memory.gate_task is None  # nothing was sent, nothing is watched
    resumed, _ = step(observed(now=1012.0), memory, LIMITS)
    assert resumed.kind is Kind.RESTART
    assert resumed.member == ON_OLD[1]


def test_a_pause_mid_rollout_continues_at_the_next_member_without_a_second_restart() -> None:
    # Slot 2 was stopped (recorded) and is back, proven, long enough to be a voter.
    back = on_old(2, task_id="t2b", proven=True, started_at=500.0, detail="unsealed")
    members = (ON_OLD[0], back, ON_OLD[2])
    ordered = (Ordered(2, "t2"),)
    paused_obs = [observed(now=1000.0 + t, members=members, ordered=ordered, paused=PAUSE)
                  for t in (0, 30, 60, 300)]  # fmt: skip
    _, memory = step(paused_obs[0], Memory(), LIMITS)  # starts the voter wait
    for obs in paused_obs[1:]:
        decision, memory = step(obs, memory, LIMITS)
        assert decision.kind is Kind.PAUSED, decision
        assert decision.member is not None
        assert decision.member.slot == 3  # the next one, never slot 2 again
    resumed, _ = step(observed(now=1400.0, members=members, ordered=ordered), memory, LIMITS)
    assert resumed.kind is Kind.RESTART
    assert resumed.member is not None
    assert resumed.member.slot == 3


def test_a_member_in_flight_is_still_watched_but_its_order_is_not_sent_again() -> None:
    # Slot 2 was asked to stop and has not gone yet: normally the order is sent again.
    ordered = (Ordered(2, "t2"),)
    memory = Memory()
    decision, memory = step(observed(ordered=ordered), memory, LIMITS)
    assert decision.kind is Kind.GATE
    later, _ = step(observed(now=1020.0, ordered=ordered, paused=PAUSE), memory, LIMITS)
    assert later.kind is Kind.GATE  # still reported: the gate watches the member
    assert not later.resend
    assert PAUSE in later.message


def test_someone_elses_update_is_not_moved_on_while_paused() -> None:
    restarted = on_old(1, proven=True, started_at=500.0, detail="unsealed")
    members = (restarted, ON_OLD[1], ON_OLD[2])
    seen = [observed(now=1000.0 + t, label=NEW, update_state="updating", members=members,
                     paused=PAUSE) for t in (0, 11, 30)]  # fmt: skip
    memory = Memory()
    kinds = []
    for obs in seen:
        decision, memory = step(obs, memory, LIMITS)
        kinds.append(decision.kind)
    assert Kind.ADVANCE not in kinds
    assert kinds[-1] is Kind.PAUSED


def test_a_done_rollout_reads_done_while_paused() -> None:
    serving = tuple(on_old(s, proven=True, detail="unsealed") for s in (1, 2, 3))
    decision, _ = step(observed(label=NEW, members=serving, paused=PAUSE), Memory(), LIMITS)
    assert decision.kind is Kind.DONE


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, None),
        ({"other": "x"}, None),
        (
            {"certflow.paused": pause_label(Pause("2026-12-06T06:00:00+00:00", "restore", "vm"))},
            Pause("2026-12-06T06:00:00+00:00", "restore", "vm"),
        ),
        # A label that cannot be read still pauses: the switch fails safe.
        ({"certflow.paused": "yes"}, Pause("", "unreadable certflow.paused label")),
        ({"certflow.paused": "[1]"}, Pause("", "unreadable certflow.paused label")),
    ],
)
def test_the_pause_label(labels: dict[str, str], expected: Pause | None) -> None:
    assert pause_from_labels(labels) == expected
