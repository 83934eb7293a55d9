"""A real ACME renewal on loopback: Debian's pebble as the CA, Debian's certbot as the client.

``SwagVolume`` reproduces what SWAG keeps in its config volume: ``etc/letsencrypt/live/<domain>/``
with relative symlinks into ``archive/<domain>/``. Recipe: ../shared/notes/environment.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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
        self.pid: int | None = None  # a detached pebble (no Popen: it outlives this process)
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
        self.config.write_text(json.dumps(config))

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self, *, detached: bool = False) -> Pebble:
        """Start pebble. ``detached``: in its own session with a pid file (``pebble.pid``), so it
        outlives this process; ``Pebble.running(workdir)`` finds it again, ``stop()`` ends it."""
        env = dict(
            os.environ,
            PEBBLE_VA_ALWAYS_VALID="1",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_VA_NOSLEEP="1",
        )
        argv = [require_binary("pebble"), "-config", str(self.config)]
        if detached:
            self.pid = _spawn_detached(argv, env, self.workdir / "pebble.log")
            self.pid_file.write_text(f"{self.pid}\n")
        else:
            log = self._log = (self.workdir / "pebble.log").open("wb")
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self._alive():
                self.stop()
                raise RuntimeError(f"pebble exited: {(self.workdir / 'pebble.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()  # never leave a half-started pebble (or its open log) behind
        raise RuntimeError("pebble did not start listening")

    @property
    def config(self) -> Path:
        return self.workdir / "pebble.json"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "pebble.pid"

    @classmethod
    def running(cls, workdir: Path) -> Pebble | None:
        """The detached pebble started in ``workdir`` when it still runs (same CA, same root),
        else None. Its pid is trusted only when /proc says that process is pebble with this
        directory's config."""
        found = object.__new__(cls)
        found.workdir = workdir
        found.proc = None
        found._log = None
        found.ca_bundle = workdir / "ca.pem"
        found.pid = running_pid(found.pid_file, found.config)
        if found.pid is None:
            return None
        try:
            listen = json.loads(found.config.read_text())["pebble"]["listenAddress"]
            found.port = int(str(listen).rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):
            return None
        return found

    def _alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is not None:
            # Our own child just spawned: ask the kernel (its /proc cmdline reads empty for a
            # moment around the exec, so it cannot tell yet).
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return is_pebble_process(self.pid, self.config)
            return done == 0
        return False

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
        if self.pid is not None:
            if not _stop_own_child(self.pid):
                stop_detached(self.workdir)
            self.pid_file.unlink(missing_ok=True)
            self.pid = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Pebble:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def is_pebble_cmdline(cmdline: bytes, config: Path) -> bool:
    """``/proc/<pid>/cmdline`` (NUL-separated) is pebble run with this config file."""
    argv = cmdline.rstrip(b"\0").split(b"\0")
    return Path(os.fsdecode(argv[0])).name == "pebble" and os.fsencode(str(config)) in argv[1:]


def is_pebble_process(pid: int, config: Path) -> bool:
    try:
        return is_pebble_cmdline(Path(f"/proc/{pid}/cmdline").read_bytes(), config)
    except OSError:
        return False  # gone (a zombie's cmdline is empty, so it is not pebble either)


def running_pid(pid_file: Path, config: Path) -> int | None:
    """The pid in ``pid_file`` when that process is pebble with ``config``; a stale file (the
    machine rebooted and the number now belongs to something else) gives None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    _reap(pid)
    return pid if is_pebble_process(pid, config) else None


def stop_detached(workdir: Path, *, timeout: float = 10) -> bool:
    """Stop the detached pebble of ``workdir`` (SIGTERM, then SIGKILL); True if one ran."""
    pid_file, config = workdir / "pebble.pid", workdir / "pebble.json"
    pid = running_pid(pid_file, config)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not is_pebble_process(pid, config):
                break
            time.sleep(0.05)
        if is_pebble_process(pid, config):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def _stop_own_child(pid: int, timeout: float = 10) -> bool:
    """Stop ``pid`` when it is this process's child (spawned here: no doubt it is pebble);
    False when it is not ours (started by an earlier command)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    if done == 0:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _spawn_detached(argv: list[str], env: dict[str, str], log: Path) -> int:
    """``argv`` in a new session, stdin from /dev/null, output to ``log``. posix_spawn and not
    Popen: no Popen object is left to warn that its child still runs when this process ends."""
    return os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


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

    def lineage_server(self) -> str | None:
        """The ACME directory the lineage was last issued from (certbot's renewal config)."""
        conf = self.volume.letsencrypt / "renewal" / f"{self.volume.domain}.conf"
        try:
            lines = conf.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            name, sep, value = line.partition("=")
            if sep and name.strip() == "server":
                return value.strip()
        return None

    def issue(self, *, force: bool = False) -> None:
        """``certonly`` (as SWAG does at its first start). ``force``: a new certificate into the
        existing lineage (same ``live/`` names, the next generation), from whatever CA this
        certbot points at; certbot registers a new account there when it has none."""
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
                *(["--force-renewal"] if force else []),
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
