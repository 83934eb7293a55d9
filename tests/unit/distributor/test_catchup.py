"""Catching up a Vault replica that started before its node had the pair (pure rules)."""

from __future__ import annotations

from services.distributor.catchup import stale_replicas
from services.distributor.docker_ops import restart_edit
from services.distributor.facts import FINGERPRINT_LABEL, LocalReplica
from shared.docker_engine import apply_edit, engine_time

FP = "sha256:new"


def test_a_replica_created_for_the_pair_but_started_before_the_install_is_stale() -> None:
    replicas = [
        LocalReplica("early", FP, started_at=100.0),
        LocalReplica("late", FP, started_at=200.0),
        LocalReplica("old-restart", "sha256:old", started_at=50.0),
        LocalReplica("never-stamped", None, started_at=50.0),
    ]
    assert stale_replicas(replicas, installed=FP, installed_at=150.0) == ["early"]


def test_a_replica_from_an_older_restart_waits_for_the_coming_restart() -> None:
    # Its label names the previous pair: the coordinator's restart for FP will replace it.
    replicas = [LocalReplica("c1", "sha256:old", started_at=10.0)]
    assert stale_replicas(replicas, installed=FP, installed_at=150.0) == []


def test_each_container_is_caught_up_once_and_nothing_without_an_install() -> None:
    replicas = [LocalReplica("c1", FP, started_at=10.0)]
    assert stale_replicas(replicas, installed=FP, installed_at=20.0) == ["c1"]
    assert not stale_replicas(replicas, installed=None, installed_at=20.0)
    assert not stale_replicas(replicas, installed=FP, installed_at=None)
    assert (
        stale_replicas(replicas, installed=FP, installed_at=20.0, signalled=frozenset({"c1"})) == []
    )


def test_the_restart_stamps_the_fingerprint_on_the_containers_it_creates() -> None:
    original = {
        "Labels": {"keep": "1"},
        "TaskTemplate": {"ContainerSpec": {"Image": "vault", "Labels": {"a": "b"}}},
    }
    spec = apply_edit(original, restart_edit(FP))
    assert spec["Labels"] == {"keep": "1", FINGERPRINT_LABEL: FP}
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"] == {"a": "b", FINGERPRINT_LABEL: FP}
    assert spec["TaskTemplate"]["ForceUpdate"] == 1
    # Recording a label without a restart (adopt) must not touch the task template.
    adopted = apply_edit(original, restart_edit(FP, force=False))
    assert adopted["TaskTemplate"] == original["TaskTemplate"]


def _epoch(value: str) -> float | None:
    moment = engine_time(value)
    return moment.timestamp() if moment else None


def test_engine_times_with_nanoseconds_parse_and_zero_times_do_not() -> None:
    assert _epoch("2026-11-28T16:26:35.803120265Z") == 1795883195.80312
    assert _epoch("2026-11-28T16:26:35Z") == 1795883195.0
    assert _epoch("0001-01-01T00:00:00Z") is None
    assert _epoch("") is None
