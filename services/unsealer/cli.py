"""``certflow unsealer [--once]``: keep every Vault replica unsealed."""

from __future__ import annotations

import argparse
import os
import sys

from services.unsealer.keys import KeyFile
from services.unsealer.metrics import UnsealerMetrics
from services.unsealer.service import Unsealer
from services.unsealer.settings import UnsealerSettings
from shared import __version__
from shared.health import HealthRegistry
from shared.logs import configure_logging, get_logger
from shared.runtime import run_service
from shared.settings import load_settings

_log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Finds the replicas of UNSEALER_VAULT_SERVICE (default iklimco_vault) through the Docker "
        "API (addresses on UNSEALER_VAULT_NETWORK), else DNS (UNSEALER_VAULT_DNS, default "
        "tasks.<service>), or uses the static "
        "UNSEALER_VAULT_ADDRS (https://host:port,...), and unseals each sealed replica with the "
        "keys in UNSEALER_KEY_FILE (default /run/secrets/vault_unseal_key: one key per line or "
        "the JSON of `vault operator init -format=json`). TLS is verified against "
        "UNSEALER_CA_FILE for the name UNSEALER_TLS_SERVER_NAME (default vault.iklim.co); "
        "UNSEALER_SKIP_VERIFY=true turns that off (logged as a warning). Other settings: "
        "UNSEALER_VAULT_PORT (8200), UNSEALER_FAST_INTERVAL (0.25 s), UNSEALER_SLOW_INTERVAL "
        "(1 s), UNSEALER_STALL_TIMEOUT (30 s), UNSEALER_SEALED_ALERT (60 s), "
        "UNSEALER_BACKOFF_INITIAL (1 s), UNSEALER_BACKOFF_MAX (60 s), UNSEALER_CONNECT_TIMEOUT "
        "(1 s), UNSEALER_REQUEST_TIMEOUT (3 s), UNSEALER_DOCKER_DISCOVERY (true), HEALTH_PORT "
        "(8080), LOG_FORMAT, LOG_LEVEL. It never initializes Vault. Exit status: 0 ok (--once: "
        "every replica found is unsealed), 1 --once with a replica sealed, unreachable or "
        "uninitialized, 2 bad setting or unusable key file."
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="one pass over all replicas; exit 0 only if all are unsealed",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(UnsealerSettings, dict(os.environ))
    configure_logging(
        service="vault-unsealer",
        node=settings.node_name,
        fmt=settings.log_format,
        level=settings.log_level,
    )
    key_file = KeyFile(settings.key_file)
    checked = key_file.read()  # refuse to start on a missing/empty/malformed file (exit 2)
    loose = key_file.loose_permissions()
    if loose:
        _log.warning("keys.readable_by_others", path=str(settings.key_file), mode=loose)
    if settings.skip_verify:
        _log.warning(
            "tls.verification_disabled",
            detail="UNSEALER_SKIP_VERIFY=true: replicas are not authenticated; the unseal key "
            "could be sent to an impostor",
        )
    _log.info(
        "unsealer.starting",
        version=__version__,
        vault_service=settings.vault_service,
        static_addresses=list(settings.vault_addrs) or None,
        server_name=settings.tls_server_name,
        key_count=len(checked.keys),
        once=bool(args.once),
    )
    del checked  # keys are read again when an attempt needs them
    health = HealthRegistry(service="vault-unsealer", node=settings.node_name, version=__version__)
    metrics = UnsealerMetrics()
    unsealer = Unsealer(settings, health=health, metrics=metrics, key_file=key_file)
    try:
        if args.once:
            result = unsealer.cycle()
            _log.info("unsealer.once_done", replicas=result.replicas, unsealed=result.unsealed)
            if result.all_unsealed:
                return 0
            problems = "; ".join(health.snapshot()["problems"]) or "no replica found"
            print(f"certflow unsealer: not all replicas unsealed: {problems}", file=sys.stderr)
            return 1
        return run_service(
            health=health,
            metrics=metrics.registry,
            host=settings.health_host,
            port=settings.health_port,
            worker=unsealer.run,
        )
    finally:
        unsealer.close()
