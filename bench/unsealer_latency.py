"""Time from a Vault replica's listener answering to unsealed, and the unsealer's idle RSS.

Runs a real ``certflow unsealer`` (default intervals) against one Vault double over TLS, then
restarts the double N times (SIGKILL + start, as a Swarm task replacement looks from outside: a
new process, sealed). For each restart it records when the first TLS handshake succeeded and when
seal-status first reported unsealed (both polled every 5 ms), and prints p50/p95/max.

    .venv/bin/python bench/unsealer_latency.py [--restarts 20] [--shares 5 --threshold 3]
        [--slow-interval 0.25]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.unsealer.conftest import UnsealerProcess  # noqa: E402
from tests.vaultsim.harness import SimProcess, TlsMaterial  # noqa: E402


def unsealed(sim: SimProcess) -> bool:
    try:
        return sim.status()["sealed"] is False
    except (httpx.HTTPError, ValueError):
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--shares", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument(
        "--slow-interval", default="", help="UNSEALER_SLOW_INTERVAL to run with (default: its own)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="certflow-bench-unseal-") as tmp:
        root = Path(tmp)
        tls = TlsMaterial.create(root / "tls")
        sim = SimProcess(tls, root / "vault").start()
        keys = sim.init(args.shares, args.threshold)["keys_base64"]
        key_file = root / "keys"
        key_file.write_text("\n".join(keys) + "\n")
        key_file.chmod(0o400)
        unsealer = UnsealerProcess(
            root,
            {
                "UNSEALER_VAULT_ADDRS": sim.address,
                "UNSEALER_CA_FILE": str(tls.ca_file),
                "UNSEALER_KEY_FILE": str(key_file),
                "LOG_LEVEL": "warning",
                **({"UNSEALER_SLOW_INTERVAL": args.slow_interval} if args.slow_interval else {}),
            },
        ).start()
        try:
            deadline = time.monotonic() + 30
            while not unsealed(sim):
                if time.monotonic() > deadline:
                    raise SystemExit("the first unseal did not happen within 30 s")
                time.sleep(0.05)
            latencies: list[float] = []
            rng = random.Random(7)
            for _ in range(args.restarts):
                # let the unsealer fall back to its slow interval, at a random phase
                time.sleep(1.2 + rng.uniform(0.0, 1.0))
                sim.restart(wait=False)
                answered = sim.wait_ready()
                while not unsealed(sim):
                    if time.monotonic() - answered > 30:
                        raise SystemExit("a restarted replica stayed sealed for 30 s")
                    time.sleep(0.005)
                latencies.append(time.monotonic() - answered)
            time.sleep(3.0)  # idle: everything unsealed, slow polling
            assert unsealer.proc is not None
            idle_rss = rss_kib(unsealer.proc.pid)
        finally:
            unsealer.stop()
            sim.stop()

    ms = [v * 1000 for v in latencies]
    intervals = (
        f"slow interval {args.slow_interval} s" if args.slow_interval else "default intervals"
    )
    print(f"unsealer latency, listener answering -> unsealed ({args.shares} shares, "
          f"threshold {args.threshold}, {len(ms)} restarts, {intervals}):")  # fmt: skip
    print(f"  p50  {percentile(ms, 0.50):8.1f} ms")
    print(f"  p95  {percentile(ms, 0.95):8.1f} ms")
    print(f"  max  {max(ms):8.1f} ms")
    print(f"  mean {statistics.fmean(ms):8.1f} ms")
    print(f"unsealer idle RSS: {idle_rss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
