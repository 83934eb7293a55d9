"""A real HTTP receiver for notification tests: http.server on 127.0.0.1, port 0, in a thread.

It records every JSON body POSTed to it. ``mode`` says how it answers: ``ok`` (200), ``error``
(500) or ``hang`` (reads the request, then answers nothing until the test ends).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.leaks import assert_absent

WAIT = 30.0  # generous: the machine is loaded


class Receiver:
    def __init__(self, mode: str = "ok", host: str = "127.0.0.1") -> None:
        self.mode = mode
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.requests = 0
        self._cond = threading.Condition()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._cond:
                    receiver.requests += 1
                    receiver._cond.notify_all()
                if receiver.mode == "hang":
                    receiver.release.wait(120)
                    return
                with receiver._cond:
                    receiver.bodies.append(json.loads(raw))
                    receiver.paths.append(self.path)
                    receiver._cond.notify_all()
                status = 500 if receiver.mode == "error" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"

    def wait_for(
        self, predicate: Callable[[Receiver], bool], timeout: float = WAIT, what: str = ""
    ) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(
                    f"receiver: not within {timeout}s: {what} "
                    f"(requests={self.requests}, bodies={self.bodies})"
                )

    def kinds(self) -> list[str]:
        with self._cond:
            return [b["kind"] for b in self.bodies if "kind" in b]

    def since(self, index: int) -> list[dict[str, Any]]:
        """The bodies received after the first ``index`` (a test's own window)."""
        with self._cond:
            return list(self.bodies[index:])


def noticed(
    receiver: Receiver, start: int, *kinds: str, timeout: float = 120
) -> list[dict[str, Any]]:
    """The notifications received since ``start``, once every one of ``kinds`` is among them;
    none of them may hold a PEM block (no certificate or key text ever goes out)."""
    receiver.wait_for(
        lambda r: set(kinds) <= {b.get("kind") for b in r.since(start)},
        timeout=timeout,
        what=f"notifications {kinds}",
    )
    bodies = receiver.since(start)
    assert_absent(("PRIVATE KEY", "BEGIN"), {"notifications": json.dumps(bodies)}, "PEM text")
    return bodies


@contextmanager
def receiving(mode: str = "ok", host: str = "127.0.0.1") -> Iterator[Receiver]:
    """``host`` 0.0.0.0: reachable from containers too (through their bridge's gateway)."""
    receiver = Receiver(mode, host)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(10)
