"""A real ACME renewal on loopback: Debian's pebble as the CA, Debian's certbot as the client.

``SwagVolume`` reproduces what SWAG keeps in its config volume: ``etc/letsencrypt/live/<domain>/``
with relative symlinks into ``archive/<domain>/``. Recipe: ../shared/notes/environment.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.support.pki import CA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; .ci/run installs it (apt-get install certbot pebble)"
        )
    return path


class Pebble:
    """pebble on 127.0.0.1 with a throwaway TLS certificate; nonces never rejected."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        ca = CA("pebble-tls")
        leaf = ca.leaf(("localhost",), ip_addresses=("127.0.0.1",), days=30)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cert.pem").write_bytes(ca.fullchain(leaf))
        (workdir / "key.pem").write_bytes(leaf.key_pem)
        self.ca_bundle = workdir / "ca.pem"
        self.ca_bundle.write_bytes(ca.root_pem)
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{free_port()}",
                "certificate": str(workdir / "cert.pem"),
                "privateKey": str(workdir / "key.pem"),
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (workdir / "pebble.json").write_text(json.dumps(config))

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        env = dict(
            os.environ,
            PEBBLE_VA_ALWAYS_VALID="1",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_VA_NOSLEEP="1",
        )
        log = self._log = (self.workdir / "pebble.log").open("wb")
        self.proc = subprocess.Popen(
            [require_binary("pebble"), "-config", str(self.workdir / "pebble.json")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"pebble exited: {(self.workdir / 'pebble.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()  # never leave a half-started pebble (or its open log) behind
        raise RuntimeError("pebble did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class SwagVolume:
    """SWAG's /config as a directory; certbot writes into ``etc/letsencrypt`` beneath it."""

    root: Path
    domain: str = "iklim.co"

    @property
    def letsencrypt(self) -> Path:
        return self.root / "etc" / "letsencrypt"

    @property
    def live(self) -> Path:
        return self.letsencrypt / "live" / self.domain

    @property
    def archive(self) -> Path:
        return self.letsencrypt / "archive" / self.domain

    def generation(self) -> int:
        target = os.readlink(self.live / "fullchain.pem")
        return int(target.rsplit("fullchain", 1)[1].removesuffix(".pem"))


class Certbot:
    """Runs certbot exactly as SWAG does, against a pebble instance."""

    def __init__(self, pebble: Pebble, volume: SwagVolume, *, key_type: str = "ecdsa") -> None:
        self.pebble = pebble
        self.volume = volume
        self.key_type = key_type
        hook = volume.root / "auth-hook.sh"
        volume.root.mkdir(parents=True, exist_ok=True)
        hook.write_text("#!/bin/sh\nexit 0\n")
        hook.chmod(0o755)
        self._hook = hook

    def _common(self) -> list[str]:
        v = self.volume
        return [
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--server",
            self.pebble.directory,
            "--config-dir",
            str(v.letsencrypt),
            "--work-dir",
            str(v.root / "work"),
            "--logs-dir",
            str(v.root / "logs"),
        ]

    def _run(self, argv: list[str]) -> None:
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(self.pebble.ca_bundle))
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"certbot failed ({result.returncode}): {result.stderr[-2000:]}")

    def issue(self) -> None:
        d = self.volume.domain
        self._run(
            [
                require_binary("certbot"),
                "certonly",
                "--manual",
                "--preferred-challenges",
                "dns",
                "--manual-auth-hook",
                str(self._hook),
                "-d",
                f"*.{d}",
                "-d",
                d,
                "--cert-name",
                d,
                "--key-type",
                self.key_type,
                *self._common(),
            ]
        )

    def renew(self) -> None:
        self._run(
            [
                require_binary("certbot"),
                "renew",
                "--force-renewal",
                "--no-random-sleep-on-renew",
                "--cert-name",
                self.volume.domain,
                *self._common(),
            ]
        )
