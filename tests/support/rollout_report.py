"""What ``bench.rollout`` prints: pure functions of what each renewal measured (no Docker here).

A renewal is measured as its per-member timeline (``tests.support.timeline``), the seal sampler's
rounds (time without an active member, the sampler's real resolution) and the KV probe's report
(``tests.support.kv_probe``). Per mode they are summed up, and the summaries are set beside the
issue's goals. Figures only: whether a goal is met is printed, never turned into an exit status.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.e2e_flow import Rotation
from tests.support.e2e_seal_sampler import round_spacing, stretches_without_active
from tests.support.timeline import STEPS_AFTER_STOP, Row, Timeline, step_durations

LEGEND = """\
Times are seconds. Per member, in the order the members were stopped (or signalled):
  stop at      after the renewal: its node's distributor sent the stop signal (restart mode,
               vault.member_stopped) or the SIGHUP (signal mode, vault.signalled)
  -> <step>    since the step before it that has a time ('-': did not happen or not seen):
    new task           Swarm created the member's new task (Vault's shutdown until then)
    task running       Swarm marked it running: its status timestamp, after the restart delay,
                       the container's start and its first passing healthcheck (sealed is alive)
    answering (in DNS) the sampler's first round in which its new address answered, sealed or
                       not; the sampler resolves tasks.<service>, so also bound by Swarm's DNS
    unsealed           first round it answered unsealed ('-' in signal mode: it never sealed)
    caught up          its raft applied index reached the active member's commit index
    gate passed        restart mode: the leader ordered the next member to stop, or (last
                       member) recorded the rollout done; signal mode: the canary proven
  stop -> serving      from its stop to the first round it answered unsealed on the new leaf"""

# The goals (issue 19): seconds, and KV writes failed.
GOAL_RESTART_S = 20.0
GOAL_SIGNAL_S = 5.0
GOAL_NO_ACTIVE_S = 0.5
GOAL_CANARY_S = 1.0
GOAL_WRITE_GAP_S = 1.0


@dataclass(frozen=True)
class Renewal:
    """One renewal as measured."""

    timeline: Timeline
    converge: float | None  # renewal -> every member unsealed on the new leaf (None: never)
    no_active: tuple[float, ...]  # each stretch without an active member since the renewal
    writes_failed: int | None  # None: the KV probe gave no report
    writes_total: int | None
    longest_write_gap: float | None
    write_every: float | None  # the KV probe's interval
    spacing: tuple[float, float] | None  # sampler rounds: median, longest seconds between
    certbot: float | None = None  # renewal -> certbot done (its own ACME exchange; not certflow's)
    # A client that tries the next member when one refuses (kv_probe --retry-elsewhere): writes
    # no member took, and the longest gap between writes some member took. None: not measured.
    writes_unserved: int | None = None
    served_gap: float | None = None
    write_errors: tuple[tuple[str, int], ...] = ()  # first-try failures by kind, most first


def _number(report: Mapping[str, Any], key: str) -> float | None:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def measured(rotation: Rotation, timeline: Timeline) -> Renewal:
    """The figures of one rotation (``tests.support.e2e_flow.rotate``) and its timeline."""
    writes = rotation.writes
    failed, total = _number(writes, "failed"), _number(writes, "attempts")
    return Renewal(
        timeline=timeline,
        converge=rotation.seconds_to_converge,
        certbot=None if rotation.written_at is None else rotation.written_at - rotation.renewed_at,
        writes_unserved=None if (u := _number(writes, "unserved")) is None else int(u),
        served_gap=_number(writes, "longest_served_gap_s"),
        write_errors=error_kinds(writes.get("errors")),
        no_active=tuple(stretches_without_active(rotation.samples, since=rotation.renewed_at)),
        writes_failed=None if failed is None else int(failed),
        writes_total=None if total is None else int(total),
        longest_write_gap=_number(writes, "longest_gap_s"),
        write_every=_number(writes, "interval_s"),
        spacing=round_spacing(rotation.samples),
    )


# -- one renewal --------------------------------------------------------------------------------


def _secs(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _at(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f}"


def _rollout_order(rows: Sequence[Row]) -> list[Row]:
    """The members in the order they were stopped or signalled; those never were, last."""
    return sorted(rows, key=lambda r: (r.stop is None, r.stop or 0.0, r.slot))


def _member_cells(row: Row) -> list[str]:
    serving = None if row.serving is None or row.stop is None else row.serving - row.stop
    name = f"slot {row.slot}" + (" (canary)" if row.canary else "")
    # Two decimals: signal mode's steps are fractions of a second (the sampler's resolution is
    # printed with each mode's totals).
    steps = (_secs(d, 2) for d in step_durations(row))
    return [name, _at(row.stop), *steps, _secs(serving, 2)]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def member_table(timeline: Timeline) -> list[str]:
    """Per member: when it was stopped and the seconds between its steps (see ``LEGEND``)."""
    header = ["member", "stop at", *(f"-> {s}" for s in STEPS_AFTER_STOP), "stop -> serving"]
    return _table([header, *(_member_cells(r) for r in _rollout_order(timeline.rows))])


_ADDRESS = re.compile(r" (?:from|to) \S+?(?=: |$)")


def error_kinds(errors: object) -> tuple[tuple[str, int], ...]:
    """The KV probe's failed writes by kind (the member's address left out), most first."""
    if not isinstance(errors, Mapping):
        return ()
    kinds: dict[str, int] = {}
    for text, count in errors.items():
        if isinstance(count, int):
            kind = _ADDRESS.sub("", str(text))
            kinds[kind] = kinds.get(kind, 0) + count
    return tuple(sorted(kinds.items(), key=lambda item: (-item[1], item[0])))


def _kinds(found: Sequence[tuple[str, int]]) -> str:
    return "; ".join(f"{count} x {kind}" for kind, count in found)


def _retrying(unserved: int | None, gap: float | None) -> str:
    if unserved is None:
        return ""
    return f"; a client that tries the next member: {unserved} unserved, longest gap {_secs(gap)} s"


def _writes(failed: int | None, total: int | None, gap: float | None) -> str:
    if failed is None or total is None:
        return "KV writes: no report from the probe"
    return f"KV writes: {failed} of {total} failed, longest gap {_secs(gap)} s"


def renewal_block(mode: str, number: int, of: int, renewal: Renewal) -> str:
    """The lines printed for one renewal."""
    t = renewal.timeline
    installed = max(t.installed.values(), default=None)
    head = (
        f"{mode}, renewal {number} of {of}: every member unsealed on the new leaf "
        f"{_at(renewal.converge)} s ("
        + ("" if renewal.certbot is None else f"certbot done {_at(renewal.certbot)} s, ")
        + f"published {_at(t.published)} s, installed on the last node {_at(installed)} s)"
    )
    lines = [head, *member_table(t)]
    no_active = renewal.no_active
    availability = (
        f"  no active member: {math.fsum(no_active):.2f} s in all, longest stretch "
        f"{max(no_active, default=0.0):.2f} s; "
        + _writes(renewal.writes_failed, renewal.writes_total, renewal.longest_write_gap)
        + _retrying(renewal.writes_unserved, renewal.served_gap)
    )
    lines.append(availability)
    if renewal.write_errors:
        lines.append(f"  failed writes: {_kinds(renewal.write_errors)}")
    if t.canary_proven_after is not None:
        lines.append(
            f"  canary SIGHUP -> proven serving the new leaf: {t.canary_proven_after:.2f} s"
        )
    return "\n".join(lines)


# -- one mode -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeFigures:
    mode: str
    renewals: int
    converge: tuple[float, ...]  # of the renewals that converged
    no_active: tuple[float, ...]  # per renewal, seconds in all
    longest_no_active: float
    writes_failed: int
    writes_total: int
    writes_unreported: int  # renewals without a KV probe report
    longest_write_gap: float | None
    canary: tuple[float, ...]  # signal mode: SIGHUP -> proven, per renewal with a canary
    spacing: tuple[float, float] | None  # median of the rounds' median spacing, longest
    write_every: float | None
    after_certbot: tuple[float, ...] = ()  # certbot done -> every member (certflow's own part)
    writes_unserved: int | None = None  # summed over the renewals that measured it
    served_gap: float | None = None

    @property
    def unconverged(self) -> int:
        return self.renewals - len(self.converge)


def _retried(renewals: Sequence[Renewal]) -> list[Renewal]:
    return [r for r in renewals if r.writes_unserved is not None]


def mode_figures(mode: str, renewals: Sequence[Renewal]) -> ModeFigures:
    spacings = [r.spacing for r in renewals if r.spacing is not None]
    retried = _retried(renewals)
    reported = [r for r in renewals if r.writes_failed is not None and r.writes_total is not None]
    gaps = [r.longest_write_gap for r in reported if r.longest_write_gap is not None]
    return ModeFigures(
        mode=mode,
        renewals=len(renewals),
        converge=tuple(r.converge for r in renewals if r.converge is not None),
        writes_unserved=sum(r.writes_unserved or 0 for r in retried) if retried else None,
        served_gap=max((r.served_gap for r in retried if r.served_gap is not None), default=None),
        after_certbot=tuple(
            r.converge - r.certbot
            for r in renewals
            if r.converge is not None and r.certbot is not None
        ),
        no_active=tuple(math.fsum(r.no_active) for r in renewals),
        longest_no_active=max((s for r in renewals for s in r.no_active), default=0.0),
        writes_failed=sum(r.writes_failed or 0 for r in reported),
        writes_total=sum(r.writes_total or 0 for r in reported),
        writes_unreported=len(renewals) - len(reported),
        longest_write_gap=max(gaps, default=None),
        canary=tuple(
            r.timeline.canary_proven_after
            for r in renewals
            if r.timeline.canary_proven_after is not None
        ),
        spacing=(
            (statistics.median(s[0] for s in spacings), max(s[1] for s in spacings))
            if spacings
            else None
        ),
        write_every=next((r.write_every for r in renewals if r.write_every is not None), None),
    )


def _spread(values: Sequence[float], missing: int = 0, digits: int = 1) -> str:
    """p50 and max, and how many were never measured (they are not in the figures)."""
    never = f", {missing} never" if missing else ""
    if not values:
        return f"n/a (n=0{never})"
    p50, worst = statistics.median(values), max(values)
    return f"p50 {p50:.{digits}f} s, max {worst:.{digits}f} s (n={len(values)}{never})"


def _resolution(f: ModeFigures, sample_every: float) -> str:
    spacing = (
        "no rounds"
        if f.spacing is None
        else f"measured median {f.spacing[0]:.2f} s, longest {f.spacing[1]:.2f} s"
    )
    every = "?" if f.write_every is None else f"{f.write_every:g}"
    return (
        f"  resolution: sampler round every {sample_every:g} s asked ({spacing}); "
        f"KV write every {every} s"
    )


def mode_summary(f: ModeFigures, sample_every: float) -> str:
    """The totals of one mode over its renewals."""
    lines = [
        f"{f.mode}, {f.renewals} renewal(s):",
        f"  renewal -> every member unsealed on the new leaf: {_spread(f.converge, f.unconverged)}",
        *(
            [f"  of which after certbot was done (certflow's part): {_spread(f.after_certbot)}"]
            if f.after_certbot
            else []
        ),
        "  without an active member per renewal: "
        f"{', '.join(f'{s:.2f}' for s in f.no_active) or '-'} s, longest stretch "
        f"{f.longest_no_active:.2f} s",
        f"  {_writes(f.writes_failed, f.writes_total, f.longest_write_gap)}"
        + (f" ({f.writes_unreported} renewal(s) without a report)" if f.writes_unreported else "")
        + _retrying(f.writes_unserved, f.served_gap),
    ]
    if f.canary:
        lines.append(f"  canary SIGHUP -> proven: {_spread(f.canary, digits=2)}")
    lines.append(_resolution(f, sample_every))
    return "\n".join(lines)


# -- the goals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    what: str
    measured: str
    goal: str
    met: bool | None  # None: nothing measured


def _at_most(values: Sequence[float], limit: float, missing: int = 0) -> bool | None:
    if missing:
        return False
    return None if not values else max(values) <= limit


def _writes_goal(f: ModeFigures) -> Goal:
    met: bool | None = None
    if f.writes_unreported:
        met = False
    elif f.writes_total:
        gap = f.longest_write_gap if f.longest_write_gap is not None else 0.0
        met = f.writes_failed == 0 and gap <= GOAL_WRITE_GAP_S
    return Goal(
        f"{f.mode}: KV writes",
        _writes(f.writes_failed, f.writes_total, f.longest_write_gap).removeprefix("KV writes: "),
        f"0 failed, gap <= {GOAL_WRITE_GAP_S:g} s",
        met,
    )


def _retrying_goal(f: ModeFigures) -> Goal:
    """The issue's KV goal is for a client that follows the cluster: one that takes a member's
    refusal (sealed, stopping) to the next member, as a redirect or a load balancer would."""
    met = None
    if f.writes_unserved is not None:
        gap = f.served_gap if f.served_gap is not None else 0.0
        met = f.writes_unserved == 0 and gap <= GOAL_WRITE_GAP_S
    return Goal(
        f"{f.mode}: KV writes, a client that tries the next member",
        "-"
        if f.writes_unserved is None
        else f"{f.writes_unserved} unserved, longest gap {_secs(f.served_gap)} s",
        f"0 failed, gap <= {GOAL_WRITE_GAP_S:g} s",
        met,
    )


def _no_active_goal(f: ModeFigures) -> Goal:
    worst = max(f.no_active, default=0.0)
    return Goal(
        f"{f.mode}: no active member per renewal",
        f"max {worst:.2f} s, longest stretch {f.longest_no_active:.2f} s",
        f"<= {GOAL_NO_ACTIVE_S:g} s (handover only)",
        _at_most(f.no_active, GOAL_NO_ACTIVE_S),
    )


def _converge_goal(f: ModeFigures, limit: float) -> Goal:
    return Goal(
        f"{f.mode}: renewal -> every member on the new leaf",
        _spread(f.converge, f.unconverged),
        f"<= {limit:g} s",
        _at_most(f.converge, limit, f.unconverged),
    )


def _after_certbot_goal(f: ModeFigures, limit: float) -> Goal:
    """The same goal counted from certbot's new files: the renewal's ACME exchange (pebble here)
    is no part of certflow, so this is the figure certflow answers for."""
    return Goal(
        f"{f.mode}: certbot done -> every member on the new leaf",
        _spread(f.after_certbot, f.renewals - len(f.after_certbot)),
        f"<= {limit:g} s",
        _at_most(f.after_certbot, limit, f.renewals - len(f.after_certbot)),
    )


def goals(restart: ModeFigures, signal: ModeFigures) -> list[Goal]:
    """Each of the issue's goals beside what was measured (the worst renewal counts)."""
    canary = Goal(
        f"{signal.mode}: canary SIGHUP -> proven",
        _spread(signal.canary, signal.renewals - len(signal.canary), digits=2),
        f"<= {GOAL_CANARY_S:g} s",
        _at_most(signal.canary, GOAL_CANARY_S, signal.renewals - len(signal.canary)),
    )
    return [
        _converge_goal(restart, GOAL_RESTART_S),
        *([_after_certbot_goal(restart, GOAL_RESTART_S)] if restart.after_certbot else []),
        _no_active_goal(restart),
        _writes_goal(restart),
        *([_retrying_goal(restart)] if restart.writes_unserved is not None else []),
        _converge_goal(signal, GOAL_SIGNAL_S),
        *([_after_certbot_goal(signal, GOAL_SIGNAL_S)] if signal.after_certbot else []),
        canary,
        _no_active_goal(signal),
        _writes_goal(signal),
        *([_retrying_goal(signal)] if signal.writes_unserved is not None else []),
    ]


_MET: Mapping[bool | None, str] = {True: "yes", False: "no", None: "n/a"}


def goals_table(found: Sequence[Goal]) -> str:
    """The goals as a table: measured vs goal, and whether it was met (printed only)."""
    rows = [["goal", "measured", "wanted", "met"]]
    rows += [[g.what, g.measured, g.goal, _MET[g.met]] for g in found]
    return "\n".join(["measured vs the issue's goals:", *_table(rows)])
