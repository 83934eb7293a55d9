"""The reloader's notifications reach a real HTTP receiver: through the real ``certflow reloader``
process (published, expiring, refused), and in-process for the trust check and for "once per
transition" (a check repeated tells nothing new)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Outcome, Reloader
from services.reloader.settings import ReloaderSettings
from shared.health import HealthRegistry
from shared.logs import configure_logging
from shared.notifier import Notifier
from shared.settings import load_settings
from tests.support.notify_receiver import WAIT, Receiver
from tests.support.pki import CA, Issued

from .conftest import ReloaderProcess

TOKEN = "T0K3Nsecret"


class Live:
    """certbot's layout: archive files, live symlinks repointed on renewal."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "etc" / "letsencrypt"
        self.live = self.root / "live" / "iklim.co"
        self.archive = self.root / "archive" / "iklim.co"
        self.live.mkdir(parents=True)
        self.archive.mkdir(parents=True)
        self.target = tmp / "storagebox"
        self.target.mkdir()
        self.ca = CA()
        self.n = 0

    def renew(self, leaf: Issued, key: bytes | None = None) -> None:
        self.n += 1
        (self.archive / f"fullchain{self.n}.pem").write_bytes(self.ca.fullchain(leaf))
        (self.archive / f"privkey{self.n}.pem").write_bytes(key or leaf.key_pem)
        for name in ("fullchain", "privkey"):
            tmp = self.live / f".{name}.new"
            tmp.symlink_to(f"../../archive/iklim.co/{name}{self.n}.pem")
            tmp.replace(self.live / f"{name}.pem")


def test_the_reloader_process_notifies_published_expiring_and_refused(
    tmp_path: Path, receiver: Receiver
) -> None:
    live = Live(tmp_path)
    live.renew(live.ca.leaf(days=10))  # inside RELOADER_WARN_DAYS=14
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELOADER_", "CERTFLOW_", "HEALTH_", "LOG_"))
    }
    env.update(
        RELOADER_SOURCE_DIR=str(live.live),
        RELOADER_TARGET_DIR=str(live.target),
        RELOADER_CHECK_INTERVAL="30",
        RELOADER_DEBOUNCE="0.3",
        RELOADER_WARN_DAYS="14",
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT="0",
        LOG_FORMAT="json",
        CERTFLOW_NODE_NAME="test-node",
        CERTFLOW_NOTIFY_WEBHOOK_URL=f"{receiver.url}/hook/{TOKEN}",
    )
    proc = ReloaderProcess(env, tmp_path / "reloader.log").start()
    try:
        receiver.wait_for(
            lambda r: {"cert.published", "cert.expiring"} <= set(r.kinds()),
            what="published and expiring",
        )
        # A renewal whose key is not the certificate's: refused, with the reason.
        other = live.ca.leaf(days=90)
        live.renew(other, key=live.ca.leaf(days=90).key_pem)
        receiver.wait_for(lambda r: "renewal.refused" in r.kinds(), what="renewal.refused")
        assert proc.terminate() == 0
    finally:
        proc.kill()
    bodies = {b["kind"]: b for b in receiver.bodies}
    published = bodies["cert.published"]
    assert published["service"] == "cert-reloader"
    assert published["node"] == "test-node"
    assert published["fields"]["generation"] == 1
    assert published["subject"] == published["fields"]["fingerprint"]
    assert bodies["cert.expiring"]["fields"]["warn_days"] == 14
    assert bodies["cert.expiring"]["fields"]["days_left"] < 14
    assert bodies["renewal.refused"]["fields"]["reason"] == "key_mismatch"
    assert receiver.kinds().count("cert.expiring") == 1
    assert TOKEN not in proc.logs_text()
    assert "BEGIN" not in str(receiver.bodies)


def _reloader(live: Live, receiver: Receiver, **extra: str) -> tuple[Reloader, Notifier]:
    configure_logging(service="cert-reloader", node="n1", stream=io.StringIO())
    settings = load_settings(
        ReloaderSettings,
        {
            "RELOADER_SOURCE_DIR": str(live.live),
            "RELOADER_TARGET_DIR": str(live.target),
            "CERTFLOW_NODE_NAME": "n1",
            "CERTFLOW_NOTIFY_WEBHOOK_URL": receiver.url,
            **extra,
        },
    )
    metrics = ReloaderMetrics()
    notifier = Notifier.from_settings(
        settings, service="cert-reloader", node="n1", registry=metrics.registry
    )
    health = HealthRegistry(service="cert-reloader", node="n1", version="t")
    return Reloader(settings, health, metrics, notifier=notifier, settle=0), notifier


def test_trust_failed_is_told_once_per_refused_content(tmp_path: Path, receiver: Receiver) -> None:
    live = Live(tmp_path)
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(CA("not ours").root_pem)
    live.renew(live.ca.leaf(days=90))
    reloader, notifier = _reloader(
        live, receiver, RELOADER_TRUST_BUNDLE=str(stranger), RELOADER_TRUST_NAME="vault.iklim.co"
    )
    try:
        for _ in range(3):
            assert reloader.reconcile().outcome is Outcome.REJECTED
    finally:
        notifier.close(timeout=WAIT)
    assert receiver.kinds() == ["trust.failed"]
    body = receiver.bodies[0]
    assert body["fields"]["reason"] == "untrusted"
    assert body["fields"]["trust_name"] == "vault.iklim.co"


def test_expiring_and_refused_are_told_at_the_transition_not_every_check(
    tmp_path: Path, receiver: Receiver
) -> None:
    live = Live(tmp_path)
    live.renew(live.ca.leaf(days=90))
    reloader, notifier = _reloader(live, receiver, RELOADER_WARN_DAYS="120")
    try:
        assert reloader.reconcile().outcome is Outcome.PUBLISHED
        for _ in range(2):
            assert reloader.reconcile().outcome is Outcome.CURRENT
        # A renewal that expires sooner than the published one: a downgrade, refused.
        live.renew(live.ca.leaf(days=20))
        for _ in range(3):
            assert reloader.reconcile().outcome is Outcome.REJECTED
    finally:
        notifier.close(timeout=WAIT)
    assert receiver.kinds() == ["cert.published", "cert.expiring", "renewal.refused"]
    assert receiver.bodies[2]["fields"]["reason"] == "downgrade"
