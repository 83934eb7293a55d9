"""The gate after certflow restarted a member: open once raft's indices prove it caught up.

Slot 2 (task t2) was asked to stop; its replacement t2b started at 1003. Slot 1 is the active
member; slot 3 still runs the old certificate. Each case is a sequence of observations fed
through ``step`` as the loop does, with the indices the members' probes report
(``raft_applied_index``) and when the probes ran.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.coordinator import (
    PROBE_NOW_FOR,
    Decision,
    Kind,
    Limits,
    Member,
    Memory,
    Observed,
    step,
)
from shared.rollout import Ordered
from tests.unit.distributor.test_coordinator import NEW, observed, on_old

pytestmark = pytest.mark.unit

LIMITS = Limits(member_bound=60.0, voter_wait=10.0, clock_skew=1.0)
STOPPED = (Ordered(2, "t2"),)
STARTED = 1003.0


def active(applied: int, checked_at: float) -> Member:
    return on_old(1, applied=applied, checked_at=checked_at)


def back(applied: int | None, **overrides: object) -> Member:
    """Slot 2's replacement, unsealed on the installed pair."""
    fields: dict[str, object] = {
        "task_id": "t2b",
        "started_at": STARTED,
        "proven": True,
        "detail": "unsealed",
        "active": False,
        "applied": applied,
        "checked_at": 1004.0,
    }
    return on_old(2, **{**fields, **overrides})


def at(now: float, *members: Member) -> Observed:
    return observed(now=now, ordered=STOPPED, members=(*members, on_old(3)))


def run(*seen: Observed) -> list[Decision]:
    """The decisions of consecutive steps; the stop order went out at 1000."""
    mem = Memory(fingerprint=NEW, gate_task="t2", gate_since=1000.0, sent_at=1000.0)
    out = []
    for obs in seen:
        decision, mem = step(obs, mem, LIMITS)
        out.append(decision)
    return out


def test_a_member_that_applied_the_writes_made_while_it_was_down_opens_the_gate_at_once() -> None:
    first, second = run(
        at(1005, active(60, checked_at=1004.5), back(50)),
        at(1006, active(64, checked_at=1005.5), back(61)),
    )
    assert first.kind is Kind.GATE
    assert "catching up with raft (applied index 50 of 60)" in first.message
    # No voter wait: the next member is stopped as soon as the index proves it.
    assert second.kind is Kind.RESTART
    assert second.member is not None
    assert second.member.task_id == "t3"


def test_the_target_is_fixed_when_first_read_so_a_busy_active_member_is_not_chased() -> None:
    decisions = run(
        at(1005, active(60, checked_at=1004.5), back(50)),
        # The active member has moved on to 70; 61 still proves the member holds what was
        # committed while it was down.
        at(1006, active(70, checked_at=1005.9), back(61, checked_at=1005.5)),
    )
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.RESTART]


def test_an_active_index_read_before_the_member_started_does_not_count() -> None:
    # Probed at 1003.5: within the clocks' skew of the start, maybe before the old task stopped.
    (decision,) = run(at(1005, active(55, checked_at=1003.5), back(50)))
    assert decision.kind is Kind.GATE
    assert "the active member's not read yet" in decision.message
    # Its node is asked to probe it now, and every other member's (which one leads may have
    # changed since their last probe).
    assert {m.task_id for m in decision.probe} == {"t2b", "t1", "t3"}


def test_a_member_that_gets_no_entry_halts_past_the_bound_and_is_never_waved_through() -> None:
    seen = [at(1005, active(60, checked_at=1004.5), back(50))]
    seen += [at(1000 + t, active(60, checked_at=999.0 + t), back(50)) for t in (20, 59, 61)]
    decisions = run(*seen)
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.GATE, Kind.GATE, Kind.HALTED]
    assert "slot 2 on host-n2: catching up with raft (applied index 50 of 60)" in (
        decisions[-1].message
    )


def test_a_quiet_cluster_falls_back_to_the_voter_wait() -> None:
    # Nothing was written since the stop: the member's own index equals the active one's, and
    # no index can show it has heard from the leader.
    decisions = run(
        at(1005, active(50, checked_at=1004.5), back(50)),
        at(1010, active(50, checked_at=1009.5), back(50)),
        at(1015.5, active(50, checked_at=1015.0), back(50)),
    )
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.GATE, Kind.RESTART]
    assert "no write since it started to prove it); 10s more" in decisions[0].message


def test_a_write_after_a_quiet_start_still_proves_it_early() -> None:
    decisions = run(
        at(1005, active(50, checked_at=1004.5), back(50)),
        at(1006, active(51, checked_at=1005.5), back(51)),
    )
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.RESTART]


def test_a_restarted_member_that_won_the_election_is_caught_up() -> None:
    leader = back(40, active=True)
    decisions = run(at(1005, on_old(1, active=False, applied=60, checked_at=1004.5), leader))
    assert decisions[0].kind is Kind.RESTART


def test_a_member_whose_probe_has_no_index_waits_for_the_voter_wait() -> None:
    decisions = run(
        at(1005, active(60, checked_at=1004.5), back(None)),
        at(1015.5, active(60, checked_at=1015.0), back(None)),
    )
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.RESTART]
    assert "no raft index yet" in decisions[0].message


@pytest.mark.parametrize(
    ("now", "asked"),
    [(1005.0, {"t2b"}), (1000.0 + PROBE_NOW_FOR + 1, set())],
)
def test_the_gate_asks_for_probes_now_only_early_in_its_wait(now: float, asked: set[str]) -> None:
    sealed = back(None, sealed=True, proven=None)
    decisions = run(at(now, active(60, checked_at=now), sealed))
    assert decisions[0].kind in {Kind.GATE, Kind.HALTED}
    assert {m.task_id for m in decisions[0].probe} == asked


def test_the_last_member_is_recorded_done_only_once_caught_up() -> None:
    # Every member was restarted; slot 3's replacement (t3b) is the last one back.
    everyone = (Ordered(2, "t2"), Ordered(1, "t1"), Ordered(3, "t3"))
    lead = on_old(2, task_id="t2b", proven=True, active=True, applied=80, checked_at=1104.5)
    one = on_old(1, task_id="t1b", proven=True, active=False, applied=80, checked_at=1104.5)

    def last(now: float, applied: int) -> Observed:
        third = on_old(
            3,
            task_id="t3b",
            started_at=1103.0,
            proven=True,
            active=False,
            applied=applied,
            checked_at=now,
        )
        return replace(at(now, lead, one), ordered=everyone, members=(lead, one, third))

    mem = Memory(fingerprint=NEW, gate_task="t3", gate_since=1100.0, sent_at=1100.0)
    kinds = []
    for obs in (last(1105, 70), last(1106, 81)):
        decision, mem = step(obs, mem, LIMITS)
        kinds.append(decision.kind)
    assert kinds == [Kind.GATE, Kind.ADOPT]


def test_a_new_certificate_does_not_restart_the_members_clock() -> None:
    # The same members have been back since 500: the first stop for a renewal comes at once.
    tasks = frozenset({"t1", "t2", "t3"})
    mem = Memory(fingerprint="CC:EARLIER", all_back_since=500.0, back_tasks=tasks)
    decision, _ = step(observed(now=1000.0, all_back_since=None), mem, LIMITS)
    assert decision.kind is Kind.RESTART
