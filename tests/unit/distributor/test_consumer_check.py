"""What a consumer's task serves at its check address, read over real TLS on loopback.

A real TLS server (Python's ``ssl``) serves a real certificate chain from the test PKI; the
check's handshake, its server name and its error reasons are the real ones.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.distributor.consumer_check import check_pairs, check_task, served_leaf, task_addresses
from shared.certs import fingerprint
from shared.consumers import Check
from shared.swarm import TaskInfo
from tests.support.pki import CA, Issued

pytestmark = pytest.mark.unit

TIMEOUT = 2.0


class TlsServer:
    """Serves ``chain`` on 127.0.0.1 (a port of its own) until closed; keeps the server names
    (SNI) clients sent. Bound and listening before its thread starts: no wait to connect."""

    def __init__(self, chain: bytes, key: bytes, directory: Path) -> None:
        (directory / "chain.pem").write_bytes(chain)
        (directory / "key.pem").write_bytes(key)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(directory / "chain.pem", directory / "key.pem")
        self.server_names: list[str | None] = []
        self.context.sni_callback = self._sni
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _sni(
        self, _obj: ssl.SSLSocket | ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        self.server_names.append(name)

    def _serve(self) -> None:
        with self.listener:
            while True:
                conn, _ = self.listener.accept()
                if self._stop.is_set():
                    conn.close()
                    return
                conn.settimeout(TIMEOUT)
                try:
                    with self.context.wrap_socket(conn, server_side=True):
                        pass  # the handshake is all a check reads
                except OSError:
                    conn.close()  # a client that went away mid-handshake

    def close(self) -> None:
        self._stop.set()
        # Wake the accept: the thread sees the stop and closes the listener.
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT):
            pass
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()


@contextmanager
def tls_server(ca: CA, leaf: Issued, directory: Path) -> Iterator[TlsServer]:
    server = TlsServer(ca.fullchain(leaf), leaf.key_pem, directory)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port bound (so nothing else takes it) but not listening: connecting is
    refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def task(task_id: str, addresses: dict[str, tuple[str, ...]]) -> TaskInfo:
    return TaskInfo(
        task_id=task_id,
        service_id="id-web",
        node_id="n1",
        slot=1,
        state="running",
        desired_state="running",
        container_id=None,
        addresses=addresses,
        force_update=0,
    )


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def leaf(ca: CA) -> Issued:
    return ca.leaf(("iklim.co", "*.iklim.co"))


@pytest.fixture
def server(ca: CA, leaf: Issued, tmp_path: Path) -> Iterator[TlsServer]:
    with tls_server(ca, leaf, tmp_path) as running:
        yield running


def test_served_leaf_is_the_fingerprint_of_the_certificate_served(
    server: TlsServer, leaf: Issued
) -> None:
    got = served_leaf("127.0.0.1", server.port, server_name="web.iklim.co", timeout=TIMEOUT)

    assert got == fingerprint(leaf.cert)
    assert server.server_names == ["web.iklim.co"]  # the check's name goes out as SNI


def test_served_leaf_does_not_verify_what_it_reads(ca: CA, tmp_path: Path) -> None:
    other = ca.leaf(("other.example.org",))  # not valid for the name asked, not trusted here

    with tls_server(ca, other, tmp_path) as running:
        got = served_leaf("127.0.0.1", running.port, server_name="web.iklim.co", timeout=TIMEOUT)

    assert got == fingerprint(other.cert)


def test_check_task_reads_the_overlay_address_and_skips_the_ingress_one(
    server: TlsServer, leaf: Issued
) -> None:
    info = task("t1", {"ingress": ("10.255.0.9",), "net": ("127.0.0.1",)})

    assert task_addresses(info) == ["127.0.0.1"]
    assert check_task(info, Check("web.iklim.co", server.port), timeout=TIMEOUT) == (
        fingerprint(leaf.cert),
        "",
    )


def test_check_task_goes_on_to_the_next_address_when_one_fails(
    server: TlsServer, leaf: Issued
) -> None:
    # The server listens on 127.0.0.1 only: 127.0.0.2 (loopback too) refuses the same port.
    info = task("t1", {"backend": ("127.0.0.2",), "net": ("127.0.0.1",)})

    assert check_task(info, Check("web.iklim.co", server.port), timeout=TIMEOUT) == (
        fingerprint(leaf.cert),
        "",
    )


def test_a_closed_port_is_connection_refused() -> None:
    with closed_port() as port:
        got = check_task(
            task("t1", {"net": ("127.0.0.1",)}), Check("web.iklim.co", port), timeout=TIMEOUT
        )

    assert got == (None, f"127.0.0.1:{port}: connection refused")


def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    # Listening, so the kernel completes the TCP connection, but nothing ever accepts it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = int(silent.getsockname()[1])
        got = check_task(
            task("t1", {"net": ("127.0.0.1",)}), Check("web.iklim.co", port), timeout=0.2
        )

    assert got == (None, f"127.0.0.1:{port}: timed out")


def test_a_task_without_an_address_says_so() -> None:
    assert check_task(task("t1", {}), Check("web.iklim.co", 443), timeout=TIMEOUT) == (
        None,
        "the task has no overlay address to reach it on",
    )
    only_ingress = task("t2", {"ingress": ("10.255.0.9",)})
    assert check_task(only_ingress, Check("web.iklim.co", 443), timeout=TIMEOUT) == (
        None,
        "the task has no overlay address to reach it on",
    )


def test_check_pairs_maps_each_task_to_its_own_result(server: TlsServer, leaf: Issued) -> None:
    tasks = [
        task("t-serving", {"net": ("127.0.0.1",)}),
        task("t-unreachable", {"net": ("127.0.0.2",)}),
        task("t-nowhere", {}),
        task("t-serving-too", {"other": ("127.0.0.1",)}),
    ]

    check = Check("web.iklim.co", server.port)
    got = check_pairs([(t, check) for t in tasks], timeout=TIMEOUT)

    assert got == {
        "t-serving": (fingerprint(leaf.cert), ""),
        "t-unreachable": (None, f"127.0.0.2:{server.port}: connection refused"),
        "t-nowhere": (None, "the task has no overlay address to reach it on"),
        "t-serving-too": (fingerprint(leaf.cert), ""),
    }
    assert check_pairs([], timeout=TIMEOUT) == {}
