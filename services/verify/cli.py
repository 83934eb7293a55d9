"""``certflow verify``: the runbook's Verification section as one command.

Exit 0 only when every check holds, 1 when one fails, 2 on a bad setting or when it cannot run.
Run it on a swarm manager: from the host it starts itself in a one-off container on the Vault
network with the distributor's mounts (``launch``); in a container on that network it runs there.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from services.verify.checks import all_ok, evaluate
from services.verify.launch_cli import add_here_flag, launched_result
from services.verify.observe import observe
from services.verify.report import to_json, to_table
from services.verify.settings import VerifySettings
from shared.cli_help import epilog_for
from shared.docker_engine import open_engine
from shared.settings import load_settings

# flag -> environment variable: a flag given on the command line wins over the environment.
_FLAGS = {
    "stack": "VERIFY_STACK",
    "vault_network": "VERIFY_VAULT_NETWORK",
    "vault_server_name": "VERIFY_VAULT_SERVER_NAME",
    "vault_ca_file": "VERIFY_VAULT_CA_FILE",
    "ssl_dir": "VERIFY_SSL_DIR",
    "storagebox_dir": "VERIFY_STORAGEBOX_DIR",
    "log_tail": "VERIFY_LOG_TAIL",
    "timeout": "VERIFY_TIMEOUT",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = epilog_for(
        VerifySettings,
        intro="Checks: the four services exist and are converged; the reloader's recent logs "
        "carry no error; the Storage Box holds a committed pair; /opt/iklimco/ssl holds the "
        "same certificate; every Vault replica is unsealed and serves that certificate on 8200; "
        "every service labelled certflow.reload (a consumer) serves it too and is neither halted "
        "nor mislabelled. A flag given on the command line wins over its VERIFY_* variable "
        "(e.g. --ssl-dir over VERIFY_SSL_DIR).",
        exit_codes="0 all hold, 1 a check failed, 2 bad setting.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--stack", help="stack name prefix of the services (default iklimco)")
    parser.add_argument(
        "--vault-network", help="overlay network to reach Vault tasks on (default <stack>_vault)"
    )
    parser.add_argument(
        "--vault-server-name", help="name the Vault certificate must be valid for (vault.iklim.co)"
    )
    parser.add_argument(
        "--vault-ca-file", help="CA bundle for Vault's certificate (default: the system's)"
    )
    parser.add_argument("--ssl-dir", help="the node's installed pair (default /opt/iklimco/ssl)")
    parser.add_argument("--storagebox-dir", help="the Storage Box (default /mnt/storagebox/ssl)")
    parser.add_argument("--log-tail", help="reloader log lines to scan (default 20)")
    parser.add_argument("--timeout", help="seconds per Vault connection (default 5)")
    add_here_flag(parser)


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> VerifySettings:
    merged = dict(environ)
    for attr, variable in _FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            merged[variable] = str(value)
    return load_settings(VerifySettings, merged)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, dict(os.environ))
    launched = launched_result(args, settings, "verify")
    if launched is not None:
        return launched
    observation = observe(settings, open_engine)
    results = evaluate(observation, log_tail=settings.log_tail, stack=settings.stack)
    now = datetime.now(UTC)
    print(to_json(results, checked_at=now) if args.json else to_table(results))
    sys.stdout.flush()
    return 0 if all_ok(results) else 1
