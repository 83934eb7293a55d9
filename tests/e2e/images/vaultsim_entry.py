"""Entry point of the Vault double's image: start tests.vaultsim from Vault's own configuration.

The stack gives Vault its listener and storage in ``VAULT_LOCAL_CONFIG`` (JSON, as the official
image reads it); the double takes the same address, TLS files and file-storage path, so one stack
file serves both images.
``VAULTSIM_ARGS`` adds options of the double (e.g. its state directory).
"""

from __future__ import annotations

import json
import os
import shlex
import sys


def listener(config: dict[str, object]) -> dict[str, str]:
    listeners = config.get("listener")
    items = listeners if isinstance(listeners, list) else [listeners]
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("tcp"), dict):
            return {str(k): str(v) for k, v in item["tcp"].items()}
    raise SystemExit("VAULT_LOCAL_CONFIG has no tcp listener")


def main(argv: list[str]) -> None:
    if argv and argv[0] != "server":
        raise SystemExit(f"the Vault double only runs `server`, not {argv[0]!r}")
    config = json.loads(os.environ.get("VAULT_LOCAL_CONFIG") or "{}")
    tcp = listener(config)
    storage = config.get("storage")
    file_storage = storage.get("file") if isinstance(storage, dict) else None
    data = file_storage.get("path") if isinstance(file_storage, dict) else None
    command = [
        sys.executable,
        "-m",
        "tests.vaultsim",
        "--listen",
        tcp.get("address", "0.0.0.0:8200"),
        "--tls-cert",
        tcp["tls_cert_file"],
        "--tls-key",
        tcp["tls_key_file"],
        # The file storage path holds the double's state, so replicas sharing it (and restarted
        # ones) are one initialized Vault, as with real shared storage.
        "--data",
        str(data or "/vault/file"),
        *shlex.split(os.environ.get("VAULTSIM_ARGS", "")),
    ]
    print("vault double (a test stand-in, not HashiCorp Vault): " + shlex.join(command), flush=True)
    # exec: the double becomes PID 1 and receives SIGTERM/SIGHUP from Docker directly.
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
