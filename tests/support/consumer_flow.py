"""Real consumers of the certificate on a swarm, for the e2e tier and the lab: nginx services
(``tests/support/consumer_image.py``) that serve the installed pair with TLS on port 8443, opted
in with certflow's labels, and ``openssl s_client`` against each of their tasks.

Every function takes a ``run`` that runs the docker CLI on the engine to use (the host's, or a
lab node's) and returns its stdout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tests.support.consumer_image import COMMAND

PORT = 8443
Run = Callable[..., str]


@dataclass(frozen=True)
class Consumer:
    name: str  # the full service name
    labels: Mapping[str, str] = field(default_factory=dict)
    replicas: int | None = 1  # None: a global service (one task per node)
    max_per_node: int | None = None  # spread a replicated one over the nodes
    env: Mapping[str, str] = field(default_factory=dict)


def reload_labels(
    mode: str, *, check: str | None = None, signal: str | None = None
) -> dict[str, str]:
    labels = {"certflow.reload": mode}
    if check is not None:
        labels["certflow.check"] = check
    if signal is not None:
        labels["certflow.signal"] = signal
    return labels


def create(
    run: Run, consumer: Consumer, *, image: str, network: str, certs_dir: str, stack: str
) -> None:
    """``docker service create`` of ``consumer``; it belongs to ``stack`` (``docker stack rm``
    removes it too, so nothing outlives the flow even if a test is interrupted)."""
    argv = [
        "service",
        "create",
        "--detach",
        "--name",
        consumer.name,
        "--network",
        network,
        "--mount",
        f"type=bind,src={certs_dir},dst=/certs,readonly",
        "--label",
        f"com.docker.stack.namespace={stack}",
        "--container-label",
        f"com.docker.stack.namespace={stack}",
        "--restart-condition",
        "any",
        "--restart-delay",
        "0s",
        "--stop-grace-period",
        "5s",
        # Running (to Swarm) once nginx's master has read the pair and listens.
        "--health-cmd",
        "test -s /tmp/nginx.pid",
        "--health-interval",
        "1s",
        "--health-retries",
        "3",
        # A slow start (START_DELAY) is not a failing one: checks count once this has passed,
        # or from the first one that succeeds.
        "--health-start-period",
        "60s",
    ]
    if consumer.replicas is None:
        argv += ["--mode", "global"]
    else:
        argv += ["--replicas", str(consumer.replicas)]
    if consumer.max_per_node is not None:
        argv += ["--replicas-max-per-node", str(consumer.max_per_node)]
    for key, value in consumer.labels.items():
        argv += ["--label", f"{key}={value}"]
    for key, value in consumer.env.items():
        argv += ["--env", f"{key}={value}"]
    run(*argv, image, COMMAND)


def remove(run: Run, *names: str) -> None:
    if names:
        run("service", "rm", *names, check=False)


def served(
    run: Run, *, image: str, network: str, addresses: list[str], name: str, port: int = PORT
) -> dict[str, str]:
    """``openssl s_client`` against each address (a task's overlay IP), from a one-off container
    on ``network``: address -> the SHA-256 fingerprint of the leaf served ("" if none)."""
    script = "".join(
        f'printf "%s " {ip}; echo | openssl s_client -connect {ip}:{port} -servername {name} '
        "2>/dev/null | openssl x509 -noout -fingerprint -sha256 || echo; "
        for ip in addresses
    )
    out = run("run", "--rm", "--network", network, "--entrypoint", "sh", image, "-c", script)
    found: dict[str, str] = {}
    for line in out.splitlines():
        ip, _, rest = line.partition(" ")
        if ip:
            found[ip] = rest.partition("=")[2].strip().upper()
    return found
