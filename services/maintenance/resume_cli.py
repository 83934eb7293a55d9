"""``certflow resume``: end a ``certflow pause``."""

from __future__ import annotations

import argparse

from services.maintenance.cli import configure_common, run_switch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Scales the vault-unsealer back to its count before the pause, waits until it runs, "
        "then removes the pause label. A rollout continues where it stopped; the members "
        "already restarted for the certificate are not restarted again. Run on a swarm "
        "manager. Exit codes: 0 resumed (or was not paused), 1 the unsealer did not run within "
        "120 s (still paused), 2 cannot (no swarm, a worker, no certs stack)."
    )
    configure_common(parser)


def run(args: argparse.Namespace) -> int:
    return run_switch(args, pausing=False)
