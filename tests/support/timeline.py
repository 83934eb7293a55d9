"""The per-member timeline of one renewal, for ``scripts/renew``: pure functions of what was
observed (seal-sampler rounds, Swarm's task list, the services' log events).

Members are identified by their Swarm slot. The sampler sees only overlay addresses, and a
restarted member comes back as a new task with (usually) a new address, so every slot carries its
address before the renewal and its address after its restart; rounds are joined to slots by those.

Per member (all in seconds after the renewal started):
- restarted: Swarm created the member's new task (restart mode);
- signalled: the distributor sent it SIGHUP (signal mode, from its ``vault.signalled`` event);
- unsealed: first round it answered unsealed again after being seen sealed or unreachable
  (a signalled member normally never seals: shown as ``stayed``);
- caught up: first round, once unsealed, in which its ``raft_applied_index`` reached the active
  member's ``raft_committed_index`` as seen when it came back (the same or an earlier round after
  its restart);
- serving: first round it answered unsealed with the new leaf.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.docker_engine import engine_time


class Round(Protocol):
    """One seal-sampler round (``tests.support.e2e_seal_sampler.Sample`` has this shape)."""

    @property
    def t(self) -> float: ...

    @property
    def states(self) -> dict[str, dict[str, object]]: ...


@dataclass(frozen=True)
class SlotTask:
    """One Vault slot as Swarm saw it around the renewal."""

    slot: int
    task_id: str  # the task running now ("" when none)
    ip: str | None  # its address on the Vault network now
    old_ip: str | None  # the address of the task that ran when the renewal started
    restarted_at: float | None  # the new task's creation (epoch s); None: not restarted


@dataclass(frozen=True)
class LogEvent:
    event: str
    t: float  # epoch seconds
    node: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    slot: int
    ip: str | None
    restarted: float | None
    signalled: float | None
    unsealed: float | None
    stayed_unsealed: bool
    caught_up: float | None
    serving: float | None
    seen: bool  # the member's address answered in at least one round after the renewal


@dataclass(frozen=True)
class Timeline:
    renewed_at: float
    leaf_sha256: str
    generation: int | None
    published: float | None
    installed: dict[str, float]  # node -> seconds
    rows: list[Row]
    manifest_generation: int | None = None  # the reloader's, from its cert.published event

    def render(self) -> str:
        return render(self)


# -- inputs from Docker and from the services' logs ---------------------------------------------


def _epoch(value: object) -> float | None:
    parsed = engine_time(value)
    return None if parsed is None else parsed.timestamp()


def _address(task: Mapping[str, Any], network: str) -> str | None:
    for attachment in task.get("NetworksAttachments") or []:
        net = attachment.get("Network") or {}
        if (net.get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/", 1)[0]
    return None


def slot_tasks(
    tasks_by_slot: Mapping[int, Sequence[Mapping[str, Any]]], network: str, since: float
) -> list[SlotTask]:
    """Docker's task dicts per slot (``LocalFlow.vault_tasks_by_slot()``) as ``SlotTask`` records:
    the newest task created after ``since`` is the restart; the newest one before it, the old."""
    found: list[SlotTask] = []
    for slot, tasks in sorted(tasks_by_slot.items()):
        dated = sorted(
            ((_epoch(t.get("CreatedAt")) or 0.0, t) for t in tasks), key=lambda pair: pair[0]
        )
        before = [t for created, t in dated if created < since]
        after = [(created, t) for created, t in dated if created >= since]
        old = before[-1] if before else None
        # A slot restarted twice (a crash on top of the rollout) counts from its first restart.
        new = after[-1][1] if after else old
        restarted_at = after[0][0] if after else None
        found.append(
            SlotTask(
                slot=slot,
                task_id=str(new.get("ID", "")) if new else "",
                ip=_address(new, network) if new else None,
                old_ip=_address(old, network) if old else None,
                restarted_at=restarted_at,
            )
        )
    return found


def log_events(lines: Iterable[str]) -> list[LogEvent]:
    """The services' JSON log lines (``docker service logs --raw``) as events; others skipped."""
    events: list[LogEvent] = []
    for line in lines:
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
            continue
        try:
            at = datetime.fromisoformat(str(doc.get("time"))).timestamp()
        except ValueError:
            continue
        rest = {k: v for k, v in doc.items() if k not in {"event", "time", "node"}}
        events.append(LogEvent(doc["event"], at, str(doc.get("node", "")), rest))
    return sorted(events, key=lambda e: e.t)


# -- the computation ----------------------------------------------------------------------------


def _unsealed(state: Mapping[str, object] | None) -> bool:
    return state is not None and state.get("sealed") is False


def _same_leaf(event: LogEvent, leaf_sha256: str) -> bool:
    value = event.fields.get("fingerprint")
    return isinstance(value, str) and value.replace(":", "").lower() == leaf_sha256.lower()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _active_committed(round_: Round) -> int | None:
    for state in round_.states.values():
        if _unsealed(state) and state.get("active") is True:
            return _int(state.get("committed"))
    return None


