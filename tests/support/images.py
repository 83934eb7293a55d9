"""Local images for tests: there is no registry here, so images are built from Debian packages.

``ensure_base_image()`` returns ``certflow-test-base:latest``: a debootstrap minbase bookworm
rootfs with python3, python3-venv, ca-certificates and openssl, imported with ``docker import``
(~40 s once; reused afterwards). A file lock keeps parallel test sessions from building it twice.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

BASE_IMAGE = "certflow-test-base:latest"
_LOCK = Path("/tmp/certflow-test-base.lock")
_PACKAGES = "python3,python3-venv,ca-certificates,openssl"


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def debootstrap_rootfs(rootfs: Path, packages: str, *, what: str) -> Path:
    """A minbase bookworm in ``rootfs`` with ``packages`` (comma-separated), without apt caches
    and docs: a smaller image, and a faster ``docker save | load`` into the lab's nodes."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    result = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap ({what}) failed: {result.stderr[-2000:]}")
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
        shutil.rmtree(rootfs / sub, ignore_errors=True)
    return rootfs


def import_rootfs(rootfs: Path, name: str, *, what: str) -> None:
    """``tar -c rootfs | docker import - name``."""
    # The context manager closes tar's stdout pipe: left to the garbage collector it raises a
    # ResourceWarning, an error in whatever test happens to be running then.
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        imported = subprocess.run(
            ["docker", "import", "-", name], stdin=tar.stdout, capture_output=True, text=True
        )
    if imported.returncode != 0 or tar.returncode != 0:
        raise RuntimeError(f"docker import ({what}) failed: {imported.stderr[-2000:]}")


def ensure_base_image(name: str = BASE_IMAGE) -> str:
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(name):
            return name
        with tempfile.TemporaryDirectory(prefix="certflow-rootfs-") as tmp:
            rootfs = debootstrap_rootfs(Path(tmp) / "rootfs", _PACKAGES, what="base image")
            import_rootfs(rootfs, name, what="base image")
        return name
