"""``certflow vault-bootstrap``: initialize Vault and keep its unseal keys in a Docker secret."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from services.unsealer.bootstrap import Bootstrap, BootstrapError, secret_name_problem
from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.errors import CertflowError, ConfigError
from shared.logs import configure_logging, get_logger

_log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "On an uninitialized Vault: initialize it, store the unseal keys as the Docker secret "
        "<secret-name>-<UTC timestamp> (label certflow.secret=<secret-name>), repoint the "
        "services that mount <secret-name> to it under the same target, wait for them, remove "
        "the previous versions. The root token goes to --root-token-file (0600) or is printed "
        "once to the terminal, never to the log. On an initialized Vault nothing is changed. "
        "Run it on a swarm manager. Exit status: 0 done or nothing to do, 1 failed (the message "
        "says what state things are in), 2 bad arguments."
    )
    parser.add_argument(
        "--addr",
        default=os.environ.get("VAULT_ADDR", "https://127.0.0.1:8200"),
        help="Vault address (default $VAULT_ADDR or https://127.0.0.1:8200)",
    )
    parser.add_argument("--ca-file", type=Path, default=None, help="CA bundle to verify Vault")
    parser.add_argument(
        "--tls-server-name",
        default="vault.iklim.co",
        help="name to check Vault's certificate against (SNI too); default vault.iklim.co",
    )
    # One share by default: the unsealer holds every share in one secret anyway, so more shares
    # add no protection there; operators who split keys among people pass --shares/--threshold.
    parser.add_argument("--shares", type=int, default=1, help="key shares (default 1)")
    parser.add_argument("--threshold", type=int, default=None, help="threshold (default shares)")
    parser.add_argument("--secret-name", default="vault_unseal_key", help="secret base name")
    parser.add_argument(
        "--services",
        default="iklimco_vault-unsealer",
        help="comma-separated services whose secret to repoint (default iklimco_vault-unsealer)",
    )
    parser.add_argument(
        "--root-token-file", type=Path, default=None, help="write the root token here (0600)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for services to converge"
    )


def _docker() -> Any:
    import docker  # noqa: PLC0415 - only this command needs the engine

    try:
        return docker.from_env(use_context=False)
    except docker.errors.DockerException as exc:
        raise BootstrapError(f"Docker engine not reachable: {exc}; Vault untouched") from exc


def run(args: argparse.Namespace) -> int:
    configure_logging(
        service="vault-bootstrap",
        node=os.uname().nodename,
        fmt="json" if os.environ.get("LOG_FORMAT") == "json" else "text",
        level="info",
        stream=sys.stderr,
    )
    threshold = args.threshold if args.threshold is not None else args.shares
    if not 1 <= threshold <= args.shares <= 255 or (args.shares > 1 and threshold < 2):
        raise ConfigError(
            "--shares/--threshold: need 1 <= threshold <= shares <= 255, and threshold >= 2 "
            "when shares > 1"
        )
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigError(f"--ca-file: {args.ca_file} is not a readable file")
    problem = secret_name_problem(args.secret_name)
    if problem:
        raise ConfigError(f"--secret-name: {problem}")
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    tls = TlsConfig(args.ca_file, args.tls_server_name)
    try:
        with VaultClient(args.addr, tls, connect_timeout=5, request_timeout=30) as vault:
            Bootstrap(
                vault=vault,
                docker_client=_docker(),
                secret_name=args.secret_name,
                services=services,
                shares=args.shares,
                threshold=threshold,
                out=sys.stdout,
                root_token_file=args.root_token_file,
                converge_timeout=args.timeout,
            ).run()
    except CertflowError as exc:
        _log.error("bootstrap.failed", error=str(exc))
        print(f"certflow vault-bootstrap: {exc}", file=sys.stderr)
        return 1
    return 0
