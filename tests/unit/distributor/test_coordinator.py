"""The coordinator's decision as a pure function of what it observed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.coordinator import Kind, Member, Observed, decide, nodes_not_ready
from services.distributor.facts import DistributorInfo
from services.distributor.reload import missing_members
from shared.swarm import NodeInfo, TaskInfo

NEW, OLD = "AA:NEW", "BB:OLD"


def node(node_id: str, state: str = "ready") -> NodeInfo:
    return NodeInfo(node_id, f"host-{node_id}", state, "active", "manager", node_id == "n1")


def report(node_id: str, fp: str | None, error: str | None = None) -> DistributorInfo:
    return DistributorInfo(node_id=node_id, fingerprint=fp, generation=7, last_error=error)


NODES = {n: node(n) for n in ("n1", "n2", "n3")}


def on_old(slot: int, **overrides: object) -> Member:
    """A member unsealed on the old pair (its node has NEW installed), slot 1 the active one."""
    base: dict[str, object] = {
        "task_id": f"t{slot}",
        "where": f"slot {slot} on host-n{slot}",
        "running": True,
        "started_at": 100.0 + slot,
        "sealed": False,
        "proven": False,
        "fingerprint": NEW,
        "detail": "serves another certificate",
        "slot": slot,
        "node_id": f"n{slot}",
        "active": slot == 1,
    }
    base.update(overrides)
    return Member(**base)  # type: ignore[arg-type]


ON_OLD = (on_old(1), on_old(2), on_old(3))


def observed(**overrides: object) -> Observed:
    base: dict[str, object] = {
        "now": 1000.0,
        "is_leader": True,
        "fingerprint": NEW,
        "label": OLD,
        "update_state": "completed",
        "update_message": "",
        "vault_nodes": frozenset({"n1", "n2", "n3"}),
        "nodes": NODES,
        "reports": {n: report(n, NEW) for n in NODES},
        "failures": {},
        "pending_since": 990.0,
        "lag_timeout": 60.0,
        "members": ON_OLD,
        "all_back_since": 900.0,  # every member running and unsealed for a while
    }
    base.update(overrides)
    return Observed(**base)  # type: ignore[arg-type]


def test_all_nodes_report_new_fingerprint_restart_a_standby_first() -> None:
    decision = decide(observed())
    assert decision.kind is Kind.RESTART
    assert decision.fingerprint == NEW
    assert decision.member == ON_OLD[1]
    assert "slot 2 on host-n2 (a standby), 2 more after it" in decision.message


def test_label_already_equals_fingerprint_is_done() -> None:
    assert decide(observed(label=NEW, members=_serving(NEW))).kind is Kind.DONE


def test_label_equal_and_no_update_status_yet_is_done_not_a_second_restart() -> None:
    obs = observed(label=NEW, update_state=None, members=_serving(NEW))
    assert decide(obs).kind is Kind.DONE
    # Recorded done, a member later found on another pair is reported, never restarted again.
    assert decide(replace(obs, members=ON_OLD)).kind is Kind.NOT_BACK


def test_label_equal_and_rolling_update_running_waits() -> None:
    decision = decide(observed(label=NEW, update_state="updating", members=()))
    assert decision.kind is Kind.GATE
    assert "in progress" in decision.message


def test_a_vault_node_down_holds_the_restart_until_it_is_back() -> None:
    nodes = {**NODES, "n3": node("n3", "down")}
    reports = {"n1": report("n1", NEW), "n2": report("n2", NEW)}
    decision = decide(observed(nodes=nodes, reports=reports))
    assert decision.kind is Kind.HELD
    assert decision.left_out == ("n3",)
    assert "host-n3 (n3)" in decision.message
    assert "quorum" in decision.message
    back = decide(observed(reports={**reports, "n3": report("n3", NEW)}))
    assert back.kind is Kind.RESTART


def test_lagging_node_within_timeout_waits() -> None:
    reports = {**{n: report(n, NEW) for n in NODES}, "n2": report("n2", OLD)}
    decision = decide(observed(reports=reports, pending_since=980.0))
    assert decision.kind is Kind.WAIT
    assert decision.nodes == ("n2",)


def test_lagging_past_timeout_is_failing_naming_the_node_and_does_not_restart() -> None:
    reports = {**{n: report(n, NEW) for n in NODES}, "n2": report("n2", OLD, "EIO reading")}
    decision = decide(observed(reports=reports, pending_since=900.0))
    assert decision.kind is Kind.LAGGING
    assert decision.nodes == ("n2",)
    assert "host-n2 (n2)" in decision.message
    assert "EIO reading" in decision.message


def test_unreachable_peer_counts_as_lagging_with_its_reason() -> None:
    reports = {"n1": report("n1", NEW), "n2": report("n2", NEW)}
    decision = decide(
        observed(reports=reports, failures={"n3": "ConnectTimeout"}, pending_since=0.0)
    )
    assert decision.kind is Kind.LAGGING
    assert "unreachable (ConnectTimeout)" in decision.message


def test_no_vault_tasks() -> None:
    assert decide(observed(vault_nodes=frozenset())).kind is Kind.NO_TASKS


def test_all_vault_nodes_down_is_no_tasks() -> None:
    nodes = {n: node(n, "down") for n in NODES}
    decision = decide(observed(nodes=nodes))
    assert decision.kind is Kind.NO_TASKS
    assert decision.left_out == ("n1", "n2", "n3")


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("paused", "update paused due to failure or early termination of task x1"),
        ("rollback_paused", "rollback paused due to failure or early termination of task x"),
    ],
)
def test_a_paused_update_of_vaults_own_holds_every_restart_naming_it(
    state: str, message: str
) -> None:
    # Swarm would start a stopped member on the half-rolled spec: that is the operator's call.
    for label in (NEW, OLD):
        decision = decide(observed(label=label, update_state=state, update_message=message))
        assert decision.kind is Kind.FAILED
        assert state in decision.message
        assert message in decision.message
        assert decision.member is None


def test_a_rolled_back_update_does_not_block_a_new_certificate() -> None:
    decision = decide(observed(label=OLD, update_state="rollback_completed", update_message="x"))
    assert decision.kind is Kind.RESTART


def test_another_update_in_progress_is_gated_like_ours() -> None:
    # A stack deploy's rolling update waits between members too; the gate moves it on.
    assert decide(observed(update_state="updating")).kind is Kind.GATE


def test_not_leader_only_syncs() -> None:
    assert decide(observed(is_leader=False)).kind is Kind.SYNC_ONLY


def test_nothing_installed_here_waits() -> None:
    assert decide(observed(fingerprint=None)).kind is Kind.WAIT


def test_only_vault_nodes_matter() -> None:
    # n3 runs no Vault task: its lag does not hold the restart back.
    reports = {**{n: report(n, NEW) for n in NODES}, "n3": report("n3", OLD)}
    decision = decide(observed(vault_nodes=frozenset({"n1", "n2"}), reports=reports))
    assert decision.kind is Kind.RESTART


def test_node_missing_from_node_list_is_still_asked() -> None:
    decision = decide(observed(nodes={}, reports={"n1": report("n1", NEW)}, pending_since=1000.0))
    assert decision.kind is Kind.WAIT
    assert set(decision.nodes) == {"n2", "n3"}


def _serving(fp: str, *, slot2: str | None = None) -> tuple[Member, ...]:
    return tuple(
        on_old(i, proven=True, detail="unsealed", fingerprint=slot2 if (i == 2 and slot2) else fp)
        for i in (1, 2, 3)
    )


def test_every_member_already_serving_the_pair_is_recorded_without_a_restart() -> None:
    # E.g. a `docker stack deploy` replaced the labels and restarted the members: the probes
    # prove each one serves the installed leaf, so a restart would only seal them.
    decision = decide(observed(label=None, members=_serving(NEW)))
    assert decision.kind is Kind.ADOPT
    assert "already serves" in decision.message


def test_only_the_members_not_serving_the_pair_are_restarted() -> None:
    decision = decide(observed(label=None, members=_serving(NEW, slot2=OLD)))
    assert decision.kind is Kind.RESTART
    assert decision.member is not None
    assert decision.member.task_id == "t2"


def test_no_restart_until_members_that_came_back_by_themselves_can_vote() -> None:
    # Slot 3's node just returned: its member is unsealed, but raft makes it a voter only after
    # autopilot's stabilization time; stopping another member now could cost the quorum.
    decision = decide(observed(all_back_since=995.0, voter_wait=12.0))
    assert decision.kind is Kind.WAIT
    assert "7s more before the next restart" in decision.message
    assert decide(observed(all_back_since=988.0, voter_wait=12.0)).kind is Kind.RESTART


def test_no_restart_before_every_member_is_probed() -> None:
    unprobed = (on_old(1), on_old(2, sealed=None, proven=None), on_old(3))
    decision = decide(observed(members=unprobed))
    assert decision.kind is Kind.WAIT
    assert "slot 2 on host-n2: not probed yet" in decision.message
    assert decide(observed(members=())).kind is Kind.WAIT


def test_nodes_not_ready_names_each_with_its_state() -> None:
    assert nodes_not_ready(NODES) == ()
    nodes = {**NODES, "n2": node("n2", "down"), "n3": node("n3", "disconnected")}
    assert nodes_not_ready(nodes) == ("host-n2 (n2): down", "host-n3 (n3): disconnected")


# A member that is back is a running (healthy) task; the stack's healthcheck keeps a sealed one
# "starting". The gate: no member is stopped while another is not back, and nothing is done
# while one is not back.
SEALED = ("slot 2 on host-n2: starting",)


def test_no_restart_while_a_member_is_not_back() -> None:
    decision = decide(observed(not_back=SEALED))
    assert decision.kind is Kind.HELD
    assert decision.nodes == SEALED
    assert "slot 2 on host-n2: starting" in decision.message


def test_finished_update_with_a_member_not_back_is_not_done() -> None:
    for state in ("completed", None):
        decision = decide(observed(label=NEW, update_state=state, not_back=SEALED))
        assert decision.kind is Kind.NOT_BACK
        assert "slot 2 on host-n2" in decision.message


def test_rolling_update_with_its_new_member_starting_waits() -> None:
    decision = decide(observed(label=NEW, update_state="updating", not_back=SEALED))
    assert decision.kind is Kind.GATE


GONE = ("slot 3: no task (Swarm is replacing the member)",)


def test_no_restart_while_a_member_has_no_task_at_all() -> None:
    # The lost node's task is no longer wanted and its replacement is held back by Swarm: the
    # live nodes all have the pair, yet one member is missing (lab row 1 restarted Vault here).
    live = frozenset({"n1", "n2"})
    without = observed(vault_nodes=live, nodes={n: NODES[n] for n in live})
    assert decide(without).kind is Kind.RESTART  # what the coordinator saw before
    decision = decide(replace(without, not_back=GONE, missing=GONE))
    assert decision.kind is Kind.HELD
    assert "slot 3: no task" in decision.message


def _task(slot: int | None) -> TaskInfo:
    return TaskInfo(f"t{slot}", "svc", "n1", slot, "running", "running", None, {}, 0)


@pytest.mark.parametrize(
    ("slots", "replicas", "missing"),
    [
        ((1, 2, 3), 3, ()),
        ((1, 2, 3), None, ()),  # global mode: no replica count to compare with
        ((1, 3), 3, ("slot 2: no task (Swarm is replacing the member)",)),
        ((1, 1, 3), 3, ("slot 2: no task (Swarm is replacing the member)",)),  # old + new task
        (
            (),
            2,
            (
                "slot 1: no task (Swarm is replacing the member)",
                "slot 2: no task (Swarm is replacing the member)",
            ),
        ),
        ((4, 5), 3, ("1 of 3 members: no task (Swarm is replacing them)",)),  # slots after a scale
        ((1, 2, 3, 4), 3, ()),  # scaling down: one too many is not a missing member
    ],
)
def test_members_with_no_task_are_counted_from_the_replicas(
    slots: tuple[int, ...], replicas: int | None, missing: tuple[str, ...]
) -> None:
    assert missing_members([_task(s) for s in slots], replicas) == missing
