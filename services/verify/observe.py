"""The thin, effectful side of ``certflow verify``: ask Docker, read files, shake hands with Vault.

Every function returns facts (``services.verify.facts``) and never raises for a problem it was
asked to look at: a failure becomes the ``error`` of the facts, for the checks to explain. Private
keys are never read here; the Storage Box key is only digested by ``shared.storagebox``.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
from cryptography import x509

from services.verify.facts import (
    CertFacts,
    CheckFacts,
    DirFacts,
    HealthFacts,
    LogFacts,
    Observation,
    ReplicaFacts,
    ServiceFacts,
)
from services.verify.settings import VerifySettings
from shared.certs import LeafInfo, leaf_info, read_leaf
from shared.docker_engine import DockerEngine
from shared.errors import CertflowError, DockerError, DockerNotFound
from shared.storagebox import read_snapshot
from shared.swarm import TaskInfo

ROLES = ("reloader", "distributor", "vault", "unsealer")
# The certflow services whose /health verify reads on every task.
HEALTH_ROLES = ("reloader", "distributor", "unsealer")


def _cert_facts(info: LeafInfo, data: bytes = b"") -> CertFacts:
    return CertFacts(
        not_after=info.not_after,
        fingerprint=info.fingerprint_sha256,
        sha256=hashlib.sha256(data).hexdigest() if data else "",
    )


# -- Docker -------------------------------------------------------------------------------------


def observe_service(engine: DockerEngine, name: str) -> ServiceFacts:
    try:
        service = engine.service(name)
        tasks = engine.tasks(name, running_only=False)
    except DockerNotFound:
        return ServiceFacts(name=name, found=False)
    except DockerError as exc:
        return ServiceFacts(name=name, found=False, error=str(exc))
    running = sum(1 for t in tasks if t.state == "running")
    desired = len(tasks) if service.mode == "global" else service.replicas or 0
    return ServiceFacts(
        name=name,
        found=True,
        mode=service.mode,
        desired=desired,
        running=running,
        update_state=service.update_state,
        update_message=service.update_message,
        labels=dict(service.labels),
        task_errors=tuple(t.error for t in tasks if t.state != "running" and t.error),
    )


def observe_logs(engine: DockerEngine, name: str, *, tail: int) -> LogFacts:
    try:
        lines = engine.service_logs(name, tail=tail)
    except DockerNotFound:
        return LogFacts(service=name, error="service not found")
    except DockerError as exc:
        return LogFacts(service=name, error=str(exc))
    return LogFacts(service=name, lines=tuple(lines))


def vault_tasks(engine: DockerEngine, service: str, network: str) -> list[tuple[TaskInfo, str]]:
    """Tasks of ``service`` Swarm wants running, and their address on ``network``.

    Not only running ones: a member that is still sealed stays ``starting`` (the stack's
    healthcheck), and it must be seen, and reported sealed, not skipped. Raises DockerError.
    """
    return [
        (task, address)
        for task in engine.tasks(service, running_only=False)
        if task.state in ("starting", "running") and (address := address_on(task, network))
    ]


def address_on(task: TaskInfo, network: str) -> str:
    """The task's first address on ``network``; "" when it has none there."""
    addresses = task.addresses.get(network, ())
    return addresses[0] if addresses else ""


def node_names(engine: DockerEngine) -> dict[str, str]:
    try:
        return {node_id: node.hostname for node_id, node in engine.nodes().items()}
    except DockerError:
        return {}


# -- files --------------------------------------------------------------------------------------


def observe_installed(directory: Path, cert_name: str) -> DirFacts:
    label = str(directory)
    try:
        data = (directory / cert_name).read_bytes()
        return DirFacts(label=label, path=label, cert=_cert_facts(read_leaf(data), data))
    except FileNotFoundError:
        return DirFacts(label=label, path=label, error=f"{cert_name} is missing")
    except OSError as exc:
        return DirFacts(label=label, path=label, error=f"{exc.strerror or exc} ({exc.filename})")
    except CertflowError as exc:
        return DirFacts(label=label, path=label, error=f"{cert_name}: {exc}")


def observe_published(directory: Path, cert_name: str, key_name: str) -> DirFacts:
    label = "the Storage Box manifest"
    path = str(directory)
    try:
        snap = read_snapshot(directory, cert_name=cert_name, key_name=key_name)
    except CertflowError as exc:
        return DirFacts(label=label, path=path, error=str(exc))
    if not snap.committed or snap.manifest is None:
        state = f"{snap.state.value}: {snap.detail}" if snap.detail else snap.state.value
        return DirFacts(label=label, path=path, state=state)
    leaf = snap.manifest.leaf
    return DirFacts(
        label=label,
        path=path,
        state="committed",
        generation=snap.manifest.generation,
        manifest_cert_sha256=snap.manifest.cert.sha256,
        cert=CertFacts(not_after=leaf.not_after, fingerprint=leaf.fingerprint_sha256),
    )


