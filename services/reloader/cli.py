"""``certflow reloader [--once]``: publish SWAG's certificate to the Storage Box."""

from __future__ import annotations

import argparse
import os
import sys

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Reloader, run_loop
from services.reloader.settings import ReloaderSettings
from services.reloader.watch import ChangeWatcher
from shared import __version__
from shared.health import HealthRegistry
from shared.logs import configure_logging, get_logger
from shared.runtime import run_service
from shared.settings import load_settings

_log = get_logger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Reads certbot's fullchain.pem/privkey.pem from RELOADER_SOURCE_DIR (default "
        "/swag-config/etc/letsencrypt/live/iklim.co), validates them and publishes them to "
        "RELOADER_TARGET_DIR (default /mnt/storagebox/ssl) as CERTFLOW_CERT_NAME and "
        "CERTFLOW_KEY_NAME, with certflow-manifest.json written last. Other settings: "
        "CERTFLOW_DOMAIN, CERTFLOW_REQUIRED_NAMES, HEALTH_PORT (8080), RELOADER_CHECK_INTERVAL "
        "(60 s), RELOADER_DEBOUNCE (0.5 s), RELOADER_ALLOW_DOWNGRADE, RELOADER_POLL_ONLY, "
        "RELOADER_KEY_MODE (0600), RELOADER_CERT_MODE (0644), RELOADER_FILE_UID, "
        "RELOADER_FILE_GID, RELOADER_INVALID_GRACE (600 s), RELOADER_WARN_DAYS (14), "
        "RELOADER_RETRY_MAX (60 s), RELOADER_SOURCE_ROOT, LOG_FORMAT, LOG_LEVEL. "
        "Exit status: 0 ok (--once: published or already current), 1 --once refused or "
        "failed, 2 bad setting."
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
    reloader = Reloader(settings, health, metrics)
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
