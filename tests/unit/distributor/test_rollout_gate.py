"""The rolling update's gate: the restarted member must be back before Swarm goes on.

Swarm restarts one member and then waits (the stack's long ``delay``); the leader's coordinator
moves the update on with a label write only when that member is running, unsealed, serving the
installed certificate, trusted, every other member unsealed, and it has been back long enough to
be a raft voter. Each case is fed through ``step`` as the loop does.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.coordinator import (
    Kind,
    Limits,
    Member,
    Memory,
    Observed,
    decide,
    newest_member,
    step,
)
from shared.rollout import Ordered
from tests.unit.distributor.test_coordinator import NEW, OLD, ON_OLD, observed, on_old

pytestmark = pytest.mark.unit

LIMITS = Limits(member_bound=60.0, voter_wait=10.0)


def member(slot: int, **overrides: object) -> Member:
    """A member back on the installed pair (test_coordinator's factory, proven)."""
    return on_old(slot, **{"proven": True, "detail": "unsealed", **overrides})


OLD_PAIR = {"proven": False, "detail": "serves another leaf"}
# Slot 1 was restarted last (newest start); slots 2 and 3 still run the old certificate.
RESTARTED = (member(1, started_at=500.0), member(2, **OLD_PAIR), member(3, **OLD_PAIR))


def rolling(now: float, *members: Member) -> Observed:
    return observed(now=now, label=NEW, update_state="updating", members=members)


def kinds(*seen: Observed) -> list[Kind]:
    mem = Memory()
    out = []
    for obs in seen:
        decision, mem = step(obs, mem, LIMITS)
        out.append(decision.kind)
    return out


def test_the_update_moves_on_once_the_member_has_been_back_for_the_voter_wait() -> None:
    assert kinds(
        rolling(1000, *RESTARTED), rolling(1005, *RESTARTED), rolling(1011, *RESTARTED)
    ) == [Kind.GATE, Kind.GATE, Kind.ADVANCE]


def test_it_moves_on_once_per_member_not_on_every_poll() -> None:
    seen = [rolling(1000 + t, *RESTARTED) for t in (0, 11, 12, 13)]
    assert kinds(*seen) == [Kind.GATE, Kind.ADVANCE, Kind.GATE, Kind.GATE]


@pytest.mark.parametrize(
    ("restarted", "why"),
    [
        (member(1, running=False, started_at=None), "not running yet"),
        (member(1, sealed=None, proven=None), "not probed yet"),
        (member(1, sealed=True, proven=None), "sealed"),
        (member(1, proven=False, detail="x509: unknown authority"), "x509: unknown authority"),
        (member(1, fingerprint=OLD), "another certificate installed"),
    ],
)
def test_a_member_not_back_holds_the_update_then_halts_it_past_its_bound(
    restarted: Member, why: str
) -> None:
    if restarted.running:
        restarted = replace(restarted, started_at=500.0)  # the last one Swarm restarted
    others = RESTARTED[1:]
    seen = [rolling(1000 + t, restarted, *others) for t in (0, 30, 61)]
    mem = Memory()
    decisions = []
    for obs in seen:
        decision, mem = step(obs, mem, LIMITS)
        decisions.append(decision)
    assert [d.kind for d in decisions] == [Kind.GATE, Kind.GATE, Kind.HALTED]
    assert why in decisions[-1].message
    assert "slot 1 on host-n1" in decisions[-1].message
    assert "goes on by itself" in decisions[-1].message


def test_a_halted_update_goes_on_by_itself_once_the_member_is_back() -> None:
    sealed = member(1, sealed=True, proven=None, started_at=500.0)
    seen = [rolling(1000 + t, sealed, *RESTARTED[1:]) for t in (0, 61, 200)]
    seen += [rolling(1000 + t, *RESTARTED) for t in (201, 212)]
    assert kinds(*seen) == [Kind.GATE, Kind.HALTED, Kind.HALTED, Kind.GATE, Kind.ADVANCE]


def test_another_member_sealed_holds_the_update() -> None:
    seen = [
        rolling(1000 + t, RESTARTED[0], member(2, sealed=True, proven=None), RESTARTED[2])
        for t in (0, 20)
    ]
    assert kinds(*seen) == [Kind.GATE, Kind.GATE]


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (member(2, sealed=None, proven=None), "slot 2 on host-n2: not probed"),
        (member(2, running=False, started_at=None, sealed=None), "slot 2 on host-n2: not running"),
    ],
)
def test_another_member_not_proven_unsealed_holds_the_update(other: Member, why: str) -> None:
    mem = Memory()
    for t in (0, 20):
        decision, mem = step(rolling(1000 + t, RESTARTED[0], other, RESTARTED[2]), mem, LIMITS)
        assert decision.kind is Kind.GATE
        assert why in decision.message


