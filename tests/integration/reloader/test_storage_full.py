"""A full Storage Box (real ENOSPC on a tiny tmpfs): the old pair stays, nothing partial."""

from __future__ import annotations

import errno
import io
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.reloader.metrics import ReloaderMetrics
from services.reloader.service import Outcome, Reloader
from services.reloader.settings import ReloaderSettings
from shared.atomic import TEMP_MARKER
from shared.health import HealthRegistry
from shared.logs import configure_logging
from shared.settings import load_settings
from shared.storagebox import State, read_snapshot
from tests.support.pki import CA

CERT, KEY = "STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem"


@pytest.fixture
def tiny_mount(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (the CI container runs as root)")
    mount = tmp_path / "storagebox"
    mount.mkdir()
    # Five 4 KiB pages: room for one published pair (3 files) and a little more.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20k,mode=0755", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(path: Path) -> int | None:
    """Write until the filesystem refuses; return the errno it refused with."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def test_disk_full_keeps_the_old_pair_and_recovers(tmp_path: Path, tiny_mount: Path) -> None:
    live = tmp_path / "etc" / "letsencrypt" / "live" / "iklim.co"
    live.mkdir(parents=True)
    ca = CA()
    first = ca.leaf()
    (live / "fullchain.pem").write_bytes(ca.fullchain(first))
    (live / "privkey.pem").write_bytes(first.key_pem)
    configure_logging(service="cert-reloader", node="n1", stream=io.StringIO())
    settings = load_settings(
        ReloaderSettings,
        {"RELOADER_SOURCE_DIR": str(live), "RELOADER_TARGET_DIR": str(tiny_mount)},
    )
    health = HealthRegistry(service="cert-reloader", node="n1", version="t")
    reloader = Reloader(settings, health, ReloaderMetrics())
    assert reloader.reconcile().outcome is Outcome.PUBLISHED
    published = read_snapshot(tiny_mount, cert_name=CERT, key_name=KEY)

    filler = tiny_mount / "filler"
    assert _fill(filler) == errno.ENOSPC
    second = ca.leaf(days=100)
    (live / "fullchain.pem").write_bytes(ca.fullchain(second))
    (live / "privkey.pem").write_bytes(second.key_pem)

    result = reloader.reconcile()
    assert result.outcome is Outcome.STORAGE_ERROR
    assert "ENOSPC" in result.message
    body = health.snapshot()
    assert body["checks"]["storage"]["status"] == "failing"
    assert body["checks"]["storage"]["errno"] == "ENOSPC"
    snap = read_snapshot(tiny_mount, cert_name=CERT, key_name=KEY)
    assert snap.state is State.COMMITTED
    assert snap.manifest == published.manifest
    assert not [p for p in tiny_mount.iterdir() if TEMP_MARKER in p.name]

    filler.unlink()
    result = reloader.reconcile()
    assert (result.outcome, result.generation) == (Outcome.PUBLISHED, 2)
    snap = read_snapshot(tiny_mount, cert_name=CERT, key_name=KEY)
    assert snap.committed
    assert snap.cert == ca.fullchain(second)
    assert health.snapshot()["checks"]["storage"]["status"] == "ok"
    assert datetime.now(UTC) < snap.manifest.leaf.not_after  # type: ignore[union-attr]
