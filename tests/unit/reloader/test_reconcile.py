"""One reconcile step in-process, against real files: outcomes, health, metrics, crash points."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Outcome, Reloader
from services.reloader.settings import ReloaderSettings
from shared.atomic import TEMP_MARKER
from shared.health import HealthRegistry, Status
from shared.logs import configure_logging
from shared.manifest import MANIFEST_NAME, FileEntry
from shared.settings import load_settings
from shared.snapshot import Snapshot, State
from shared.storagebox import read_snapshot
from tests.support.pki import CA, Issued

CERT, KEY = "STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem"


class Env:
    def __init__(self, tmp: Path, **extra: str) -> None:
        self.root = tmp / "etc" / "letsencrypt"
        self.live = self.root / "live" / "iklim.co"
        self.archive = self.root / "archive" / "iklim.co"
        self.live.mkdir(parents=True)
        self.archive.mkdir(parents=True)
        self.target = tmp / "storagebox"
        self.target.mkdir()
        self.generation = 0
        self.ca = CA()
        self.now = [datetime.now(UTC).timestamp()]
        self.log = io.StringIO()
        configure_logging(service="cert-reloader", node="n1", stream=self.log)
        self.settings = load_settings(
            ReloaderSettings,
            {
                "RELOADER_SOURCE_DIR": str(self.live),
                "RELOADER_TARGET_DIR": str(self.target),
                "RELOADER_INVALID_GRACE": "60",
                "CERTFLOW_NODE_NAME": "n1",
                **extra,
            },
        )
        self.health = HealthRegistry(service="cert-reloader", node="n1", version="t")
        self.metrics = ReloaderMetrics()

    def reloader(self, **kwargs: object) -> Reloader:
        return Reloader(
            self.settings,
            self.health,
            self.metrics,
            clock=lambda: self.now[0],
            **kwargs,  # type: ignore[arg-type]
        )

    def renew(self, leaf: Issued | None = None, *, key: bytes | None = None) -> tuple[bytes, bytes]:
        """What certbot does: new archive files, then repoint the live symlinks."""
        leaf = leaf or self.ca.leaf(days=90 + self.generation)
        self.generation += 1
        n = self.generation
        cert = self.ca.fullchain(leaf)
        key = leaf.key_pem if key is None else key
        (self.archive / f"fullchain{n}.pem").write_bytes(cert)
        (self.archive / f"privkey{n}.pem").write_bytes(key)
        for name in ("fullchain", "privkey"):
            tmp = self.live / f".{name}.new"
            tmp.symlink_to(f"../../archive/iklim.co/{name}{n}.pem")
            tmp.replace(self.live / f"{name}.pem")
        return cert, key

    def snapshot(self) -> Snapshot:
        return read_snapshot(self.target, cert_name=CERT, key_name=KEY)

    def events(self, name: str) -> list[dict[str, object]]:
        out = []
        for line in self.log.getvalue().splitlines():
            event = json.loads(line)
            if event["event"] == name:
                out.append(event)
        return out

    def failures(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "certflow_reloader_validation_failures_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_first_publish_then_current(env: Env) -> None:
    cert, key = env.renew()
    reloader = env.reloader()
    result = reloader.reconcile()
    assert (result.outcome, result.generation) == (Outcome.PUBLISHED, 1)
    snap = env.snapshot()
    assert snap.committed
    assert (snap.cert, snap.key) == (cert, key)
    assert stat.S_IMODE((env.target / KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((env.target / CERT).stat().st_mode) == 0o644
    assert reloader.reconcile().outcome is Outcome.CURRENT
    assert env.metrics.registry.get_sample_value("certflow_reloader_publishes_total") == 1.0
    body = env.health.snapshot()
    assert body["status"] == "ok"
    assert body["checks"]["storage"]["generation"] == 1
    assert snap.manifest is not None
    assert body["checks"]["source"]["cert_md5"] == snap.manifest.cert.md5
    assert body["checks"]["source"]["fingerprint"] == snap.manifest.fingerprint
    assert body["checks"]["storage"]["fingerprint"] == snap.manifest.fingerprint
    assert "key_md5" not in json.dumps(body)  # /health is unauthenticated
    assert body["checks"]["last_check"]["outcome"] == "current"
    assert env.events("cert.published")[0]["generation"] == 1


def test_restart_does_not_republish(env: Env) -> None:
    env.renew()
    env.reloader().reconcile()
    raw = (env.target / MANIFEST_NAME).read_bytes()
    fresh = Reloader(env.settings, env.health, ReloaderMetrics())
    assert fresh.reconcile().outcome is Outcome.CURRENT
    assert (env.target / MANIFEST_NAME).read_bytes() == raw


def test_key_mode_and_owner_are_configurable(tmp_path: Path) -> None:
    env = Env(
        tmp_path,
        RELOADER_KEY_MODE="0640",
        RELOADER_FILE_UID=str(os.getuid()),
        RELOADER_FILE_GID=str(os.getgid()),
    )
    env.renew()
    env.reloader().reconcile()
    info = (env.target / KEY).stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


def test_a_refusal_publishes_nothing_is_logged_once_and_fails_after_grace(env: Env) -> None:
    _cert, key = env.renew()
    reloader = env.reloader()
    reloader.reconcile()
    before = (env.target / MANIFEST_NAME).read_bytes()
    env.renew(key=env.ca.leaf().key_pem)  # a key that is not the certificate's
    for _ in range(5):
        result = reloader.reconcile()
        assert result.outcome is Outcome.REJECTED
        assert "key_mismatch" in result.message
    assert (env.target / MANIFEST_NAME).read_bytes() == before
    assert (env.target / KEY).read_bytes() == key
    assert len(env.events("cert.rejected")) == 1
    assert env.events("cert.rejected")[0]["level"] == "error"
    assert env.failures("key_mismatch") == 1.0
    source = env.health.snapshot()["checks"]["source"]
    assert (source["status"], source["reason"]) == ("degraded", "key_mismatch")
    env.now[0] += 61
    reloader.reconcile()
    assert env.health.snapshot()["checks"]["source"]["status"] == "failing"
    assert env.health.status is Status.FAILING
    # A different broken content is a new refusal; a good renewal clears it.
    env.renew(key=b"")
    reloader.reconcile()
    assert env.failures("empty") == 1.0
    assert len(env.events("cert.rejected")) == 2
    env.renew()
    assert reloader.reconcile().outcome is Outcome.PUBLISHED
    assert env.health.snapshot()["checks"]["source"]["status"] == "ok"
    assert "PRIVATE KEY" not in env.log.getvalue()


def test_downgrade_is_refused_unless_allowed(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.renew(env.ca.leaf(days=80))
    reloader = env.reloader()
    reloader.reconcile()
    env.renew(env.ca.leaf(days=40))
    assert reloader.reconcile().outcome is Outcome.REJECTED
    assert env.failures("downgrade") == 1.0

    allowed = Env(tmp_path / "allowed", RELOADER_ALLOW_DOWNGRADE="true")
    allowed.renew(allowed.ca.leaf(days=80))
    r = allowed.reloader()
    r.reconcile()
    allowed.renew(allowed.ca.leaf(days=40))
    assert r.reconcile().outcome is Outcome.PUBLISHED


def test_expiring_and_expired_published_certificate(env: Env) -> None:
    env.renew(env.ca.leaf(days=10))
    reloader = env.reloader()
    reloader.reconcile()
    storage = env.health.snapshot()["checks"]["storage"]
    assert storage["status"] == "degraded"
    assert storage["days_left"] < 14
    env.now[0] += 11 * 86400  # eleven days later: the published certificate has expired
    reloader.reconcile()
    body = env.health.snapshot()
    assert body["checks"]["storage"]["status"] == "failing"
    assert body["status"] == "failing"


@pytest.mark.parametrize("step", ["cert", "key"])
def test_a_crash_between_steps_never_commits_a_mixed_pair_and_is_repaired(
    env: Env, step: str
) -> None:
    old_cert, old_key = env.renew()
    env.reloader().reconcile()
    new_cert, new_key = env.renew()

    class Killed(BaseException):
        """Stands in for the process dying right after ``step``."""

    def crash(done: str) -> None:
        if done == step:
            raise Killed

    with pytest.raises(Killed):
        env.reloader(after_step=crash).reconcile()
    snap = env.snapshot()
    assert snap.state is State.INCONSISTENT
    assert snap.manifest is not None
    assert snap.manifest.generation == 1
    assert snap.manifest.cert == FileEntry.of(CERT, old_cert)
    assert snap.manifest.key == FileEntry.of(KEY, old_key)
    assert not [p for p in env.target.iterdir() if TEMP_MARKER in p.name]
    repaired = env.reloader().reconcile()
    assert (repaired.outcome, repaired.generation) == (Outcome.PUBLISHED, 2)
    snap = env.snapshot()
    assert snap.committed
    assert (snap.cert, snap.key) == (new_cert, new_key)


def test_corrupt_manifest_is_repaired_above_the_highest_generation_seen(env: Env) -> None:
    env.renew()
    reloader = env.reloader()
    reloader.reconcile()
    env.renew()
    reloader.reconcile()
    (env.target / MANIFEST_NAME).write_bytes(b"{not json")
    result = reloader.reconcile()
    assert (result.outcome, result.generation) == (Outcome.PUBLISHED, 3)
    assert env.events("storage.repairing")


def test_storage_trouble_is_reported_with_since_and_recovers(env: Env) -> None:
    env.renew()
    reloader = env.reloader()
    reloader.reconcile()
    moved = env.target.with_name("away")
    env.target.rename(moved)
    env.target.write_bytes(b"")  # a file where the mount point should be: ENOTDIR-like trouble
    stale = moved / f".x{TEMP_MARKER}1"
    stale.write_bytes(b"half")
    for _ in range(3):
        assert reloader.reconcile().outcome is Outcome.STORAGE_ERROR
    body = env.health.snapshot()
    assert body["status"] == "failing"
    assert body["checks"]["storage"]["errno"] == "ENOENT"
    assert body["checks"]["last_error"]["status"] == "degraded"
    assert body["checks"]["source"]["status"] == "ok"
    assert len(env.events("storage.unavailable")) == 1
    env.target.unlink()
    moved.rename(env.target)
    assert reloader.reconcile().outcome is Outcome.CURRENT
    assert env.health.status is Status.OK
    assert not (env.target / stale.name).exists()
    assert env.events("storage.available")
    assert env.health.snapshot()["checks"]["last_error"]["message"].startswith("resolved:")


def test_a_refusal_seen_mid_swap_is_re_read_not_reported(env: Env) -> None:
    env.renew()
    reloader = env.reloader(settle=0.5)
    reloader.reconcile()
    # certbot's swap caught half-way: the new certificate with the old key, for a moment.
    new_cert, new_key = env.renew()
    old_key = (env.archive / "privkey1.pem").name
    tmp = env.live / ".privkey.half"
    tmp.symlink_to(f"../../archive/iklim.co/{old_key}")
    tmp.replace(env.live / "privkey.pem")

    def finish_swap() -> None:
        done = env.live / ".privkey.done"
        done.symlink_to("../../archive/iklim.co/privkey2.pem")
        done.replace(env.live / "privkey.pem")

    timer = threading.Timer(0.02, finish_swap)
    timer.start()
    result = reloader.reconcile()
    timer.join()
    assert (result.outcome, result.generation) == (Outcome.PUBLISHED, 2)
    assert env.snapshot().key == new_key
    assert env.events("cert.rejected") == []
    assert env.failures("key_mismatch") == 0.0
    assert new_cert


def test_missing_source_is_refused_with_reason_missing(env: Env) -> None:
    result = env.reloader().reconcile()
    assert result.outcome is Outcome.REJECTED
    assert env.failures("missing") == 1.0
    assert env.snapshot().state is State.EMPTY


def test_last_check_metric_is_the_clock(env: Env) -> None:
    env.renew()
    env.now[0] = (datetime.now(UTC) + timedelta(seconds=5)).timestamp()
    env.reloader().reconcile()
    assert (
        env.metrics.registry.get_sample_value("certflow_reloader_last_check_timestamp_seconds")
        == env.now[0]
    )
