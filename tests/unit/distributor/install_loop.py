"""Run by test_install in a subprocess: install pairs from ``argv[2:]`` in a loop until killed."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from services.distributor.install import PairInstaller
from shared.manifest import Manifest
from tests.support.boxes import CERT, KEY


def main() -> None:
    target = Path(sys.argv[1])
    pairs = []
    for source in sys.argv[2:]:
        base = Path(source)
        pairs.append(
            (
                (base / CERT).read_bytes(),
                (base / KEY).read_bytes(),
                Manifest.from_json((base / "certflow-manifest.json").read_bytes()),
            )
        )
    installer = PairInstaller(target, cert_name=CERT, key_name=KEY, keep=2)
    print("ready", flush=True)
    for cert, key, manifest in itertools.cycle(pairs):
        installer.install(cert, key, manifest)


if __name__ == "__main__":
    main()
