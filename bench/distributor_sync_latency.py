"""Sync latency: manifest committed on the Storage Box -> pair installed on the node.

    .venv/bin/python -m bench.distributor_sync_latency [--samples 30]

Runs the real distributor loop (watchdog accelerator + polling) in a thread against directories
on local disk, publishes generations the way the reloader does (files, then the manifest) and
times until ``..data`` points at the new generation. Poll-only mode stands in for a CIFS/sshfs
mount, which delivers no inotify events for other clients' writes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from services.distributor.install import DATA_LINK
from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.logs import configure_logging
from shared.settings import load_settings
from tests.support.boxes import make_pair, publish
from tests.support.pki import CA


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def measure(samples: int, *, poll: float, poll_only: bool) -> list[float]:
    ca = CA()
    pairs = [make_pair(ca, gen) for gen in range(1, samples + 2)]
    with tempfile.TemporaryDirectory(prefix="certflow-bench-") as tmp:
        root = Path(tmp)
        publish(root / "box", pairs[0])
        settings = load_settings(
            DistributorSettings,
            {
                "DISTRIBUTOR_SOURCE_DIR": str(root / "box"),
                "DISTRIBUTOR_TARGET_DIR": str(root / "target"),
                "DISTRIBUTOR_RELOAD_MODE": "none",
                "DISTRIBUTOR_POLL_INTERVAL": str(poll),
                "DISTRIBUTOR_POLL_ONLY": "true" if poll_only else "false",
                "LOG_LEVEL": "error",
            },
        )
        dist = Distributor(settings)
        stop = threading.Event()
        worker = threading.Thread(target=dist.run, args=(stop,))
        worker.start()
        latencies: list[float] = []
        rng = random.Random(7)  # phase of the commit within the poll cycle, not crypto
        try:
            link = root / "target" / DATA_LINK

            def generation() -> int:
                try:
                    return int(os.readlink(link)[3:9])
                except OSError:
                    return 0

            while generation() != 1:
                time.sleep(0.001)
            for pair in pairs[1:]:
                publish(root / "box", pair, manifest=False)
                # The upload of the files is not part of the latency; a random pause puts the
                # commit at a random phase of the poll cycle, as in production.
                time.sleep(0.05 + (rng.uniform(0, poll) if poll_only else 0.0))
                publish(root / "box", pair)  # rewrites the files (same bytes), manifest last
                committed = time.monotonic()
                while generation() != pair.manifest.generation:
                    time.sleep(0.001)
                latencies.append(time.monotonic() - committed)
                time.sleep(0.01)
        finally:
            stop.set()
            worker.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    configure_logging(service="bench", node="bench", level="error")
    rows = [
        ("watchdog + poll 5 s (local disk)", 5.0, False),
        ("poll only, 5 s (network mount)", 5.0, True),
        ("poll only, 1 s", 1.0, True),
    ]
    print(f"sync latency, manifest committed -> pair installed ({args.samples} renewals each)")
    print(f"{'mode':<36} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for label, poll, poll_only in rows:
        samples = args.samples if not poll_only or poll < 2 else max(6, args.samples // 4)
        values = [v * 1000 for v in measure(samples, poll=poll, poll_only=poll_only)]
        print(
            f"{label:<36} {statistics.median(values):>9.1f} {percentile(values, 95):>9.1f} "
            f"{max(values):>9.1f}"
        )


if __name__ == "__main__":
    main()
