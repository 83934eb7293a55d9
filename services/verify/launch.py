"""One short command on a manager host: ``certflow status`` / ``certflow verify`` reach the Vault
overlay by running themselves in a one-off container attached to it.

The task addresses they read live only on the overlay, so on a host (or in a container not on
that network) the command starts its own one-off container of the image the cert-distributor
runs, on the Vault network, with the distributor's own bind mounts of the Storage Box, the
installed pair, the trust bundle and the Docker socket, read-only, and passes its output and exit
code through. Everything is read from the distributor's service spec, so nothing is typed twice
and the check runs with exactly the paths the flow uses on this node.

:func:`plan` and :func:`should_launch` are pure; :func:`launch` is the effect.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Protocol

from services.verify.settings import VerifySettings
from shared.errors import CertflowError
from shared.swarm import BindMount, LocalNode, OneOff, OneOffResult, ServiceState, manager_problem

# Set in the one-off container, so that it runs the command itself instead of launching again.
LAUNCHED_ENV = "CERTFLOW_LAUNCHED"
# Operator VERIFY_* variables that name paths on the host: the one-off gets its own paths, from
# the distributor's mounts, instead.
_HOST_PATHS = frozenset({"VERIFY_SSL_DIR", "VERIFY_STORAGEBOX_DIR", "VERIFY_VAULT_CA_FILE"})
_SOCKET = "/var/run/docker.sock"


class LaunchEngine(Protocol):
    """What launching needs of the Docker engine (``shared.docker_engine.DockerPyEngine``)."""

    def local_node(self) -> LocalNode: ...
    def service(self, name: str) -> ServiceState: ...
    def container_networks(self, ref: str) -> frozenset[str] | None: ...
    def run_oneoff(self, oneoff: OneOff, *, timeout: float) -> OneOffResult: ...


class LaunchError(CertflowError):
    """The one-off container cannot be planned or run; the message says what to do."""


def should_launch(*, here: bool, environ: Mapping[str, str], networks: frozenset[str] | None,
                  network: str) -> bool:  # fmt: skip
    """Launch unless asked not to, already launched, or this container is on ``network``."""
    if here or environ.get(LAUNCHED_ENV) == "1":
        return False
    return networks is None or network not in networks


# Flags naming host paths: the one-off sees the distributor's mounts at their own paths instead.
_HOST_PATH_FLAGS = frozenset({"--ssl-dir", "--storagebox-dir", "--vault-ca-file"})


def child_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` for the one-off: without the flags that name host paths (``--ssl-dir X`` and
    ``--ssl-dir=X`` forms), which would point inside the container at paths not mounted there."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _HOST_PATH_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return tuple(out)


def _env(spec: Mapping[str, object]) -> dict[str, str]:
    raw = spec.get("Env")
    out: dict[str, str] = {}
    for item in raw if isinstance(raw, list) else ():
        name, sep, value = str(item).partition("=")
        if sep:
            out[name] = value
    return out


def _mount_for(path: str, mounts: Sequence[Mapping[str, object]]) -> BindMount | None:
    """The bind mount of ``mounts`` under which ``path`` lies (the longest target wins)."""
    best: BindMount | None = None
    for m in mounts:
        if m.get("Type", "bind") != "bind":
            continue
        target, source = str(m.get("Target", "")), str(m.get("Source", ""))
        if not target or not source:
            continue
        inside = PurePosixPath(path).is_relative_to(target)  # the target itself counts
        if inside and (best is None or len(target) > len(best.target)):
            best = BindMount(source=source, target=target, read_only=True)
    return best


def plan(
    distributor: ServiceState,
    settings: VerifySettings,
    argv: Sequence[str],
    environ: Mapping[str, str],
) -> OneOff:
    """The one-off container that runs ``certflow <argv>`` on the Vault network, with the
    distributor's mounts and paths. Raises LaunchError naming what is missing."""
    template = distributor.spec.get("TaskTemplate")
    container = template.get("ContainerSpec") if isinstance(template, Mapping) else None
    if not isinstance(container, Mapping) or not container.get("Image"):
        raise LaunchError(f"service {distributor.name} has no container image in its spec")
    env = _env(container)
    mounts_raw = container.get("Mounts")
    mounts = (
        [m for m in mounts_raw if isinstance(m, Mapping)] if isinstance(mounts_raw, list) else []
    )
    storagebox = env.get("DISTRIBUTOR_SOURCE_DIR", "/mnt/storagebox/ssl")
    ssl_dir = env.get("DISTRIBUTOR_TARGET_DIR", "/opt/iklimco/ssl")
    bundle = env.get("DISTRIBUTOR_TRUST_BUNDLE", "")
    wanted = {
        "the Storage Box": storagebox,
        "the installed pair": ssl_dir,
        "the Docker socket": _SOCKET,
    }
    if bundle:
        wanted["the trust bundle"] = bundle
    chosen: dict[str, BindMount] = {}
    for what, path in wanted.items():
        mount = _mount_for(path, mounts)
        if mount is None:
            raise LaunchError(
                f"service {distributor.name} mounts no host path for {what} ({path}); run "
                "the command yourself in a container on the Vault network (see `--here`)"
            )
        chosen[mount.target] = mount
    child_env = {
        name: value
        for name, value in environ.items()
        if name.startswith("VERIFY_") and name not in _HOST_PATHS
    }
    child_env.update(
        {
            LAUNCHED_ENV: "1",
            "VERIFY_STACK": settings.stack,
            "VERIFY_STORAGEBOX_DIR": storagebox,
            "VERIFY_SSL_DIR": ssl_dir,
        }
    )
    if bundle:
        child_env["VERIFY_VAULT_CA_FILE"] = bundle
    for variable, source in (
        ("VERIFY_VAULT_SERVER_NAME", "DISTRIBUTOR_TRUST_NAME"),
        ("VERIFY_CERT_NAME", "CERTFLOW_CERT_NAME"),
        ("VERIFY_KEY_NAME", "CERTFLOW_KEY_NAME"),
    ):
        if variable not in environ and env.get(source):
            child_env[variable] = env[source]
    return OneOff(
        image=str(container["Image"]),
        argv=child_argv(argv),
        network=settings.network,
        env=child_env,
        mounts=tuple(sorted(chosen.values(), key=lambda m: m.target)),
        user="0:0",  # the Docker socket, and the Storage Box key's digest (0600, root)
        labels={"certflow.oneoff": argv[0] if argv else "certflow"},
    )


