"""``python -m tests.vaultsim``: run the Vault double."""

from __future__ import annotations

import sys

from tests.vaultsim.server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
