"""Per-member rollout benchmark on the local single-node Swarm: where the time of a renewal goes,
member by member, in restart mode and in signal mode.

    .venv/bin/python -m bench.rollout [--rotations 3] [--sample-every 0.2]

Brings both stacks up (real OpenBao, a raft cluster of 3), then runs ``--rotations`` real certbot
renewals against pebble in restart mode, then as many in signal mode. For each renewal it prints,
per member, the seconds between its steps (stop, new task, task running, answering, unsealed,
caught up, gate passed) and from its stop to serving the new leaf, from the member timeline
``scripts/renew`` prints (a seal sampler on the Vault network, Swarm's task list, the services'
log events); then the seconds without an active member and the KV writes that failed while a
client wrote through the members. Per mode: renewal -> every member unsealed on the new leaf
(p50/max), time without an active member, failed writes and the longest gap between successful
ones, and in signal mode the canary's SIGHUP -> proven. Last, the figures beside the issue's goals.

Figures, not assertions: the exit status is 0 unless the flow itself failed (a rotation that never
completed, a stack that did not come up). Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import sys

from bench.local_stack import local_stack, switch_mode
from tests.support.e2e_flow import (
    FlowError,
    LocalFlow,
    renewal_timeline,
    rotate,
)
from tests.support.rollout_report import (
    LEGEND,
    ModeFigures,
    Renewal,
    goals,
    goals_table,
    measured,
    mode_figures,
    mode_summary,
    renewal_block,
)

# Sampled this long after `certflow verify` passes: the last member still catches up on raft,
# and its gate (the rollout recorded done) passes once its raft index proves that, or after the
# coordinator's voter wait (6 s in the local flow) where none can. The next renewal must not
# start before.
LINGER = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rollout",
        description=" ".join(__doc__.split("\n\n", 1)[0].split()) if __doc__ else None,
    )
    parser.add_argument("--rotations", type=int, default=3, help="renewals per mode (default 3)")
    parser.add_argument(
        "--sample-every",
        type=float,
        default=0.2,
        help="seconds between the seal sampler's rounds (default 0.2, its own default); a round "
        "takes longer while a member does not answer",
    )
    return parser


def _renewal(flow: LocalFlow, sample_every: float) -> Renewal:
    rotation = rotate(flow, linger=LINGER, sample_every=sample_every, retry_elsewhere=True)
    return measured(rotation, renewal_timeline(flow, rotation))


def _run_mode(flow: LocalFlow, mode: str, rotations: int, sample_every: float) -> ModeFigures:
    switch_mode(flow, mode)
    name = f"{mode} mode"
    renewals = []
    for number in range(1, rotations + 1):
        renewal = _renewal(flow, sample_every)
        print(f"\n{renewal_block(name, number, rotations, renewal)}", flush=True)
        renewals.append(renewal)
    figures = mode_figures(name, renewals)
    print(f"\n{mode_summary(figures, sample_every)}", flush=True)
    return figures


def _bench(flow: LocalFlow, rotations: int, sample_every: float) -> None:
    print(f"\n{LEGEND}", flush=True)
    restart = _run_mode(flow, "restart", rotations, sample_every)
    signal = _run_mode(flow, "signal", rotations, sample_every)
    print(f"\n{goals_table(goals(restart, signal))}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with local_stack() as flow:
            _bench(flow, args.rotations, args.sample_every)
    except FlowError as exc:
        print(f"bench.rollout: the flow failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
