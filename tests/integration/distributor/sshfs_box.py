"""A Storage Box stand-in that behaves like a network share: sshfs over loopback.

Writes made on the backing directory (another client) produce no inotify event on the mount,
exactly like CIFS/sshfs in production; only polling sees them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SshfsBox:
    backing: Path  # where "the reloader on another host" writes
    mount: Path  # what this node's distributor reads


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("sshd exited at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("sshd did not listen")


@contextlib.contextmanager
def sshfs_box(tmp: Path) -> Iterator[SshfsBox]:
    sshd, sshfs = shutil.which("sshd") or "/usr/sbin/sshd", shutil.which("sshfs")
    if sshfs is None or not Path("/dev/fuse").exists() or not Path(sshd).exists():
        if os.environ.get("CERTFLOW_REQUIRE_DOCKER") == "1":  # CI: real parts required
            pytest.fail("sshfs, sshd or /dev/fuse missing (scripts/bootstrap installs them)")
        pytest.skip("sshfs, sshd or /dev/fuse missing")
    keys = tmp / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "user.pub", keys / "authorized_keys")
    port = _free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nSubsystem sftp internal-sftp\n"
    )
    backing, mount = tmp / "backing", tmp / "mnt"
    backing.mkdir()
    mount.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    mounted = False
    try:
        _wait_port(port, server)
        subprocess.run(
            [
                sshfs,
                f"root@127.0.0.1:{backing}",
                str(mount),
                "-p",
                str(port),
                "-o",
                f"IdentityFile={keys / 'user'},StrictHostKeyChecking=no,"
                "UserKnownHostsFile=/dev/null,LogLevel=ERROR,dir_cache=no,"
                "attr_timeout=0,entry_timeout=0",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        mounted = True
        yield SshfsBox(backing=backing, mount=mount)
    finally:
        if mounted:
            subprocess.run(["fusermount", "-u", "-z", str(mount)], capture_output=True)
        server.terminate()
        server.wait(10)
