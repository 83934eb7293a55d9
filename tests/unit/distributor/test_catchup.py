"""Catching up a Vault replica that started before its node had the pair (pure rules)."""

from __future__ import annotations

from services.distributor.catchup import LocalReplica, stale_replicas
from services.distributor.coordinator import FINGERPRINT_LABEL
from services.distributor.docker_ops import _engine_time, _spec_with

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
    attrs = {
        "Spec": {
            "Labels": {"keep": "1"},
            "TaskTemplate": {"ContainerSpec": {"Image": "vault", "Labels": {"a": "b"}}},
        }
    }
    spec = _spec_with(attrs, FP)
    assert spec["Labels"] == {"keep": "1", FINGERPRINT_LABEL: FP}
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"] == {"a": "b", FINGERPRINT_LABEL: FP}
    assert spec["TaskTemplate"]["ForceUpdate"] == 1
    # Recording a label without a restart (adopt) must not touch the task template.
    adopted = _spec_with(attrs, FP, force=False)
    assert adopted["TaskTemplate"] == attrs["Spec"]["TaskTemplate"]


def test_engine_times_with_nanoseconds_parse_and_zero_times_do_not() -> None:
    assert _engine_time("2026-11-28T16:26:35.803120265Z") == 1795883195.80312
    assert _engine_time("2026-11-28T16:26:35Z") == 1795883195.0
    assert _engine_time("0001-01-01T00:00:00Z") is None
    assert _engine_time("") is None