def member_row(
    task: SlotTask,
    rounds: Sequence[Round],
    renewed_at: float,
    leaf_sha256: str,
    signalled_at: float | None = None,
) -> Row:
    """One member's row; every time is in seconds after ``renewed_at``."""
    after = task.restarted_at if task.restarted_at is not None else signalled_at
    start = renewed_at if after is None else max(after, renewed_at)
    # Before its restart the member answered at its old address, afterwards at its new one.
    ip_now = task.ip if task.restarted_at is not None else (task.ip or task.old_ip)
    later = [r for r in rounds if r.t >= start]

    def state(r: Round) -> dict[str, object] | None:
        return r.states.get(ip_now) if ip_now else None

    seen = any(state(r) is not None for r in later)
    unsealed_at: float | None = None
    unsealed_index = -1
    down_seen = task.restarted_at is not None  # a new task always started sealed
    for index, r in enumerate(later):
        if not _unsealed(state(r)):
            down_seen = True
        elif down_seen:
            unsealed_at, unsealed_index = r.t, index
            break
    stayed = seen and not down_seen
    if stayed:
        unsealed_index = 0
    caught_up_at: float | None = None
    if unsealed_index >= 0:
        # The target: the active member's commit index as seen when this one came back.
        target = None
        for r in reversed(later[: unsealed_index + 1]):
            target = _active_committed(r)
            if target is not None:
                break
        for r in later[unsealed_index:]:
            if target is None:
                target = _active_committed(r)
            s = state(r)
            applied = _int(s.get("applied")) if s else None
            if target is not None and _unsealed(s) and applied is not None and applied >= target:
                caught_up_at = r.t
                break
    serving_at = next(
        (r.t for r in later if _unsealed(state(r)) and (state(r) or {}).get("cert") == leaf_sha256),
        None,
    )

    def rel(at: float | None) -> float | None:
        return None if at is None else at - renewed_at

    return Row(
        slot=task.slot,
        ip=ip_now,
        restarted=rel(task.restarted_at),
        signalled=rel(signalled_at),
        unsealed=rel(unsealed_at),
        stayed_unsealed=stayed,
        caught_up=rel(caught_up_at),
        serving=rel(serving_at),
        seen=seen,
    )


def timeline(
    *,
    rounds: Sequence[Round],
    tasks: Sequence[SlotTask],
    renewed_at: float,
    leaf_sha256: str,
    generation: int | None = None,
    events: Sequence[LogEvent] = (),
) -> Timeline:
    """The whole renewal: the publish, each node's install and every member's row.

    ``events``: the reloader's ``cert.published``, the distributors' ``cert.installed`` and
    ``vault.signalled``; only those at or after ``renewed_at`` and about the new leaf count (their
    ``fingerprint`` field, ``AB:CD:..``, is the same SHA-256 as ``leaf_sha256``). ``generation``
    is certbot's, only shown (the manifest counts its own generations)."""
    recent = [e for e in events if e.t >= renewed_at and _same_leaf(e, leaf_sha256)]
    published = next((e for e in recent if e.event == "cert.published"), None)
    installed: dict[str, float] = {}
    signalled: dict[int, float] = {}
    for e in recent:
        if e.event == "cert.installed":
            installed.setdefault(e.node, e.t - renewed_at)
        slot = _int(e.fields.get("slot"))
        if e.event == "vault.signalled" and slot is not None:
            signalled.setdefault(slot, e.t)
    rows = [
        member_row(task, rounds, renewed_at, leaf_sha256, signalled.get(task.slot))
        for task in sorted(tasks, key=lambda t: t.slot)
    ]
    return Timeline(
        renewed_at=renewed_at,
        leaf_sha256=leaf_sha256,
        generation=generation,
        published=None if published is None else published.t - renewed_at,
        manifest_generation=None if published is None else _int(published.fields.get("generation")),
        installed=installed,
        rows=rows,
    )


# -- text ---------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"+{value:.1f} s"


def render(t: Timeline) -> str:
    started = datetime.fromtimestamp(t.renewed_at).astimezone().strftime("%H:%M:%S %Z")
    gen = "" if t.generation is None else f" certbot generation {t.generation},"
    manifest = "" if t.manifest_generation is None else f" (manifest {t.manifest_generation})"
    steps = [("published to the Storage Box", _s(t.published) + manifest)]
    steps += [
        (f"installed on node {node}", _s(at))
        for node, at in sorted(t.installed.items(), key=lambda item: item[1])
    ]
    if not t.installed:
        steps.append(("installed", "- (no cert.installed event seen)"))
    width = max(len(what) for what, _ in steps)
    lines = [f"renewal started at {started} (t = 0);{gen} new leaf sha256 {t.leaf_sha256[:16]}..."]
    lines += [f"  {what.ljust(width)}  {at}" for what, at in steps]
    # Only the columns that happened: restarts (restart mode), signals (signal mode).
    restarts = any(r.restarted is not None for r in t.rows)
    signals = any(r.signalled is not None for r in t.rows)
    header = ["member", "address"]
    header += ["restarted"] if restarts or not signals else []
    header += ["signalled"] if signals else []
    header += ["unsealed", "caught up", "serving new leaf"]
    table = [header]
    for row in t.rows:
        cells = [f"slot {row.slot}", row.ip or "-"]
        cells += [_s(row.restarted)] if restarts or not signals else []
        cells += [_s(row.signalled)] if signals else []
        unsealed = "stayed" if row.stayed_unsealed else _s(row.unsealed)
        cells += [unsealed if row.seen else "never seen", _s(row.caught_up), _s(row.serving)]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines.append("")
    for cells in table:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)
