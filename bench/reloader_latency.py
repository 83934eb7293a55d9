"""Benchmark: how fast the reloader publishes a real certbot renewal, and its idle memory.

For each mode (inotify, polling only) a real ``certflow reloader`` process watches a SWAG volume
that Debian's certbot renews against pebble, ``--renewals`` times. Per renewal it records:

* from certbot's exit to the manifest being committed on the Storage Box (the latency
  operators care about;
  can be negative when the reloader publishes before certbot has finished its own bookkeeping),
* from the live symlinks being swapped (the renewal landing) to the commit.

"Committed" is the manifest's mtime once it names the new pair. Also printed: the idle reloader's
RSS from /proc. Run: ``.venv/bin/python -m bench.reloader_latency [--renewals 20]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.errors import CertflowError
from shared.manifest import MANIFEST_NAME
from shared.storagebox import read_snapshot
from tests.support.acme import Certbot, Pebble, SwagVolume, free_port

CERT, KEY = "STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mode:
    name: str
    env: dict[str, str]
    from_certbot_exit: list[float] = field(default_factory=list)
    from_swap: list[float] = field(default_factory=list)
    rss_kib: int = 0
    publishes: float = 0.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _committed_generation(storage: Path, live: Path) -> int | None:
    snap = read_snapshot(storage, cert_name=CERT, key_name=KEY)
    if not snap.committed or snap.manifest is None:
        return None
    pair = ((live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes())
    return snap.manifest.generation if (snap.cert, snap.key) == pair else None


def _wait_generation(storage: Path, live: Path, above: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            generation = _committed_generation(storage, live)
        except (OSError, CertflowError):  # mid-publish reads are expected; keep polling
            generation = None
        if generation is not None and generation > above:
            return generation
        time.sleep(0.002)
    raise RuntimeError(f"no generation above {above} within {timeout} s")


def _metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def run_mode(mode: Mode, workdir: Path, pebble: Pebble, renewals: int) -> None:
    volume = SwagVolume(workdir / mode.name / "swag-config")
    certbot = Certbot(pebble, volume)
    certbot.issue()
    storage = workdir / mode.name / "storagebox"
    storage.mkdir(parents=True)
    log = (workdir / mode.name / "reloader.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELOADER_", "HEALTH_"))}

    port = free_port()
    env.update(
        RELOADER_SOURCE_DIR=str(volume.live),
        RELOADER_TARGET_DIR=str(storage),
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT=str(port),
        CERTFLOW_NODE_NAME="bench",
        **mode.env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "reloader"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        generation = _wait_generation(storage, volume.live, 0)
        time.sleep(3)  # idle: start-up done, first publish done, nothing happening
        mode.rss_kib = _rss_kib(proc.pid)
        rng = random.Random(renewals)
        for _ in range(renewals):
            # A random pause de-correlates renewals from the polling phase (each renewal would
            # otherwise start at the same point of the reloader's timer).
            time.sleep(rng.uniform(0.0, 1.0))
            certbot.renew()
            exited = time.time()
            generation = _wait_generation(storage, volume.live, generation)
            committed = (storage / MANIFEST_NAME).stat().st_mtime
            swapped = max(
                (volume.live / f"{n}.pem").lstat().st_mtime for n in ("fullchain", "privkey")
            )
            mode.from_certbot_exit.append(committed - exited)
            mode.from_swap.append(committed - swapped)
        mode.publishes = _metric(port, "certflow_reloader_publishes_total")
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renewals", type=int, default=20)
    parser.add_argument("--poll-interval", default="1", help="RELOADER_CHECK_INTERVAL when polling")
    parser.add_argument("--debounce", default="0.5", help="RELOADER_DEBOUNCE (the default)")
    parser.add_argument("--short-debounce", default="0.1", help="a second inotify run")
    args = parser.parse_args()
    modes = [
        Mode("inotify", {"RELOADER_DEBOUNCE": args.debounce, "RELOADER_CHECK_INTERVAL": "60"}),
        Mode(
            "inotify-short",
            {"RELOADER_DEBOUNCE": args.short_debounce, "RELOADER_CHECK_INTERVAL": "60"},
        ),
        Mode(
            "polling",
            {
                "RELOADER_POLL_ONLY": "true",
                "RELOADER_DEBOUNCE": args.debounce,
                "RELOADER_CHECK_INTERVAL": args.poll_interval,
            },
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="certflow-bench-") as tmp:
        workdir = Path(tmp)
        pebble = Pebble(workdir / "pebble")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            pebble.start()
        try:
            for mode in modes:
                run_mode(mode, workdir, pebble, args.renewals)
        finally:
            pebble.stop()
    print(
        f"reloader detection latency over {args.renewals} real certbot renewals "
        f"(debounce {args.debounce} s, inotify-short {args.short_debounce} s; polling interval "
        f"{args.poll_interval} s, where the debounce does not apply)"
    )
    header = (
        f"{'mode':<14} {'measured from':<22} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
        f"{'mean ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode in modes:
        for label, values in (
            ("certbot exit", mode.from_certbot_exit),
            ("live symlink swap", mode.from_swap),
        ):
            ms = [v * 1000 for v in values]
            print(
                f"{mode.name:<14} {label:<22} {_pct(ms, 0.5):>8.0f} {_pct(ms, 0.95):>8.0f} "
                f"{max(ms):>8.0f} {statistics.fmean(ms):>8.0f}"
            )
    print()
    for mode in modes:
        print(
            f"{mode.name:<14} idle RSS {mode.rss_kib / 1024:.1f} MiB; publishes "
            f"{mode.publishes:.0f} for {args.renewals + 1} certificates (1 issuance + renewals)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
