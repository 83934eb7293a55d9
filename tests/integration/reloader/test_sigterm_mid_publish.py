"""SIGTERM arriving in the middle of a publish: the publish completes, no temporaries, exit 0."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Reloader, run_loop
from services.reloader.settings import ReloaderSettings
from shared.atomic import TEMP_MARKER
from shared.health import HealthRegistry
from shared.logs import configure_logging
from shared.runtime import run_service
from shared.settings import load_settings
from shared.storagebox import State, read_snapshot
from shared.watch import ChangeWatcher
from tests.support.pki import CA

CERT, KEY = "STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem"


def test_sigterm_between_the_certificate_and_the_key_finishes_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "etc" / "letsencrypt"
    live = root / "live" / "iklim.co"
    live.mkdir(parents=True)
    ca = CA()
    leaf = ca.leaf()
    (live / "fullchain.pem").write_bytes(ca.fullchain(leaf))
    (live / "privkey.pem").write_bytes(leaf.key_pem)
    target = tmp_path / "storagebox"
    target.mkdir()
    log = io.StringIO()
    configure_logging(service="cert-reloader", node="n1", stream=log)
    settings = load_settings(
        ReloaderSettings,
        {
            "RELOADER_SOURCE_DIR": str(live),
            "RELOADER_TARGET_DIR": str(target),
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": "0",
        },
    )
    health = HealthRegistry(service="cert-reloader", node="n1", version="t")
    metrics = ReloaderMetrics()
    steps: list[str] = []

    def on_step(step: str) -> None:
        steps.append(step)
        if step == "cert":
            os.kill(os.getpid(), signal.SIGTERM)  # Swarm stopping the task right now

    reloader = Reloader(settings, health, metrics, after_step=on_step)
    watcher = ChangeWatcher(root, (live,), debounce=0.1)
    rc = run_service(
        health=health,
        metrics=metrics.registry,
        host=settings.health_host,
        port=settings.health_port,
        worker=lambda stop: run_loop(reloader, watcher, stop),
    )
    assert rc == 0
    assert steps == ["cert", "key", "manifest"]
    snap = read_snapshot(target, cert_name=CERT, key_name=KEY)
    assert snap.state is State.COMMITTED
    assert snap.cert == ca.fullchain(leaf)
    assert not [p for p in target.iterdir() if TEMP_MARKER in p.name]
    assert '"event": "shutdown.requested"' in log.getvalue()
    assert not watcher.watching
