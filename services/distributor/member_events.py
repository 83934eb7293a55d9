"""Docker's event stream of this node's Vault members: wake the reload loop when one starts, dies
or turns healthy, instead of at its next tick.

The loop's polling stays the source of truth: events only bring a pass forward. A stream that
cannot be opened or breaks is opened again after a backoff, and until then the loop polls as
before (at the gate's pace while a rollout is in flight).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared.docker_engine import DockerEngine, EventStream
from shared.errors import DockerError
from shared.logs import get_logger
from shared.swarm import ContainerEvent

_log = get_logger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


class MemberEventWatch:
    """Follows ``service``'s container events on this engine in a thread; ``on_event`` gets each
    one (on that thread: keep it short)."""

    def __init__(
        self,
        engine: DockerEngine,
        service: str,
        on_event: Callable[[ContainerEvent], None],
        *,
        backoff_first: float = BACKOFF_FIRST,
    ) -> None:
        self.engine = engine
        self.backoff_first = backoff_first
        self.service = service
        self.on_event = on_event
        self.events = 0  # events received (read by tests and metrics)
        self.following = threading.Event()  # set while a stream is open
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: EventStream | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="member-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        backoff = self.backoff_first
        failed: str | None = None
        while not self._stop.is_set():
            try:
                stream = self.engine.container_events(self.service)
                with self._lock:
                    self._stream = stream
                if self._stop.is_set():
                    stream.close()
                    return
                self.following.set()
                if failed is not None:
                    _log.info("events.resumed", service=self.service)
                    failed = None
                for event in stream:
                    backoff = self.backoff_first
                    self.events += 1
                    self.on_event(event)
                if self._stop.is_set():
                    return
                why = "the engine ended the stream"
            except DockerError as exc:
                why = str(exc)
            self.following.clear()
            if failed != why:  # one line per distinct failure, not one per retry
                _log.warning(
                    "events.unavailable",
                    service=self.service,
                    error=why,
                    retry_in=backoff,
                    fallback="polling",
                )
                failed = why
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
