"""Rendering ``certflow status``: a few short tables for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from services.verify.result import short
from services.verify.status import State, Status
from shared.consumers import RELOAD_LABEL

_HEADLINE = {
    State.OK: "OK: every member unsealed on the published certificate, every task healthy",
    State.ROLLING: "ROLLING OUT: the rollout is moving within its bounds; run status again",
    State.ATTENTION: "ATTENTION: something needs an operator (below)",
    State.PAUSED: "PAUSED: certflow restarts and unseals no Vault member until `certflow resume`",
}


def to_json(status: Status, *, checked_at: datetime) -> str:
    doc = asdict(status)
    doc["state"] = status.state.value
    if status.rollout is not None:
        doc["rollout"]["state"] = status.rollout.state.value
    doc["checked_at"] = checked_at.isoformat()
    doc["exit_code"] = status.exit_code
    return json.dumps(doc, indent=2)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    widths[-1] = 0  # the last column runs free

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _yes(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "NO"


def _consumers(status: Status) -> list[str]:
    """One row per consumer, each followed by what its tasks serve."""
    if not status.consumers:
        return [f"Consumers: none (no service is labelled {RELOAD_LABEL})"]
    rows: list[tuple[str, ...]] = [
        (
            c.service,
            c.mode or "-",
            c.check or "-",
            c.state,
            c.since or "-",
            "-" if c.state == "done" else c.message or "-",
        )
        for c in status.consumers
    ]
    table = _table(("CONSUMER", "MODE", "CHECK", "STATE", "SINCE", "MESSAGE"), rows)
    out = [f"Consumers (reported by the distributor on {status.consumers_source}):", table[0]]
    for consumer, line in zip(status.consumers, table[1:], strict=True):
        out += [line, *(f"  {t.where}: {t.serves}" for t in consumer.tasks)]
    return out


def to_table(status: Status, *, stack: str, checked_at: datetime) -> str:
    out = [f"certflow status  stack {stack}  {checked_at.isoformat(timespec='seconds')}"]
    out += [_HEADLINE[status.state]]
    out += [f"  - {reason}" for reason in status.reasons]
    out += ["", f"Storage Box: {status.published}"]

    rollout = status.rollout
    out += [""]
    if rollout is None:
        out += ["Rollout: no coordinator reports (reload mode none or signal, or no leader seen)"]
    else:
        out += [
            f"Rollout (the gate on {rollout.leader}): {rollout.decision}, since {rollout.since}"
        ]
        out += [f"  {rollout.message}"] if rollout.message else []
        if rollout.certificate:
            out += [f"  certificate in flight: sha256 {short(rollout.certificate)}"]
        if rollout.member:
            out += [f"  member: {rollout.member}"]
    out += [
        f"Trust check: {'passed on every node' if status.trust_ok else 'FAILED (below)'}",
        "Manifest authentication: "
        + ("passed on every node" if status.manifest_ok else "REFUSED (below)"),
    ]

    if status.nodes:
        out += [""]
        rows: list[tuple[str, ...]] = [
            (
                n.node,
                str(n.generation) if n.generation is not None else "-",
                short(n.fingerprint) if n.fingerprint else "-",
                n.trust,
                n.manifest,
            )
            for n in status.nodes
        ]
        out += _table(("NODE", "GENERATION", "INSTALLED", "TRUST", "MANIFEST"), rows)

    out += [""]
    if status.members:
        members: list[tuple[str, ...]] = [
            (
                m.task,
                m.node,
                m.address,
                m.role,
                f"{m.not_after} {m.fingerprint}".strip() or "-",
                _yes(m.serves_published),
                m.gate if not m.error else f"{m.gate}; {m.error}",
            )
            for m in status.members
        ]
        out += _table(("MEMBER", "NODE", "ADDRESS", "ROLE", "SERVES", "PUBLISHED", "GATE"), members)
    else:
        out += ["Vault members: none found"]

    out += ["", *_consumers(status)]

    out += [""]
    tasks: list[tuple[str, ...]] = [
        (
            t.service,
            t.node,
            t.task,
            t.state,
            t.since,
            "; ".join(t.problems) or "-",
        )
        for t in status.tasks
    ]
    out += _table(("SERVICE", "NODE", "TASK", "STATE", "SINCE", "PROBLEMS"), tasks)
    return "\n".join(out)
