"""The certificate flow deployed on a :class:`SwarmLab`, and what the fault matrix observes of it.

``LabFlow`` deploys the project's two stack files unchanged, with real OpenBao as Vault (a 3-member
raft cluster, one member per node: ``VAULT_MAX_PER_NODE=1``) and a small override (one unsealer per
node), bootstraps it with ``certflow vault-bootstrap`` and drives real certbot renewals (pebble on
the host, SWAG's volume bound into the SWAG node).

Observers, all outside the services under test:
- ``PairWatcher``: samples every node's installed pair and the Storage Box ~10x a second and
  records any moment at which a key did not belong to its certificate;
- ``kill_on_temp`` (``ArmedKill`` arms it before a renewal): kill -9 of a process inside a node,
  from the host, within milliseconds of a file event (a temp file on the Storage Box or in a
  node's ssl directory);
- a KV probe (tests/support/kv_probe.py) in a container on the Vault network, writing through the
  members twice a second: what a Vault client saw during a row.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from secrets import token_hex

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.atomic import TEMP_MARKER
from shared.manifest import MANIFEST_NAME
from shared.rollout import ROLLOUT_LABEL, rollout_in_progress
from shared.storagebox import State, read_snapshot
from tests.support.acme import Certbot, Pebble, SwagVolume
from tests.support.e2e_flow import append_pebble_root, leaf_digest
from tests.support.swarm_lab import LabError, Node, SwarmLab, wait_until

CERT_NAME = "STAR.iklim.co.full.crt"
KEY_NAME = "STAR.iklim.co_key.pem"

ROOT = Path(__file__).resolve().parents[2]

_OVERRIDE = """\
# Fault-matrix lab only: one unsealer per node (the stack's default is one in all).
version: "3.8"
services:
  vault-unsealer:
    deploy:
      replicas: {replicas}
      placement:
        max_replicas_per_node: 1
