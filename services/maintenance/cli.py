"""``certflow pause`` and ``certflow resume``: the maintenance switch, one command each on a
swarm manager (they only edit service labels and the unsealer's scale; see ``switch``)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import UTC, datetime

from services.maintenance.switch import SwitchFailed, pause, resume
from services.verify.cli import settings_from
from services.verify.launch_cli import explain
from shared.docker_engine import open_engine
from shared.errors import DockerError
from shared.rollout import Pause
from shared.swarm import manager_problem


def configure_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", help="stack name prefix of the services (default iklimco)")


def run_switch(args: argparse.Namespace, *, pausing: bool) -> int:
    command = "pause" if pausing else "resume"
    settings = settings_from(args, dict(os.environ))
    distributor = settings.service("distributor")
    unsealer = settings.service("unsealer")
    try:
        engine = open_engine()
    except DockerError as exc:
        print(f"certflow {command}: no Docker engine answers ({exc})", file=sys.stderr)
        return 2
    try:
        problem = manager_problem(engine.local_node())
        if problem:
            print(f"certflow {command}: {problem}", file=sys.stderr)
            return 2
        if pausing:
            reason = " ".join(args.reason).strip() if args.reason else ""
            record = Pause(
                since=datetime.now(UTC).isoformat(timespec="seconds"),
                reason=reason[:200],
                by=socket.gethostname(),
            )
            lines = pause(engine, distributor=distributor, unsealer=unsealer, pause=record)
        else:
            lines = resume(engine, distributor=distributor, unsealer=unsealer)
    except SwitchFailed as exc:
        print(f"certflow {command}: {exc}", file=sys.stderr)
        return 1
    except DockerError as exc:
        return explain(command, exc, settings.stack)
    finally:
        engine.close()
    for line in lines:
        print(line)
    print(
        "certflow status shows the pause; `certflow resume` ends it."
        if pausing
        else "certflow status follows the rollout from here."
    )
    return 0
