"""The image a docker-in-docker Swarm node runs (tests only; nothing can be pulled here).

``ensure_node_image()`` returns ``certflow-test-node:<version>``: a debootstrap minbase bookworm
with Debian's Docker engine, iproute2/iptables (the partition faults), sshfs (the Storage Box
mount) and openssh-server (the Storage Box host runs the same image). Built once (~2-3 min), then
reused; a file lock keeps parallel sessions from building it twice.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import tempfile
from pathlib import Path

from tests.support.images import debootstrap_rootfs, image_exists, import_rootfs

# Bump the tag when the package list changes, so stale images are not reused.
NODE_IMAGE = "certflow-test-node:2"
_LOCK = Path("/tmp/certflow-test-node.lock")
_PACKAGES = (
    "docker.io,iproute2,iptables,ca-certificates,sshfs,openssh-server,openssh-client,procps,"
    "psmisc,fuse3"
)


def ensure_node_image(name: str = NODE_IMAGE) -> str:
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(name):
            return name
        with tempfile.TemporaryDirectory(prefix="certflow-node-rootfs-") as tmp:
            rootfs = debootstrap_rootfs(Path(tmp) / "rootfs", _PACKAGES, what="node image")
            # Images the host built go in with `docker load`; the node's own state starts empty.
            shutil.rmtree(rootfs / "var/lib/docker", ignore_errors=True)
            import_rootfs(rootfs, name, what="node image")
        return name


if __name__ == "__main__":
    print(ensure_node_image(*sys.argv[1:2]))
