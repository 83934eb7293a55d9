#!/usr/bin/env python3
"""`vault status` for the Vault double's image, with the real CLI's exit codes.

0 unsealed, 2 sealed (or not initialized), 1 error. Only the flags the stack's healthcheck uses
are understood: -address=URL and -tls-skip-verify.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "status":
        print("this is the Vault double's `vault`: only `vault status` exists", file=sys.stderr)
        return 1
    address = "https://127.0.0.1:8200"
    context = ssl.create_default_context()
    for arg in argv[1:]:
        if arg.startswith("-address="):
            address = arg.split("=", 1)[1]
        elif arg in {"-tls-skip-verify", "--tls-skip-verify"}:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"{address}/v1/sys/seal-status", context=context, timeout=3
        ) as response:
            status = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"Error checking seal status: {exc}", file=sys.stderr)
        return 1
    sealed = bool(status.get("sealed", True))
    print(f"Initialized    {str(status.get('initialized')).lower()}")
    print(f"Sealed         {str(sealed).lower()}")
    return 2 if sealed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
