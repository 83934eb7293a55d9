"""``certflow status`` as a pure function of what was observed: ok, rolling, or attention."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.verify.facts import (
    CertFacts,
    CheckFacts,
    DirFacts,
    HealthFacts,
    LogFacts,
    Observation,
    ReplicaFacts,
    ServiceFacts,
)
from services.verify.status import STUCK_AFTER, State, summarize
from services.verify.status_view import to_json, to_table
from shared.rollout import PAUSE_LABEL, Pause, pause_label

NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
NEW = CertFacts(not_after=datetime(2027, 3, 1, tzinfo=UTC), fingerprint="AA:BB:" * 15 + "CC")
OLD = CertFacts(not_after=datetime(2027, 1, 1, tzinfo=UTC), fingerprint="11:22:" * 15 + "33")
NAMES = {
    "reloader": "iklimco_cert-reloader",
    "distributor": "iklimco_cert-distributor",
    "vault": "iklimco_vault",
    "unsealer": "iklimco_vault-unsealer",
}


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def _replica(n: int, *, served: CertFacts = NEW, sealed: bool = False) -> ReplicaFacts:
    return ReplicaFacts(
        task_id=f"task{n}xxxxxxxxxxxx",
        node=f"n{n}",
        address=f"10.0.1.{n}",
        served=served,
        initialized=True,
        sealed=sealed,
        standby=None if sealed else n != 1,
    )


def _distributor(
    n: int,
    *,
    decision: str = "sync_only",
    reload_status: str = "ok",
    reload_since: float = 600,
    sync: CheckFacts | None = None,
    fingerprint: str = NEW.fingerprint,
    auth_enabled: bool = True,
) -> HealthFacts:
    checks = [
        CheckFacts("manifest_auth", "ok", "key ids k1", _ago(900), {"enabled": auth_enabled}),
        sync or CheckFacts("sync", "ok", "in_sync", _ago(900)),
        CheckFacts(
            "reload",
            reload_status,
            f"decision {decision}",
            _ago(reload_since),
            {"decision": decision, "fingerprint": fingerprint, "member": "slot 2 on n2"},
        ),
    ]
    bad = [c for c in checks if c.status != "ok"]
    status = "failing" if any(c.status == "failing" for c in bad) else "degraded" if bad else "ok"
    return HealthFacts(
        service=NAMES["distributor"],
        node=f"n{n}",
        address=f"10.0.2.{n}",
        status=status,
        since=_ago(60),
        problems=tuple(f"{c.name}: {c.status}: {c.message}" for c in bad),
        task_id=f"dist{n}xxxxxxxxxxx",
        checks=tuple(checks),
        info={
            "generation": 7,
            "fingerprint": fingerprint,
            "members": [
                {
                    "task_id": f"task{n}xxxxxxxxxxxx",
                    "serves_installed": True,
                    "trusted": True,
                    "detail": "",
                }
            ],
        },
    )


def _ok_health(name: str, n: int = 1, *, status: str = "ok") -> HealthFacts:
    problems = ("cluster: degraded: 1 member sealed",) if status != "ok" else ()
    return HealthFacts(service=name, node=f"n{n}", status=status, since=_ago(30), problems=problems)


def _observation(
    *,
    decision: str = "done",
    reload_status: str = "ok",
    reload_since: float = 600,
    replicas: tuple[ReplicaFacts, ...] | None = None,
    sync2: CheckFacts | None = None,
    unsealer_status: str = "ok",
    n2_fingerprint: str = NEW.fingerprint,
) -> Observation:
    return Observation(
        services=tuple(ServiceFacts(name, True) for name in NAMES.values()),
        reloader_logs=LogFacts(NAMES["reloader"]),
        installed=DirFacts("/opt/iklimco/ssl", "/opt/iklimco/ssl", cert=NEW),
        published=DirFacts(
            "the Storage Box manifest",
            "/mnt/storagebox/ssl",
            cert=NEW,
            state="committed",
            generation=7,
        ),
        replicas=replicas if replicas is not None else tuple(_replica(n) for n in (1, 2, 3)),
        names=NAMES,
        health=(
            _ok_health(NAMES["reloader"]),
            _distributor(
                1, decision=decision, reload_status=reload_status, reload_since=reload_since
            ),
            _distributor(2, sync=sync2, fingerprint=n2_fingerprint),
            _distributor(3),
            _ok_health(NAMES["unsealer"], status=unsealer_status),
        ),
    )


def test_everything_holding_is_ok_with_exit_0() -> None:
    status = summarize(_observation(), now=NOW)
    assert status.state is State.OK, status.reasons
    assert status.exit_code == 0
    assert status.rollout is not None
    assert status.rollout.leader == "n1"
    assert status.rollout.certificate == NEW.fingerprint
    assert [m.role for m in status.members] == ["active", "standby", "standby"]
    assert all(m.serves_published for m in status.members)
    assert all(m.gate == "proven" for m in status.members)
    assert status.trust_ok
    assert status.manifest_ok


def test_a_gate_waiting_on_a_restarted_member_is_rolling_with_exit_3() -> None:
    replicas = (_replica(1, served=OLD), _replica(2, sealed=True), _replica(3))
    obs = _observation(decision="gate", replicas=replicas, unsealer_status="degraded")
    status = summarize(obs, now=NOW)
    assert status.state is State.ROLLING, status.reasons
    assert status.exit_code == 3
    assert any("sealed" in r for r in status.reasons)
    assert any("serves another certificate" in r for r in status.reasons)


@pytest.mark.parametrize(
    ("decision", "reload_status", "since", "state"),
    [
        ("held", "degraded", 30, State.ROLLING),  # a member coming back: moving
        ("not_back", "degraded", 30, State.ROLLING),
        ("held", "degraded", STUCK_AFTER + 1, State.ATTENTION),  # waited too long: stuck
        ("halted", "failing", 30, State.ATTENTION),
        ("lagging", "failing", 30, State.ATTENTION),
        ("failed", "failing", 30, State.ATTENTION),
        ("restart", "ok", 30, State.ROLLING),
        ("wait", "ok", 30, State.ROLLING),
        ("done", "ok", 30, State.OK),
    ],
)
def test_the_rollout_decision_says_moving_or_stuck(
    decision: str, reload_status: str, since: float, state: State
) -> None:
    obs = _observation(decision=decision, reload_status=reload_status, reload_since=since)
    status = summarize(obs, now=NOW)
    assert status.state is state, status.reasons
    assert status.rollout is not None
    assert status.rollout.decision == decision
    assert status.rollout.since == _ago(since)


def test_a_halt_names_its_cause_and_since() -> None:
    obs = _observation(decision="halted", reload_status="failing", reload_since=45)
    status = summarize(obs, now=NOW)
    text = to_table(status, stack="iklimco", checked_at=NOW)
    assert "ATTENTION" in text
    assert "halted" in text
    assert _ago(45) in text


def test_a_refused_manifest_is_named_per_node() -> None:
    sync = CheckFacts(
        "sync", "failing", "Storage Box manifest refused (key id k9): bad MAC", _ago(20),
        {"reason": "bad_mac", "key_id": "k9"},
    )  # fmt: skip
    status = summarize(_observation(sync2=sync), now=NOW)
    assert status.state is State.ATTENTION
    assert not status.manifest_ok
    assert status.trust_ok
    node2 = next(n for n in status.nodes if n.node == "n2")
    assert node2.manifest.startswith(f"refused since {_ago(20)}")
    assert any(r.startswith("manifest on n2") for r in status.reasons)


def test_a_failed_trust_check_is_named_per_node() -> None:
    sync = CheckFacts(
        "sync", "failing", "committed pair refused, keeping the installed one: untrusted",
        _ago(20), {"reason": "untrusted"},
    )  # fmt: skip
    status = summarize(_observation(sync2=sync), now=NOW)
    assert status.state is State.ATTENTION
    assert not status.trust_ok
    assert status.manifest_ok
    assert any(r.startswith("trust check on n2") for r in status.reasons)


def test_no_active_member_needs_attention_even_while_rolling() -> None:
    replicas = tuple(replace(_replica(n), standby=True) for n in (1, 2, 3))
    status = summarize(_observation(decision="gate", replicas=replicas), now=NOW)
    assert status.state is State.ATTENTION
    assert any("0 active members" in r for r in status.reasons)


def test_a_sealed_member_outside_a_rollout_needs_attention() -> None:
    replicas = (_replica(1), _replica(2, sealed=True), _replica(3))
    status = summarize(_observation(replicas=replicas, unsealer_status="degraded"), now=NOW)
    assert status.state is State.ATTENTION
    assert any("sealed" in r for r in status.reasons)


def test_an_unreachable_task_needs_attention() -> None:
    obs = _observation()
    lost = HealthFacts(NAMES["distributor"], "n3", error="ConnectTimeout: timed out")
    obs = replace(obs, health=(*obs.health[:3], lost, obs.health[4]))
    status = summarize(obs, now=NOW)
    assert status.state is State.ATTENTION
    assert any("n3" in r and "unreachable" in r for r in status.reasons)


def test_a_node_behind_the_published_pair_is_rolling_only_while_the_rollout_moves() -> None:
    moving = _observation(decision="wait", n2_fingerprint=OLD.fingerprint)
    assert summarize(moving, now=NOW).state is State.ROLLING
    done = _observation(n2_fingerprint=OLD.fingerprint)
    assert summarize(done, now=NOW).state is State.ATTENTION


def test_json_carries_the_same_facts() -> None:
    status = summarize(_observation(decision="gate"), now=NOW)
    doc = json.loads(to_json(status, checked_at=NOW))
    assert doc["state"] == "rolling"
    assert doc["exit_code"] == 3
    assert doc["rollout"]["decision"] == "gate"
    assert doc["rollout"]["state"] == "rolling"
    assert len(doc["members"]) == 3
    assert {t["service"] for t in doc["tasks"]} == set(NAMES.values()) - {NAMES["vault"]}


def test_a_pause_is_shown_with_its_reason_and_exit_4() -> None:
    label = pause_label(Pause("2026-12-06T05:59:00+00:00", "raft restore", "vm"))
    obs = _observation(decision="paused", reload_status="degraded")
    services = tuple(
        replace(s, labels={PAUSE_LABEL: label}) if s.name == NAMES["distributor"] else s
        for s in obs.services
    )
    status = summarize(replace(obs, services=services), now=NOW)
    assert status.state is State.PAUSED
    assert status.exit_code == 4
    assert "since 2026-12-06T05:59:00+00:00 on vm: raft restore" in status.reasons[0]
    assert "certflow resume" in status.reasons[0]
    assert status.rollout is not None
    assert status.rollout.state is State.PAUSED
    assert to_table(status, stack="iklimco", checked_at=NOW).splitlines()[1].startswith("PAUSED")


def test_a_hold_is_timed_from_when_that_decision_began_not_from_the_checks_status() -> None:
    """After a long pause the reload check has been degraded for an hour; a hold that has just
    begun is still a rollout in progress."""
    obs = _observation(decision="held", reload_status="degraded", reload_since=3600)
    leader = obs.health[1]
    reload = leader.check("reload")
    assert reload is not None
    fresh = replace(reload, details={**reload.details, "decision_since": _ago(20)})
    checks = tuple(fresh if c.name == "reload" else c for c in leader.checks)
    obs = replace(obs, health=(obs.health[0], replace(leader, checks=checks), *obs.health[2:]))
    status = summarize(obs, now=NOW)
    assert status.state is State.ROLLING, status.reasons
    assert status.rollout is not None
    assert status.rollout.since == _ago(20)
