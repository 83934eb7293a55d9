"""Health state and the HTTP app that serves it (``/health`` and ``/metrics``).

Services report named checks (``source``, ``storage``, ``vault:10.0.1.5`` ...) with a status, a
message and details; the overall status is the worst check, and ``since`` is when each status began.
The worker thread writes, the HTTP thread reads; a lock keeps snapshots consistent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from shared.logs import get_logger
from shared.manifest_auth import MacKeys
from shared.status import Status, iso

_log = get_logger(__name__)

__all__ = ["Check", "HealthRegistry", "StallWatch", "Status", "build_app"]


@dataclass
class Check:
    status: Status
    message: str
    since: float
    updated: float
    details: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


class HealthRegistry:
    def __init__(
        self,
        *,
        service: str,
        node: str,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.node = node
        self.version = version
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, Check] = {}
        self._info: dict[str, Any] = {}
        self._overall = Status.OK
        self._overall_since = clock()

    def report(self, name: str, status: Status, message: str = "", **details: Any) -> None:
        """Set check ``name``. ``since`` moves only when the status changes."""
        now = self._clock()
        with self._lock:
            previous = self._checks.get(name)
            since = previous.since if previous and previous.status is status else now
            self._checks[name] = Check(status, message, since, now, _jsonable(details))
            self._recompute(now)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._checks.pop(name, None) is not None:
                self._recompute(self._clock())

    def set_info(self, **info: Any) -> None:
        """Facts that are not checks (installed generation, node ID ...), shown in /health."""
        with self._lock:
            self._info.update(_jsonable(info))

    def _recompute(self, now: float) -> None:
        worst = max(
            (c.status for c in self._checks.values()), key=lambda s: s.rank, default=Status.OK
        )
        if worst is not self._overall:
            self._overall, self._overall_since = worst, now

    @property
    def status(self) -> Status:
        with self._lock:
            return self._overall

    def check(self, name: str) -> Check | None:
        with self._lock:
            return self._checks.get(name)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            problems = [
                f"{name}: {c.message}"
                for name, c in sorted(self._checks.items())
                if c.status is not Status.OK
            ]
            return {
                "service": self.service,
                "version": self.version,
                "node": self.node,
                "status": self._overall.value,
                "since": iso(self._overall_since),
                "problems": problems,
                "info": dict(self._info),
                "checks": {
                    name: {
                        "status": c.status.value,
                        "message": c.message,
                        "since": iso(c.since),
                        "updated": iso(c.updated),
                        **c.details,
                    }
                    for name, c in sorted(self._checks.items())
                },
            }


def build_app(health: HealthRegistry, metrics: CollectorRegistry) -> FastAPI:
    app = FastAPI(
        title=f"certflow {health.service}", docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/health")
    def get_health() -> JSONResponse:
        body = health.snapshot()
        code = 503 if body["status"] == Status.FAILING.value else 200
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    @app.get("/livez")
    def get_livez() -> JSONResponse:
        # Liveness for Docker's HEALTHCHECK: the process answers. A failing /health means the
        # world is wrong (Storage Box down, Vault update paused); restarting us fixes none of it
        # and would reset what the service knows (how long a node has lagged, resume budget).
        return JSONResponse(
            {"service": health.service, "status": "alive"}, headers={"Cache-Control": "no-store"}
        )

    @app.get("/metrics")
    def get_metrics() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


class StallWatch:
    """Marks a check FAILING while one pass of a loop has not returned for ``limit`` seconds.

    A read on a network mount whose server vanished can block for minutes (sshfs, CIFS, NFS hard
    mounts); the loop cannot report anything meanwhile, so without this /health would keep showing
    the last good state for as long as the fault lasts. The pass's own report replaces this one
    once it returns.
    """

    def __init__(
        self,
        health: HealthRegistry,
        check: str,
        *,
        limit: float,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health, self.check, self.limit, self.what = health, check, limit, what
        self._clock = clock
        self._started: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        self._started = self._clock()

    def end(self) -> None:
        self._started = None

    def poll(self) -> float | None:
        """Report the stall if there is one; the seconds the pass has run, when stalled."""
        started = self._started
        if started is None:
            return None
        running = self._clock() - started
        if running < self.limit:
            return None
        self.health.report(
            self.check,
            Status.FAILING,
            f"{self.what} has not returned for {running:.0f}s (a network mount not answering?)",
            stalled_seconds=round(running),
        )
        return running

    def start(self, every: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                self.poll()

        self._thread = threading.Thread(target=loop, name=f"stall-{self.check}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


def report_manifest_auth(
    health: HealthRegistry,
    enabled: Gauge,
    keys: MacKeys | None,
    *,
    message: str,
    **details: Any,
) -> None:
    """The ``manifest_auth`` check and gauge, the same for the reloader and the distributors.

    Running with no key is allowed (a lab, the integration tier) but never silent: anyone who
    can write the Storage Box could then publish a pair the distributors would install.
    """
    enabled.set(1 if keys is not None else 0)
    if keys is None:
        _log.warning("manifest.not_authenticated", setting="CERTFLOW_MANIFEST_KEY_FILES")
        health.report(
            "manifest_auth",
            Status.OK,
            "manifest not authenticated: CERTFLOW_MANIFEST_KEY_FILES is unset",
            enabled=False,
        )
        return
    health.report("manifest_auth", Status.OK, message, enabled=True, **details)
