"""Deliver notifications without ever holding up the flow.

``Notifier.notify(event)`` decides (deduplication, rate limit: :mod:`shared.notify_policy`) and
only enqueues, on a bounded queue; when it is full the event is dropped and counted. One daemon
thread delivers. Each send runs in its own short-lived daemon thread joined with the timeout, so a
receiver that hangs despite the socket timeouts costs that delivery only; while a send to a target
is still hanging, further sends to that target fail at once instead of piling up threads.

Outcomes land in ``certflow_notifications_total{kind, outcome}``: ``sent`` and ``failed`` per
target, ``dropped`` (queue full or stopping), ``deduplicated`` and ``rate_limited`` per event.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from shared.logs import get_logger
from shared.notify import RESOLVES, Event, Kind, payload
from shared.notify_policy import Limits, Memory, Verdict, admit
from shared.notify_targets import (
    AppriseTarget,
    DeliveryFailed,
    NotifyUrl,
    Target,
    WebhookTarget,
)

_log = get_logger(__name__)

OUTCOMES = ("sent", "failed", "dropped", "deduplicated", "rate_limited")
_STOP = object()
DEFAULT_LIMITS = Limits(dedup_seconds=3600.0, per_minute=20)


class NotifyConfig(Protocol):
    """The settings a notifier is built from (:class:`shared.settings.NotifySettings`)."""

    @property
    def notify_webhook_url(self) -> NotifyUrl | None: ...
    @property
    def notify_urls(self) -> tuple[NotifyUrl, ...]: ...
    @property
    def notify_timeout(self) -> float: ...
    @property
    def notify_queue_size(self) -> int: ...
    @property
    def notify_dedup_seconds(self) -> float: ...
    @property
    def notify_rate_per_minute(self) -> int: ...


class Notifier:
    def __init__(
        self,
        targets: Sequence[Target],
        *,
        service: str,
        node: str,
        timeout: float = 5.0,
        queue_size: int = 100,
        limits: Limits = DEFAULT_LIMITS,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = tuple(targets)
        self.service = service
        self.node = node
        self._timeout = timeout
        self._limits = limits
        self._clock = clock
        self._memory = Memory()
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._hanging: dict[str, threading.Thread] = {}
        self._stopping = False
        self.counter = Counter(
            "certflow_notifications_total",
            "Notifications by kind and outcome (sent/failed per target; dropped, deduplicated, "
            "rate_limited per event)",
            ["kind", "outcome"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        if self.targets:
            for kind in Kind:
                for outcome in OUTCOMES:
                    self.counter.labels(kind=kind.value, outcome=outcome)
        self._thread: threading.Thread | None = None
        if self.targets:
            self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
            self._thread.start()

    @classmethod
    def from_settings(
        cls,
        settings: NotifyConfig,
        *,
        service: str,
        node: str,
        registry: CollectorRegistry | None = None,
    ) -> Notifier:
        """The service's notifier; with no URL set it has no targets and no thread."""
        timeout = settings.notify_timeout
        targets: list[Target] = []
        if settings.notify_webhook_url is not None:
            targets.append(WebhookTarget(settings.notify_webhook_url, timeout=timeout))
        targets += [AppriseTarget(url, timeout=timeout) for url in settings.notify_urls]
        return cls(
            targets,
            service=service,
            node=node,
            timeout=timeout,
            queue_size=settings.notify_queue_size,
            limits=Limits(
                dedup_seconds=settings.notify_dedup_seconds,
                per_minute=settings.notify_rate_per_minute,
            ),
            registry=registry,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    # -- the caller's side: never blocks -----------------------------------------------------

    def notify(self, event: Event) -> Verdict | None:
        """Queue ``event`` for delivery; returns the policy's verdict (None: off or dropped)."""
        if not self.targets:
            return None
        event = replace(
            event,
            service=event.service or self.service,
            node=event.node or self.node,
            at=event.at or datetime.now(UTC),
        )
        kind = event.kind.value
        with self._lock:
            if self._stopping:
                self.counter.labels(kind=kind, outcome="dropped").inc()
                return None
            clears = tuple((k.value, event.subject) for k in RESOLVES.get(event.kind, ()))
            verdict, self._memory = admit(
                (kind, event.subject), self._memory, self._clock(), self._limits, clears
            )
        if verdict is not Verdict.SEND:
            self.counter.labels(kind=kind, outcome=verdict.value).inc()
            _log.info("notify.skipped", kind=kind, subject=event.subject, why=verdict.value)
            return verdict
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.counter.labels(kind=kind, outcome="dropped").inc()
            _log.warning("notify.dropped", kind=kind, subject=event.subject, why="queue full")
            return None
        return verdict

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking events, deliver what is queued for at most ``timeout`` seconds."""
        with self._lock:
            self._stopping = True
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                # Full and not draining in time: make room for the stop mark (counted).
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(dropped, Event):
                    self.counter.labels(kind=dropped.kind.value, outcome="dropped").inc()
        self._thread.join(max(0.0, deadline - time.monotonic()))

    # -- the delivery thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Event)
            data = payload(item)
            for target in self.targets:
                self._deliver(target, item, data)

    def _deliver(self, target: Target, event: Event, data: dict[str, Any]) -> None:
        kind = event.kind.value
        error = self._bounded_send(target, data)
        if error is None:
            self.counter.labels(kind=kind, outcome="sent").inc()
            _log.info("notify.sent", kind=kind, subject=event.subject, target=target.name)
            return
        self.counter.labels(kind=kind, outcome="failed").inc()
        _log.warning(
            "notify.failed", kind=kind, subject=event.subject, target=target.name, error=error
        )

    def _bounded_send(self, target: Target, data: dict[str, Any]) -> str | None:
        """None when delivered, else why not (never the URL)."""
        previous = self._hanging.get(target.name)
        if previous is not None:
            if previous.is_alive():
                return "an earlier send to this target is still hanging"
            del self._hanging[target.name]
        outcome: list[str | None] = []

        def send() -> None:
            try:
                target.send(data)
                outcome.append(None)
            except DeliveryFailed as exc:
                outcome.append(str(exc))
            except Exception as exc:  # a target's bug costs this delivery only
                outcome.append(type(exc).__name__)

        worker = threading.Thread(target=send, name=f"notify-send {target.name}", daemon=True)
        worker.start()
        # Socket timeouts bound most sends; the join bounds the rest (slow trickles, DNS).
        worker.join(self._timeout + 1.0)
        if worker.is_alive():
            self._hanging[target.name] = worker
            return f"no answer within {self._timeout:g}s"
        return outcome[0] if outcome else "send ended without a result"
