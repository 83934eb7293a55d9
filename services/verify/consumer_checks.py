"""The services that take the certificate besides Vault ("consumers"), as verify and status see
them: read from the distributors' ``/health`` and judged (pure).

The Swarm leader's distributor publishes a :class:`~shared.consumers.ConsumerReport` per service
labelled ``certflow.reload`` under ``info.consumers``; the other distributors publish an empty list,
or nothing (older versions). verify fails on a consumer serving an older leaf than the one
distributed, a halted one and one whose labels certflow cannot use; waiting, reloading and paused
consumers are shown, not failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.verify.facts import HealthFacts, Observation
from services.verify.result import Result, failed, passed, short
from shared.consumers import CHECK_LABEL, RELOAD_LABEL, ConsumerReport, ConsumerTask, State

CHECK = "consumers"
# States that move by themselves: a serving-older task in them is a reload under way.
UNDER_WAY = frozenset({State.RELOADING, State.WAITING})
_OPT_IN = f"docker service update --label-add {RELOAD_LABEL}=restart|signal|none <service>"


@dataclass(frozen=True, slots=True)
class Consumers:
    """The consumer reports verify and status go by, and what could not be read."""

    reports: tuple[ConsumerReport, ...] = ()
    source: str = ""  # the node of the distributor the reports come from
    problems: tuple[str, ...] = ()  # an info.consumers that is not a list
    ignored: int = 0  # entries that are not reports, left out
    also: tuple[str, ...] = ()  # nodes of other distributors with reports, not used


def _when(since: str | None) -> datetime:
    """``since`` as an aware time; the earliest time when absent or unreadable."""
    try:
        when = datetime.fromisoformat(since) if since else datetime.min
    except ValueError:
        when = datetime.min
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def read_consumers(health: Iterable[HealthFacts], distributor: str) -> Consumers:
    """The reports of the distributor that has any (the Swarm leader's)."""
    found: list[tuple[HealthFacts, list[ConsumerReport]]] = []
    problems: list[str] = []
    ignored = 0
    for h in health:
        value = h.info.get("consumers")
        if h.service != distributor or value is None:
            continue
        if not isinstance(value, list):
            problems.append(
                f"info.consumers of the distributor on {h.node} is a {type(value).__name__}, "
                "not a list of consumer reports"
            )
            continue
        reports: list[ConsumerReport] = []
        for entry in value:
            try:
                reports.append(ConsumerReport.model_validate(entry))
            except ValidationError:
                ignored += 1
        if reports:
            found.append((h, reports))
    if not found:
        return Consumers(problems=tuple(problems), ignored=ignored)
    # Two distributors report only for a moment after the leadership moved, until the former
    # leader publishes its empty list: the newest reports (latest since) are the current leader's.
    # The node name and task ID only make a tie deterministic.
    chosen, reports = max(
        found, key=lambda f: (max(_when(r.since) for r in f[1]), f[0].node, f[0].task_id)
    )
    return Consumers(
        reports=tuple(reports),
        source=chosen.node,
        problems=tuple(problems),
        ignored=ignored,
        also=tuple(h.node for h, _ in found if h is not chosen),
    )


def served(task: ConsumerTask) -> str:
    """What one task serves at the consumer's check address, for people."""
    if task.serves is not None:
        return f"sha256 {short(task.serves)}"
    if not task.running:
        return "not running"
    return task.detail or "not known"


def serving(report: ConsumerReport) -> str:
    """What a consumer's tasks serve: once when all serve the same, else per task."""
    if not report.tasks:
        return "no task"
    each = {served(t) for t in report.tasks}
    if len(each) == 1:
        n = len(report.tasks)
        return f"{each.pop()} ({n} task{'s' if n != 1 else ''})"
    return ", ".join(f"{t.where}: {served(t)}" for t in report.tasks)


def issues(report: ConsumerReport) -> list[str]:
    """What is wrong with a consumer, each naming it; [] when nothing is."""
    found: list[str] = []
    if report.state is State.REPORTED:
        found.append(f"{report.service}: its labels cannot be used: {report.message or '?'}")
    if report.state is State.HALTED:
        found.append(
            f"{report.service}: halted since {report.since or '?'}: {report.message or '?'}"
        )
    older = report.serves_older
    if older and report.fingerprint is not None:
        tasks = ", ".join(f"{t.where} serves sha256 {short(t.serves or '')}" for t in older)
        found.append(
            f"{report.service}: {tasks}, older than the distributed sha256 "
            f"{short(report.fingerprint)}"
        )
    return found


def next_step(report: ConsumerReport, *, distributor: str) -> str:
    """What an operator does about :func:`issues` of ``report``."""
    service = report.service
    if report.state is State.REPORTED:
        return (
            f"fix the labels of {service}: docker service update --label-add "
            f"{RELOAD_LABEL}=restart|signal|none [--label-add {CHECK_LABEL}=tls://<name>:<port>] "
            f"{service}"
        )
    if report.state is State.HALTED:
        return (
            f"docker service ps {service} --no-trunc and docker service logs {service} --since "
            f"30m say why its task is not back; docker service logs {distributor} --since 30m "
            "shows the reload"
        )
    if report.state is State.WATCHED or report.mode == "none":
        return (
            f"certflow only watches {service} ({RELOAD_LABEL}=none): reload it yourself "
            f"(docker service update --force {service}) or label it {RELOAD_LABEL}=restart"
        )
    if report.state in UNDER_WAY:
        return (
            f"a reload of {service} is under way: run certflow verify again once it is done "
            f"(docker service logs {distributor} --since 10m)"
        )
    return (
        f"docker service logs {distributor} --since 30m says why {service} was not reloaded; "
        f"docker service update --force {service} restarts it by hand"
    )


def one_line(report: ConsumerReport) -> str:
    """One consumer in a line: service, mode, state and what it serves."""
    return f"{report.service} ({report.mode or 'no mode'}) {report.state.value}, {serving(report)}"


def row(report: ConsumerReport) -> dict[str, Any]:
    """A consumer for ``--json``: the report as published, and what is wrong with it."""
    return {**report.model_dump(mode="json"), "issues": issues(report)}


def check_consumers(obs: Observation) -> Result:
    """Every consumer serves the distributed leaf and none is halted or mislabelled."""
    distributor = obs.names.get("distributor", "cert-distributor")
    consumers = read_consumers(obs.health, distributor)
    failures = [
        (
            problem,
            "the distributor and verify disagree on /health: run one certflow version "
            f"everywhere (docker service ps {distributor} shows each task's image)",
        )
        for problem in consumers.problems
    ]
    for report in consumers.reports:
        failures += [(i, next_step(report, distributor=distributor)) for i in issues(report)]
    details: dict[str, Any] = {
        "source": consumers.source or None,
        "consumers": [row(r) for r in consumers.reports],
        "ignored_entries": consumers.ignored,
        "also_reported_by": list(consumers.also),
    }
    if consumers.reports:
        n = len(consumers.reports)
        listing = f"{n} consumer{'s' if n != 1 else ''} (reported by the distributor on "
        listing += f"{consumers.source}): " + "; ".join(one_line(r) for r in consumers.reports)
    else:
        listing = f"no consumer services labelled {RELOAD_LABEL}"
    if consumers.ignored:
        listing += f" ({consumers.ignored} malformed report(s) left out)"
    if consumers.also:
        listing += f" (older reports of the distributor on {', '.join(consumers.also)} left out)"
    if failures:
        summary = "; ".join(text for text, _ in failures) + f". {listing}"
        steps = "; ".join(dict.fromkeys(step for _, step in failures))
        return failed(CHECK, summary, steps, **details)
    if not consumers.reports:
        listing += f" (a service opts in with: {_OPT_IN})"
    return passed(CHECK, listing, **details)
