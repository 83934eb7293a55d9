"""``certflow reloader [--once]``: publish SWAG's certificate to the Storage Box."""

from __future__ import annotations

import argparse
import os
import sys

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Reloader, run_loop
from services.reloader.settings import ReloaderSettings
from shared import __version__
from shared.cli_help import epilog_for
from shared.health import HealthRegistry
from shared.logs import configure_logging, get_logger
from shared.notifier import Notifier
from shared.runtime import run_service
from shared.settings import load_settings
from shared.watch import ChangeWatcher

_log = get_logger(__name__)
_NOTIFY_DRAIN = 5.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = epilog_for(
        ReloaderSettings,
        intro="Reads certbot's fullchain.pem and privkey.pem from RELOADER_SOURCE_DIR, validates "
        "them and publishes them to RELOADER_TARGET_DIR as CERTFLOW_CERT_NAME and "
        "CERTFLOW_KEY_NAME, with certflow-manifest.json written last.",
        exit_codes="0 ok (--once: published or already current), 1 --once refused or failed, "
        "2 bad setting.",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="one check-and-publish pass (for cron and deploy hooks), then exit",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(ReloaderSettings, dict(os.environ))
    configure_logging(
        service="cert-reloader",
        node=settings.node_name,
        fmt=settings.log_format,
        level=settings.log_level,
    )
    health = HealthRegistry(service="cert-reloader", node=settings.node_name, version=__version__)
    metrics = ReloaderMetrics()
    notifier = Notifier.from_settings(
        settings, service="cert-reloader", node=settings.node_name, registry=metrics.registry
    )
    try:
        return _run(args, settings, health, metrics, notifier)
    finally:
        # Deliver what is queued (a --once publish included), briefly: shutdown must not hang.
        notifier.close(timeout=_NOTIFY_DRAIN)


def _run(
    args: argparse.Namespace,
    settings: ReloaderSettings,
    health: HealthRegistry,
    metrics: ReloaderMetrics,
    notifier: Notifier,
) -> int:
    reloader = Reloader(settings, health, metrics, notifier=notifier)
    _log.info(
        "reloader.starting",
        version=__version__,
        source_dir=str(settings.source_dir),
        target_dir=str(settings.target_dir),
        names=list(settings.names),
        once=bool(args.once),
        poll_only=settings.poll_only,
    )
    if args.once:
        reloader.clean_temporaries()
        result = reloader.reconcile()
        if result.outcome.ok:
            _log.info(
                "reloader.once_done", outcome=result.outcome.value, generation=result.generation
            )
            return 0
        print(f"certflow reloader: {result.outcome.value}: {result.message}", file=sys.stderr)
        return 1
    watcher = ChangeWatcher(
        settings.volume_root,
        (settings.source_dir, settings.archive_dir),
        debounce=settings.debounce,
        use_inotify=not settings.poll_only,
    )
    return run_service(
        health=health,
        metrics=metrics.registry,
        host=settings.health_host,
        port=settings.health_port,
        worker=lambda stop: run_loop(reloader, watcher, stop),
    )