def own_networks(engine: LaunchEngine) -> frozenset[str] | None:
    """The networks of the container this process runs in; None on a host (or unknown)."""
    if not os.path.exists("/.dockerenv"):
        return None
    return engine.container_networks(socket.gethostname())


def launch(
    engine: LaunchEngine,
    settings: VerifySettings,
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    timeout: float,
) -> OneOffResult:
    """Run ``certflow <argv>`` in the one-off container; its exit code and output."""
    problem = manager_problem(engine.local_node())
    if problem:
        raise LaunchError(problem)
    distributor = engine.service(settings.service("distributor"))
    oneoff = plan(distributor, settings, argv, environ)
    return engine.run_oneoff(oneoff, timeout=timeout)


# How long the one-off may run: verify bounds every connection (VERIFY_TIMEOUT) and every read
# of a mount (VERIFY_READ_TIMEOUT); this only catches an engine that never answers.
ONEOFF_TIMEOUT = 300.0


def run_on_network(
    settings: VerifySettings,
    engine: LaunchEngine,
    *,
    here: bool,
    argv: Sequence[str],
    environ: Mapping[str, str],
) -> OneOffResult | None:
    """The launched command's result, or None when this process should run it itself."""
    if not should_launch(
        here=here, environ=environ, networks=own_networks(engine), network=settings.network
    ):
        return None
    return launch(engine, settings, argv, environ, timeout=ONEOFF_TIMEOUT)
