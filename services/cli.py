"""``certflow``: one console command, one subcommand per service or tool.

Each subcommand lives in its own module exposing ``configure(parser)`` (add arguments) and
``run(args) -> int``. Settings come from the environment and are validated before anything starts;
a bad setting prints one line naming the variable and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from shared import __version__
from shared.cli_help import HelpFormatter
from shared.errors import ConfigError


class _Command(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "reloader": (
        "services.reloader.cli",
        "watch SWAG's certificate, validate it and publish it to the Storage Box",
    ),
    "distributor": (
        "services.distributor.cli",
        "install the published pair on this node and reload Vault once per certificate",
    ),
    "unsealer": (
        "services.unsealer.cli",
        "find every Vault replica and unseal it with the vault_unseal_key secret",
    ),
    "vault-bootstrap": (
        "services.unsealer.bootstrap_cli",
        "initialize Vault and store (or rotate) its unseal keys as a Docker secret",
    ),
    "verify": (
        "services.verify.cli",
        "check the whole flow (the runbook's Verification section) in one command",
    ),
    "status": (
        "services.verify.status_cli",
        "show every task's health, each Vault member and the rollout as the gate sees it",
    ),
    "pause": (
        "services.maintenance.pause_cli",
        "maintenance switch: certflow restarts and unseals no Vault member until resume",
    ),
    "resume": (
        "services.maintenance.resume_cli",
        "end a pause: the rollout continues where it stopped, the unsealer is scaled back",
    ),
    "shim": (
        "services.shim_cli",
        "print a `certflow` command for a host that has only Docker (status, verify)",
    ),
}


def _load(module: str) -> _Command | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None  # command not built into this installation
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, _Command]]:
    parser = argparse.ArgumentParser(
        prog="certflow",
        description=(
            "Certificate renewal and Vault reload for Docker Swarm. Every setting is an "
            "environment variable; see the README's configuration reference."
        ),
    )
    parser.add_argument("--version", action="version", version=f"certflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    loaded: dict[str, _Command] = {}
    for name, (module, help_text) in COMMANDS.items():
        command = _load(module)
        if command is None:
            continue
        command_parser = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        command.configure(command_parser)
        loaded[name] = command
    return parser, loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given: `status` and `verify` re-run it elsewhere
    try:
        return commands[args.command].run(args)
    except ConfigError as exc:
        print(f"certflow {args.command}: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
