"""Build the project image the way an operator would, offline.

There is no registry and ``pip`` inside ``docker build`` cannot reach an index here, so the wheels
are built on the host into a fresh ``dist/wheels-<suffix>`` directory (the Dockerfile's
``WHEELS_DIR``), then the image is built from the local debootstrap base with ``PIP_NO_INDEX=1``.
Also runnable as ``python -m tests.support.e2e_images TAG [VAULTSIM_TAG]`` (``scripts/up`` does).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.images import ensure_base_image

ROOT = Path(__file__).resolve().parents[2]


class BuildFailed(RuntimeError):
    pass


def _run(argv: list[str], what: str, *, cwd: Path = ROOT, timeout: float = 600) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BuildFailed(f"{what} failed ({result.returncode}): {result.stderr[-3000:]}")
    return result.stdout


def build_wheels(directory: Path) -> list[str]:
    """certflow and every dependency as wheels in ``directory`` (built by the host's pip)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(
        [str(ROOT / ".venv" / "bin" / "pip"), "wheel", "-q", "-w", str(directory), str(ROOT)],
        "pip wheel",
    )
    return sorted(p.name for p in directory.glob("*.whl"))


def build_project_image(tag: str, *, base: str | None = None) -> str:
    """``docker build`` of the project's Dockerfile from the local base; returns ``tag``."""
    base = base or ensure_base_image()
    build_id = secrets.token_hex(4)
    wheels = ROOT / "dist" / f"wheels-{build_id}"
    try:
        build_wheels(wheels)
        _run(
            [
                "docker",
                "build",
                "-q",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                "PIP_NO_INDEX=1",
                "--build-arg",
                f"WHEELS_DIR={wheels.relative_to(ROOT)}",
                "--build-arg",
                f"BUILD_ID={build_id}",
                "-t",
                tag,
                ".",
            ],
            "docker build (project image)",
        )
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
        # The build stage's image (dangling once the final stage is tagged) goes too.
        stage = subprocess.run(
            ["docker", "images", "-q", "--filter", f"label=certflow.build-stage={build_id}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if stage:
            subprocess.run(["docker", "rmi", *stage], capture_output=True)
    return tag


def image_size(tag: str) -> int:
    out = _run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], "image inspect")
    return int(out.strip())


def remove_image(tag: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.e2e_images TAG", file=sys.stderr)
        return 2
    tag = build_project_image(argv[0])
    print(f"built {tag} ({image_size(tag) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
