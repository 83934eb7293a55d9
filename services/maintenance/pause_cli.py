"""``certflow pause [REASON...]``: stop certflow from restarting or unsealing Vault members."""

from __future__ import annotations

import argparse

from services.maintenance.cli import configure_common, run_switch


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The coordinator restarts no Vault member, sends no stop order again and moves no "
        "rolling update on; the vault-unsealer is scaled to 0 (its replica count kept in a "
        "label). /health, certflow status and certflow verify show the pause. Nothing is "
        "redeployed and no Vault task is replaced. `certflow resume` ends it; a rollout then "
        "continues where it stopped, with no second restart. Run on a swarm manager. "
        "Exit codes: 0 paused (or already paused), 1 only half done (no vault-unsealer service to "
        "scale down), 2 cannot (no swarm, a worker, no certs stack)."
    )
    parser.add_argument("reason", nargs="*", help="why (shown by status and verify)")
    configure_common(parser)


def run(args: argparse.Namespace) -> int:
    return run_switch(args, pausing=True)
