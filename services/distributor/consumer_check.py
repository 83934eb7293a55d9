"""What a consumer's task serves at its check address: one TLS handshake per task (effect).

Each task is reached on its own overlay address (from Swarm's task list), not on the service's
name: the name resolves to a virtual IP that balances over every task, so it could not tell which
task was reloaded. The check's name is sent as the TLS server name, so a server that picks its
certificate by name answers as its clients see it. Nothing is verified during the handshake: the
leaf is only read, and compared with the installed one by fingerprint.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cryptography import x509

from shared.certs import fingerprint
from shared.consumers import Check
from shared.swarm import TaskInfo

# Addresses on Swarm's routing mesh cannot be dialled from another container.
_UNREACHABLE_NETWORKS = frozenset({"ingress"})


def served_leaf(host: str, port: int, *, server_name: str, timeout: float) -> str:
    """The SHA-256 fingerprint of the leaf served at ``host:port``. Raises OSError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return fingerprint(x509.load_der_x509_certificate(der))


def task_addresses(task: TaskInfo) -> list[str]:
    return [
        ip
        for network, ips in sorted(task.addresses.items())
        if network not in _UNREACHABLE_NETWORKS
        for ip in ips
    ]


def check_task(task: TaskInfo, check: Check, *, timeout: float) -> tuple[str | None, str]:
    """(the fingerprint served, "") or (None, why it could not be read)."""
    addresses = task_addresses(task)
    if not addresses:
        return None, "the task has no overlay address to reach it on"
    errors: list[str] = []
    for address in addresses:
        try:
            return served_leaf(address, check.port, server_name=check.name, timeout=timeout), ""
        except (OSError, ValueError) as exc:
            errors.append(f"{address}:{check.port}: {_why(exc)}")
    return None, "; ".join(errors)


def check_pairs(
    pairs: Sequence[tuple[TaskInfo, Check]], *, timeout: float
) -> dict[str, tuple[str | None, str]]:
    """:func:`check_task` for tasks of several consumers at once (task ID -> result)."""
    if not pairs:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(pairs))) as pool:
        results = pool.map(lambda p: check_task(p[0], p[1], timeout=timeout), pairs)
        return {p[0].task_id: r for p, r in zip(pairs, results, strict=True)}


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:160]
