"""The per-member timeline of one renewal, for ``scripts/renew``: pure functions of what was
observed (seal-sampler rounds, Swarm's task list, the services' log events).

Members are identified by their Swarm slot. The sampler sees only overlay addresses, and a
restarted member comes back as a new task with (usually) a new address, so every slot carries its
address before the renewal and its address after its restart; rounds are joined to slots by those.

Per member (all in seconds after the renewal started), in the order of a restart:
- stopped: its node's distributor sent the stop signal (restart mode, ``vault.member_stopped``);
- signalled: the distributor sent it SIGHUP (signal mode, from its ``vault.signalled`` event);
- restarted: Swarm created the member's new task (restart mode);
- task running: Swarm's task status reached ``running`` (the task's ``Status.Timestamp`` while its
  state is running; Swarm's task list has no container start time). With the stack's healthcheck
  that is its first passing check, sealed or not, not the container's start;
- answering: first round in which its address (the new one after a restart) answered
  ``/v1/sys/health`` at all, sealed or not. The sampler finds members through ``tasks.<service>``,
  which lists a task only once Swarm runs it: so this is bound by Swarm's DNS too;
- unsealed: first round it answered unsealed again after being seen sealed or unreachable
  (a signalled member normally never seals: shown as ``stayed``);
- caught up: first round, once unsealed, in which its ``raft_applied_index`` reached the active
  member's ``raft_committed_index`` as seen when it came back (the same or an earlier round after
  its restart);
- serving: first round it answered unsealed with the new leaf;
- gate passed: restart mode, the leader's next ``vault.stop_ordered`` (the gate opens and the next
  member is ordered in the same pass), for the member ordered last the rollout recorded done (its
  first ``vault.reload`` with decision ``adopt`` or ``done`` after that order); signal mode, the
  canary only, its ``vault.canary_proven`` (the others wait on no gate of their own).

``step_durations()`` turns a row into the seconds between those steps (``STEPS_AFTER_STOP``), for
``bench.rollout``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    running_at: float | None = None  # the new task reached running (epoch s); None: not (yet)


@dataclass(frozen=True)
class LogEvent:
    event: str
    t: float  # epoch seconds
    node: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Marks:
    """What the distributors logged about one member (epoch seconds; None: not logged)."""

    stopped: float | None = None  # vault.member_stopped (restart mode)
    signalled: float | None = None  # vault.signalled (signal mode)
    gate: float | None = None  # its gate passed (see the module's docstring)
    canary: bool = False  # signal mode: the member signalled first, alone


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
    stopped: float | None = None
    running: float | None = None
    answering: float | None = None
    gate: float | None = None
    canary: bool = False

    @property
    def stop(self) -> float | None:
        """The first step: the stop signal (restart mode) or the SIGHUP (signal mode)."""
        return self.stopped if self.stopped is not None else self.signalled


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

    @property
    def canary_proven_after(self) -> float | None:
        """Signal mode: seconds from the canary's SIGHUP until a distributor logged it proven
        serving the new leaf (None: no canary, or not proven)."""
        canary = next((r for r in self.rows if r.canary), None)
        if canary is None or canary.gate is None or canary.signalled is None:
            return None
        return canary.gate - canary.signalled


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


def _running_since(task: Mapping[str, Any]) -> float | None:
    """When Swarm marked the task running. A task's ``Status.Timestamp`` is the time of its last
    state change, so it says that only while the state is still ``running``."""
    status = task.get("Status") or {}
    return _epoch(status.get("Timestamp")) if status.get("State") == "running" else None


def slot_tasks(
    tasks_by_slot: Mapping[int, Sequence[Mapping[str, Any]]], network: str, since: float
) -> list[SlotTask]:
    """Docker's task dicts per slot (``LocalFlow.vault_tasks_by_slot()``) as ``SlotTask`` records:
    the newest task created after ``since`` is the restart; the newest one before it, the old.
    ``running_at`` is the newest task's, the one whose address the rows follow."""
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
                running_at=_running_since(after[-1][1]) if after else None,
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


