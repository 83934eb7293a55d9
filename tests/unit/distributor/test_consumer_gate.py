"""The consumer gate, as tables: a consumer with three slots on nodes a, b, c. The pair ``NEW``
was installed on every node at 1000; tasks t1..t3 started at 500 (on the old pair)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.consumer_gate import (
    Decision,
    Limits,
    Memory,
    Observed,
    Task,
    Verdict,
    accepted,
    step,
)
from shared.consumers import Check, ConsumerSpec, Reloaded

pytestmark = pytest.mark.unit

NEW = "AA:NEW"
OLD = "BB:OLD"
LIMITS = Limits(bound=60.0, resend_every=10.0)
RESTART = ConsumerSpec("web", "restart")
SIGNAL = ConsumerSpec("web", "signal", signal="SIGHUP")
CHECKED = replace(RESTART, check=Check("web.iklim.co", 443))


def task(slot: int, *, tid: str | None = None, started: float = 500.0, **kw: object) -> Task:
    node = "abc"[slot - 1]
    base = Task(
        task_id=tid or f"t{slot}",
        unit=str(slot),
        where=f"slot {slot} on host-{node}",
        node_id=node,
        running=True,
        started_at=started,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def obs(*tasks: Task, spec: ConsumerSpec = RESTART, now: float = 1010.0, **kw: object) -> Observed:
    base = Observed(
        now=now,
        spec=spec,
        problem=None,
        fingerprint=NEW,
        done=None,
        reloaded=(),
        tasks=tasks or (task(1), task(2), task(3)),
        installed=dict.fromkeys("abc", (NEW, 1000.0)),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def one(o: Observed, memory: Memory | None = None) -> Decision:
    return step(o, memory or Memory(fingerprint=NEW), LIMITS)[0]


@pytest.mark.parametrize(
    ("observed", "verdict", "says"),
    [
        (obs(problem="certflow.reload='bounce': expected"), Verdict.REPORTED, "bounce"),
        (obs(spec=replace(RESTART, mode="none")), Verdict.WATCHED, "none"),
        (obs(fingerprint=None), Verdict.WAIT, "no pair"),
        (obs(installed={"a": (NEW, 1000.0), "b": (OLD, 1.0)}), Verdict.WAIT, "slot 2 on host-b"),
        (obs(done=NEW), Verdict.DONE, "every task"),
        # First sight, every task started before its node had the pair: reload, lowest slot.
        (obs(), Verdict.RELOAD, "slot 1 on host-a: restart"),
        (obs(spec=SIGNAL), Verdict.RELOAD, "signal SIGHUP"),
        # A consumer labelled after the pair came, started on it: recorded, nothing reloaded.
        (obs(task(1, started=1001), task(2, started=1002)), Verdict.RECORD, "recording"),
        # With a check, what it serves decides, not when it started.
        (obs(task(1, serves=NEW), task(2, serves=NEW), spec=CHECKED), Verdict.RECORD, ""),
        (obs(task(1, serves=NEW), task(2, serves=OLD), spec=CHECKED), Verdict.RELOAD, "slot 2"),
        # A task not running holds the next reload: one more down could leave none.
        (obs(task(1), task(2, running=False)), Verdict.WAIT, "slot 2 on host-b"),
        (obs(paused="paused by an operator"), Verdict.PAUSED, "held: slot 1"),
    ],
)
def test_what_a_consumer_does_next(observed: Observed, verdict: Verdict, says: str) -> None:
    decision = one(observed)
    assert decision.verdict is verdict, decision
    assert says in decision.message


def test_a_restart_is_sent_again_only_while_its_task_runs_and_only_for_that_task() -> None:
    first, memory = step(obs(now=1010.0), Memory(), LIMITS)
    assert first.verdict is Verdict.RELOAD
    assert first.task is not None
    assert first.task.task_id == "t1"
    ordered = (Reloaded("1", "t1"),)
    soon, memory = step(obs(now=1015.0, reloaded=ordered), memory, LIMITS)
    assert soon.verdict is Verdict.GATE
    assert not soon.send
    assert "still running" in soon.message
    later, memory = step(obs(now=1021.0, reloaded=ordered), memory, LIMITS)
    assert later.verdict is Verdict.GATE
    assert later.send
    assert later.waits_on == "t1"
    # Swarm started it again on the new pair: slot 2 is next, slot 1 never again.
    back = (task(1, tid="t1b", started=1022.0), task(2), task(3))
    nxt, _ = step(obs(*back, now=1023.0, reloaded=ordered), memory, LIMITS)
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.task_id == "t2"


def test_a_task_not_back_past_the_bound_halts_this_consumer_and_reloads_nothing_more() -> None:
    ordered = (Reloaded("1", "t1"),)
    gone = (task(1, tid="t1b", running=False, started=1012.0), task(2), task(3))
    memory = Memory(fingerprint=NEW, gate_task="t1", gate_since=1010.0, sent_at=1010.0)
    waiting = one(obs(*gone, now=1050.0, reloaded=ordered), memory)
    assert waiting.verdict is Verdict.GATE
    assert "not running yet" in waiting.message
    halted = one(obs(*gone, now=1071.0, reloaded=ordered), memory)
    assert halted.verdict is Verdict.HALTED
    assert "slot 1 on host-a: not running yet" in halted.message
    assert "other tasks keep what they serve" in halted.message
    assert not halted.send  # a new task: never a second reload


def test_with_a_check_the_gate_waits_for_the_new_leaf_and_says_what_is_served() -> None:
    ordered = (Reloaded("1", "t1"),)
    memory = Memory(fingerprint=NEW, gate_task="t1", gate_since=1010.0)
    old = (task(1, tid="t1b", started=1012.0, serves=OLD), task(2, serves=OLD))
    held = one(obs(*old, spec=CHECKED, reloaded=ordered, now=1013.0), memory)
    assert held.verdict is Verdict.GATE
    assert "serves bbold at tls://web.iklim.co:443, not aanew" in held.message
    unread = (task(1, tid="t1b", started=1012.0, detail="connection refused"), task(2, serves=OLD))
    held = one(obs(*unread, spec=CHECKED, reloaded=ordered, now=1013.0), memory)
    assert "not read: connection refused" in held.message
    new = (task(1, tid="t1b", started=1012.0, serves=NEW), task(2, serves=OLD))
    nxt = one(obs(*new, spec=CHECKED, reloaded=ordered, now=1013.0), memory)
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.unit == "2"


def test_a_reloaded_unit_that_serves_the_old_leaf_again_is_never_reloaded_twice() -> None:
    ordered = (Reloaded("1", "t1"),)
    memory = Memory(fingerprint=NEW, gate_task="t1", gate_since=1010.0)
    relapsed = (task(1, tid="t1c", started=1030.0, serves=OLD), task(2, serves=NEW))
    for now in (1031.0, 1080.0):
        decision = one(obs(*relapsed, spec=CHECKED, reloaded=ordered, now=now), memory)
        assert decision.verdict in {Verdict.GATE, Verdict.HALTED}
        assert not decision.send


def test_a_signal_goes_once_then_the_check_proves_it() -> None:
    spec = replace(SIGNAL, check=Check("web.iklim.co", 443))
    ordered = (Reloaded("1", "t1"),)
    memory = Memory(fingerprint=NEW, gate_task="t1", gate_since=1010.0, sent_at=1010.0)
    tasks = (task(1, serves=OLD), task(2, serves=OLD))
    lost = one(obs(*tasks, spec=spec, reloaded=ordered, now=1021.0), memory)
    assert lost.verdict is Verdict.GATE
    assert lost.send
    memory = accepted(memory, "t1")
    held = one(obs(*tasks, spec=spec, reloaded=ordered, now=1031.0), memory)
    assert held.verdict is Verdict.GATE
    assert not held.send
    proven = (task(1, serves=NEW), task(2, serves=OLD))
    nxt = one(obs(*proven, spec=spec, reloaded=ordered, now=1032.0), memory)
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.task_id == "t2"


def test_without_a_check_an_accepted_signal_is_as_far_as_proof_goes() -> None:
    ordered = tuple(Reloaded(str(s), f"t{s}") for s in (1, 2, 3))
    memory = Memory(fingerprint=NEW, delivered=frozenset({"t1", "t2", "t3"}))
    assert one(obs(spec=SIGNAL, reloaded=ordered), memory).verdict is Verdict.RECORD


def test_a_node_lost_mid_reload_is_left_out_and_never_recorded_done() -> None:
    ordered = (Reloaded("2", "t2"),)
    memory = Memory(fingerprint=NEW, gate_task="t2", gate_since=1010.0, sent_at=1010.0)
    down = frozenset({"b"})
    # Slot 2's node was lost while it restarted: the others go on.
    nxt = one(obs(reloaded=ordered, down=down), memory)
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.unit == "1"
    assert nxt.task is not None
    rest = (task(1, tid="t1b", started=1020.0), task(2), task(3, tid="t3b", started=1030.0))
    every = (*ordered, Reloaded("1", "t1"), Reloaded("3", "t3"))
    waiting = one(obs(*rest, reloaded=every, down=down), memory)
    assert waiting.verdict is Verdict.WAIT
    assert "slot 2 on host-b" in waiting.message
    assert waiting.left_out == ("slot 2 on host-b",)
    # The node is back with the same task still on the old pair: the same order goes again.
    again = one(obs(*rest, reloaded=every, now=1100.0), memory)
    assert again.verdict in {Verdict.GATE, Verdict.HALTED}
    assert again.send
    assert again.waits_on == "t2"


def test_a_global_consumer_reloads_once_per_node() -> None:
    tasks = tuple(replace(task(i), unit=n, where=f"host-{n}") for i, n in ((1, "a"), (2, "b")))
    first = one(obs(*tasks))
    assert first.verdict is Verdict.RELOAD
    assert first.task is not None
    assert first.task.unit == "a"


def test_a_pause_sends_nothing_not_even_again() -> None:
    ordered = (Reloaded("1", "t1"),)
    memory = Memory(fingerprint=NEW, gate_task="t1", gate_since=1010.0, sent_at=1000.0)
    held = one(obs(reloaded=ordered, paused="paused by an operator"), memory)
    assert held.verdict is Verdict.GATE
    assert not held.send


def test_a_replacement_no_node_can_take_is_left_out_not_waited_on() -> None:
    """A lost node's task, replaced by Swarm, with nowhere to go (one task per node)."""
    pending = replace(task(2, tid="t2b", running=False, started=1020.0), node_id="", where="slot 2")
    nxt = one(obs(task(1), pending, task(3)))
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.unit == "1"
    done = (task(1, tid="t1b", started=1030.0), pending, task(3, tid="t3b", started=1040.0))
    every = (Reloaded("1", "t1"), Reloaded("3", "t3"))
    waiting = one(obs(*done, reloaded=every))
    assert waiting.verdict is Verdict.WAIT
    assert waiting.left_out == ("slot 2",)


