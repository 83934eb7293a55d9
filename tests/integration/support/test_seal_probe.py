"""The seal sampler's probe script, run as a real process against an HTTPS server that answers
like an unsealed Vault member. The server stands in for Vault (an external system) so that the
probe's output fields can be checked without Docker; the real members are sampled in the e2e
tier. Only name resolution is redirected: ``tasks.<alias>`` exists only on the Swarm overlay."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.e2e_seal_sampler import _PROBE
from tests.support.pki import CA

ANSWERS = {
    "/v1/sys/health": {"initialized": True, "sealed": False, "standby": False},
    "/v1/sys/leader": {"ha_enabled": True, "is_self": True, "raft_committed_index": 29,
                       "raft_applied_index": 28},
}  # fmt: skip


class _Member(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # as Vault: one connection serves both requests

    def do_GET(self) -> None:
        body = json.dumps(ANSWERS[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def member(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    ca = CA("probe-test")
    leaf = ca.leaf(("vault.iklim.co",), ip_addresses=("127.0.0.1",), days=3)
    (tmp_path / "cert.pem").write_bytes(ca.fullchain(leaf))
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Member)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), leaf.cert.public_bytes(Encoding.DER)
    finally:
        server.shutdown()
        server.server_close()


def test_a_round_carries_seal_state_leaf_and_raft_indexes(member: tuple[int, bytes]) -> None:
    port, der = member
    resolve_here = (
        "import socket\n_resolve = socket.getaddrinfo\n"
        "socket.getaddrinfo = lambda host, port, *a, **k: "
        "_resolve('127.0.0.1', port, socket.AF_INET)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", resolve_here + _PROBE, "vault", str(port), "0.2"],
        stdout=subprocess.PIPE,
        text=True,
    ) as probe:
        try:
            assert probe.stdout is not None
            line = probe.stdout.readline()
        finally:
            probe.kill()
    state = json.loads(line)["states"]["127.0.0.1"]
    assert state == {
        "sealed": False,
        "active": True,
        "cert": hashlib.sha256(der).hexdigest(),
        "applied": 28,
        "committed": 29,
    }