def within(seconds: float, label: str, path: str, read: Callable[[], DirFacts]) -> DirFacts:
    """``read()``, or an error naming ``path`` when it has not returned in ``seconds``.

    A read on a network mount whose server is gone can block for minutes (sshfs, CIFS, NFS hard
    mounts); verify must still answer, and say so. The reading thread is left behind (a daemon:
    the process exits without it).
    """
    box: list[DirFacts] = []
    thread = threading.Thread(target=lambda: box.append(read()), name="verify-read", daemon=True)
    thread.start()
    thread.join(seconds)
    if box:
        return box[0]
    return DirFacts(
        label=label,
        path=path,
        error=f"reading {path} has not returned in {seconds:g} s (a network mount not answering?)",
    )


# -- Vault --------------------------------------------------------------------------------------


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.check_hostname = True
    return context


def observe_replica(
    address: str,
    *,
    port: int,
    server_name: str,
    context: ssl.SSLContext,
    timeout: float,
    task_id: str = "",
    node: str = "",
) -> ReplicaFacts:
    """One TLS connection to ``address``: the served leaf and ``/v1/sys/health`` (every state
    answered 200, so the body says initialized, sealed and standby).

    The certificate is verified for ``server_name`` (sent as SNI) although the connection goes to
    the task's IP, exactly as clients reaching ``vault.iklim.co`` would see it.
    """
    host = f"[{address}]" if ":" in address else address
    # No query: every state answers with its own code (200 active, 429 standby, 503 sealed, 501
    # uninitialized, ...) and the same JSON body, which is what is read.
    url = f"https://{host}:{port}/v1/sys/health"
    base = ReplicaFacts(task_id=task_id, node=node, address=address)
    try:
        with (
            httpx.Client(verify=context, timeout=timeout, trust_env=False) as client,
            client.stream(
                "GET",
                url,
                headers={"Host": f"{server_name}:{port}"},
                extensions={"sni_hostname": server_name},
            ) as response,
        ):
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            der = ssl_object.getpeercert(True) if ssl_object else None
            response.read()
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        return replace(base, error=_transport_error(exc))
    served = _cert_facts(leaf_info(x509.load_der_x509_certificate(der))) if der else None
    if response.status_code not in _HEALTH_CODES:
        return replace(base, served=served, error=f"sys/health answered {response.status_code}")
    try:
        body = response.json()
        sealed, initialized = bool(body["sealed"]), bool(body.get("initialized", True))
        standby = body.get("standby")
    except (ValueError, KeyError, TypeError, AttributeError):
        return replace(base, served=served, error="sys/health body is not Vault's JSON")
    return replace(
        base,
        served=served,
        sealed=sealed,
        initialized=initialized,
        standby=standby if isinstance(standby, bool) else None,
    )


# sys/health's codes by state (active, standby, DR secondary, performance standby, uninitialized,
# sealed); the body says the same in fields.
_HEALTH_CODES = frozenset({200, 429, 472, 473, 501, 503})


def _transport_error(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification failed: {cause.verify_message or cause}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}"


# -- certflow's own /health ---------------------------------------------------------------------


def health_tasks(
    engine: DockerEngine, services: Iterable[str], network: str
) -> list[tuple[str, TaskInfo, str]]:
    """(service, task, its address on ``network``; "" when it has none) of every running task of
    the certflow services. Raises DockerError."""
    found: list[tuple[str, TaskInfo, str]] = []
    for service in services:
        try:
            tasks = engine.tasks(service)
        except DockerNotFound:
            continue  # check_service says the service is missing
        found += [(service, task, address_on(task, network)) for task in tasks]
    return found


