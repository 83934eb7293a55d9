"""Reading a certflow task's /health over real HTTP, from the service's own health server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from services.verify.checks import check_health
from services.verify.facts import HealthFacts
from services.verify.observe import observe_health
from shared.health import HealthRegistry, Status
from shared.runtime import HealthServer

BASE = HealthFacts(service="iklimco_cert-distributor", node="n2", address="127.0.0.1")
HINT = "docker stack deploy -c stacks/docker-stack-certs.yml iklimco"


@pytest.fixture
def served() -> Iterator[tuple[HealthRegistry, int]]:
    health = HealthRegistry(service="cert-distributor", node="n2", version="t")
    server = HealthServer(health, CollectorRegistry(), host="127.0.0.1", port=0)
    port = server.start()
    try:
        yield health, port
    finally:
        server.stop()


def test_an_ok_task_and_a_failing_one_read_as_they_say(served: tuple[HealthRegistry, int]) -> None:
    health, port = served
    health.report("sync", Status.OK, "current")
    facts = observe_health("127.0.0.1", port=port, timeout=5, base=BASE)
    assert (facts.status, facts.problems, facts.error) == ("ok", (), "")
    assert check_health(facts, certs_hint=HINT).ok
    # A failing service answers 503 with the same document; verify reads it all the same.
    health.report("sync", Status.FAILING, "reading the Storage Box has not returned for 25s")
    health.report("swarm", Status.DEGRADED, "node(s) not ready: n3: down")
    facts = observe_health("127.0.0.1", port=port, timeout=5, base=BASE)
    assert facts.status == "failing"
    assert [p.split(" (since")[0] for p in facts.problems] == [
        "swarm: degraded: node(s) not ready: n3: down",
        "sync: failing: reading the Storage Box has not returned for 25s",
    ]
    result = check_health(facts, certs_hint=HINT)
    assert not result.ok
    assert result.summary.startswith(f"failing since {facts.since}: swarm: degraded")


def test_a_closed_port_is_named_not_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    facts = observe_health("127.0.0.1", port=port, timeout=2, base=BASE)
    assert facts.error.startswith("ConnectError")
    assert "cannot read its /health: ConnectError" in check_health(facts, certs_hint=HINT).summary


def test_an_answer_that_is_not_certflow_s_is_named() -> None:
    class NotOurs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotOurs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        facts = observe_health("127.0.0.1", port=int(port), timeout=5, base=BASE)
        assert facts.error == "its /health answered 200, not JSON"
    finally:
        server.shutdown()
        server.server_close()


def test_a_task_without_an_address_on_the_network_is_not_asked() -> None:
    facts = observe_health("", port=1, timeout=1, base=BASE)
    assert "no address on the Vault network" in facts.error