def _answered(state: Mapping[str, object] | None) -> bool:
    """It answered /v1/sys/health (sealed or not); an error or no state is not an answer."""
    return state is not None and isinstance(state.get("sealed"), bool)


def member_row(
    task: SlotTask,
    rounds: Sequence[Round],
    renewed_at: float,
    leaf_sha256: str,
    marks: Marks | None = None,
) -> Row:
    """One member's row; every time is in seconds after ``renewed_at``."""
    marks = marks or Marks()
    signalled_at = marks.signalled
    after = task.restarted_at if task.restarted_at is not None else signalled_at
    start = renewed_at if after is None else max(after, renewed_at)
    # Before its restart the member answered at its old address, afterwards at its new one.
    ip_now = task.ip if task.restarted_at is not None else (task.ip or task.old_ip)
    later = [r for r in rounds if r.t >= start]

    def state(r: Round) -> dict[str, object] | None:
        return r.states.get(ip_now) if ip_now else None

    seen = any(state(r) is not None for r in later)
    answering_at = next((r.t for r in later if _answered(state(r))), None)
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
        stopped=rel(marks.stopped),
        running=rel(task.running_at),
        answering=rel(answering_at),
        gate=rel(marks.gate),
        canary=marks.canary,
    )


# The steps after a member's stop (or SIGHUP), in order, as step_durations() counts them. The new
# task splits stop -> running: Vault's shutdown, then Swarm's restart delay, start and first check.
STEPS_AFTER_STOP = (
    "new task",
    "task running",
    "answering (in DNS)",
    "unsealed",
    "caught up",
    "gate passed",
)


def step_durations(row: Row) -> list[float | None]:
    """Seconds to each of ``STEPS_AFTER_STOP``, each from the latest earlier step that has a time
    (the stop first): a step that did not happen (no new task in signal mode, ``stayed``
    unsealed) or was not seen is None and is skipped over."""
    steps = [
        row.stop,
        row.restarted,
        row.running,
        row.answering,
        row.unsealed,
        row.caught_up,
        row.gate,
    ]
    found: list[float | None] = []
    last = steps[0]
    for at in steps[1:]:
        found.append(None if at is None or last is None else at - last)
        last = at if at is not None else last
    return found


def _first_by_slot(events: Iterable[LogEvent], name: str) -> dict[int, float]:
    """The first ``name`` event's time per ``slot`` field (events in time order)."""
    found: dict[int, float] = {}
    for e in events:
        slot = _int(e.fields.get("slot"))
        if e.event == name and slot is not None:
            found.setdefault(slot, e.t)
    return found


_DONE_DECISIONS = frozenset({"adopt", "done"})


def restart_gates(events: Sequence[LogEvent]) -> dict[int, float]:
    """Restart mode: per slot, when its gate passed (epoch s). The leader orders the next member
    to stop in the pass that finds the gate open, so a member's gate passed at the next first
    order (``vault.stop_ordered`` with ``again`` false); the last member's when the rollout was
    recorded done (``vault.reload`` adopt or done, logged once per change of decision). Neither
    event carries the certificate: ``events`` must be this renewal's only."""
    orders = _first_by_slot(
        (e for e in events if e.fields.get("again") is not True), "vault.stop_ordered"
    )
    in_order = sorted(orders.items(), key=lambda item: item[1])
    gates = {slot: after for (slot, _), (_, after) in itertools.pairwise(in_order)}
    if in_order:
        last_slot, last_at = in_order[-1]
        done = next(
            (
                e.t
                for e in events
                if e.event == "vault.reload"
                and e.fields.get("decision") in _DONE_DECISIONS
                and e.t >= last_at
            ),
            None,
        )
        if done is not None:
            gates[last_slot] = done
    return gates


