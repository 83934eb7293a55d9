"""The renewal timeline of scripts/renew, computed from synthetic sampler rounds, task records
and log events (the shapes the seal sampler, Docker and the services produce)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.e2e_flow import flow_from_specs
from tests.support.e2e_seal_sampler import Sample
from tests.support.timeline import (
    STEPS_AFTER_STOP,
    LogEvent,
    Marks,
    Row,
    SlotTask,
    log_events,
    member_marks,
    member_row,
    render,
    restart_gates,
    slot_tasks,
    step_durations,
    timeline,
)

T0 = 1_800_000_000.0  # the renewal starts here
OLD, NEW = "a" * 64, "b" * 64
NEW_FP = ":".join(["BB"] * 32)  # how the services log the new leaf's SHA-256
OLD_FP = ":".join(["AA"] * 32)


def up(cert: str, applied: int, *, active: bool = False, committed: int = 0) -> dict[str, object]:
    return {
        "sealed": False,
        "active": active,
        "cert": cert,
        "applied": applied,
        "committed": committed or applied,
    }


SEALED: dict[str, object] = {"sealed": True, "active": False, "cert": OLD}


def rounds(*states: tuple[float, dict[str, dict[str, object]]]) -> list[Sample]:
    return [
        Sample(
            T0 + at,
            sum(1 for s in st.values() if s.get("sealed") is False),
            st,
            sum(1 for s in st.values() if s.get("active")),
        )
        for at, st in states
    ]


def event(name: str, at: float, node: str = "vm", **fields: object) -> LogEvent:
    return LogEvent(name, T0 + at, node, {"fingerprint": NEW_FP, **fields})


def test_a_restarted_member_goes_sealed_unsealed_caught_up_and_serving() -> None:
    # Slot 1 (old 10.0.0.2, new 10.0.0.12) restarts at +2; slot 2 (10.0.0.3) is the active one.
    observed = rounds(
        (-0.5, {"10.0.0.2": up(OLD, 100), "10.0.0.3": up(OLD, 100, active=True)}),
        (1.0, {"10.0.0.2": up(OLD, 101), "10.0.0.3": up(OLD, 101, active=True)}),
        (2.5, {"10.0.0.3": up(OLD, 104, active=True)}),  # gone from DNS while it starts
        (3.0, {"10.0.0.12": SEALED, "10.0.0.3": up(OLD, 106, active=True)}),
        (4.0, {"10.0.0.12": up(NEW, 90), "10.0.0.3": up(OLD, 110, active=True)}),
        (5.0, {"10.0.0.12": up(NEW, 109), "10.0.0.3": up(OLD, 113, active=True)}),
        (6.0, {"10.0.0.12": up(NEW, 112), "10.0.0.3": up(OLD, 116, active=True)}),
    )
    task = SlotTask(1, "t1new", "10.0.0.12", "10.0.0.2", T0 + 2.0)
    row = member_row(task, observed, T0, NEW)
    assert row.restarted == 2.0
    assert row.unsealed == 4.0
    assert not row.stayed_unsealed
    # The target is the active member's commit index when slot 1 came back (110 at +4):
    # 109 at +5 is short of it, 112 at +6 reaches it.
    assert row.caught_up == 6.0
    assert row.serving == 4.0
    assert row.ip == "10.0.0.12"
    assert row.seen
    text = render(timeline(rounds=observed, tasks=[task], renewed_at=T0, leaf_sha256=NEW))
    assert "restarted" in text
    assert "signalled" not in text
    assert "answering (in DNS)  unsealed  caught up  serving new leaf" in text
    assert "slot 1  10.0.0.12  +2.0 s     +3.0 s              +4.0 s    +6.0 s     +4.0 s" in text
    assert "gate passed" not in text, "no gate column without the leader's events"


def test_a_member_that_never_catches_up_has_no_caught_up_time() -> None:
    observed = rounds(
        (1.0, {"10.0.0.3": up(OLD, 50, active=True)}),
        (3.0, {"10.0.0.12": up(NEW, 10), "10.0.0.3": up(OLD, 55, active=True)}),
        (4.0, {"10.0.0.12": up(NEW, 12), "10.0.0.3": up(OLD, 60, active=True)}),
    )
    row = member_row(SlotTask(1, "t", "10.0.0.12", "10.0.0.2", T0 + 2.0), observed, T0, NEW)
    assert row.unsealed == 1.0 + 2.0  # first seen at +3, unsealed (a new task started sealed)
    assert row.caught_up is None
    assert row.serving == 3.0


def test_a_sealed_member_is_not_caught_up_even_with_a_high_index() -> None:
    observed = rounds(
        (3.0, {"10.0.0.12": SEALED, "10.0.0.3": up(OLD, 50, active=True)}),
        (4.0, {"10.0.0.12": {**SEALED, "applied": 99}, "10.0.0.3": up(OLD, 50, active=True)}),
    )
    row = member_row(SlotTask(1, "t", "10.0.0.12", "10.0.0.2", T0 + 2.0), observed, T0, NEW)
    assert (row.unsealed, row.caught_up, row.serving) == (None, None, None)
    assert row.seen


def test_signal_mode_members_stay_unsealed_and_serve_after_their_signal() -> None:
    # No restarts; the distributor signals slot 1 (the canary) at +1, slot 2 at +3.
    observed = rounds(
        (0.5, {"10.0.0.2": up(OLD, 20, active=True), "10.0.0.3": up(OLD, 20)}),
        (1.5, {"10.0.0.2": up(NEW, 21, active=True), "10.0.0.3": up(OLD, 21)}),
        (3.5, {"10.0.0.2": up(NEW, 22, active=True), "10.0.0.3": up(NEW, 22)}),
    )
    tasks = [
        SlotTask(1, "t1", "10.0.0.2", "10.0.0.2", None),
        SlotTask(2, "t2", "10.0.0.3", "10.0.0.3", None),
    ]
    events = [
        event("cert.published", 0.5, node="vm", generation=5),
        event("cert.installed", 0.75, node="vm", generation=5),
        event("vault.signalled", 1.0, slot=1, canary=True),
        event("vault.signalled", 3.0, slot=2, canary=False),
    ]
    result = timeline(
        rounds=observed, tasks=tasks, renewed_at=T0, leaf_sha256=NEW, generation=5, events=events
    )
    one, two = result.rows
    assert (one.restarted, one.signalled, one.serving) == (None, 1.0, 1.5)
    assert one.stayed_unsealed
    assert (two.signalled, two.stayed_unsealed, two.serving) == (3.0, True, 3.5)
    assert one.unsealed is None
    assert one.caught_up == 1.5
    assert two.caught_up == 3.5
    assert result.published == 0.5
    assert result.installed == {"vm": 0.75}
    text = render(result)
    assert "stayed" in text
    assert "installed on node vm" in text
    assert "signalled" in text
    assert "restarted" not in text, "signal mode restarts nothing: no such column"


def test_a_member_missing_from_the_rounds_is_shown_as_never_seen() -> None:
    observed = rounds((1.0, {"10.0.0.3": up(NEW, 5, active=True)}))
    result = timeline(
        rounds=observed,
        tasks=[SlotTask(3, "t3", "10.0.0.9", "10.0.0.4", T0 + 0.5)],
        renewed_at=T0,
        leaf_sha256=NEW,
    )
    (row,) = result.rows
    assert not row.seen
    assert (row.unsealed, row.caught_up, row.serving) == (None, None, None)
    assert row.restarted == 0.5
    assert "never seen" in result.render()
    assert "no cert.installed event seen" in result.render()


def test_events_about_another_leaf_or_before_the_renewal_do_not_count() -> None:
    events = [
        event("cert.published", -5.0, generation=6),
        event("cert.published", 1.0, generation=5, fingerprint=OLD_FP),
        event("cert.published", 2.0, generation=6),
        event("cert.installed", 2.5, node="a", fingerprint=OLD_FP),
        event("cert.installed", 3.0, node="a", generation=6),
        event("cert.installed", 4.0, node="b", generation=6),
        event("cert.installed", 9.0, node="a", generation=6),
        event("vault.signalled", 5.0, slot=1, fingerprint=OLD_FP),
        event("vault.signalled", 6.0, slot=None),
    ]
    result = timeline(
        rounds=[], tasks=[], renewed_at=T0, leaf_sha256=NEW, generation=2, events=events
    )
    assert result.published == 2.0
    assert result.manifest_generation == 6
    assert result.installed == {"a": 3.0, "b": 4.0}
    text = result.render()
    assert "certbot generation 2" in text
    assert "+2.0 s (manifest 6)" in text
    rows = timeline(
        rounds=[],
        tasks=[SlotTask(1, "t1", "10.0.0.2", "10.0.0.2", None)],
        renewed_at=T0,
        leaf_sha256=NEW,
        events=events,
    ).rows
    assert rows[0].signalled is None


def _task(
    task_id: str, slot: int, created: str, ip: str | None, status: dict[str, str] | None = None
) -> dict[str, object]:
    attachments = [
        {"Network": {"Spec": {"Name": "other_net"}}, "Addresses": ["10.9.9.9/24"]},
    ]
    if ip:
        attachments.append({"Network": {"Spec": {"Name": "st_vault"}}, "Addresses": [f"{ip}/24"]})
    return {
        "ID": task_id,
        "Slot": slot,
        "CreatedAt": created,
        "NetworksAttachments": attachments,
        "Status": status or {},
    }


def test_slot_tasks_pairs_each_slots_old_and_new_task() -> None:
    since = datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC).timestamp()
    by_slot = {
        1: [
            _task("old1", 1, "2026-12-06T05:00:00.123456789Z", "10.0.0.2"),
            _task("new1", 1, "2026-12-06T06:00:04.500000000Z", "10.0.0.12"),
        ],
        2: [_task("only2", 2, "2026-12-06T05:00:00Z", "10.0.0.3")],
        3: [
            _task("old3", 3, "2026-12-06T05:00:00Z", "10.0.0.4"),
            _task("crash3", 3, "2026-12-06T06:00:08Z", None),
            _task("new3", 3, "2026-12-06T06:00:20Z", "10.0.0.14"),
        ],
    }
    one, two, three = slot_tasks(by_slot, "st_vault", since)
    assert one == SlotTask(1, "new1", "10.0.0.12", "10.0.0.2", since + 4.5)
    assert two == SlotTask(2, "only2", "10.0.0.3", "10.0.0.3", None)
    assert three == SlotTask(3, "new3", "10.0.0.14", "10.0.0.4", since + 8.0)


def test_log_events_reads_json_lines_and_skips_the_rest() -> None:
    line = json.dumps(
        {"event": "cert.installed", "time": "2026-12-06T06:00:01.250000Z", "node": "vm",
         "service": "distributor", "generation": 4}
    )  # fmt: skip
    lines = [
        "not json at all",
        '{"event": 5, "time": "2026-12-06T06:00:00Z"}',
        '{"event": "x", "time": "yesterday"}',
        "[1, 2]",
        "task.1.abc@vm | " + line,
    ]
    (found,) = log_events(lines)
    assert found.event == "cert.installed"
    assert found.node == "vm"
    assert found.t == datetime(2026, 12, 6, 6, 0, 1, 250000, tzinfo=UTC).timestamp()
    assert found.fields["generation"] == 4


def test_the_deployed_flow_is_rebuilt_from_its_service_specs() -> None:
    distributor = {
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "certflow:local",
                "Env": ["DISTRIBUTOR_RELOAD_MODE=signal", "NOEQUALS", "X=a=b"],
            }
        }
    }
    vault = {
        "Mode": {"Replicated": {"Replicas": 5}},
        "TaskTemplate": {"ContainerSpec": {"Image": "certflow-openbao:local"}},
        "EndpointSpec": {"Ports": [{"TargetPort": 8200, "PublishedPort": 18200}]},
    }
    flow = flow_from_specs("st", Path("/tmp/x/st"), distributor, vault)
    assert (flow.image, flow.vault_image) == ("certflow:local", "certflow-openbao:local")
    assert (flow.reload_mode, flow.vault_replicas, flow.published_port) == ("signal", 5, 18200)
    assert flow.keep_acme
    assert flow.pebble_dir == Path("/tmp/x/st/pebble")


def _running(at: str) -> dict[str, str]:
    return {"State": "running", "Timestamp": at, "Message": "started"}


def test_slot_tasks_takes_task_running_from_the_newest_tasks_status() -> None:
    since = datetime(2026, 12, 6, 6, 0, 0, tzinfo=UTC).timestamp()
    by_slot = {
        # Restarted and running: its status timestamp is when it reached running.
        1: [
            _task("old1", 1, "2026-12-06T05:00:00Z", "10.0.0.2", {"State": "complete"}),
            _task(
                "new1", 1, "2026-12-06T06:00:04Z", "10.0.0.12", _running("2026-12-06T06:00:11.5Z")
            ),
        ],
        # Restarted, still starting (not healthy yet): not running.
        2: [
            _task("old2", 2, "2026-12-06T05:00:00Z", "10.0.0.3", {"State": "shutdown"}),
            _task("new2", 2, "2026-12-06T06:00:20Z", "10.0.0.13", {"State": "starting"}),
        ],
        # Not restarted: its running status is from before the renewal, not a step of it.
        3: [
            _task("only3", 3, "2026-12-06T05:00:00Z", "10.0.0.4", _running("2026-12-06T05:00:09Z"))
        ],
        # Restarted twice: the newest task's (the one whose address the row follows).
        4: [
            _task("old4", 4, "2026-12-06T05:00:00Z", "10.0.0.5", {"State": "shutdown"}),
            _task("crash4", 4, "2026-12-06T06:00:08Z", None, {"State": "failed"}),
            _task("new4", 4, "2026-12-06T06:00:20Z", "10.0.0.15", _running("2026-12-06T06:00:31Z")),
        ],
    }
    found = {t.slot: t.running_at for t in slot_tasks(by_slot, "st_vault", since)}
    assert found == {1: since + 11.5, 2: None, 3: None, 4: since + 31.0}


def test_answering_is_the_first_round_the_new_address_answered_sealed_or_not() -> None:
    observed = rounds(
        (1.0, {"10.0.0.2": up(OLD, 5)}),  # the old address, before the restart
        (2.5, {"10.0.0.12": {"error": "ConnectionRefusedError"}}),  # in DNS, not listening
        (3.0, {"10.0.0.12": SEALED}),
        (4.0, {"10.0.0.12": up(NEW, 9)}),
    )
    row = member_row(SlotTask(1, "t", "10.0.0.12", "10.0.0.2", T0 + 2.0), observed, T0, NEW)
    assert (row.answering, row.unsealed) == (3.0, 4.0)
    never = member_row(SlotTask(1, "t", "10.0.0.12", "10.0.0.2", T0 + 2.0), observed[:2], T0, NEW)
    assert never.seen
    assert never.answering is None


def test_member_row_carries_the_logged_marks_and_task_running() -> None:
    task = SlotTask(2, "t", "10.0.0.13", "10.0.0.3", T0 + 4.0, running_at=T0 + 11.0)
    marks = Marks(stopped=T0 + 3.0, gate=T0 + 20.0)
    row = member_row(task, [], T0, NEW, marks)
    assert (row.stopped, row.stop, row.restarted, row.running, row.gate) == (
        3.0,
        3.0,
        4.0,
        11.0,
        20.0,
    )
    assert not row.canary


def a_row(
    slot: int = 1,
    *,
    stopped: float | None = None,
    signalled: float | None = None,
    restarted: float | None = None,
    running: float | None = None,
    answering: float | None = None,
    unsealed: float | None = None,
    caught_up: float | None = None,
    serving: float | None = None,
    gate: float | None = None,
    canary: bool = False,
) -> Row:
    """A timeline row with the steps given (seconds after the renewal); a signalled member
    stayed unsealed. Also used by test_rollout_report."""
    return Row(
        slot=slot,
        ip=None,
        restarted=restarted,
        signalled=signalled,
        unsealed=unsealed,
        stayed_unsealed=signalled is not None,
        caught_up=caught_up,
        serving=serving,
        seen=True,
        stopped=stopped,
        running=running,
        answering=answering,
        gate=gate,
        canary=canary,
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # Restart mode, every step seen: stop 3, new task 4, running 11, answering 11.5,
        # unsealed 12, caught up 13, gate 19.
        (
            a_row(
                stopped=3.0,
                restarted=4.0,
                running=11.0,
                answering=11.5,
                unsealed=12.0,
                caught_up=13.0,
                gate=19.0,
            ),
            [1.0, 7.0, 0.5, 0.5, 1.0, 6.0],
        ),
        # Signal mode: no new task, stayed unsealed; answering and caught up count from the
        # SIGHUP, the canary's gate (proven) from caught up.
        (
            a_row(signalled=5.0, answering=5.25, caught_up=5.5, gate=6.0),
            [None, None, 0.25, None, 0.25, 0.5],
        ),
        # A step not seen (the member never unsealed in the rounds): skipped over.
        (
            a_row(stopped=3.0, restarted=4.0, running=11.0, answering=12.0, gate=40.0),
            [1.0, 7.0, 1.0, None, None, 28.0],
        ),
        # No stop logged: nothing counts from it, the later steps from each other.
        (a_row(restarted=4.0, running=11.0), [None, 7.0, None, None, None, None]),
        # Nothing at all.
        (a_row(), [None] * 6),
    ],
)
def test_step_durations_count_from_the_latest_earlier_step(
    row: Row, expected: list[float | None]
) -> None:
    assert len(STEPS_AFTER_STOP) == len(expected)
    assert step_durations(row) == expected


def _plain(name: str, at: float, **fields: object) -> LogEvent:
    return LogEvent(name, T0 + at, "vm", dict(fields))


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # Three members in order: each gate passes at the next first order, the last one's when
        # the rollout is recorded (adopt); a resent order and earlier decisions do not count.
        (
            [
                _plain("vault.reload", 1.0, decision="wait"),
                _plain("vault.stop_ordered", 2.0, slot=2, again=False, status=202),
                _plain("vault.reload", 2.1, decision="gate"),
                _plain("vault.stop_ordered", 12.0, slot=2, again=True, status=202),
                _plain("vault.stop_ordered", 20.0, slot=3, again=False, status=202),
                _plain("vault.stop_ordered", 40.0, slot=1, again=False, status=202),
                _plain("vault.reload", 58.0, decision="adopt"),
                _plain("vault.reload", 60.0, decision="done"),
            ],
            {2: T0 + 20.0, 3: T0 + 40.0, 1: T0 + 58.0},
        ),
        # A "done" before the last order is the previous state, not this rollout's end; an
        # order not delivered (status 0) is still the leader's decision that the gate opened.
        (
            [
                _plain("vault.reload", 0.5, decision="done"),
                _plain("vault.stop_ordered", 2.0, slot=1, again=False, status=0),
                _plain("vault.stop_ordered", 9.0, slot=2, again=False, status=202),
            ],
            {1: T0 + 9.0},
        ),
        # Signal mode: no orders, no gates here.
        ([_plain("vault.reload", 3.0, decision="done")], {}),
        ([], {}),
    ],
)
def test_restart_gates(events: list[LogEvent], expected: dict[int, float]) -> None:
    assert restart_gates(events) == expected


def test_member_marks_reads_stops_signals_and_the_canarys_proof_of_this_leaf() -> None:
    events = [
        event("vault.member_stopped", -3.0, slot=1, signal="SIGTERM"),  # before the renewal
        event("vault.member_stopped", 4.0, slot=1, signal="SIGTERM", fingerprint=OLD_FP),
        event("vault.member_stopped", 5.0, slot=1, signal="SIGTERM"),
        event("vault.member_stopped", 26.0, slot=1, signal="SIGKILL"),  # the order came again
        event("vault.signalled", 7.0, slot=2, canary=True),
        event("vault.canary_proven", 7.75, slot=2),
        event("vault.signalled", 8.0, slot=3, canary=False),
        event("vault.canary_proven", 8.5, slot=3),  # not the canary: no gate of its own
        _plain("vault.stop_ordered", 4.5, slot=1, again=False),
        _plain("vault.reload", 30.0, decision="adopt"),
    ]
    marks = member_marks(events, T0, NEW)
    assert marks == {
        1: Marks(stopped=T0 + 5.0, gate=T0 + 30.0),
        2: Marks(signalled=T0 + 7.0, gate=T0 + 7.75, canary=True),
        3: Marks(signalled=T0 + 8.0),
    }


def test_a_restart_mode_timeline_shows_every_step_and_the_gates() -> None:
    observed = rounds(
        (0.5, {"10.0.0.2": up(OLD, 10), "10.0.0.3": up(OLD, 10, active=True)}),
        (10.0, {"10.0.0.12": SEALED, "10.0.0.3": up(OLD, 12, active=True)}),
        (10.5, {"10.0.0.12": up(NEW, 12), "10.0.0.3": up(OLD, 12, active=True)}),
    )
    tasks = [
        SlotTask(1, "n1", "10.0.0.12", "10.0.0.2", T0 + 3.0, running_at=T0 + 9.5),
        SlotTask(2, "o2", "10.0.0.3", "10.0.0.3", None),
    ]
    events = [
        _plain("vault.stop_ordered", 1.5, slot=1, again=False),
        event("vault.member_stopped", 2.0, slot=1),
        _plain("vault.stop_ordered", 18.0, slot=2, again=False),
    ]
    result = timeline(rounds=observed, tasks=tasks, renewed_at=T0, leaf_sha256=NEW, events=events)
    one = result.rows[0]
    assert (one.stop, one.restarted, one.running, one.answering, one.unsealed) == (
        2.0,
        3.0,
        9.5,
        10.0,
        10.5,
    )
    assert one.gate == 18.0
    assert result.canary_proven_after is None
    text = render(result)
    header = next(line for line in text.splitlines() if "member" in line)
    assert re.split(r" {2,}", header.strip()) == [
        "member",
        "address",
        "stopped",
        "restarted",
        "task running",
        "answering (in DNS)",
        "unsealed",
        "caught up",
        "serving new leaf",
        "gate passed",
    ]
    assert "slot 1  10.0.0.12  +2.0 s   +3.0 s     +9.5 s        +10.0 s" in text


def test_the_canary_is_proven_this_long_after_its_sighup() -> None:
    observed = rounds((1.5, {"10.0.0.2": up(NEW, 21, active=True)}))
    events = [
        event("vault.signalled", 1.0, slot=1, canary=True),
        event("vault.canary_proven", 1.75, slot=1),
    ]
    result = timeline(
        rounds=observed,
        tasks=[SlotTask(1, "t1", "10.0.0.2", "10.0.0.2", None)],
        renewed_at=T0,
        leaf_sha256=NEW,
        events=events,
    )
    (row,) = result.rows
    assert (row.canary, row.signalled, row.gate) == (True, 1.0, 1.75)
    assert result.canary_proven_after == 0.75
    assert "gate passed" in result.render()
