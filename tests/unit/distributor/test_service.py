"""The distributor pass and its /health, in-process over an ASGI transport (no reload)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.errors import ConfigError
from shared.health import build_app
from shared.settings import load_settings
from tests.support.boxes import CERT, KEY, make_pair, publish
from tests.support.pki import CA

REPO = Path(__file__).resolve().parents[3]


def settings(tmp_path: Path, **extra: str) -> DistributorSettings:
    env = {
        "DISTRIBUTOR_SOURCE_DIR": str(tmp_path / "box"),
        "DISTRIBUTOR_TARGET_DIR": str(tmp_path / "target"),
        "DISTRIBUTOR_RELOAD_MODE": "none",
        "DISTRIBUTOR_NODE_ID": "node-abc",
        "CERTFLOW_NODE_NAME": "worker-1",
        **extra,
    }
    return load_settings(DistributorSettings, env)


def get_health(dist: Distributor) -> tuple[int, dict[str, Any]]:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(dist.health, dist.metrics.registry))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/health")

    response = asyncio.run(fetch())
    return response.status_code, response.json()


def test_health_reports_what_the_coordinator_reads(tmp_path: Path) -> None:
    ca = CA()
    pair = make_pair(ca, 4)
    publish(tmp_path / "box", pair)
    dist = Distributor(settings(tmp_path))
    dist.sync_pass()
    code, body = get_health(dist)
    assert code == 200
    info = body["info"]
    assert info["node_id"] == "node-abc"
    assert info["hostname"] == "worker-1"
    assert info["fingerprint"] == pair.manifest.fingerprint
    assert info["generation"] == 4
    assert info["storagebox_generation"] == 4
    assert info["last_sync"]
    assert info["last_error"] is None
    metrics = generate_latest(dist.metrics.registry).decode()
    assert "certflow_distributor_installed_generation 4.0" in metrics


def test_refused_pair_is_failing_with_last_error_and_no_key_material(tmp_path: Path) -> None:
    ca = CA()
    good = make_pair(ca, 1)
    publish(tmp_path / "box", good)
    dist = Distributor(settings(tmp_path))
    dist.sync_pass()
    bad = make_pair(ca, 2, ca.leaf(("other.example",)))
    publish(tmp_path / "box", bad)
    assert dist.sync_pass() is None
    code, body = get_health(dist)
    assert code == 503
    assert "domain_mismatch" in body["info"]["last_error"]
    assert body["info"]["generation"] == 1  # the last good pair stays installed
    text = str(body)
    assert "PRIVATE KEY" not in text
    assert bad.key.decode() not in text
    assert (tmp_path / "target" / KEY).read_bytes() == good.key
    assert (tmp_path / "target" / CERT).read_bytes() == good.cert


def test_partial_upload_is_degraded_not_failing(tmp_path: Path) -> None:
    ca = CA()
    pair = make_pair(ca, 1)
    publish(tmp_path / "box", pair)
    (tmp_path / "box" / KEY).write_bytes(b"half")
    dist = Distributor(settings(tmp_path))
    dist.sync_pass()
    code, body = get_health(dist)
    assert code == 200
    assert body["status"] == "degraded"
    assert "do not match" in body["checks"]["sync"]["message"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISTRIBUTOR_RELOAD_MODE", "bounce"),
        ("DISTRIBUTOR_KEY_MODE", "0644"),
        ("DISTRIBUTOR_POLL_INTERVAL", "0"),
        ("DISTRIBUTOR_KEEP", "1"),
        ("CERTFLOW_KEY_NAME", "../key.pem"),
    ],
)
def test_bad_setting_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **{name: value})
    assert name in str(info.value)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", "distributor", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_once_and_exit_codes(tmp_path: Path) -> None:
    env = {
        "DISTRIBUTOR_SOURCE_DIR": str(tmp_path / "box"),
        "DISTRIBUTOR_TARGET_DIR": str(tmp_path / "target"),
    }
    (tmp_path / "box").mkdir()
    nothing = run_cli("--once", env=env)
    assert nothing.returncode == 1
    assert "nothing published" in nothing.stderr
    publish(tmp_path / "box", make_pair(CA(), 1))
    assert run_cli("--once", env=env).returncode == 0
    assert run_cli("--once", env=env).returncode == 0  # already current
    bad = run_cli("--once", env={**env, "DISTRIBUTOR_RELOAD_MODE": "loud"})
    assert bad.returncode == 2
    assert "DISTRIBUTOR_RELOAD_MODE" in bad.stderr
    helped = run_cli("--help", env=env)
    assert helped.returncode == 0
    assert "--once" in helped.stdout


def test_without_a_docker_socket_the_distributor_only_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on TCP port 1. (A missing unix socket works the same, but docker-py leaks the
    # failed socket to the garbage collector, which strict warnings turn into a test error.)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor.from_settings(settings(tmp_path, DISTRIBUTOR_RELOAD_MODE="restart"))
    assert dist.engine is None
    assert dist.coordinator is None
    result = dist.sync_pass()
    assert result is not None
    assert result.newly_installed
    assert dist.reload_pass() is None
    assert dist.health.status.value == "ok"


def test_loop_survives_a_missing_mount_and_installs_once_it_appears(tmp_path: Path) -> None:
    dist = Distributor(settings(tmp_path, DISTRIBUTOR_POLL_INTERVAL="0.2"))
    stop = threading.Event()
    worker = threading.Thread(target=dist.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while dist.health.check("sync") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        check = dist.health.check("sync")
        assert check is not None
        assert check.status.value == "failing"
        assert "mount missing" in check.message
        publish(tmp_path / "box", make_pair(CA(), 1))
        while dist.installer.installed() is None and time.monotonic() < deadline + 10:
            time.sleep(0.02)
        assert dist.installer.installed() is not None
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_own_reads_do_not_wake_the_loop(tmp_path: Path) -> None:
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist = Distributor(settings(tmp_path, DISTRIBUTOR_POLL_INTERVAL="30"))
    stop = threading.Event()
    worker = threading.Thread(target=dist.run, args=(stop,))
    worker.start()
    try:
        # Each pass opens and reads the Storage Box files; those events must not start another.
        stop.wait(1.5)
    finally:
        stop.set()
        worker.join(10)
    assert dist.metrics.sync_passes._value.get() == 1
    assert dist.installer.installed() is not None
