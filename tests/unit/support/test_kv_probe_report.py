"""The KV probe's report: first-try failures, and what a client that tries the next member sees."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kv_probe import report


def attempt(at: float, ok: bool, retried_ok: bool | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"at": at, "ok": ok, "error": "" if ok else "HTTP 503 from x: sealed"}
    if retried_ok is not None:
        found["retried_ok"] = retried_ok
    return found


def test_a_plain_client_counts_every_refused_write_and_has_no_retry_figures() -> None:
    got = report([attempt(0.0, True), attempt(0.5, False), attempt(1.0, True)], 0.5)
    assert (got["attempts"], got["failed"], got["longest_gap_s"]) == (3, 1, 1.0)
    assert got["errors"] == {"HTTP 503 from x: sealed": 1}
    assert "unserved" not in got


@pytest.mark.parametrize(
    ("retried", "unserved", "served_gap"),
    [
        ((True, True), 0, 0.5),  # the next member took both: no gap at all for the client
        ((True, False), 1, 1.0),  # no member took the second one
        ((False, False), 2, 1.5),
    ],
)
def test_a_client_that_tries_the_next_member(
    retried: tuple[bool, bool], unserved: int, served_gap: float
) -> None:
    attempts = [
        attempt(0.0, True),
        attempt(0.5, False, retried_ok=retried[0]),
        attempt(1.0, False, retried_ok=retried[1]),
        attempt(1.5, True),
    ]
    got = report(attempts, 0.5)
    assert (got["failed"], got["longest_gap_s"]) == (2, 1.5)  # first tries, as before
    assert (got["unserved"], got["longest_served_gap_s"]) == (unserved, served_gap)
