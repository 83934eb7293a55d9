"""The command-line side of :mod:`services.verify.launch`, shared by ``status`` and ``verify``."""

from __future__ import annotations

import argparse
import os
import sys

from services.verify.launch import run_on_network
from services.verify.settings import VerifySettings
from shared.docker_engine import open_engine
from shared.errors import CertflowError, DockerError, DockerNotFound


def add_here_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--here",
        action="store_true",
        help="run in this process even when it is not on the Vault network (by default, from "
        "a host, it runs itself in a one-off container on that network with the "
        "cert-distributor's mounts)",
    )


def explain(command: str, exc: CertflowError, stack: str) -> int:
    """Say why an operator command cannot act (exit 2); a missing service most likely means no
    certs stack under that name."""
    hint = (
        f": is the certs stack deployed under stack {stack!r}? (--stack, or VERIFY_STACK)"
        if isinstance(exc, DockerNotFound)
        else ""
    )
    print(f"certflow {command}: {exc}{hint}", file=sys.stderr)
    return 2


def launched_result(args: argparse.Namespace, settings: VerifySettings, command: str) -> int | None:
    """Run ``command`` in the one-off container when needed: its exit code (its output passed
    through), or None when this process is to run it itself. Exit 2 when it cannot run."""
    try:
        engine = open_engine()
    except DockerError as exc:
        if args.here:
            return None  # the command itself reports what it cannot see
        print(f"certflow {command}: no Docker engine answers ({exc})", file=sys.stderr)
        return 2
    try:
        result = run_on_network(
            settings,
            engine,
            here=args.here,
            argv=list(getattr(args, "argv", None) or [command]),
            environ=dict(os.environ),
        )
    except CertflowError as exc:
        return explain(command, exc, settings.stack)
    finally:
        engine.close()
    if result is None:
        return None
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.stdout.flush()
    return result.exit_code