"""


@dataclass
class Renewal:
    generation: int
    fullchain: bytes
    key: bytes
    not_after: datetime
    at: float  # time.time() when certbot finished


@dataclass
class LabFlow:
    lab: SwarmLab
    stack: str
    image: str
    vault_image: str
    vault_replicas: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)  # on top of env(), for both stacks
    _pebble: Pebble | None = field(default=None, init=False, repr=False)
    _certbot: Certbot | None = field(default=None, init=False, repr=False)

    @property
    def swag(self) -> SwagVolume:
        return SwagVolume(self.lab.swag_dir)

    @property
    def storagebox(self) -> Path:
        return self.lab.box_dir / "ssl"

    @property
    def network(self) -> str:
        return f"{self.stack}_vault"

    @property
    def unseal_secret(self) -> str:
        return f"{self.stack}_vault_unseal_key"

    @property
    def manifest_secret(self) -> str:
        return f"{self.stack}_certflow_manifest_key"

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def env(self) -> dict[str, str]:
        return {
            "CERTFLOW_IMAGE": self.image,
            "VAULT_IMAGE": self.vault_image,
            "SWAG_CONFIG_DIR": "/swag",
            "STORAGEBOX_SSL_DIR": "/mnt/storagebox/ssl",
            "VAULT_SSL_DIR": "/opt/iklimco/ssl",
            "SWAG_NODE_LABEL": "swag",
            "VAULT_SERVICE": self.service("vault"),
            "VAULT_UNSEAL_SECRET": self.unseal_secret,
            "CERTFLOW_MANIFEST_SECRET": self.manifest_secret,
            "VAULT_REPLICAS": str(self.vault_replicas),
            # One raft member per node: a node lost is one vote lost.
            "VAULT_MAX_PER_NODE": "1",
            # ... with the node's one raft volume, so a member Swarm moves to another slot keeps
            # its data (stacks/README.md).
            "VAULT_RAFT_VOLUME_PER": "node",
            "VAULT_RAFT_VOLUME": f"{self.stack}_vault-raft",
            "VAULT_CONFIG_NAME": f"{self.stack}_vault_config",
            "VAULT_CA_DIR": "/certflow-ca",
            "VAULT_CA_FILE_NAME": "roots.pem",
            "RELOADER_CHECK_INTERVAL": "5",
            "DISTRIBUTOR_POLL_INTERVAL": "2",
            # The nodes share the host's clock.
            "DISTRIBUTOR_CLOCK_SKEW": "1",
            # The bootstrap sets autopilot's stabilization time to 4 s.
            "DISTRIBUTOR_VOTER_WAIT": "6",
            **self.extra_env,
        }

    # -- certificates ---------------------------------------------------------------------------

    def _acme(self) -> Certbot:
        if self._certbot is None:
            # One pebble per bed: a retry after a failed setup reuses it instead of leaking it.
            if self._pebble is None:
                self._pebble = Pebble(self.lab.workdir / "pebble").start()
            append_pebble_root(self._pebble, self.lab.ca_dir / "roots.pem")
            self._certbot = Certbot(self._pebble, self.swag)
        return self._certbot

    def renew(self) -> Renewal:
        """A real certbot issuance (first time) or forced renewal into SWAG's volume."""
        certbot = self._acme()
        if (self.swag.live / "fullchain.pem").exists():
            certbot.renew()
        else:
            certbot.issue()
        fullchain = (self.swag.live / "fullchain.pem").read_bytes()
        key = (self.swag.live / "privkey.pem").read_bytes()
        _, not_after = leaf_digest(fullchain)
        return Renewal(self.swag.generation(), fullchain, key, not_after, time.time())

    def stop_acme(self) -> None:
        if self._pebble is not None:
            self._pebble.stop()
        self._pebble = self._certbot = None

    # -- deployment -----------------------------------------------------------------------------

    def deploy(self, which: str) -> None:
        files = [f"/stacks/docker-stack-{which}.yml"]
        if which == "vault":
            override = self.lab.workdir / "lab" / "override-vault.yml"
            override.write_text(_OVERRIDE.format(replicas=len(self.lab.nodes)))
            files.append("/lab/override-vault.yml")
        self.lab.stack_deploy(self.stack, files, self.env())

    def run_tool(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        node: Node | None = None,
        timeout: float = 300,
    ) -> tuple[int, str]:
        """``certflow <argv>`` as a one-off container on a manager, on the Vault network."""
        extra: list[str] = []
        for key, value in (env or {}).items():
            extra += ["-e", f"{key}={value}"]
        node = node or self.lab.manager()
        import subprocess

        result = subprocess.run(
            [
                "docker", "exec", node.name, "docker", "run", "--rm", "--user", "0:0",
                "--network", self.network,
                "-v", "/var/run/docker.sock:/var/run/docker.sock",
                "-v", "/opt/iklimco/ssl:/opt/iklimco/ssl:ro",
                "-v", "/mnt/storagebox/ssl:/mnt/storagebox/ssl:ro",
                "-v", "/certflow-ca:/certflow-ca:ro", "-v", "/tmp/certflow-bootstrap:/bootstrap",
                *extra, self.image, *argv,
            ],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        return result.returncode, result.stdout + result.stderr

    def vault_addresses(self) -> list[str]:
        out = self.lab.manager().docker(
            "run", "--rm", "--network", self.network, "--entrypoint", "sh", self.image, "-c",
            "getent ahostsv4 tasks.vault | cut -d' ' -f1 | sort -u",
        )  # fmt: skip
        return out.split()

    def service_running(self, name: str, want: int) -> bool:
        out = self.lab.manager().docker(
            "service", "ps", self.service(name), "--filter", "desired-state=running",
            "--format", "{{.CurrentState}}", timeout=30,
        )  # fmt: skip
        states = [line for line in out.splitlines() if line.strip()]
        return sum(s.startswith("Running") for s in states) >= want

    def bring_up(self) -> None:
        manager = self.lab.nodes[0]
        manager.docker("node", "update", "--label-add", "swag=true", manager.name)
        self.renew()
        # The manifest's HMAC key (stacks/docker-stack-certs.yml mounts it in both services).
        manager.docker(
            "secret", "create", self.manifest_secret, "-", input=token_hex(32).encode(),
        )  # fmt: skip
        self.deploy("certs")
        wait_until(
            "the first pair on the Storage Box", (self.storagebox / MANIFEST_NAME).exists,
            timeout=180,
        )  # fmt: skip
        for node in self.lab.nodes:
            wait_until(
                f"the first pair on {node.name}",
                (self.lab.ssl_dir(node) / CERT_NAME).exists,
                timeout=180,
            )
        manager.docker(
            "secret", "create", self.unseal_secret, "-",
            input=b"# placeholder: certflow vault-bootstrap replaces this secret\n",
        )  # fmt: skip
        self.deploy("vault")
        wait_until(
            "every Vault replica running",
            lambda: self.service_running("vault", self.vault_replicas),
            timeout=240,
            every=2,
        )
        wait_until(
            "every Vault replica in tasks.vault",
            lambda: len(self.vault_addresses()) == self.vault_replicas,
            timeout=120,
            every=2,
        )
        tool_node = self.lab.manager()
        code, out = self.run_tool(
            "vault-bootstrap", "--vault-service", self.service("vault"),
            "--vault-network", self.network,
            "--ca-file", "/certflow-ca/roots.pem", "--secret-name", self.unseal_secret,
            "--services", self.service("vault-unsealer"),
            "--root-token-file", "/bootstrap/root-token",
            # A rejoined member is a voter 4 s after it is healthy (the distributors wait 6 s).
            "--autopilot-stabilization", "4s", "--timeout", "300", node=tool_node, timeout=700,
        )  # fmt: skip
        if code != 0:
            raise LabError(f"certflow vault-bootstrap failed: {out[-3000:]}\n{self.diagnosis()}")
        # The KV probe's token, where every node sees it (/lab); bootstrap wrote it on this node.
        token = self.lab.workdir / "lab" / "root-token"
        token.write_text(tool_node.sh("cat /tmp/certflow-bootstrap/root-token"))
        token.chmod(0o600)
        try:
            self.wait_verified(None, timeout=300)
        except LabError as exc:
            raise LabError(f"{exc}\n{self.diagnosis()}") from None

    # -- a Vault client during the rows ---------------------------------------------------------

    def start_kv_probe(self, node: Node) -> str:
        """tests/support/kv_probe.py in a container on the Vault network, on ``node`` (one the
        row's fault leaves alone: the probe must see the whole row)."""
        shutil.copy(ROOT / "tests" / "support" / "kv_probe.py", self.lab.workdir / "lab")
        name = f"{self.stack}-kvprobe-{token_hex(3)}"
        node.docker(
            "run", "-d", "--name", name, "--network", self.network, "--user", "0:0",
            "-v", "/lab:/lab:ro", "-v", "/certflow-ca:/certflow-ca:ro",
            "-v", "/tmp/certflow-kv:/out", "--restart", "unless-stopped",
            "--entrypoint", "/opt/certflow/bin/python", self.image, "/lab/kv_probe.py",
            "--dns", f"tasks.{self.service('vault')}", "--ca", "/certflow-ca/roots.pem",
            "--token-file", "/lab/root-token", "--out", f"/out/{name}.json",
            # A restart of the node's dockerd restarts the probe: it resumes from its journal.
            "--journal", f"/out/{name}.jsonl",
        )  # fmt: skip
        wait_until(
            "the KV probe to start writing",
            lambda: "kv-probe: writing" in node.docker("logs", name, check=False),
            timeout=120,
        )
        return f"{node.name}/{name}"

    def stop_kv_probe(self, handle: str) -> dict[str, object]:
        """Stop the probe; its report (attempts, failed, longest_gap_s, errors, lost, unread)."""
        node_name, name = handle.split("/", 1)
        node = self.lab.node(node_name)
        # The probe reads back every acknowledged write before it reports (up to 60 s).
        node.docker("stop", "-t", "90", name, check=False, timeout=150)
        out = node.docker("logs", name, check=False, timeout=30)
        node.docker("rm", "-f", name, check=False, timeout=60)
        start = out.rfind('{"attempts"')
        try:
            report: dict[str, object] = json.loads(out[start : out.index("\n", start)])
        except ValueError:
            return {"error": out[-500:]}
        return report

    # -- observation ----------------------------------------------------------------------------

    def verify(self, node: Node | None = None) -> tuple[int, dict[str, object] | None, str]:
        """``certflow verify --json`` on ``node`` (a manager; its own Storage Box mount and
        installed pair are the ones checked)."""
        code, out = self.run_tool(
            "verify", "--json",
            env={"VERIFY_STACK": self.stack, "VERIFY_VAULT_CA_FILE": "/certflow-ca/roots.pem"},
            node=node,
        )  # fmt: skip
        try:
            doc = json.loads(out[out.index("{") :])
        except ValueError:
            doc = None
        return code, doc, out

    def served(self, doc: dict[str, object] | None) -> list[str]:
        """notAfter of every replica's certificate, per ``certflow verify --json``."""
        if not doc:
            return []
        checks = doc.get("checks")
        served: list[str] = []
        for check in checks if isinstance(checks, list) else []:
            name = str(check.get("check", ""))
            if name.startswith("vault ") and name.endswith(" certificate"):
                served.append(str(check.get("details", {}).get("not_after")))
        return served

    def converged(self, not_after: datetime | None) -> bool:
        code, doc, _ = self.verify()
        served = self.served(doc)
        if code != 0 or len(served) != self.vault_replicas:
            return False
        return not_after is None or set(served) == {not_after.isoformat()}

    def wait_verified(self, not_after: datetime | None, *, timeout: float = 300) -> float:
        return wait_until(
            "every Vault replica unsealed and serving the newest certificate",
            lambda: self.converged(not_after),
            timeout=timeout,
            every=2,
        )

    def last_verify(self) -> str:
        return self.verify()[2]

    def diagnosis(self) -> str:
        """What an operator would look at first: tasks, verify, the unsealers' last words."""
        manager = self.lab.manager()
        tasks = manager.docker(
            "service", "ps", self.service("vault"), self.service("vault-unsealer"),
            "--format", "{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}",
            check=False, timeout=30,
        )  # fmt: skip
        parts = [tasks, self.last_verify()[-3000:]]
        for node in self.lab.nodes:
            for cid in self.lab.containers(node, self.service("vault-unsealer")):
                logs = node.docker("logs", "--tail", "15", cid, check=False, timeout=30)
                parts.append(f"unsealer on {node.name}:\n{logs[-3000:]}")
        return "\n".join(parts)

    def active_node(self) -> Node | None:
        """The node whose Vault member is raft's active one (``bao status``: ``is_self``)."""
        for node in self.lab.nodes:
            if not node.running():
                continue
            for cid in self.lab.containers(node, self.service("vault")):
                out = node.docker(
                    "exec", cid, "bao", "status", "-format=json", "-tls-skip-verify",
                    "-address=https://127.0.0.1:8200", check=False, timeout=30,
                )  # fmt: skip
                try:
                    if json.loads(out).get("is_self") is True:
                        return node
                except ValueError:
                    continue
        return None

    def update_state(self) -> str:
        """The Vault service's UpdateStatus.State ("" when it has none)."""
        out = self.lab.manager().docker(
            "service", "inspect", self.service("vault"),
            "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", timeout=30,
        )  # fmt: skip
        return out.strip()

    def vault_labels(self) -> dict[str, str]:
        """The Vault service's labels (certflow's rollout record is there)."""
        return self.labels_of(self.service("vault"))

    def labels_of(self, full_name: str) -> dict[str, str]:
        """A service's labels (a consumer's reload record is there)."""
        out = self.lab.manager().docker(
            "service", "inspect", full_name, "--format", "{{json .Spec.Labels}}", timeout=30
        )
        labels = json.loads(out.strip() or "{}") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def rollout(self) -> str:
        """certflow's record of the members it asked to stop ("" before any)."""
        return self.vault_labels().get(ROLLOUT_LABEL, "")

    def rollout_underway(self) -> bool:
        return rollout_in_progress(self.vault_labels()) is not None

    def member_stops(self, since: float) -> dict[str, set[str]]:
        """Per slot, the Vault tasks a distributor stopped since ``since`` (its
        ``vault.member_stopped`` log events, on every node, exited distributors included)."""
        stopped: dict[str, set[str]] = {}
        for line in self.lab.logs(self.service("cert-distributor")).splitlines():
            try:
                event = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("event") != "vault.member_stopped":
                continue
            try:
                at = datetime.fromisoformat(str(event.get("time"))).timestamp()
            except ValueError:
                continue
            if at >= since:
                stopped.setdefault(str(event.get("slot")), set()).add(str(event.get("task")))
        return stopped

    def vault_tasks(self) -> list[dict[str, str]]:
        """Every Vault task Swarm still remembers: ID, slot, force-update counter, node, created."""
        return self.tasks_of(self.service("vault"))

    def tasks_of(self, full_name: str) -> list[dict[str, str]]:
        """Every task of a service Swarm still remembers: ID, slot, force-update counter, node,
        created."""
        manager = self.lab.manager()
        ids = manager.docker("service", "ps", "-q", "--no-trunc", full_name, timeout=30).split()
        if not ids:
            return []
        created = '{{.CreatedAt.Format "2006-01-02T15:04:05.000Z07:00"}}'
        out = manager.docker(
            "inspect", "--format",
            "{{.ID}} {{.Slot}} {{.Spec.ForceUpdate}} {{.NodeID}} " + created, *ids, timeout=30,
        )  # fmt: skip
        tasks = []
        for line in out.splitlines():
            task_id, slot, force, node, created = line.split(" ", 4)
            tasks.append(
                {"id": task_id, "slot": slot, "force": force, "node": node, "created": created}
            )
        return tasks

    def force_updates(self) -> int:
        out = self.lab.manager().docker(
            "service", "inspect", self.service("vault"),
            "--format", "{{.Spec.TaskTemplate.ForceUpdate}}", timeout=30,
        )  # fmt: skip
        return int(out.strip() or 0)

    def unseal_secret_document(self) -> bytes:
        """The key document the unsealer reads (for the no-secret-in-logs check and rotations)."""
        for node in self.lab.nodes:
            if not node.running():
                continue
            for cid in self.lab.containers(node, self.service("vault-unsealer")):
                out = node.docker(
                    "exec", "-u", "0", cid, "cat", "/run/secrets/vault_unseal_key", check=False
                )
                if out.startswith("{"):
                    return out.encode()
        raise LabError("no unsealer container to read the key document from")


# -- observers ----------------------------------------------------------------------------------


def _spki_of_cert(pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificates(pem)[0]
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _spki_of_key(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pair_mismatch(cert: bytes, key: bytes) -> str | None:
    """Why ``cert`` and ``key`` are not one pair, or None when they are."""
    try:
        if _spki_of_cert(cert) != _spki_of_key(key):
            return "key does not belong to the certificate"
    except ValueError as exc:
        return f"unparsable: {type(exc).__name__}"
    return None


class PairWatcher(threading.Thread):
    """Every ~0.1 s: each node's installed generation and the Storage Box's committed pair."""

    def __init__(self, nodes: dict[str, Path], box: Path, *, every: float = 0.1) -> None:
        super().__init__(daemon=True, name="pair-watcher")
        self.nodes, self.box, self.every = nodes, box, every
        self.violations: list[str] = []
        self.samples = 0
        # Not ``_stop``: Thread.join() calls its own private ``_stop()`` method.
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for node, directory in self.nodes.items():
                self._node(node, directory)
            self._box()
            self.samples += 1
            self._halt.wait(self.every)

    def _node(self, node: str, directory: Path) -> None:
        try:
            target = os.readlink(directory / "..data")
        except OSError:
            return  # nothing installed yet
        generation = directory / target
        try:
            cert = (generation / CERT_NAME).read_bytes()
            key = (generation / KEY_NAME).read_bytes()
        except FileNotFoundError:
            if (directory / "..data").exists():
                self.violations.append(f"{node}: generation {target} is incomplete")
            return  # the generation was pruned between readlink and open: not a state
        problem = pair_mismatch(cert, key)
        if problem:
            self.violations.append(f"{node}: {target}: {problem}")

    def _box(self) -> None:
        snapshot = read_snapshot(self.box, cert_name=CERT_NAME, key_name=KEY_NAME)
        if snapshot.state is State.COMMITTED and snapshot.cert and snapshot.key:
            problem = pair_mismatch(snapshot.cert, snapshot.key)
            if problem:
                self.violations.append(f"storage box generation: {problem}")

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def _pids_in(node: str, match: Callable[[list[bytes]], bool]) -> list[int]:
    """Host PIDs of processes inside ``node`` (by its dockerd's cgroup parent) whose argv
    ``match`` accepts."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"dind-{node}" in cgroup and match(argv):
            found.append(int(entry.name))
    return found


def _host_pids(node: str, word: str) -> list[int]:
    """Host PIDs of the ``certflow ... <word>`` processes inside ``node``."""
    return _pids_in(node, lambda argv: b"certflow" in b" ".join(argv[:2]) and word.encode() in argv)


def vault_server_pids(node: Node) -> list[int]:
    """Host PIDs of the OpenBao servers (``bao server``) inside ``node``."""
    return _pids_in(node.name, lambda argv: argv[0].endswith(b"bao") and b"server" in argv)


def kill_vault_server(node: Node) -> int:
    """kill -9 the OpenBao server in ``node``; returns how many were killed."""
    return signal_all(vault_server_pids(node), signal.SIGKILL)


def service_pids(node: Node, subcommand: str) -> list[int]:
    """Host PIDs of the ``certflow <subcommand>`` processes inside ``node``."""
    return _host_pids(node.name, subcommand)


def kill_service_process(node: Node, subcommand: str) -> int:
    """kill -9 the ``certflow <subcommand>`` process in ``node``; returns how many were killed."""
    pids = service_pids(node, subcommand)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def signal_all(pids: list[int], sig: signal.Signals) -> int:
    """Send ``sig`` to each of ``pids`` (gone ones skipped); how many it reached."""
    hit = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            hit += 1
    return hit


class ArmedKill:
    """:func:`kill_on_temp` on a thread, armed before the renewal that opens the window.

    Started after the renewal, the watch raced it: the reloader can publish within a second of
    certbot's exit, sooner than the first PID lookup (a ``docker inspect`` and a /proc scan on
    the loaded lab). The lab's run 4 missed every window of row 5b that way, and run 3 one of
    5a. Armed first, the lookup is done and the poll running before certbot starts.
    """

    def __init__(self, directory: Path, pids: Callable[[], list[int]], *, timeout: float = 180):
        self._outcome: tuple[bool, float] | BaseException | None = None
        self._cancel = threading.Event()
        polling = threading.Event()

        def run() -> None:
            try:
                self._outcome = kill_on_temp(
                    directory, pids, timeout=timeout, polling=polling, cancel=self._cancel
                )
            except BaseException as exc:  # handed to result(), on the test's thread
                self._outcome = exc

        self._thread = threading.Thread(target=run, name="armed-kill", daemon=True)
        self._thread.start()
        wait_until(
            "the kill armed",
            lambda: polling.is_set() or not self._thread.is_alive(),
            timeout=60,
            every=0.05,
        )

    def result(self) -> tuple[bool, float]:
        """(landed inside the window, seconds from arming to the kill), once it fired or timed
        out."""
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def cancel(self) -> None:
        """Disarm (a row that failed before its fault ran): nothing is killed after this."""
        self._cancel.set()
        self._thread.join()


def _temp_present(directory: Path) -> bool:
    try:
        return any(TEMP_MARKER in name for name in os.listdir(directory))
    except OSError:
        return False


def kill_on_temp(
    directory: Path,
    pids: Callable[[], list[int]],
    *,
    timeout: float = 60,
    polling: threading.Event | None = None,
    cancel: threading.Event | None = None,
) -> tuple[bool, float]:
    """The moment a temp entry appears in ``directory``, kill -9 the processes ``pids()`` names.

    The PIDs are looked up before the window opens, and again every half second on a thread of
    their own (a restarted process has a new PID): a lookup (a /proc scan, for the Storage Box a
    ``docker inspect`` too) can take longer than an upload on the loaded lab, and the poll must
    not stop for it. Polling runs every ~1 ms, and the processes are first frozen (SIGSTOP), so
    whether the kill landed inside the window is read from a state that cannot move any more.
    ``polling`` is set once it polls; ``cancel`` ends the watch unfired. Returns (landed inside
    the window, seconds waited).
    """
    start = time.monotonic()
    targets = pids()
    stop = threading.Event()
    if polling is not None:
        polling.set()

    def refresh() -> None:
        nonlocal targets
        while not stop.wait(0.5):
            targets = pids()

    refresher = threading.Thread(target=refresh, name="kill-on-temp-pids", daemon=True)
    refresher.start()
    try:
        while time.monotonic() - start < timeout:
            if cancel is not None and cancel.is_set():
                break
            if _temp_present(directory):
                victims = list(targets)
                frozen = signal_all(victims, signal.SIGSTOP)
                inside = frozen > 0 and _temp_present(directory)
                signal_all(victims, signal.SIGKILL)
                return inside, time.monotonic() - start
            time.sleep(0.001)
        return False, time.monotonic() - start
    finally:
        stop.set()
        refresher.join(timeout=30)
