"""A Swarm of several docker-in-docker nodes and a real network Storage Box, on one machine.

Built and torn down by the fault-matrix tier itself (``SwarmLab.up()`` / ``down()``):

- ``<prefix>-box``: the Storage Box host, an sshd serving ``<workdir>/box`` over SFTP;
- ``<prefix>-n1..nN``: Swarm managers (so leadership can move), each running Debian's dockerd
  under a small supervisor loop (so the daemon itself can be restarted) and mounting the box with
  sshfs at ``/mnt/storagebox`` (FUSE: no inotify events for other clients' writes);
- each node's ``/opt/iklimco/ssl`` is a host directory (``<workdir>/nodes/<node>/ssl``) so the
  host can watch every node's installed pair; ``/swag`` on the first node is the SWAG volume that
  certbot renews on the host; each node's Docker keeps its Vault member's raft volume.

Recipe from ../shared/notes/environment.md (no --privileged here; caps minus SYS_RESOURCE).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.node_image import ensure_node_image

# Run with `python3 -c` inside a certflow container: prints its /health (failing ones too).
HEALTH_SCRIPT = (
    "import json,urllib.request,urllib.error\n"
    "try:\n r=urllib.request.urlopen('http://127.0.0.1:8080/health',timeout=3);b=r.read()\n"
    "except urllib.error.HTTPError as e:\n b=e.read()\n"
    "print(b.decode())"
)

ROOT = Path(__file__).resolve().parents[2]


class LabError(RuntimeError):
    pass


def host_docker(
    *argv: str, timeout: float = 120, check: bool = True, input: bytes | None = None
) -> str:
    result = subprocess.run(["docker", *argv], capture_output=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise LabError(
            f"docker {' '.join(argv[:4])}: {result.stderr.decode(errors='replace')[-1500:]}"
        )
    return result.stdout.decode(errors="replace")


def wait_until(
    what: str, predicate: Callable[[], bool], *, timeout: float = 120, every: float = 1.0
) -> float:
    """Poll ``predicate``; returns the seconds it took, raises LabError on timeout."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except (LabError, subprocess.TimeoutExpired, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


_ENTRY = r"""#!/bin/sh
# Node supervisor: mount the Storage Box, then keep dockerd running (a killed daemon restarts).
trap 'touch /run/lab-stop; pkill dockerd; sleep 3; exit 0' TERM INT
mkdir -p /mnt/storagebox /run/sshd
mount --make-rshared / 2>/dev/null
i=0
until mountpoint -q /mnt/storagebox; do
  sshfs "root@$LAB_BOX:/srv/box" /mnt/storagebox -o "$LAB_SSHFS_OPTS" 2>>/var/log/sshfs.log
  i=$((i+1)); [ $i -gt 60 ] && break
  mountpoint -q /mnt/storagebox || sleep 1
done
while [ ! -e /run/lab-stop ]; do
  # A daemon that dies leaves its overlay vxlan links (vx-*) in this namespace; the next one then
  # fails every task on that network with "error creating vxlan interface: file exists" (a known
  # moby bug, also seen on hosts). The links belong to the dead daemon: remove them first.
  for link in $(ip -o link show type vxlan 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    case "$link" in
      vx-*) ip link delete "$link" && echo "removed stale $link" >>/var/log/dockerd.log ;;
    esac
  done
  dockerd --cgroup-parent="/dind-$(hostname)" >>/var/log/dockerd.log 2>&1 &
  wait $!
  echo "dockerd exited $?" >>/var/log/dockerd.log
  sleep 1
done
"""

# reconnect: a dropped SSH session is re-established on the next access (the mount stays);
# ServerAlive*: a dead peer is noticed within ~6 s instead of hanging on TCP timeouts.
SSHFS_OPTS = (
    "IdentityFile=/lab/ssh/user,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
    "LogLevel=ERROR,reconnect,ServerAliveInterval=2,ServerAliveCountMax=3,"
    "dir_cache=no,attr_timeout=1,entry_timeout=1"
)

_DIND_FLAGS = (
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
    "--device", "/dev/fuse",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", "/var/lib/docker", "--tmpfs", "/run",
)  # fmt: skip


@dataclass
class Node:
    name: str  # container name, hostname and Swarm hostname

    def sh(self, script: str, *, timeout: float = 120, check: bool = True) -> str:
        return host_docker("exec", self.name, "sh", "-c", script, timeout=timeout, check=check)

    def docker(
        self,
        *argv: str,
        timeout: float = 120,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
    ) -> str:
        extra: list[str] = []
        for key, value in (env or {}).items():
            extra += ["-e", f"{key}={value}"]
        return host_docker(
            "exec", *(["-i"] if input is not None else []), *extra, self.name, "docker", *argv,
            timeout=timeout, check=check, input=input,
        )  # fmt: skip

    def running(self) -> bool:
        out = host_docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return out.strip() == "true"

    def engine_up(self) -> bool:
        return self.running() and bool(
            self.docker("info", "--format", "{{.Swarm.LocalNodeState}}", check=False, timeout=20)
        )

    def ip(self, network: str) -> str:
        out = host_docker(
            "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
            self.name,
        )  # fmt: skip
        return out.strip()


