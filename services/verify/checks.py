"""The runbook's Verification section as pure checks: observed facts in, results out.

Each result says what holds or what does not, and for a failure what to look at next (a command an
operator can paste). Nothing here talks to Docker, the filesystem or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from services.verify.consumer_checks import check_consumers
from services.verify.facts import (
    CertFacts,
    DirFacts,
    HealthFacts,
    LogFacts,
    Observation,
    ReplicaFacts,
    ServiceFacts,
)
from services.verify.result import Result, short
from services.verify.result import failed as _fail
from services.verify.result import passed as _ok
from shared.rollout import pause_from_labels, rollout_in_progress
from shared.swarm import FAILED_UPDATE_STATES

_ERROR_LEVELS = frozenset({"error", "critical", "fatal", "exception"})
_SHOWN_ERRORS = 3


def describe(cert: CertFacts) -> str:
    return f"notAfter {cert.not_after.isoformat()} sha256 {short(cert.fingerprint)}"


# -- services -----------------------------------------------------------------------------------


def check_service(facts: ServiceFacts, *, deploy_hint: str) -> Result:
    check = f"service {facts.name}"
    ps = f"docker service ps {facts.name} --no-trunc"
    if facts.error:
        return _fail(
            check,
            f"cannot ask the Docker engine: {facts.error}",
            "run verify on a swarm manager (or set DOCKER_HOST to one)",
        )
    if not facts.found:
        return _fail(check, "service does not exist", deploy_hint)
    counts = f"{facts.running}/{facts.desired} tasks running"
    details: dict[str, Any] = {
        "mode": facts.mode,
        "running": facts.running,
        "desired": facts.desired,
        "update_state": facts.update_state,
    }
    if facts.update_state in FAILED_UPDATE_STATES:
        return _fail(
            check,
            f"update {facts.update_state}: {facts.update_message or 'no message'} ({counts})",
            f"{ps}; fix the failing task, then docker service update --force {facts.name}",
            **details,
        )
    if facts.update_state == "updating":
        return _fail(
            check,
            f"a rolling update is in progress ({counts})",
            f"wait for it (docker service ps {facts.name}) and run certflow verify again",
            **details,
        )
    rollout = rollout_in_progress(facts.labels)
    underway = ""
    if rollout is not None:
        fingerprint, orders = rollout
        underway = (
            f"a certflow rollout is in progress: {len(orders)} of {facts.desired} members "
            f"restarted so far for certificate sha256 {short(fingerprint)}"
        )
    if facts.desired == 0 or facts.running < facts.desired:
        why = f"; last task error: {facts.task_errors[0]}" if facts.task_errors else ""
        also = f"; {underway}" if underway else ""
        return _fail(check, f"not converged: {counts}{why}{also}", ps, **details)
    if underway:
        return _fail(
            check,
            f"{underway} ({counts})",
            "the leader distributor's /health (reload check) says what it waits for; run "
            "certflow verify again once it is done",
            **details,
        )
    return _ok(check, f"converged: {counts}", **details)


# -- reloader logs ------------------------------------------------------------------------------


# A later event of these names shows the problem behind earlier errors is over: a publish means the
# whole pipeline worked again; the others end their own family of errors.
_RESOLVED_BY: dict[str, frozenset[str]] = {
    "cert.published": frozenset({"*"}),
    "source.valid_again": frozenset({"cert.rejected", "source.unreadable"}),
    "storage.available": frozenset({"storage.unavailable"}),
}


def unresolved_error_events(lines: Iterable[str]) -> tuple[list[str], int]:
    """Error events not followed by an event that ends them; and how many were so resolved."""
    open_errors: list[tuple[str, str]] = []
    resolved = 0
    for name, text in _errors(lines, with_recoveries=True):
        ends = _RESOLVED_BY.get(name)
        if ends is None:
            open_errors.append((name, text))
            continue
        keep = [(n, t) for n, t in open_errors if "*" not in ends and n not in ends]
        resolved += len(open_errors) - len(keep)
        open_errors = keep
    return [text for _, text in open_errors], resolved


def _errors(lines: Iterable[str], *, with_recoveries: bool = False) -> list[tuple[str, str]]:
    """(event name, description) of error lines, and of recovery events when asked, in order."""
    found: list[tuple[str, str]] = []
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            name = str(event.get("event", "?"))
            if str(event.get("level", "")).lower() in _ERROR_LEVELS:
                found.append((name, f"{name}: {event.get('error', '')}".rstrip(": ")))
            elif with_recoveries and name in _RESOLVED_BY:
                found.append((name, name))
        elif text.startswith("Traceback (most recent call last)"):
            found.append(("traceback", "traceback (the process crashed)"))
    return found


def check_reloader_logs(facts: LogFacts, *, tail: int) -> Result:
    check = "reloader logs"
    cmd = f"docker service logs {facts.service} --tail {max(tail, 50)}"
    if facts.error:
        return _fail(check, f"cannot read the logs: {facts.error}", cmd)
    errors, resolved = unresolved_error_events(facts.lines)
    if errors:
        shown = "; ".join(errors[:_SHOWN_ERRORS])
        more = f" (+{len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        return _fail(
            check,
            f"{len(errors)} unresolved error event(s) in the last {tail} lines: {shown}{more}",
            f"{cmd}; then the reloader's /health (checks source, storage)",
            errors=errors,
        )
    earlier = f" ({resolved} earlier error(s) resolved by a later success)" if resolved else ""
    return _ok(
        check,
        f"no unresolved error in the last {len(facts.lines)} lines{earlier}",
        lines=len(facts.lines),
        resolved=resolved,
    )


# -- certificate files --------------------------------------------------------------------------


def check_published(facts: DirFacts, *, reloader: str) -> Result:
    check = f"storage box ({facts.path})"
    if facts.error:
        return _fail(
            check,
            f"cannot read: {facts.error}",
            f"is the Storage Box mounted at {facts.path} on this node? (mount | grep storagebox)",
        )
    if facts.state != "committed" or facts.cert is None:
        return _fail(
            check,
            f"no committed pair ({facts.state or 'unknown'})",
            f"docker service logs {reloader} --tail 50; the reloader's /health check 'storage'",
            state=facts.state,
        )
    return _ok(
        check,
        f"generation {facts.generation}, {describe(facts.cert)}",
        generation=facts.generation,
        not_after=facts.cert.not_after,
        fingerprint=facts.cert.fingerprint,
    )


def check_installed(facts: DirFacts, published: DirFacts, *, distributor: str) -> Result:
    check = f"installed ({facts.path})"
    logs = f"docker service logs {distributor} --tail 50; the distributor's /health on this node"
    if facts.error or facts.cert is None:
        return _fail(check, f"no readable certificate: {facts.error or 'missing'}", logs)
    details = {"not_after": facts.cert.not_after, "fingerprint": facts.cert.fingerprint}
    if published.manifest_cert_sha256 and facts.cert.sha256 != published.manifest_cert_sha256:
        return _fail(
            check,
            f"differs from the Storage Box generation {published.generation}: "
            f"installed {describe(facts.cert)}",
            logs,
            **details,
        )
    return _ok(check, f"same bytes as the Storage Box, {describe(facts.cert)}", **details)


# -- Vault replicas -----------------------------------------------------------------------------


def _where(replica: ReplicaFacts) -> str:
    return f"vault {replica.address}"


def _task(replica: ReplicaFacts) -> str:
    return f"task {replica.task_id[:12] or '?'} on {replica.node or '?'}"


def role_of(replica: ReplicaFacts) -> str:
    if replica.error:
        return "unreachable"
    if replica.initialized is False:
        return "not initialized"
    if replica.sealed is not False:
        return "sealed"
    return "standby" if replica.standby else "active"


def check_replica_seal(
    replica: ReplicaFacts, *, vault: str, unsealer: str, cluster_exists: bool = False
) -> Result:
    check = f"{_where(replica)} seal"
    if replica.error:
        hint = (
            f"docker service ps {vault} --no-trunc; docker service logs {vault} --tail 50; "
            "overlay addresses are only reachable from the Vault network: run verify as a "
            "one-off container there (stacks/README.md)"
        )
        if replica.error.startswith("TLS verification failed"):
            hint = (
                "the served certificate is not trusted for the Vault name: check "
                "VERIFY_VAULT_CA_FILE and VERIFY_VAULT_SERVER_NAME, then " + hint
            )
        return _fail(check, f"unreachable ({_task(replica)}): {replica.error}", hint)
    if replica.initialized is False:
        if cluster_exists:
            return _fail(
                check,
                f"not joined ({_task(replica)}): waiting to join the raft cluster",
                f"vault-unsealer joins it to the active member: its /health and `docker "
                f"service logs {vault} --tail 50` say why not yet; never run vault-bootstrap "
                "against it",
            )
        return _fail(
            check,
            f"not initialized ({_task(replica)})",
            "run certflow vault-bootstrap (it initializes Vault and creates vault_unseal_key)",
        )
    if replica.sealed is not False:
        return _fail(
            check,
            f"sealed ({_task(replica)})",
            f"docker service logs {unsealer} --tail 50; the unsealer's /health "
            "(a rejected key means vault_unseal_key is not this Vault's key)",
        )
    return _ok(check, f"unsealed, {role_of(replica)} ({_task(replica)})", role=role_of(replica))


def check_cluster(replicas: tuple[ReplicaFacts, ...], *, vault: str, unsealer: str) -> Result:
    """Exactly one member may answer as active; say what the others are."""
    roles = [role_of(r) for r in replicas]
    counts = {role: roles.count(role) for role in dict.fromkeys(roles)}
    summary = ", ".join(f"{n} {role}" for role, n in counts.items())
    active = [r.address for r in replicas if role_of(r) == "active"]
    if len(active) == 1:
        return _ok("vault cluster", f"one active member, {summary}", members=counts)
    if not active:
        return _fail(
            "vault cluster",
            f"no active member ({summary})",
            f"docker service logs {unsealer} --tail 50; docker service logs {vault} --tail 50",
            members=counts,
        )
    return _fail(
        "vault cluster",
        f"{len(active)} members claim to be active ({', '.join(active)}): split cluster",
        f"docker service logs {vault} --tail 100; each member's raft peers "
        "(vault operator raft list-peers)",
        members=counts,
    )


def check_replica_certificate(
    replica: ReplicaFacts, installed: DirFacts, published: DirFacts, *, distributor: str, vault: str
) -> Result:
    check = f"{_where(replica)} certificate"
    if replica.served is None:
        return _fail(check, "no certificate seen (handshake failed)", "see the seal check above")
    served = replica.served
    details = {"not_after": served.not_after, "fingerprint": served.fingerprint}
    mismatches = [
        f"{facts.label} has {describe(facts.cert)}"
        for facts in (installed, published)
        if facts.cert is not None and facts.cert.fingerprint != served.fingerprint
    ]
    if mismatches:
        return _fail(
            check,
            f"serves {describe(served)} but " + "; ".join(mismatches),
            f"Vault was not reloaded with the installed pair: docker service logs {distributor} "
            f"--tail 50 (reload/restart events); docker service ps {vault}",
            **details,
        )
    if installed.cert is None and published.cert is None:
        return _fail(
            check,
            f"serves {describe(served)}; nothing to compare it with",
            "fix the storage box and installed checks first",
            **details,
        )
    return _ok(check, f"serves the installed certificate, {describe(served)}", **details)


def check_replicas(obs: Observation) -> list[Result]:
    vault = obs.names.get("vault", "vault")
    unsealer = obs.names.get("unsealer", "vault-unsealer")
    distributor = obs.names.get("distributor", "cert-distributor")
    if obs.replicas_error:
        return [
            _fail(
                "vault replicas",
                f"cannot list them: {obs.replicas_error}",
                f"docker service ps {vault}",
            )
        ]
    if not obs.replicas:
        return [
            _fail(
                "vault replicas",
                "no running Vault task has an address on the Vault network",
                f"docker service ps {vault} --no-trunc; check VERIFY_VAULT_NETWORK",
            )
        ]
    results: list[Result] = [check_cluster(obs.replicas, vault=vault, unsealer=unsealer)]
    exists = any(r.initialized for r in obs.replicas)
    for replica in obs.replicas:
        results.append(
            check_replica_seal(replica, vault=vault, unsealer=unsealer, cluster_exists=exists)
        )
        if replica.served is not None:
            results.append(
                check_replica_certificate(
                    replica, obs.installed, obs.published, distributor=distributor, vault=vault
                )
            )
    return results


# -- every certflow task's /health ----------------------------------------------------------------

_SHOWN_PROBLEMS = 3


def check_health(facts: HealthFacts, *, certs_hint: str) -> Result:
    """One certflow task's own view: what it says is wrong (degraded or failing), and since when.

    verify itself sees one node's files; each task sees its own (a node's Storage Box mount, a
    renewal the reloader refused, the leader's rollout gate), so their /health completes it.
    """
    check = f"health {facts.service} on {facts.node}"
    logs = f"docker service logs {facts.service} --since 10m"
    if facts.error:
        hint = (
            f"{certs_hint} (the certflow services join the Vault network so verify can reach "
            "them); or set VERIFY_VAULT_NETWORK"
            if not facts.address
            else f"docker service ps {facts.service} --no-trunc; {logs}"
        )
        return _fail(check, f"cannot read its /health: {facts.error}", hint, address=facts.address)
    details: dict[str, Any] = {"status": facts.status, "since": facts.since}
    if facts.status == "ok":
        return _ok(check, "ok", **details)
    shown = "; ".join(facts.problems[:_SHOWN_PROBLEMS]) or "no check named"
    more = len(facts.problems) - _SHOWN_PROBLEMS
    extra = f" (+{more} more)" if more > 0 else ""
    return _fail(
        check,
        f"{facts.status} since {facts.since}: {shown}{extra}",
        f"{logs}; the README's /health table says what each check means",
        problems=list(facts.problems),
        **details,
    )


def check_all_health(obs: Observation, *, certs_hint: str) -> list[Result]:
    if obs.health_error:
        return [
            _fail(
                "health of the certflow services",
                f"cannot list their tasks: {obs.health_error}",
                "run verify on a swarm manager (or set DOCKER_HOST to one)",
            )
        ]
    return [check_health(h, certs_hint=certs_hint) for h in obs.health]


def check_maintenance(obs: Observation) -> Result:
    """The maintenance switch (``certflow pause``), read from the cert-distributor service."""
    distributor = obs.names.get("distributor", "")
    facts = next((s for s in obs.services if s.name == distributor), None)
    pause = pause_from_labels(facts.labels) if facts is not None else None
    if pause is None:
        return _ok("maintenance", "not paused")
    return _fail(
        "maintenance",
        f"certflow is {pause.describe()}: no Vault member is restarted or unsealed by certflow",
        "certflow resume (when the manual work is done)",
        since=pause.since,
        reason=pause.reason,
    )


# -- everything ---------------------------------------------------------------------------------


def evaluate(obs: Observation, *, log_tail: int, stack: str) -> list[Result]:
    """Every check of the runbook's Verification section, in the runbook's order."""
    certs_hint = f"docker stack deploy -c stacks/docker-stack-certs.yml {stack}"
    vault_hint = f"docker stack deploy -c stacks/docker-stack-vault.yml {stack}"
    vault_names = {obs.names.get("vault"), obs.names.get("unsealer")}
    results = [
        check_service(s, deploy_hint=vault_hint if s.name in vault_names else certs_hint)
        for s in obs.services
    ]
    results.append(check_reloader_logs(obs.reloader_logs, tail=log_tail))
    results.append(check_published(obs.published, reloader=obs.names.get("reloader", "reloader")))
    results.append(
        check_installed(
            obs.installed, obs.published, distributor=obs.names.get("distributor", "distributor")
        )
    )
    results.extend(check_replicas(obs))
    results.extend(check_all_health(obs, certs_hint=certs_hint))
    results.append(check_consumers(obs))
    results.append(check_maintenance(obs))
    return results


def all_ok(results: Iterable[Result]) -> bool:
    results = list(results)
    return bool(results) and all(r.ok for r in results)
