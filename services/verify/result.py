"""What a verify check returns, apart from the checks, so that check modules beside
``checks.py`` build the same results without importing it (``checks.evaluate`` imports them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    outcome: Outcome
    summary: str
    next_step: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def passed(check: str, summary: str, **details: Any) -> Result:
    return Result(check, Outcome.OK, summary, details=details)


def failed(check: str, summary: str, next_step: str, **details: Any) -> Result:
    return Result(check, Outcome.FAIL, summary, next_step, details)


def short(fingerprint: str) -> str:
    """The first bytes of a SHA-256 fingerprint: enough for people to compare by eye."""
    return fingerprint[:23]
