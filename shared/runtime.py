"""Process shell shared by the services: health server beside the worker loop, one shutdown path.

The worker runs in the main thread and receives a ``threading.Event`` that SIGTERM/SIGINT set
(the handlers only set the flag). uvicorn serves ``/health`` and ``/metrics`` from a background
thread and is stopped after the worker returns, so Swarm's stop grace period covers both.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.health import HealthRegistry, build_app
from shared.logs import get_logger

_log = get_logger(__name__)


class HealthServer:
    """uvicorn in a thread; ``port`` is the bound port (useful with port 0 in tests)."""

    def __init__(
        self,
        health: HealthRegistry,
        metrics: CollectorRegistry,
        *,
        host: str,
        port: int,
        routes: Callable[[FastAPI], None] | None = None,
    ) -> None:
        app = build_app(health, metrics)
        if routes is not None:
            routes(app)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="health-http", daemon=True)
        self.port = port

    def start(self, timeout: float = 10.0) -> int:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("health server did not start (port in use?)")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``; previous handlers come back afterwards."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        _log.info("shutdown.requested", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_service(
    *,
    health: HealthRegistry,
    metrics: CollectorRegistry,
    host: str,
    port: int,
    worker: Callable[[threading.Event], int],
    stop: threading.Event | None = None,
    routes: Callable[[FastAPI], None] | None = None,
) -> int:
    """Serve health (and a service's own ``routes``) while ``worker(stop)`` runs; return the
    worker's exit code."""
    stop = stop or threading.Event()
    server = HealthServer(health, metrics, host=host, port=port, routes=routes)
    with stop_on_signals(stop):
        bound = server.start()
        _log.info("health.listening", host=host, port=bound)
        try:
            return worker(stop)
        finally:
            server.stop()
            _log.info("service.stopped")
