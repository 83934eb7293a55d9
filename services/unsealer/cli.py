"""``certflow unsealer [--once]``: keep every Vault replica unsealed."""

from __future__ import annotations

import argparse
import os
import sys
import time

from services.unsealer.keys import KeyFile, KeyFileInsecure, UnsealKeys
from services.unsealer.metrics import UnsealerMetrics
from services.unsealer.service import Unsealer
from services.unsealer.settings import UnsealerSettings
from shared import __version__
from shared.cli_help import epilog_for
from shared.health import HealthRegistry
from shared.logs import configure_logging, get_logger
from shared.notifier import Notifier
from shared.runtime import run_service
from shared.settings import load_settings

_log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = epilog_for(
        UnsealerSettings,
        intro="Finds the members of UNSEALER_VAULT_SERVICE through the Docker API (else DNS, or "
        "the static UNSEALER_VAULT_ADDRS) and unseals each sealed member with the keys in "
        "UNSEALER_KEY_FILE. A member that has not joined the raft cluster yet is waited for, "
        "and a key that has not unsealed anything yet is tried on one joined member first. It "
        "never initializes Vault.",
        exit_codes="0 ok (--once: every member that answers is unsealed), 1 --once with a member "
        "sealed, not joined or uninitialized after UNSEALER_ONCE_WAIT, 2 bad setting or unusable "
        "key file at start (a key file its group or others may read: 2 with --once; the service "
        "refuses it on /health and waits for a fix).",
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
    key_file = KeyFile(settings.key_file, group_read=settings.key_file_group_read)
    try:
        checked: UnsealKeys | None = key_file.read()  # missing/empty/malformed: exit 2
    except KeyFileInsecure:
        if args.once:
            raise  # exit 2: one pass cannot wait for the file to be fixed
        # The service runs and refuses it: /health and a log event name it, no member gets a
        # key, and a fixed mode is picked up without a restart.
        checked = None
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
        key_count=len(checked.keys) if checked else None,
        key_file_group_read=settings.key_file_group_read,
        once=bool(args.once),
    )
    del checked  # keys are read again when an attempt needs them
    health = HealthRegistry(service="vault-unsealer", node=settings.node_name, version=__version__)
    metrics = UnsealerMetrics()
    notifier = Notifier.from_settings(
        settings, service="vault-unsealer", node=settings.node_name, registry=metrics.registry
    )
    unsealer = Unsealer(
        settings, health=health, metrics=metrics, key_file=key_file, notifier=notifier
    )
    try:
        if args.once:
            # Members still joining need a few passes; bounded by UNSEALER_ONCE_WAIT.
            deadline = time.monotonic() + settings.once_wait
            result = unsealer.cycle()
            while not result.all_unsealed and time.monotonic() < deadline:
                time.sleep(settings.fast_interval)
                result = unsealer.cycle()
            _log.info(
                "unsealer.once_done",
                replicas=result.replicas,
                reachable=result.reachable,
                unsealed=result.unsealed,
            )
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
        # Deliver what is queued, briefly: shutdown must not wait on a receiver.
        notifier.close(timeout=5.0)