def member_marks(
    events: Sequence[LogEvent], renewed_at: float, leaf_sha256: str
) -> dict[int, Marks]:
    """Per slot, what the distributors logged about its member for this renewal, from events at
    or after ``renewed_at``: stops, SIGHUPs and the canary's proof about the new leaf (their
    ``fingerprint``); the leader's orders and decisions carry none (:func:`restart_gates`)."""
    recent = [e for e in events if e.t >= renewed_at]
    ours = [e for e in recent if _same_leaf(e, leaf_sha256)]
    stopped = _first_by_slot(ours, "vault.member_stopped")
    signalled = _first_by_slot(ours, "vault.signalled")
    canaries = {
        slot
        for e in ours
        if e.event == "vault.signalled"
        and e.fields.get("canary") is True
        and (slot := _int(e.fields.get("slot"))) is not None
    }
    proven = _first_by_slot(ours, "vault.canary_proven")
    gates = restart_gates(recent) | {s: at for s, at in proven.items() if s in canaries}
    return {
        slot: Marks(
            stopped=stopped.get(slot),
            signalled=signalled.get(slot),
            gate=gates.get(slot),
            canary=slot in canaries,
        )
        for slot in sorted({*stopped, *signalled, *gates})
    }


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

    ``events``: the reloader's ``cert.published``, the distributors' ``cert.installed``,
    ``vault.member_stopped``, ``vault.signalled``, ``vault.canary_proven``, ``vault.stop_ordered``
    and ``vault.reload``; only those at or after ``renewed_at`` count, and those with a
    ``fingerprint`` field (``AB:CD:..``, the same SHA-256 as ``leaf_sha256``) only about the new
    leaf. ``generation`` is certbot's, only shown (the manifest counts its own generations)."""
    recent = [e for e in events if e.t >= renewed_at and _same_leaf(e, leaf_sha256)]
    published = next((e for e in recent if e.event == "cert.published"), None)
    installed: dict[str, float] = {}
    for e in recent:
        if e.event == "cert.installed":
            installed.setdefault(e.node, e.t - renewed_at)
    marks = member_marks(events, renewed_at, leaf_sha256)
    rows = [
        member_row(task, rounds, renewed_at, leaf_sha256, marks.get(task.slot))
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


def _unsealed_cell(row: Row) -> str:
    if not row.seen:
        return "never seen"
    return "stayed" if row.stayed_unsealed else _s(row.unsealed)


def _columns(rows: Sequence[Row]) -> list[tuple[str, Callable[[Row], str]]]:
    """The table's columns, in the order of a restart. Only the steps that happened: stops and
    restarts (restart mode), signals (signal mode), gates when their events were logged."""
    restarts = any(r.restarted is not None for r in rows)
    signals = any(r.signalled is not None for r in rows)

    def some(value: Callable[[Row], float | None]) -> bool:
        return any(value(r) is not None for r in rows)

    optional: list[tuple[str, Callable[[Row], float | None], bool]] = [
        ("stopped", lambda r: r.stopped, some(lambda r: r.stopped)),
        ("signalled", lambda r: r.signalled, signals),
        ("restarted", lambda r: r.restarted, restarts or not signals),
        ("task running", lambda r: r.running, some(lambda r: r.running)),
    ]
    columns: list[tuple[str, Callable[[Row], str]]] = [
        ("member", lambda r: f"slot {r.slot}"),
        ("address", lambda r: r.ip or "-"),
    ]
    columns += [(title, _cell(value)) for title, value, shown in optional if shown]
    columns += [
        ("answering (in DNS)", _cell(lambda r: r.answering)),
        ("unsealed", _unsealed_cell),
        ("caught up", _cell(lambda r: r.caught_up)),
        ("serving new leaf", _cell(lambda r: r.serving)),
    ]
    if some(lambda r: r.gate):
        columns.append(("gate passed", _cell(lambda r: r.gate)))
    return columns


def _cell(value: Callable[[Row], float | None]) -> Callable[[Row], str]:
    return lambda row: _s(value(row))


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
    columns = _columns(t.rows)
    table = [[title for title, _ in columns]]
    table += [[cell(row) for _, cell in columns] for row in t.rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines.append("")
    for cells in table:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)
