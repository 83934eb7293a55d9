"""``certflow status``: the flow as it stands, in one command on a manager.

Every certflow task's ``/health`` on every node, each Vault member's role and the leaf it serves,
and the rollout as the coordinator's gate sees it (the certificate in flight, the member it waits
on, any halt with its cause and since when, the trust check and the manifest authentication on
every node). From a host it runs itself in a one-off container on the Vault network, like verify.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from services.verify.cli import settings_from
from services.verify.launch_cli import add_here_flag, launched_result
from services.verify.observe import observe
from services.verify.settings import VerifySettings
from services.verify.status import summarize
from services.verify.status_view import to_json, to_table
from shared.cli_help import epilog_for
from shared.docker_engine import open_engine


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = epilog_for(
        VerifySettings,
        intro="Shows every certflow task's /health (service, node, task, state, each problem and "
        "since when), each Vault member's role and the certificate it serves, and the rollout as "
        "the coordinator's gate sees it, and every service labelled certflow.reload (a consumer): "
        "its reload mode, check address, state and what each task serves. It reads the same "
        "VERIFY_* settings as verify; run it on a swarm manager (from the host it starts a "
        "one-off container on the Vault network).",
        exit_codes="0 all is well, 1 something needs an operator, 2 bad setting or cannot run "
        "(no swarm, a worker node, no certs stack), 3 a rollout is moving within its bounds "
        "(run it again), 4 paused by an operator (certflow pause; certflow resume ends it).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--stack", help="stack name prefix of the services (default iklimco)")
    parser.add_argument(
        "--vault-network", help="overlay network to reach the tasks on (default <stack>_vault)"
    )
    parser.add_argument("--timeout", help="seconds per connection (default 5)")
    add_here_flag(parser)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, dict(os.environ))
    launched = launched_result(args, settings, "status")
    if launched is not None:
        return launched
    observation = observe(settings, open_engine)
    now = datetime.now(UTC)
    status = summarize(observation, now=now)
    if args.json:
        print(to_json(status, checked_at=now))
    else:
        print(to_table(status, stack=settings.stack, checked_at=now))
    sys.stdout.flush()
    return status.exit_code