@dataclass
class SwarmLab:
    prefix: str
    workdir: Path
    images: Sequence[str]
    size: int = 3
    nodes: list[Node] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return f"{self.prefix}-net"

    @property
    def box(self) -> Node:
        return Node(f"{self.prefix}-box")

    @property
    def box_dir(self) -> Path:
        return self.workdir / "box"

    @property
    def swag_dir(self) -> Path:
        return self.workdir / "swag"

    @property
    def ca_dir(self) -> Path:
        return self.workdir / "ca"

    def ssl_dir(self, node: Node | str) -> Path:
        name = node if isinstance(node, str) else node.name
        return self.workdir / "nodes" / name / "ssl"

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    # -- build ----------------------------------------------------------------------------------

    def up(self) -> None:
        started = time.monotonic()
        image = ensure_node_image()
        self.timings["node image"] = time.monotonic() - started
        lab = self.workdir / "lab"
        ssh = lab / "ssh"
        ssh.mkdir(parents=True, mode=0o700)
        for name in ("host", "user"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)], check=True
            )
        shutil.copy(ssh / "user.pub", ssh / "authorized_keys")
        (ssh / "sshd_config").write_text(
            "HostKey /lab/ssh/host\nAuthorizedKeysFile /lab/ssh/authorized_keys\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nSubsystem sftp internal-sftp\n"
            "ClientAliveInterval 2\nClientAliveCountMax 3\n"
        )
        (lab / "entry.sh").write_text(_ENTRY)
        (lab / "entry.sh").chmod(0o755)
        for directory in (self.box_dir / "ssl", self.swag_dir, self.ca_dir):
            directory.mkdir(parents=True, exist_ok=True)
        host_docker("network", "create", "--label", f"certflow.lab={self.prefix}", self.network)
        host_docker(
            "run", "-d", "--name", self.box.name, "--hostname", self.box.name,
            "--network", self.network, "--label", f"certflow.lab={self.prefix}",
            "-v", f"{lab}:/lab:ro", "-v", f"{self.box_dir}:/srv/box",
            "--entrypoint", "sh", image, "-c",
            "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f /lab/ssh/sshd_config",
        )  # fmt: skip
        self.nodes = [Node(f"{self.prefix}-n{i}") for i in range(1, self.size + 1)]
        for node in self.nodes:
            self.ssl_dir(node).mkdir(parents=True)
            host_docker(
                "run", "-d", "--name", node.name, "--hostname", node.name,
                "--network", self.network, "--label", f"certflow.lab={self.prefix}",
                "--stop-timeout", "5", *_DIND_FLAGS,
                "-e", f"LAB_BOX={self.box.name}", "-e", f"LAB_SSHFS_OPTS={SSHFS_OPTS}",
                "-v", f"{lab}:/lab:ro", "-v", f"{ROOT / 'stacks'}:/stacks:ro",
                "-v", f"{self.ssl_dir(node)}:/opt/iklimco/ssl",
                "-v", f"{self.swag_dir}:/swag:ro", "-v", f"{self.ca_dir}:/certflow-ca:ro",
                "--entrypoint", "/lab/entry.sh", image,
            )  # fmt: skip
        for node in self.nodes:
            wait_until(f"dockerd on {node.name}", node.engine_up, timeout=90, every=0.5)
            if "fuse.sshfs" not in node.sh("grep /mnt/storagebox /proc/mounts || true"):
                log = node.sh("cat /var/log/sshfs.log 2>/dev/null || true")
                raise LabError(f"{node.name} did not mount the Storage Box: {log[-800:]}")
        self.timings["nodes up"] = time.monotonic() - started
        first = self.nodes[0]
        address = first.ip(self.network)
        first.docker("swarm", "init", "--advertise-addr", address)
        token = first.docker("swarm", "join-token", "-q", "manager").strip()
        for node in self.nodes[1:]:
            node.docker("swarm", "join", "--token", token, f"{address}:2377", timeout=60)
        self.timings["swarm formed"] = time.monotonic() - started
        self.load_images()
        self.timings["images loaded"] = time.monotonic() - started

    def load_images(self, nodes: Sequence[Node] | None = None) -> None:
        archive = self.workdir / "lab-images.tar"
        if not archive.exists():
            host_docker("save", "-o", str(archive), *self.images, timeout=300)

        def load(node: Node) -> None:
            with archive.open("rb") as tar:
                result = subprocess.run(
                    ["docker", "exec", "-i", node.name, "docker", "load", "-q"],
                    stdin=tar,
                    capture_output=True,
                    timeout=300,
                )
            if result.returncode != 0:
                raise LabError(f"docker load on {node.name}: {result.stderr.decode()[-800:]}")

        targets = list(nodes or self.nodes)
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            list(pool.map(load, targets))

    # -- operations -----------------------------------------------------------------------------

    def manager(self) -> Node:
        """A running node whose engine answers as a reachable manager (the leader if possible)."""
        live = [n for n in self.nodes if n.running()]
        leader = self.leader()
        for node in sorted(live, key=lambda n: n.name != leader):
            state = node.docker(
                "info", "--format", "{{.Swarm.ControlAvailable}}", check=False, timeout=20
            )
            if state.strip() == "true":
                return node
        raise LabError("no manager answers")

    def nodes_table(self) -> list[dict[str, str]]:
        for node in self.nodes:
            if not node.running():
                continue
            out = node.docker("node", "ls", "--format", "{{json .}}", check=False, timeout=20)
            rows = [json.loads(line) for line in out.splitlines() if line.strip()]
            if rows:
                return rows
        return []

    def leader(self) -> str | None:
        for row in self.nodes_table():
            if row.get("ManagerStatus") == "Leader":
                return str(row["Hostname"])
        return None

    def node_state(self, name: str) -> str:
        for row in self.nodes_table():
            if row.get("Hostname") == name:
                return str(row.get("Status", "")).lower()
        return ""

    def stop_node(self, node: Node) -> None:
        host_docker("stop", "-t", "2", node.name, timeout=60)

    def start_node(self, node: Node) -> None:
        host_docker("start", node.name)
        wait_until(f"dockerd on {node.name}", node.engine_up, timeout=90, every=0.5)

    def disconnect(self, node: Node) -> None:
        host_docker("network", "disconnect", self.network, node.name)

    def reconnect(self, node: Node) -> None:
        host_docker("network", "connect", self.network, node.name)

    def block_box(self, node: Node) -> None:
        """The Storage Box becomes unreachable from ``node`` (packets dropped, as on a WAN)."""
        box_ip = self.box.ip(self.network)
        node.sh(f"iptables -I OUTPUT -d {box_ip} -j DROP")

    def unblock_box(self, node: Node) -> None:
        box_ip = self.box.ip(self.network)
        node.sh(f"iptables -D OUTPUT -d {box_ip} -j DROP", check=False)

    def partition(self, node: Node) -> None:
        """Cut ``node`` off from every other node and the Storage Box (its address stays)."""
        node.sh("iptables -I INPUT -i eth0 -j DROP && iptables -I OUTPUT -o eth0 -j DROP")

    def heal_partition(self, node: Node) -> None:
        node.sh(
            "iptables -D INPUT -i eth0 -j DROP; iptables -D OUTPUT -o eth0 -j DROP", check=False
        )

    def box_session_pids(self) -> list[int]:
        """Host PIDs of every SSH session on the Storage Box host (sshd children, sftp-server)."""
        main = int(host_docker("inspect", "-f", "{{.State.Pid}}", self.box.name).strip())
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found: list[int] = []
        frontier = {main}
        while frontier:
            children = {pid for pid, ppid in parents.items() if ppid in frontier}
            found += sorted(children)
            frontier = children
        return found

    def kill_box_sessions(self) -> int:
        """kill -9 every SSH session process on the Storage Box host (the listener stays)."""
        pids = self.box_session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def restart_dockerd(self, node: Node) -> None:
        node.sh("pkill -x dockerd")
        time.sleep(2)
        wait_until(f"dockerd back on {node.name}", node.engine_up, timeout=120, every=0.5)

    def stack_deploy(self, stack: str, files: Sequence[str], env: Mapping[str, str]) -> None:
        argv = ["stack", "deploy", "--resolve-image", "never"]
        for name in files:
            argv += ["-c", name]
        self.manager().docker(*argv, stack, env=env, timeout=180)

    def containers(self, node: Node, service: str) -> list[str]:
        """IDs of the running containers of ``service`` on ``node``."""
        out = node.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}",
            check=False, timeout=20,
        )  # fmt: skip
        return out.split()

    def health(self, node: Node, service: str) -> dict[str, object] | None:
        """``/health`` of the service's container on ``node``, read from inside it."""
        script = HEALTH_SCRIPT
        for cid in self.containers(node, service):
            out = node.docker("exec", cid, "python3", "-c", script, check=False, timeout=20)
            try:
                doc = json.loads(out)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
        return None

    def logs(self, service: str) -> str:
        """Both streams of every container ``service`` ran on every node, exited ones too.

        Read node by node: ``docker service logs`` hung for minutes on a service with tasks on a
        node whose dockerd had restarted, and it returns the tasks' stderr on its own stderr.
        """
        texts = []
        for node in self.nodes:
            ids = node.docker(
                "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}",
                check=False, timeout=30,
            ).split()  # fmt: skip
            for cid in ids:
                texts.append(node.sh(f"docker logs {cid} 2>&1", check=False, timeout=120))
        return "\n".join(texts)

    def down(self) -> None:
        ids = host_docker(
            "ps", "-aq", "--filter", f"label=certflow.lab={self.prefix}", check=False
        ).split()
        if ids:
            host_docker("rm", "-f", "-v", *ids, check=False, timeout=180)
        host_docker("network", "rm", self.network, check=False)
        # The nodes wrote as root into the bound directories; removing the tree is all that's left.
        shutil.rmtree(self.workdir, ignore_errors=True)


def quote_env(env: Mapping[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def environ_with(env: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **env}
