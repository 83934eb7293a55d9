"""Exactly one restart per member per certificate, of a (stand-in) Vault service on a real swarm.

The coordinator stops the member's container through its node's distributor (here: itself, one
node) and Swarm's restart policy starts it again; no Swarm service update is involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from services.distributor.coordinator import Kind
from services.distributor.docker_ops import record_fingerprint
from services.distributor.service import Distributor
from shared.docker_engine import DockerPyEngine
from shared.rollout import FINGERPRINT_LABEL, ROLLOUT_LABEL
from tests.support.boxes import make_pair, publish
from tests.support.pki import CA

from .conftest import Fleet, StandIns, running_tasks, service_state, wait_for, wait_update_done

REPO = Path(__file__).resolve().parents[3]


def converge(
    dist: Distributor, timeout: float = 120.0, *, also: tuple[Distributor, ...] = ()
) -> list[Kind]:
    """Run passes until the coordinator says DONE; the kinds it went through. ``also``: other
    distributors of this node whose reports the coordinator reads (they probe the members)."""
    seen: list[Kind] = []

    def done() -> bool:
        for other in also:
            other.reload_pass()
            other.sync_pass()
        dist.sync_pass()
        dist.reload_pass()
        check = dist.health.check("reload")
        kind = Kind(check.details["decision"]) if check and "decision" in check.details else None
        if kind is not None and (not seen or seen[-1] is not kind):
            seen.append(kind)
        return kind is Kind.DONE

    wait_for("coordinator done", done, timeout)
    return seen


def started(hup_dir: Path) -> int:
    """How many containers the stand-in service has started (one file each)."""
    return len(list(hup_dir.glob("started-*")))


def stops(dist: Distributor) -> float:
    return sum(
        sample.value
        for metric in dist.metrics.registry.collect()
        if metric.name == "certflow_distributor_stop_orders"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == "stopped"
    )


def test_one_restart_per_member_per_certificate(
    standins: StandIns, fleet: Fleet, tmp_path: Path
) -> None:
    vault, hup_dir = standins.service()
    ca = CA()
    first = make_pair(ca, 1)
    publish(tmp_path / "box", first)
    dist, _ = fleet.distributor(vault)
    before = service_state(fleet.client, vault)
    kinds = converge(dist)
    # Restart, then the gate (the member is stopped, started again, probed), then recorded.
    assert Kind.RESTART in kinds
    assert kinds.index(Kind.RESTART) < kinds.index(Kind.GATE) < kinds.index(Kind.DONE)
    assert Kind.ADOPT in kinds
    assert kinds[-1] is Kind.DONE
    state = service_state(fleet.client, vault)
    assert started(hup_dir) == 2  # the member was really stopped and started again
    assert stops(dist) == 1
    assert state.force_update == before.force_update  # no Swarm update at all
    assert state.labels[FINGERPRINT_LABEL] == first.manifest.fingerprint
    assert state.labels[ROLLOUT_LABEL].startswith(first.manifest.fingerprint + " 1:")
    swarm = dist.health.check("swarm")  # the coordinator watches the nodes for the operator
    assert swarm is not None
    assert (swarm.status.value, swarm.message) == ("ok", "every node ready")
    # More passes with the same certificate change nothing.
    for _ in range(3):
        dist.sync_pass()
        dist.reload_pass()
    assert started(hup_dir) == 2
    # A renewal: exactly one more.
    second = make_pair(ca, 2)
    publish(tmp_path / "box", second)
    converge(dist)
    state = service_state(fleet.client, vault)
    assert started(hup_dir) == 3
    assert state.labels[FINGERPRINT_LABEL] == second.manifest.fingerprint
    assert dist.metrics.restarts._value.get() == 2


def test_three_coordinators_racing_restart_once(
    standins: StandIns, fleet: Fleet, tmp_path: Path
) -> None:
    vault, hup_dir = standins.service()
    publish(tmp_path / "box", make_pair(CA(), 1))
    first, url = fleet.distributor(vault, name="d0")
    others = [fleet.distributor(vault, name=f"d{i}", peer=url)[0] for i in (1, 2)]
    racers = [first, *others]
    for dist in racers:
        dist.sync_pass()
    start = threading.Barrier(len(racers))
    errors: list[BaseException] = []

    def race(dist: Distributor) -> None:
        try:
            start.wait()
            converge(dist)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(d,)) for d in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert started(hup_dir) == 2
    assert sum(d.metrics.restarts._value.get() for d in racers) == 1


def test_coordinator_killed_mid_flight_does_not_restart_twice(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, hup_dir = standins.service(certs_from="reporter")
    pair = make_pair(CA(), 1)
    publish(tmp_path / "box", pair)
    reporter, url = fleet.distributor(vault, name="reporter", mode="none")

    def reporter_probed() -> bool:
        # The coordinator decides only on probed members: the node's report must carry one.
        reporter.sync_pass()
        reporter.reload_pass()  # probes the local members
        reporter.sync_pass()  # and publishes them in /health
        return bool(reporter.members)

    wait_for("the reporter to probe the Vault member", reporter_probed)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.distributor.coordinator_proc",
            str(tmp_path / "box"),
            str(tmp_path / "crashing"),
            vault,
            url,
        ],
        cwd=REPO,
        env={**os.environ, "LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
    )
    try:
        # Kill -9 as soon as the stop order is recorded, before or just after it is carried out.
        wait_for(
            "stop order recorded",
            lambda: ROLLOUT_LABEL in service_state(client, vault).labels,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    successor, _ = fleet.distributor(vault, name="successor", peer=url)
    kinds = converge(successor, also=(reporter,))
    assert Kind.RESTART not in kinds
    assert started(hup_dir) == 2
    assert successor.metrics.restarts._value.get() == 0


def test_out_of_sequence_conflict_is_retried_with_a_fresh_version(
    standins: StandIns, client: Any
) -> None:
    vault, _ = standins.service()
    stale = service_state(client, vault)
    before = stale
    # A concurrent writer (an operator, a stack deploy) changes the service after we looked.
    fresh = client.services.get(vault).attrs
    client.api.update_service(
        fresh["ID"],
        fresh["Version"]["Index"],
        task_template=fresh["Spec"]["TaskTemplate"],
        name=fresh["Spec"]["Name"],
        labels={**fresh["Spec"].get("Labels", {}), "concurrent": "yes"},
        mode=fresh["Spec"]["Mode"],
        update_config=fresh["Spec"].get("UpdateConfig"),
        fetch_current_spec=False,
    )
    outcome = record_fingerprint(DockerPyEngine(client), vault, "FP:1", observed=stale)
    assert outcome.posted
    assert outcome.conflicts == 1
    after = service_state(client, vault)
    assert after.force_update == before.force_update  # a label: no task replaced
    assert after.labels[FINGERPRINT_LABEL] == "FP:1"
    assert after.labels["concurrent"] == "yes"  # the other writer's change survived
    # A second coordinator with the same stale view: conflict, then sees the label, no write.
    again = record_fingerprint(DockerPyEngine(client), vault, "FP:1", observed=stale)
    assert not again.posted
    assert service_state(client, vault).version == after.version


def _decision(dist: Distributor) -> str | None:
    dist.sync_pass()
    dist.reload_pass()
    check = dist.health.check("reload")
    return None if check is None else check.details.get("decision")


def test_an_operators_paused_update_holds_every_restart_naming_it(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, hup_dir = standins.service()
    (hup_dir / "fail").touch()  # the operator's update starts a task that exits 1: it pauses
    client.services.get(vault).force_update()
    wait_for("update paused", lambda: service_state(client, vault).update_state == "paused", 120)
    (hup_dir / "fail").unlink()
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist, _ = fleet.distributor(vault)
    wait_for("held", lambda: _decision(dist) == Kind.FAILED.value, 60)
    check = dist.health.check("reload")
    assert check is not None
    assert check.status.value == "failing"
    assert "vault's own update is paused" in check.message
    assert "failure or early termination" in check.message
    for _ in range(3):
        assert _decision(dist) == Kind.FAILED.value
    assert dist.metrics.restarts._value.get() == 0
    assert stops(dist) == 0


def test_a_member_that_does_not_come_back_halts_the_rollout_and_is_stopped_once(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, hup_dir = standins.service(replicas=2)
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist, _ = fleet.distributor(vault, member_bound=5.0)
    (hup_dir / "fail").touch()  # a stopped member cannot start again: Swarm retries it
    wait_for("halted", lambda: _decision(dist) == Kind.HALTED.value, 120)
    check = dist.health.check("reload")
    assert check is not None
    assert check.status.value == "failing"
    assert "halted" in check.message
    assert "the members not restarted yet keep serving" in check.message
    assert stops(dist) == 1  # the other member was left alone
    assert len(running_tasks(client, vault)) == 1
    (hup_dir / "fail").unlink()  # the cause goes away; the restart policy brings it up
    wait_for("coordinator done", lambda: _decision(dist) == Kind.DONE.value, 180)
    assert stops(dist) == 2  # then the second member, once
    assert dist.metrics.restarts._value.get() == 2
    wait_for("both members running", lambda: len(running_tasks(client, vault)) == 2)


def test_node_lagging_past_timeout_is_failing_and_vault_is_not_restarted(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, hup_dir = standins.service()
    ca = CA()
    publish(tmp_path / "old-box", make_pair(ca, 1))  # what the lagging node still sees
    publish(tmp_path / "box", make_pair(ca, 2))
    lagging, url = fleet.distributor(vault, mode="none", name="lagging", box="old-box")
    lagging.sync_pass()
    leader, _ = fleet.distributor(vault, name="leader", peer=url, lag_timeout=0.5)

    def blocked() -> bool:
        leader.sync_pass()
        leader.reload_pass()
        check = leader.health.check("reload")
        return check is not None and check.details.get("decision") == Kind.LAGGING.value

    wait_for("lagging reported", blocked, 30)
    check = leader.health.check("reload")
    assert check is not None
    assert check.status.value == "failing"
    node = lagging.health.snapshot()["info"]["node_id"]
    assert node in check.message
    assert "has generation 1" in check.message
    after = service_state(client, vault)
    assert FINGERPRINT_LABEL not in after.labels
    assert ROLLOUT_LABEL not in after.labels
    assert started(hup_dir) == 1


def test_stack_redeploy_that_drops_the_label_does_not_restart_vault_again(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, hup_dir = standins.service()
    pair = make_pair(CA(), 1)
    publish(tmp_path / "box", pair)
    dist, _ = fleet.distributor(vault)
    converge(dist)
    assert dist.metrics.restarts._value.get() == 1
    # What `docker stack deploy` does: the whole spec is replaced with the compose file's labels
    # (ours are gone), ForceUpdate is copied, and a changed setting rolls the tasks.
    attrs = client.services.get(vault).attrs
    spec = attrs["Spec"]
    template = spec["TaskTemplate"]
    template["ContainerSpec"]["Env"] = [*template["ContainerSpec"].get("Env", []), "REDEPLOYED=1"]
    client.api.update_service(
        attrs["ID"],
        attrs["Version"]["Index"],
        task_template=template,
        name=spec["Name"],
        labels={"certflow.test": "distributor"},
        mode=spec["Mode"],
        update_config=spec.get("UpdateConfig"),
        fetch_current_spec=False,
    )
    wait_update_done(client, vault)
    redeployed = service_state(client, vault)
    assert FINGERPRINT_LABEL not in redeployed.labels
    tasks_started = started(hup_dir)
    kinds = converge(dist)
    assert Kind.ADOPT in kinds
    assert Kind.RESTART not in kinds
    after = service_state(client, vault)
    assert after.force_update == redeployed.force_update
    assert after.labels[FINGERPRINT_LABEL] == pair.manifest.fingerprint
    assert dist.metrics.restarts._value.get() == 1
    assert dist.metrics.adoptions._value.get() == 2  # after the restart, and after the deploy
    assert started(hup_dir) == tasks_started  # no task was replaced
