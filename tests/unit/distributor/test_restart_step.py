"""The restart decision with its memory: ``step(observed, memory) -> (decision, memory)``.

Each case is a sequence of observations fed through ``step``, as the coordinator's loop does, so
the memory's effect (timers, the posted window, the resume budget) is tested without a clock or a
Docker engine.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.distributor.coordinator import Kind, Limits, Memory, Observed, step
from services.distributor.facts import resumes_from_label, resumes_label
from tests.unit.distributor.test_coordinator import NEW, OLD, PAUSED, observed

pytestmark = pytest.mark.unit

LIMITS = Limits(
    lag_timeout=60.0, update_timeout=100.0, resume_window=15.0, max_resumes=2, resume_after=30.0
)


def run(*seen: Observed, memory: Memory | None = None) -> list[tuple[Kind, Memory]]:
    out = []
    mem = memory or Memory()
    for obs in seen:
        decision, mem = step(obs, mem, LIMITS)
        out.append((decision.kind, mem))
    return out


def lagging(now: float) -> Observed:
    return observed(now=now, reports={"n1": observed().reports["n1"]})


def test_a_lagging_node_is_waited_for_then_reported_after_the_lag_timeout() -> None:
    kinds = [kind for kind, _ in run(lagging(1000), lagging(1030), lagging(1061))]
    assert kinds == [Kind.WAIT, Kind.WAIT, Kind.LAGGING]


def test_the_lag_timer_starts_again_for_a_new_certificate() -> None:
    (_, mem), *_ = run(lagging(1000))
    newer = replace(lagging(1100), fingerprint="CC:NEWER")
    decision, mem = step(newer, mem, LIMITS)
    assert decision.kind is Kind.WAIT
    assert (mem.fingerprint, mem.pending_since) == ("CC:NEWER", 1100)


def test_a_posted_restart_is_waited_for_until_swarm_reports_on_it() -> None:
    posted = observed(now=1000)
    not_started = observed(now=1010, label=NEW, update_state=None)
    still_absent_later = observed(now=1200, label=NEW, update_state=None)
    kinds = [kind for kind, _ in run(posted, not_started, still_absent_later)]
    assert kinds == [Kind.RESTART, Kind.WAIT, Kind.DONE]


def paused_at(now: float, **overrides: object) -> Observed:
    base: dict[str, object] = {
        "now": now,
        "label": NEW,
        "update_state": "paused",
        "update_message": PAUSED,
    }
    base.update(overrides)
    return observed(**base)


def test_a_pause_is_resumed_after_it_settles_and_the_count_is_kept() -> None:
    steps = run(paused_at(1000), paused_at(1031))
    assert [kind for kind, _ in steps] == [Kind.FAILED, Kind.RESUME]
    assert steps[-1][1].resumes == 1


def test_the_resume_budget_runs_out() -> None:
    steps = run(
        paused_at(1000),
        paused_at(1031),  # resume 1
        observed(now=1032, label=NEW, update_state="updating"),
        paused_at(1100),
        paused_at(1131),  # resume 2
        observed(now=1132, label=NEW, update_state="updating"),
        paused_at(1200),
        paused_at(1300),
    )
    kinds = [kind for kind, _ in steps]
    assert kinds.count(Kind.RESUME) == 2
    assert kinds[-1] is Kind.FAILED


def test_a_new_leader_keeps_the_budget_recorded_in_the_service() -> None:
    # What the shell does on a fresh process: the resume count comes from the service label.
    recorded = resumes_from_label(resumes_label(NEW, 2), NEW)
    steps = run(paused_at(1000), paused_at(1100), memory=Memory(fingerprint=NEW, resumes=recorded))
    assert [kind for kind, _ in steps] == [Kind.FAILED, Kind.FAILED]


def test_a_count_recorded_for_another_certificate_is_not_this_ones() -> None:
    assert resumes_from_label(resumes_label(OLD, 3), NEW) == 0
    assert resumes_from_label(None, NEW) == 0
    assert resumes_from_label("garbage", NEW) == 0


def test_a_halted_pause_is_not_resumed_while_its_member_is_down_and_is_once_it_is_back() -> None:
    down = ("slot 1 on host-n1: starting",)
    steps = run(
        paused_at(1000, not_back=down),
        paused_at(1100, not_back=down),
        paused_at(1200, not_back=down),
        paused_at(1300),
    )
    assert [kind for kind, _ in steps] == [Kind.FAILED, Kind.FAILED, Kind.FAILED, Kind.RESUME]
    assert steps[-1][1].resumes == 1