def parse_service_health(body: object, base: HealthFacts) -> HealthFacts:
    """A certflow ``/health`` document, as the checks need it (only what is not ok)."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return replace(base, error="its /health answer is not certflow's JSON")
    checks = body.get("checks")
    problems = tuple(
        f"{name}: {check.get('status')}: {check.get('message')} (since {check.get('since')})"
        for name, check in (checks.items() if isinstance(checks, dict) else ())
        if isinstance(check, dict) and check.get("status") != "ok"
    )
    parsed = tuple(
        CheckFacts(
            name=str(name),
            status=str(check.get("status", "")),
            message=str(check.get("message", "")),
            since=str(check.get("since", "")),
            details={
                str(k): v
                for k, v in check.items()
                if k not in {"status", "message", "since", "updated"}
            },
        )
        for name, check in (checks.items() if isinstance(checks, dict) else ())
        if isinstance(check, dict)
    )
    info = body.get("info")
    return replace(
        base,
        status=body["status"],
        since=str(body.get("since", "")),
        problems=problems,
        checks=parsed,
        info=dict(info) if isinstance(info, dict) else {},
    )


def observe_health(address: str, *, port: int, timeout: float, base: HealthFacts) -> HealthFacts:
    """``GET /health`` of one certflow task (it answers 503 while failing, with the same JSON)."""
    if not address:
        return replace(
            base, error="the task has no address on the Vault network, so its /health cannot "
            "be read from here"
        )  # fmt: skip
    host = f"[{address}]" if ":" in address else address
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.get(f"http://{host}:{port}/health")
        body = response.json()
    except httpx.HTTPError as exc:
        return replace(base, error=f"{type(exc).__name__}: {exc}")
    except ValueError:
        return replace(base, error=f"its /health answered {response.status_code}, not JSON")
    return parse_service_health(body, base)


def observe_all_health(
    engine: DockerEngine, settings: VerifySettings, names: dict[str, str]
) -> tuple[tuple[HealthFacts, ...], str]:
    """Every certflow task's /health, all at once; or why the tasks could not be listed."""
    try:
        tasks = health_tasks(engine, (names[r] for r in HEALTH_ROLES), settings.network)
    except DockerError as exc:
        return (), str(exc)
    if not tasks:
        return (), ""
    hostnames = node_names(engine)

    def one(item: tuple[str, TaskInfo, str]) -> HealthFacts:
        service, task, address = item
        node = hostnames.get(task.node_id, task.node_id[:12])
        base = HealthFacts(service=service, node=node, address=address, task_id=task.task_id)
        return observe_health(
            address, port=settings.health_port, timeout=settings.timeout, base=base
        )

    with ThreadPoolExecutor(max_workers=min(8, len(tasks))) as pool:
        return tuple(pool.map(one, tasks)), ""


# -- everything ---------------------------------------------------------------------------------


def _installed(settings: VerifySettings) -> DirFacts:
    path = str(settings.ssl_dir)
    return within(
        settings.read_timeout, path, path,
        lambda: observe_installed(settings.ssl_dir, settings.cert_name),
    )  # fmt: skip


def _published(settings: VerifySettings) -> DirFacts:
    return within(
        settings.read_timeout, "the Storage Box manifest", str(settings.storagebox_dir),
        lambda: observe_published(settings.storagebox_dir, settings.cert_name, settings.key_name),
    )  # fmt: skip


def observe(
    settings: VerifySettings,
    engine_factory: Callable[[], DockerEngine],
) -> Observation:
    names = {role: settings.service(role) for role in ROLES}
    try:
        engine = engine_factory()
    except DockerError as exc:
        error = f"no Docker engine: {exc}"
        return Observation(
            services=tuple(ServiceFacts(n, found=False, error=error) for n in names.values()),
            reloader_logs=LogFacts(names["reloader"], error=error),
            installed=_installed(settings),
            published=_published(settings),
            replicas=(),
            replicas_error=error,
            names=names,
        )
    services = tuple(observe_service(engine, names[role]) for role in ROLES)
    logs = observe_logs(engine, names["reloader"], tail=settings.log_tail)
    replicas: tuple[ReplicaFacts, ...] = ()
    replicas_error = ""
    try:
        tasks = vault_tasks(engine, names["vault"], settings.network)
    except DockerError as exc:
        tasks, replicas_error = [], str(exc)
    if tasks:
        hostnames = node_names(engine)
        context = tls_context(settings.vault_ca_file)
        with ThreadPoolExecutor(max_workers=min(8, len(tasks))) as pool:
            replicas = tuple(
                pool.map(
                    lambda item: observe_replica(
                        item[1],
                        port=settings.vault_port,
                        server_name=settings.vault_server_name,
                        context=context,
                        timeout=settings.timeout,
                        task_id=item[0].task_id,
                        node=hostnames.get(item[0].node_id, item[0].node_id[:12]),
                    ),
                    tasks,
                )
            )
    health, health_error = observe_all_health(engine, settings, names)
    return Observation(
        services=services,
        reloader_logs=logs,
        installed=_installed(settings),
        published=_published(settings),
        replicas=replicas,
        replicas_error=replicas_error,
        names=names,
        health=health,
        health_error=health_error,
    )
