"""One retry policy for the whole project (tenacity underneath).

Every retry is bounded by attempts *and* total time, waits grow exponentially with jitter, only the
named transient errors are retried, and each scheduled retry is logged as ``retry.scheduled``.
Tests call :func:`disable_waits` so retries happen at once, without patching the clock.
"""

from __future__ import annotations

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


def waits_enabled() -> bool:
    return _waits_enabled


def _log_retry(what: str) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _log.warning(
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
) -> tenacity.Retrying:
    """A ``tenacity.Retrying`` for ``with``/``for`` use: ``for attempt in retrying(...): ...``."""
    wait: tenacity.wait.wait_base = (
        tenacity.wait_exponential_jitter(initial=initial, max=maximum)
        if _waits_enabled
        else tenacity.wait_none()
    )
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(timeout),
        wait=wait,
        retry=tenacity.retry_if_exception_type(on),
        before_sleep=_log_retry(what),
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
    """Delay before the next attempt of a long-running loop after ``failures`` failures in a row.

    Exponential from ``initial`` up to ``maximum``, with up to 20 % jitter so that many replicas
    do not retry in step. Zero failures means the normal cadence (``initial``).
    """
    if not _waits_enabled:
        return 0.0
    base = min(maximum, initial * (2 ** max(0, failures - 1))) if failures else initial
    jitter = (rng or random).uniform(0.0, 0.2 * base)  # jitter, not crypto
    return float(min(maximum, base + jitter))