def test_a_vault_node_down_holds_the_update() -> None:
    from tests.unit.distributor.test_coordinator import NODES, node

    nodes = {**NODES, "n3": node("n3", "down")}
    mem = Memory()
    for t in (0, 20):
        obs = replace(rolling(1000 + t, *RESTARTED), nodes=nodes)
        decision, mem = step(obs, mem, LIMITS)
        assert decision.kind is Kind.GATE
        assert "host-n3 (n3): node down" in decision.message


def test_the_newest_member_is_the_one_not_running_yet_else_the_last_started() -> None:
    starting = member(2, running=False, started_at=None)
    assert newest_member((member(1), starting, member(3))) == starting
    assert newest_member(RESTARTED) == RESTARTED[0]
    assert newest_member(()) is None


def test_done_only_when_every_member_serves_the_installed_certificate() -> None:
    finished = observed(label=NEW, update_state="completed")
    assert decide(replace(finished, members=(member(1), member(2), member(3)))).kind is Kind.DONE
    short = decide(replace(finished, members=(member(1), member(2, **OLD_PAIR), member(3))))
    assert short.kind is Kind.NOT_BACK
    assert "slot 2 on host-n2: does not serve the installed certificate" in short.message


def test_no_restart_while_a_member_is_sealed() -> None:
    decision = decide(observed(members=(member(1), member(2, sealed=True), member(3))))
    assert decision.kind is Kind.HELD
    assert "slot 2 on host-n2: sealed" in decision.message


def test_a_member_with_no_task_at_all_holds_the_gate() -> None:
    # Swarm stopped wanting the old task and holds its replacement back (a node lost): the two
    # members left are back, but the third is simply absent from the task list.
    gone = ("slot 3: no task (Swarm is replacing the member)",)
    two = (member(1, started_at=500.0), member(2))
    absent = replace(rolling(1020, *two), missing=gone, not_back=gone)
    assert kinds(rolling(1000, *two), absent) == [Kind.GATE, Kind.GATE]
    assert "slot 3: no task" in decide(absent).message


def test_a_restarted_member_waits_for_the_voter_wait_even_if_no_step_saw_it_down() -> None:
    # certflow asked slot 2 (task t2) to stop; the next step already finds its replacement
    # (t2b) unsealed and serving: a new task is a rejoined raft member, so its clock starts now.
    stopped = (Ordered(2, "t2"),)
    old = ON_OLD
    back = (old[0], on_old(2, task_id="t2b", proven=True, detail="unsealed"), old[2])
    mem = Memory()
    seen = []
    for now, members in ((1000, old), (1005, back), (1014, back), (1016, back)):
        obs = observed(now=now, ordered=stopped, members=members)
        decision, mem = step(obs, mem, LIMITS)
        seen.append((decision.kind, decision.message))
    assert seen[0] == (Kind.GATE, "vault rollout waits: slot 2 on host-n2: asked to stop 0s ago, "
                       "still running")  # fmt: skip
    # Its probe reports no raft index (an older Vault, say): nothing proves it caught up sooner.
    assert seen[1] == (Kind.GATE, "vault rollout: slot 2 on host-n2 is back, catching up (no raft "
                       "index yet); 10s more unless its raft index proves it sooner")  # fmt: skip
    assert seen[2][0] is Kind.GATE
    assert seen[3][0] is Kind.RESTART
    assert "slot 3 on host-n3 (a standby)" in seen[3][1]
