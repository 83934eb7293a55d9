"""End-to-end rotation benchmark on the local single-node Swarm: from a renewal until every
Vault replica serves the new certificate.

    .venv/bin/python -m bench.e2e_rotation [--rotations 5]

Brings both stacks up (real OpenBao, a raft cluster of 3), then runs real certbot renewals
against pebble: ``--rotations`` in restart mode, then as many in signal mode. Prints, per mode, the
time from the renewal until every replica serves the new certificate unsealed (p50/p95/max, from a
sampler on the Vault network), the seconds per rotation without any unsealed replica, the RSS of
each service's process and the image size. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

from bench.local_stack import local_stack, switch_mode
from tests.support.e2e_flow import LocalFlow, Rotation, rotate
from tests.support.e2e_images import image_size


def _quantiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p95 = (
        statistics.quantiles(ordered, n=20, method="inclusive")[18]
        if len(ordered) > 1
        else ordered[0]
    )
    return f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {ordered[-1]:.1f} s (n={len(ordered)})"


def _report(mode: str, rotations: list[Rotation]) -> None:
    converge = [r.seconds_to_converge for r in rotations if r.seconds_to_converge is not None]
    gaps = [r.seconds_without_unsealed for r in rotations]
    print(
        f"{mode}: renewal -> every replica unsealed on the new certificate: {_quantiles(converge)}"
    )
    print(
        f"{mode}: seconds without an unsealed replica per rotation: {[round(g, 1) for g in gaps]}"
    )
    print(f"{mode}: Vault force updates per rotation: {[r.force_updates for r in rotations]}")


def _rss(flow: LocalFlow) -> dict[str, int]:
    """VmRSS (kB) of PID 1 in each container of the stack, by service."""
    ids = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.stack.namespace={flow.stack}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    found: dict[str, int] = {}
    for cid in ids:
        service = subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                '{{index .Config.Labels "com.docker.swarm.service.name"}}',
                cid,
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        status = subprocess.run(
            ["docker", "exec", cid, "cat", "/proc/1/status"], capture_output=True, text=True
        ).stdout
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kb = int(line.split()[1])
                found[service] = max(found.get(service, 0), kb)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rotations", type=int, default=5)
    args = parser.parse_args()
    with local_stack() as flow:
        restart = [rotate(flow) for _ in range(args.rotations)]
        _report("restart mode", restart)
        switch_mode(flow, "signal")
        signal = [rotate(flow) for _ in range(args.rotations)]
        _report("signal mode", signal)
        for service, kb in sorted(_rss(flow).items()):
            print(f"RSS {service}: {kb / 1024:.1f} MiB")
        print(f"image size {flow.image}: {image_size(flow.image) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
