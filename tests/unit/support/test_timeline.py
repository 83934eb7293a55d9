"""The renewal timeline of scripts/renew, computed from synthetic sampler rounds, task records
and log events (the shapes the seal sampler, Docker and the services produce)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.support.e2e_flow import flow_from_specs
from tests.support.e2e_seal_sampler import Sample
from tests.support.timeline import (
    LogEvent,
    SlotTask,
    log_events,
    member_row,
    render,
    slot_tasks,
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
    assert "slot 1  10.0.0.12  +2.0 s     +4.0 s    +6.0 s     +4.0 s" in text


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


def _task(task_id: str, slot: int, created: str, ip: str | None) -> dict[str, object]:
    attachments = [
        {"Network": {"Spec": {"Name": "other_net"}}, "Addresses": ["10.9.9.9/24"]},
    ]
    if ip:
        attachments.append({"Network": {"Spec": {"Name": "st_vault"}}, "Addresses": [f"{ip}/24"]})
    return {"ID": task_id, "Slot": slot, "CreatedAt": created, "NetworksAttachments": attachments}


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
