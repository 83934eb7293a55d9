"""Build the project image (and the Vault double's image) the way an operator would, offline.

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
import tempfile
from pathlib import Path

from tests.support.images import ensure_base_image

ROOT = Path(__file__).resolve().parents[2]
VAULTSIM_DOCKERFILE = ROOT / "tests" / "e2e" / "images" / "vaultsim.Dockerfile"


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


def build_vaultsim_image(tag: str, *, project_image: str) -> str:
    """The Vault double on top of the project image (it needs the same Python dependencies).

    The context is a temporary directory with just what the double needs, so the project's
    .dockerignore (wheels only) does not apply.
    """
    if not (ROOT / "tests" / "vaultsim").is_dir():
        raise BuildFailed("tests/vaultsim does not exist yet (the Vault double is not built)")
    with tempfile.TemporaryDirectory(prefix="certflow-vaultsim-ctx-") as tmp:
        context = Path(tmp)
        (context / "tests" / "e2e").mkdir(parents=True)
        shutil.copy(ROOT / "tests" / "__init__.py", context / "tests" / "__init__.py")
        shutil.copytree(
            ROOT / "tests" / "vaultsim",
            context / "tests" / "vaultsim",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copytree(VAULTSIM_DOCKERFILE.parent, context / "tests" / "e2e" / "images")
        _run(
            [
                "docker",
                "build",
                "-q",
                "-f",
                str(context / "tests" / "e2e" / "images" / VAULTSIM_DOCKERFILE.name),
                "--build-arg",
                f"BASE_IMAGE={project_image}",
                "-t",
                tag,
                str(context),
            ],
            "docker build (vault double image)",
        )
    return tag


def image_size(tag: str) -> int:
    out = _run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], "image inspect")
    return int(out.strip())


def remove_image(tag: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m tests.support.e2e_images TAG [VAULTSIM_TAG]", file=sys.stderr)
        return 2
    tag = build_project_image(argv[0])
    print(f"built {tag} ({image_size(tag) / 1e6:.0f} MB)")
    if len(argv) == 2:
        sim = build_vaultsim_image(argv[1], project_image=tag)
        print(f"built {sim} ({image_size(sim) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
