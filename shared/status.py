"""How healthy a part is, and times as /health shows them: plain values for decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"

    @property
    def rank(self) -> int:
        return {Status.OK: 0, Status.DEGRADED: 1, Status.FAILING: 2}[self]


def iso(value: float | datetime | None) -> str | None:
    """ISO 8601 text of an epoch time or datetime (epoch times in UTC); None stays None."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.isoformat()
