"""The process shell: health server beside the worker, SIGTERM sets the stop flag."""

from __future__ import annotations

import os
import signal
import threading

import httpx
from prometheus_client import CollectorRegistry, Counter

from shared.health import HealthRegistry, Status
from shared.runtime import HealthServer, run_service


def _health() -> HealthRegistry:
    return HealthRegistry(service="test", node="n1", version="1.2.3")


def test_health_server_serves_health_and_metrics_on_an_ephemeral_port() -> None:
    health = _health()
    metrics = CollectorRegistry()
    Counter("certflow_test_things", "things", registry=metrics).inc(3)
    server = HealthServer(health, metrics, host="127.0.0.1", port=0)
    port = server.start()
    try:
        assert port > 0
        ok = httpx.get(f"http://127.0.0.1:{port}/health")
        assert ok.status_code == 200
        assert ok.json()["status"] == "ok"
        assert ok.headers["cache-control"] == "no-store"
        health.report("storage", Status.FAILING, "target dir missing")
        failing = httpx.get(f"http://127.0.0.1:{port}/health")
        assert failing.status_code == 503
        body = failing.json()
        assert body["problems"] == ["storage: target dir missing"]
        assert body["checks"]["storage"]["since"] == body["since"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "certflow_test_things_total 3.0" in text
    finally:
        server.stop()


def test_sigterm_stops_the_worker_and_the_server() -> None:
    seen: dict[str, object] = {}

    def worker(stop: threading.Event) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        seen["stopped"] = stop.wait(10)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    rc = run_service(
        health=_health(),
        metrics=CollectorRegistry(),
        host="127.0.0.1",
        port=0,
        worker=worker,
    )
    assert rc == 0
    assert seen["stopped"] is True
    assert signal.getsignal(signal.SIGTERM) is previous
