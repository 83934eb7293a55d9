"""The verify checks as pure functions of observed facts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.verify.checks import (
    all_ok,
    check_health,
    check_installed,
    check_published,
    check_reloader_logs,
    check_replica_certificate,
    check_replica_seal,
    check_service,
    evaluate,
    unresolved_error_events,
)
from services.verify.facts import (
    CertFacts,
    DirFacts,
    HealthFacts,
    LogFacts,
    Observation,
    ReplicaFacts,
    ServiceFacts,
)
from services.verify.result import Outcome

NEW = CertFacts(
    not_after=datetime(2027, 3, 1, tzinfo=UTC), fingerprint="AA:BB:CC:" * 10 + "DD", sha256="f1"
)
OLD = CertFacts(
    not_after=datetime(2027, 1, 1, tzinfo=UTC), fingerprint="11:22:33:" * 10 + "44", sha256="f0"
)
NAMES = {
    "reloader": "iklimco_cert-reloader",
    "distributor": "iklimco_cert-distributor",
    "vault": "iklimco_vault",
    "unsealer": "iklimco_vault-unsealer",
}


def _published(cert: CertFacts = NEW) -> DirFacts:
    return DirFacts(
        label="the Storage Box manifest",
        path="/mnt/storagebox/ssl",
        cert=replace(cert, sha256=""),
        state="committed",
        generation=4,
        manifest_cert_sha256=cert.sha256,
    )


def _installed(cert: CertFacts = NEW) -> DirFacts:
    return DirFacts(label="/opt/iklimco/ssl", path="/opt/iklimco/ssl", cert=cert)


def _replica(
    n: int, *, served: CertFacts = NEW, sealed: bool = False, standby: bool | None = None
) -> ReplicaFacts:
    return ReplicaFacts(
        task_id=f"task{n}" * 4,
        node="node-1",
        address=f"10.0.1.{n}",
        served=served,
        initialized=True,
        sealed=sealed,
        standby=(n != 5) if standby is None else standby,
    )


def _healthy() -> Observation:
    return Observation(
        services=(
            ServiceFacts(NAMES["reloader"], True, "replicated", 1, 1, None),
            ServiceFacts(NAMES["distributor"], True, "global", 3, 3, "completed"),
            ServiceFacts(NAMES["vault"], True, "replicated", 2, 2, "completed"),
            ServiceFacts(NAMES["unsealer"], True, "replicated", 1, 1, None),
        ),
        reloader_logs=LogFacts(
            NAMES["reloader"],
            lines=(json.dumps({"level": "info", "event": "cert.published", "generation": 4}),),
        ),
        installed=_installed(),
        published=_published(),
        replicas=(_replica(5), _replica(6)),
        names=NAMES,
    )


def test_a_healthy_flow_passes_every_check() -> None:
    results = evaluate(_healthy(), log_tail=20, stack="iklimco")
    assert all_ok(results), [r for r in results if not r.ok]
    checks = [r.check for r in results]
    assert checks[:4] == [f"service {n}" for n in NAMES.values()]
    assert sum(c.endswith(" seal") for c in checks) == 2
    assert sum(c.endswith("certificate") for c in checks) == 2
    assert "vault cluster" in checks


@pytest.mark.parametrize(
    ("replicas", "fragment"),
    [
        ((_replica(5, standby=True), _replica(6, standby=True)), "no active member"),
        ((_replica(5, standby=False), _replica(6, standby=False)), "2 members claim"),
        ((_replica(5, sealed=True), _replica(6, sealed=True)), "no active member (2 sealed)"),
    ],
)
def test_the_cluster_needs_exactly_one_active_member(
    replicas: tuple[ReplicaFacts, ...], fragment: str
) -> None:
    obs = replace(_healthy(), replicas=replicas)
    cluster = next(
        r for r in evaluate(obs, log_tail=20, stack="iklimco") if r.check == "vault cluster"
    )
    assert not cluster.ok
    assert fragment in cluster.summary


def test_a_member_waiting_to_join_is_named_not_joined_not_uninitialized() -> None:
    joining = ReplicaFacts("t7" * 6, "node-1", "10.0.1.7", served=NEW, initialized=False)
    obs = replace(_healthy(), replicas=(_replica(5), joining))
    results = evaluate(obs, log_tail=20, stack="iklimco")
    seal = next(r for r in results if r.check == "vault 10.0.1.7 seal")
    assert "not joined" in seal.summary
    assert "never run vault-bootstrap" in seal.next_step


def test_no_results_is_not_success() -> None:
    assert not all_ok([])


def test_a_missing_service_says_how_to_deploy_it() -> None:
    result = check_service(
        ServiceFacts("iklimco_vault", found=False),
        deploy_hint="docker stack deploy -c stacks/docker-stack-vault.yml iklimco",
    )
    assert result.outcome is Outcome.FAIL
    assert "does not exist" in result.summary
    assert "docker-stack-vault.yml" in result.next_step


def test_a_missing_vault_service_points_at_the_vault_stack() -> None:
    obs = _healthy()
    obs = replace(
        obs, services=(*obs.services[:2], ServiceFacts("iklimco_vault", False), obs.services[3])
    )
    results = evaluate(obs, log_tail=20, stack="iklimco")
    vault = next(r for r in results if r.check == "service iklimco_vault")
    assert "docker-stack-vault.yml iklimco" in vault.next_step
    reloader = next(r for r in results if r.check == "service iklimco_cert-reloader")
    assert reloader.ok


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        (ServiceFacts("s", True, "replicated", 2, 1, task_errors=("no such image",)), "1/2"),
        (ServiceFacts("s", True, "replicated", 0, 0), "0/0"),
        (ServiceFacts("s", True, "replicated", 2, 2, "paused", "task x failed"), "paused"),
        (ServiceFacts("s", True, "replicated", 2, 2, "rollback_completed"), "rollback_completed"),
        (ServiceFacts("s", True, "replicated", 2, 1, "updating"), "in progress"),
        (ServiceFacts("s", False, error="connection refused"), "cannot ask"),
    ],
)
def test_a_service_that_is_not_converged_fails(facts: ServiceFacts, words: str) -> None:
    result = check_service(facts, deploy_hint="deploy")
    assert result.outcome is Outcome.FAIL
    assert words in result.summary
    assert result.next_step


ROLLING = {"certflow.rollout": "AA:NEW 2:t2", "certflow.fingerprint": "BB:OLD"}


def test_a_certflow_rollout_under_way_fails_naming_how_far_it_got() -> None:
    facts = ServiceFacts("v", True, "replicated", 3, 3, labels=ROLLING)
    result = check_service(facts, deploy_hint="")
    assert result.outcome is Outcome.FAIL
    assert "certflow rollout is in progress: 1 of 3 members restarted" in result.summary
    assert "reload check" in result.next_step


@pytest.mark.parametrize(
    "labels",
    [
        {"certflow.rollout": "AA:NEW 2:t2,1:t1,3:t3", "certflow.fingerprint": "AA:NEW"},
        {"certflow.fingerprint": "AA:NEW"},
        {},
    ],
)
def test_a_finished_or_absent_rollout_is_converged(labels: dict[str, str]) -> None:
    result = check_service(
        ServiceFacts("v", True, "replicated", 3, 3, labels=labels), deploy_hint=""
    )
    assert result.ok


def test_the_first_task_error_is_shown() -> None:
    facts = ServiceFacts("s", True, "replicated", 2, 1, task_errors=("No such image: x",))
    result = check_service(facts, deploy_hint="")
    assert "No such image: x" in result.summary
    assert "docker service ps s --no-trunc" in result.next_step


def test_error_events_finds_json_errors_and_tracebacks() -> None:
    lines = [
        json.dumps({"level": "info", "event": "cert.unchanged"}),
        json.dumps({"level": "error", "event": "cert.rejected", "error": "expired: leaf"}),
        "not json at all",
        "{broken json",
        json.dumps({"level": "warning", "event": "retry.scheduled"}),
        "Traceback (most recent call last):",
        json.dumps({"level": "CRITICAL", "event": "storage.unavailable"}),
        "",
    ]
    assert unresolved_error_events(lines) == (
        ["cert.rejected: expired: leaf", "traceback (the process crashed)", "storage.unavailable"],
        0,
    )


def test_reloader_errors_fail_the_log_check_with_the_events() -> None:
    lines = tuple(json.dumps({"level": "error", "event": f"e{i}"}) for i in range(5))
    result = check_reloader_logs(LogFacts("iklimco_cert-reloader", lines), tail=20)
    assert result.outcome is Outcome.FAIL
    assert "5 unresolved error event(s)" in result.summary
    assert "e0; e1; e2 (+2 more)" in result.summary
    assert "docker service logs iklimco_cert-reloader" in result.next_step


def test_errors_followed_by_a_recovery_are_resolved() -> None:
    def event(name: str, level: str = "info") -> str:
        return json.dumps({"level": level, "event": name, "error": f"{name} happened"})

    bad_renewals = [event("cert.rejected", "error"), event("cert.rejected", "error")]
    lines = (*bad_renewals, event("source.valid_again"), event("cert.published"))
    result = check_reloader_logs(LogFacts("r", lines), tail=20)
    assert result.outcome is Outcome.OK
    assert "2 earlier error(s) resolved" in result.summary
    # A recovery of one family does not end another: the storage error is still open.
    lines = (event("storage.unavailable", "error"), event("cert.rejected", "error"))
    result = check_reloader_logs(LogFacts("r", (*lines, event("source.valid_again"))), tail=20)
    assert result.outcome is Outcome.FAIL
    assert "1 unresolved error event(s)" in result.summary
    assert "storage.unavailable" in result.summary
    # An error after the last success is open.
    lines = (event("cert.published"), event("cert.rejected", "error"))
    assert check_reloader_logs(LogFacts("r", lines), tail=20).outcome is Outcome.FAIL
    # A publish resolves everything before it, a crash included.
    lines = ("Traceback (most recent call last):", event("cert.published"))
    assert check_reloader_logs(LogFacts("r", lines), tail=20).outcome is Outcome.OK


def test_unreadable_logs_fail() -> None:
    result = check_reloader_logs(LogFacts("r", error="service not found"), tail=20)
    assert result.outcome is Outcome.FAIL


def test_storage_box_without_a_committed_pair_fails() -> None:
    facts = DirFacts(label="sb", path="/mnt/storagebox/ssl", state="inconsistent: key differs")
    result = check_published(facts, reloader="iklimco_cert-reloader")
    assert result.outcome is Outcome.FAIL
    assert "inconsistent" in result.summary
    assert "iklimco_cert-reloader" in result.next_step


def test_unmounted_storage_box_says_to_check_the_mount() -> None:
    facts = DirFacts(label="sb", path="/mnt/storagebox/ssl", error="not a directory")
    result = check_published(facts, reloader="r")
    assert "mounted at /mnt/storagebox/ssl" in result.next_step


def test_installed_copy_must_be_the_published_bytes() -> None:
    result = check_installed(
        _installed(OLD), _published(NEW), distributor="iklimco_cert-distributor"
    )
    assert result.outcome is Outcome.FAIL
    assert "differs from the Storage Box generation 4" in result.summary
    assert "iklimco_cert-distributor" in result.next_step
    assert check_installed(_installed(NEW), _published(NEW), distributor="d").ok


def test_missing_installed_copy_fails() -> None:
    facts = DirFacts(label="/opt/iklimco/ssl", path="/opt/iklimco/ssl", error="missing")
    assert not check_installed(facts, _published(), distributor="d").ok


def test_a_sealed_replica_points_at_the_unsealer() -> None:
    result = check_replica_seal(
        _replica(5, sealed=True), vault="v", unsealer="iklimco_vault-unsealer"
    )
    assert result.outcome is Outcome.FAIL
    assert result.summary == "sealed (task task5task5ta on node-1)"
    assert "docker service logs iklimco_vault-unsealer" in result.next_step


def test_an_uninitialized_replica_points_at_bootstrap() -> None:
    replica = replace(_replica(5, sealed=True), initialized=False)
    result = check_replica_seal(replica, vault="v", unsealer="u")
    assert "vault-bootstrap" in result.next_step


def test_a_tls_failure_points_at_the_ca_setting() -> None:
    error = "TLS verification failed: unable to get local issuer certificate"
    replica = ReplicaFacts("t", "n", "10.0.1.5", error=error)
    result = check_replica_seal(replica, vault="v", unsealer="u")
    assert result.outcome is Outcome.FAIL
    assert "VERIFY_VAULT_CA_FILE" in result.next_step


def test_a_replica_serving_the_old_certificate_fails_with_both_dates() -> None:
    result = check_replica_certificate(
        _replica(5, served=OLD), _installed(), _published(), distributor="d", vault="v"
    )
    assert result.outcome is Outcome.FAIL
    assert "2027-01-01" in result.summary
    assert "2027-03-01" in result.summary
    assert "not reloaded" in result.next_step


def test_a_replica_matching_the_storage_box_but_no_installed_copy_passes_that_part() -> None:
    installed = DirFacts(label="/opt/iklimco/ssl", path="/opt/iklimco/ssl", error="missing")
    result = check_replica_certificate(
        _replica(5), installed, _published(), distributor="d", vault="v"
    )
    assert result.ok


def test_nothing_to_compare_is_a_failure() -> None:
    empty = DirFacts(label="x", path="x", error="missing")
    result = check_replica_certificate(_replica(5), empty, empty, distributor="d", vault="v")
    assert not result.ok


def test_no_vault_replica_fails() -> None:
    results = evaluate(replace(_healthy(), replicas=()), log_tail=20, stack="iklimco")
    failing = [r for r in results if not r.ok]
    assert [r.check for r in failing] == ["vault replicas"]
    assert "VERIFY_VAULT_NETWORK" in failing[0].next_step


def test_one_sealed_replica_among_two_fails_the_whole_verification() -> None:
    obs = replace(_healthy(), replicas=(_replica(5), _replica(6, sealed=True)))
    results = evaluate(obs, log_tail=20, stack="iklimco")
    assert not all_ok(results)
    assert [r.check for r in results if not r.ok] == ["vault 10.0.1.6 seal"]


# -- every certflow task's /health ----------------------------------------------------------------

_HINT = "docker stack deploy -c stacks/docker-stack-certs.yml iklimco"
_DIST = "iklimco_cert-distributor"


def _task(status: str, since: str, *problems: str, service: str = _DIST) -> HealthFacts:
    return HealthFacts(service, "n2", "10.0.0.6", status=status, since=since, problems=problems)


_STALL = "sync: failing: reading the Storage Box has not returned for 25s (since t1)"


@pytest.mark.parametrize(
    ("facts", "outcome", "words"),
    [
        (_task("ok", "t0"), Outcome.OK, ["ok"]),
        (_task("failing", "t1", _STALL), Outcome.FAIL, ["failing since t1", _STALL]),
        (
            _task("degraded", "t2", "last_check: degraded: rejected: key_mismatch", service="r"),
            Outcome.FAIL,
            ["degraded since t2", "key_mismatch"],
        ),
        (
            _task("degraded", "t3", *(f"c{i}: degraded: m{i}" for i in range(5))),
            Outcome.FAIL,
            ["c0", "c2", "(+2 more)"],
        ),
        (
            HealthFacts(_DIST, "n3", "10.0.0.8", error="ConnectTimeout: timed out"),
            Outcome.FAIL,
            ["cannot read its /health: ConnectTimeout"],
        ),
    ],
)
def test_a_certflow_task_s_health_names_what_it_says_is_wrong(
    facts: HealthFacts, outcome: Outcome, words: list[str]
) -> None:
    result = check_health(facts, certs_hint=_HINT)
    assert result.outcome is outcome
    assert result.check == f"health {facts.service} on {facts.node}"
    for word in words:
        assert word in result.summary


def test_a_task_off_the_vault_network_points_at_the_stack() -> None:
    result = check_health(
        HealthFacts(_DIST, "n1", "", error="the task has no address on the Vault network"),
        certs_hint=_HINT,
    )
    assert not result.ok
    assert _HINT in result.next_step
    assert "VERIFY_VAULT_NETWORK" in result.next_step


def test_the_health_checks_are_part_of_verify_and_an_unlisted_fleet_fails() -> None:
    obs = replace(
        _healthy(),
        health=(
            HealthFacts(_DIST, "n1", "10.0.0.5", status="ok", since="t0"),
            HealthFacts(_DIST, "n2", "10.0.0.6", status="failing", since="t1", problems=("x",)),
        ),
    )
    results = evaluate(obs, log_tail=200, stack="iklimco")
    assert [r.check for r in results if not r.ok] == [f"health {_DIST} on n2"]
    unlisted = replace(obs, health=(), health_error="engine unreachable")
    failing = [r for r in evaluate(unlisted, log_tail=200, stack="iklimco") if not r.ok]
    assert [r.check for r in failing] == ["health of the certflow services"]
