"""StallWatch: a pass blocked on a dead mount is reported while it lasts (fake clock, no sleep)."""

from __future__ import annotations

from shared.health import HealthRegistry, StallWatch, Status


def test_a_pass_running_past_the_limit_is_failing_until_its_own_report() -> None:
    now = [100.0]
    health = HealthRegistry(service="t", node="n", version="0")
    health.report("sync", Status.OK, "installed")
    watch = StallWatch(health, "sync", limit=10, what="reading /mnt/box", clock=lambda: now[0])
    assert watch.poll() is None  # no pass running
    watch.begin()
    now[0] += 9
    assert watch.poll() is None
    assert health.check("sync").status is Status.OK  # type: ignore[union-attr]
    now[0] += 3
    assert watch.poll() == 12
    check = health.check("sync")
    assert check is not None
    assert check.status is Status.FAILING
    assert "reading /mnt/box has not returned for 12s" in check.message
    watch.end()
    health.report("sync", Status.OK, "installed")  # what the pass says when it returns
    now[0] += 100
    assert watch.poll() is None
    assert health.status is Status.OK
