"""``certflow vault-bootstrap``: initialize Vault and keep its unseal keys in a Docker secret."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from services.unsealer.bootstrap import (
    Bootstrap,
    BootstrapError,
    output_dir_problem,
    secret_name_problem,
)
from services.unsealer.discovery import Discovery
from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.docker_engine import DockerEngine, open_engine
from shared.errors import CertflowError, ConfigError, DockerError
from shared.logs import configure_logging, get_logger

_log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "On an uninitialized Vault: initialize it, unseal that member to learn its cluster id, "
        "store the unseal keys (and the cluster id) as the Docker secret "
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
        help="Vault address, or every raft member's address comma-separated: the first is "
        "initialized, the others must answer uninitialized and join it "
        "(default $VAULT_ADDR or https://127.0.0.1:8200)",
    )
    parser.add_argument(
        "--vault-service",
        default="",
        help="find the members as the running tasks of this Swarm service (Docker API on a "
        "manager, else DNS tasks.<service>) instead of --addr; they are found again while "
        "bootstrap waits for the cluster, so a member replaced meanwhile is followed",
    )
    parser.add_argument(
        "--vault-network",
        default="",
        help="with --vault-service: the network whose task addresses to use (default: the first "
        "one that is not ingress)",
    )
    parser.add_argument("--vault-port", type=int, default=8200, help="members' API port (8200)")
    parser.add_argument(
        "--autopilot-dead-after",
        default="10m",
        help="raft autopilot removes a member unseen this long (>= 1m; 3+ members only)",
    )
    parser.add_argument(
        "--autopilot-stabilization",
        default="",
        help="raft autopilot makes a rejoined member a voter after it is healthy this long "
        "(server default 10s); keep DISTRIBUTOR_VOTER_WAIT longer (3+ members only)",
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
        "--output-dir",
        type=Path,
        default=os.environ.get("VAULT_BOOTSTRAP_DIR") or None,
        help="existing private directory for the root token file and, if creating the secret "
        "fails, the unseal key rescue file (default $VAULT_BOOTSTRAP_DIR; required)",
    )
    parser.add_argument(
        "--root-token-file",
        default=None,
        help="write the root token to this new file (0600, must not exist yet): a name in "
        "--output-dir, or a path whose directory is the output directory; without it the token "
        "is printed once to the terminal",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for services to converge"
    )


def _docker() -> DockerEngine:
    try:
        return open_engine()
    except DockerError as exc:
        raise BootstrapError(f"Docker engine not reachable: {exc}; Vault untouched") from exc


def _output(directory: Path | None, token_file: str | None) -> tuple[Path, str | None]:
    """The directory for the private files, and the root token's file name in it.

    ``--root-token-file`` may be a path: its directory then names the output directory (it must
    agree with ``--output-dir`` when both are given). There is no default directory.
    """
    name = token_file
    if token_file is not None and "/" in token_file:
        path = Path(token_file)
        if directory is not None and path.parent != directory:
            raise ConfigError("--root-token-file: its directory differs from --output-dir")
        directory, name = path.parent, path.name
    if directory is None:
        raise ConfigError(
            "--output-dir (or VAULT_BOOTSTRAP_DIR): required, an existing private directory for "
            "the root token and key rescue files"
        )
    problem = output_dir_problem(directory)
    if problem:
        raise ConfigError(f"--output-dir: {problem}")
    if name is not None and name in {"", ".", ".."}:
        raise ConfigError("--root-token-file: must name a file")
    return directory, name


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
    output_dir, token_name = _output(args.output_dir, args.root_token_file)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    tls = TlsConfig(args.ca_file, args.tls_server_name)
    addresses = [a.strip() for a in args.addr.split(",") if a.strip()]
    if not addresses and not args.vault_service:
        raise ConfigError("--addr: give at least one https://host:port (or --vault-service)")
    try:
        with contextlib.ExitStack() as stack:
            clients: dict[str, VaultClient] = {}

            def client(address: str) -> VaultClient:
                if address not in clients:
                    clients[address] = stack.enter_context(
                        VaultClient(address, tls, connect_timeout=5, request_timeout=30)
                    )
                return clients[address]

            def members_now() -> list[VaultClient]:
                if not args.vault_service:
                    return [client(address) for address in addresses]
                found = discovery.discover()
                return [client(replica.address) for replica in found.replicas]

            discovery = Discovery(
                service=args.vault_service,
                port=args.vault_port,
                network=args.vault_network,
                use_docker=True,
            )
            members = members_now()
            if not members:
                found = discovery.discover()
                raise BootstrapError(
                    f"--vault-service {args.vault_service}: no member found via {found.source}"
                    + (f" ({found.problem})" if found.problem else "")
                    + "; Vault untouched"
                )
            Bootstrap(
                vault=members[0],
                members=members,
                members_now=members_now,
                autopilot_dead_after=args.autopilot_dead_after,
                autopilot_stabilization=args.autopilot_stabilization,
                engine=_docker(),
                secret_name=args.secret_name,
                services=services,
                shares=args.shares,
                threshold=threshold,
                out=sys.stdout,
                output_dir=output_dir,
                root_token_file=token_name,
                converge_timeout=args.timeout,
            ).run()
    except CertflowError as exc:
        _log.error("bootstrap.failed", error=str(exc))
        print(f"certflow vault-bootstrap: {exc}", file=sys.stderr)
        return 1
    return 0
