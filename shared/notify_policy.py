"""Whether a notification goes out: deduplication and a rate limit, as a pure function.

``admit(key, memory, now, limits)`` -> (verdict, new memory). ``key`` is (kind, subject); ``now``
is a monotonic clock reading passed in, so the tables in the tests need no clock and no mocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

RATE_WINDOW = 60.0  # the rate limit counts sends within the last minute


class Verdict(StrEnum):
    SEND = "send"
    DEDUPLICATED = "deduplicated"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Limits:
    dedup_seconds: float
    per_minute: int


@dataclass(frozen=True, slots=True)
class Memory:
    """When each (kind, subject) was last sent, and when the sends of the last minute were."""

    last_sent: Mapping[tuple[str, str], float] = field(default_factory=dict)
    recent: tuple[float, ...] = ()


def admit(
    key: tuple[str, str],
    memory: Memory,
    now: float,
    limits: Limits,
    clears: tuple[tuple[str, str], ...] = (),
) -> tuple[Verdict, Memory]:
    """``clears``: the keys this event ends (a resume ends a halt): once it is sent, the next
    occurrence of those is news again, not a duplicate."""
    # Forget what no longer matters, so the memory stays as small as the windows.
    last_sent = {k: t for k, t in memory.last_sent.items() if now - t < limits.dedup_seconds}
    recent = tuple(t for t in memory.recent if now - t < RATE_WINDOW)
    if key in last_sent:
        # A duplicate does not extend the window: a lasting condition is told again after it.
        return Verdict.DEDUPLICATED, Memory(last_sent, recent)
    if len(recent) >= limits.per_minute:
        # Not remembered as sent: the same event after the burst is not a duplicate.
        return Verdict.RATE_LIMITED, Memory(last_sent, recent)
    if limits.dedup_seconds > 0:
        last_sent[key] = now
    for ended in clears:
        last_sent.pop(ended, None)
    return Verdict.SEND, Memory(last_sent, (*recent, now))
