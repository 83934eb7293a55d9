"""``certflow distributor [--once]``: install the published pair on this node, reload Vault once."""

from __future__ import annotations

import argparse
import sys

from shared.cli_help import epilog_for
from shared.logs import configure_logging, get_logger
from shared.runtime import run_service
from shared.settings import load_settings

from .service import Distributor
from .settings import DistributorSettings
from .sync import Step


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        help="one sync pass, no Vault reload; exit 0 when the pair is installed or already "
        "current, 1 otherwise",
    )
    parser.epilog = epilog_for(
        DistributorSettings,
        intro="Installs the pair committed on the Storage Box (DISTRIBUTOR_SOURCE_DIR) into "
        "DISTRIBUTOR_TARGET_DIR and reloads Vault once per certificate the configured way. "
        "The Docker engine is reached through DOCKER_HOST (default: the local socket).",
        exit_codes="0 ok (--once: the pair is installed or already current), 1 --once not "
        "installed, 2 bad setting.",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(DistributorSettings)
    configure_logging(
        service="cert-distributor",
        node=settings.node_name,
        fmt=settings.log_format,
        level=settings.log_level,
    )
    log = get_logger(__name__)
    distributor = Distributor(settings) if args.once else Distributor.from_settings(settings)
    try:
        if args.once:
            distributor.installer.clean_start()
            result = distributor.sync_pass()
            if result is None or result.step is Step.WAIT:
                reason = result.detail if result else distributor.state.last_error
                print(f"certflow distributor: not installed: {reason}", file=sys.stderr)
                return 1
            log.info("distributor.once", step=result.step.value)
            return 0
        return run_service(
            health=distributor.health,
            metrics=distributor.metrics.registry,
            host=settings.health_host,
            port=settings.health_port,
            worker=distributor.run,
            routes=distributor.routes,
        )
    finally:
        # Deliver what is queued, briefly: shutdown must not wait on a receiver.
        distributor.notifier.close(timeout=5.0)