def test_a_task_starting_on_a_live_node_holds_the_next_reload() -> None:
    starting = task(2, tid="t2b", running=False, started=1020.0)
    held = one(obs(task(1), starting, task(3)))
    assert held.verdict is Verdict.WAIT
    assert "slot 2 on host-b" in held.message


def _on_node(node: str, *, tid: str | None = None, **kw: object) -> Task:
    """A global consumer's task: its unit is its node."""
    base = replace(task(1), task_id=tid or f"g-{node}", unit=node, where=f"host-{node}")
    return replace(base, node_id=node, **kw)  # type: ignore[arg-type]


def test_a_task_proven_on_an_older_pair_after_done_is_reloaded_once() -> None:
    """A node back (or new) ran its task before its distributor installed the pair."""
    tasks = (task(1, tid="t1b", started=1020.0, serves=NEW), task(2, tid="t2c", serves=OLD))
    nxt = one(obs(*tasks, spec=CHECKED, done=NEW, reloaded=(Reloaded("1", "t1"),)))
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.task_id == "t2c"
    # Unknown is not proof: not read, or no install time, stays done.
    unread = (task(1, serves=NEW), task(2, tid="t2c", started=1100.0))
    assert one(obs(*unread, spec=CHECKED, done=NEW)).verdict is Verdict.DONE
    # A unit reloaded once already is never reloaded again, even if it relapsed.
    once = (Reloaded("2", "t2"),)
    assert one(obs(*tasks, spec=CHECKED, done=NEW, reloaded=once)).verdict is Verdict.DONE
    # Without a check, start times prove nothing once done (a pair installed again moves its
    # install time): done stays done.
    early = (task(1, started=1001.0), task(2, started=900.0))
    assert one(obs(*early, done=NEW)).verdict is Verdict.DONE


def test_a_global_consumer_is_not_recorded_done_while_a_node_is_down() -> None:
    """Swarm shuts a down node's task of a global service down: it is not in the list."""
    tasks = (_on_node("a", started_at=1001.0), _on_node("c", started_at=1002.0))
    down = frozenset({"b"})
    waiting = one(obs(*tasks, global_mode=True, down=down, down_hosts=("host-b",)))
    assert waiting.verdict is Verdict.WAIT
    assert "host-b" in waiting.message
    assert one(obs(*tasks, global_mode=True)).verdict is Verdict.RECORD


def test_a_global_consumer_goes_on_when_the_node_it_reloads_is_lost() -> None:
    ordered = (Reloaded("b", "g-b"),)
    memory = Memory(fingerprint=NEW, gate_task="g-b", gate_since=1010.0, sent_at=1010.0)
    tasks = (_on_node("a"), _on_node("c"))  # b's task shut down by Swarm
    nxt = one(obs(*tasks, global_mode=True, reloaded=ordered, down=frozenset({"b"})), memory)
    assert nxt.verdict is Verdict.RELOAD
    assert nxt.task is not None
    assert nxt.task.unit == "a"
