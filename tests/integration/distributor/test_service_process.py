"""``certflow distributor`` as a real process: follows renewals, serves /health, exits 0 on TERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from shared.atomic import TEMP_MARKER
from tests.support.boxes import CERT, KEY, make_pair, publish
from tests.support.pki import CA

from .conftest import wait_for

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_process_follows_renewals_and_stops_cleanly(tmp_path: Path) -> None:
    ca = CA()
    box, target = tmp_path / "box", tmp_path / "target"
    publish(box, make_pair(ca, 1))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTOR_")},
        "DISTRIBUTOR_SOURCE_DIR": str(box),
        "DISTRIBUTOR_TARGET_DIR": str(target),
        "DISTRIBUTOR_RELOAD_MODE": "none",
        "DISTRIBUTOR_POLL_INTERVAL": "1",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": str(port),
    }
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "distributor"], cwd=REPO, env=env, stdout=log, stderr=log
    )

    def generation() -> int | None:
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        except httpx.HTTPError:
            return None
        value = body["info"].get("generation")
        return int(value) if value is not None else None

    try:
        wait_for("generation 1 installed", lambda: generation() == 1, 60)
        second = make_pair(ca, 2)
        publish(box, second)
        wait_for("generation 2 installed", lambda: generation() == 2, 60)
        assert (target / CERT).read_bytes() == second.cert
        assert (target / KEY).read_bytes() == second.key
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "certflow_distributor_installs_total 2.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0
    output = (tmp_path / "log").read_text()
    assert "service.stopped" in output
    assert "PRIVATE KEY" not in output
    assert not [p for p in target.iterdir() if TEMP_MARKER in p.name]
