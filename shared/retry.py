"""One retry policy for the whole project (tenacity underneath).

Every retry is bounded by attempts *and* total time, waits grow exponentially with jitter, only the
named transient errors are retried, and each scheduled retry is logged as ``retry.scheduled``.
Tests call :func:`disable_waits` so retries happen at once, without patching the clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

import tenacity

from shared.logs import get_logger

T = TypeVar("T")
_log = get_logger(__name__)
_waits_enabled = True


def disable_waits(disabled: bool = True) -> None:
    """Test switch: make every retry and backoff wait zero seconds."""
    global _waits_enabled  # noqa: PLW0603 - a process-wide test switch, like stamina's
    _waits_enabled = not disabled


class Backoff(tenacity.wait.wait_base):
    """The project's wait: exponential from ``initial``, capped at ``maximum``, plus up to 20 %
    jitter so that many replicas do not retry in step. Zero while waits are disabled (tests)."""

    def __init__(self, *, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first failure)."""
        if not _waits_enabled:
            return 0.0
        base = min(self.maximum, self.initial * (2 ** max(0, attempt - 1)))
        return float(min(self.maximum, base + self._rng.uniform(0.0, 0.2 * base)))

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


def _log_retry(what: str, level: int) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _log.log(
            level,
            "retry.scheduled",
            what=what,
            attempt=state.attempt_number,
            wait_s=round(state.next_action.sleep, 3) if state.next_action else 0.0,
            error=str(exc),
            error_type=type(exc).__name__,
        )

    return before_sleep


def retrying(
    what: str,
    *,
    on: tuple[type[BaseException], ...],
    attempts: int = 5,
    timeout: float = 30.0,
    initial: float = 0.1,
    maximum: float = 5.0,
    level: int = logging.WARNING,
) -> tenacity.Retrying:
    """A ``tenacity.Retrying`` for ``with``/``for`` use: ``for attempt in retrying(...): ...``.

    When the attempts or the time run out, the last error is raised as it was. ``level`` is the
    log level of ``retry.scheduled`` (lower it for retries that are part of normal operation).
    """
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(timeout),
        wait=Backoff(initial=initial, maximum=maximum),
        retry=tenacity.retry_if_exception_type(on),
        before_sleep=_log_retry(what, level),
        reraise=True,
    )


def call_with_retry(
    what: str,
    fn: Callable[[], T],
    *,
    on: tuple[type[BaseException], ...],
    attempts: int = 5,
    timeout: float = 30.0,
    initial: float = 0.1,
    maximum: float = 5.0,
) -> T:
    result: T = retrying(
        what, on=on, attempts=attempts, timeout=timeout, initial=initial, maximum=maximum
    )(fn)
    return result


def backoff_delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next pass of a long-running loop after ``failures`` failures in a row.

    The same computation as :class:`Backoff` (for loops that never give up, so no attempt or time
    bound). Zero failures means the normal cadence (``initial``).
    """
    return Backoff(initial=initial, maximum=maximum, rng=rng).delay(max(1, failures))
