"""The OpenBao image (stacks/openbao): Vault-image contract, non-root server, TLS, healthcheck."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.docker_engine import ensure_engine
from tests.support.e2e_flow import vault_cli_problem
from tests.support.e2e_names import unique
from tests.support.openbao import Secret, bao_version
from tests.support.openbao_image import build_openbao_image
from tests.support.pki import CA

_CONFIG = """
api_addr     = "https://127.0.0.1:8200"
cluster_addr = "https://127.0.0.1:8201"
storage "raft" {
  path    = "/vault/file"
  node_id = "image-test"
}
listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/vault/certs/fullchain.pem"
  tls_key_file    = "/vault/certs/privkey.pem"
}
"""
_HEALTHCHECK = ["vault", "status", "-address=https://127.0.0.1:8200", "-tls-skip-verify"]
_STACK = Path(__file__).resolve().parents[3] / "stacks" / "docker-stack-vault.yml"


def _rendered_stack() -> str:
    """The Vault stack file as `docker stack config` renders it."""
    return subprocess.run(
        ["docker", "stack", "config", "-c", str(_STACK)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _scalar(text: str) -> str:
    """A YAML plain or single-quoted scalar's value ('' stands for ' inside quotes)."""
    return text[1:-1].replace("''", "'") if text.startswith("'") else text


def _stack_healthcheck() -> list[str]:
    """The Vault service's healthcheck shell command, as `docker stack config` renders it."""
    check = re.search(r"- CMD-SHELL\n\s+- (.*)", _rendered_stack())
    assert check
    return ["sh", "-c", _scalar(check.group(1))]


def _docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def openbao_image() -> Iterator[str]:
    ensure_engine()
    tag = build_openbao_image(f"certflow-openbao-test:{unique('img')}")
    try:
        yield tag
    finally:
        _docker("image", "rm", "-f", tag)


def test_cli_names_user_and_labels(openbao_image: str) -> None:
    version = bao_version()
    for argv in (["version"], ["bao", "version"], ["vault", "version"]):
        result = _docker("run", "--rm", openbao_image, *argv)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"OpenBao v{version} "), argv
    link = _docker("run", "--rm", openbao_image, "readlink", "/usr/local/bin/vault")
    assert link.stdout.strip() == "bao"
    ident = _docker("run", "--rm", openbao_image, "id", "vault")
    assert ident.stdout.strip() == "uid=100(vault) gid=1000(vault) groups=1000(vault)"
    config = json.loads(_docker("image", "inspect", openbao_image).stdout)[0]["Config"]
    assert config["Labels"]["org.opencontainers.image.title"] == "openbao"
    assert config["Labels"]["org.opencontainers.image.version"] == version
    assert config["Labels"]["certflow.vault-cli"] == "bao"
    assert config["Cmd"] == ["server"]
    size = int(_docker("image", "inspect", openbao_image, "--format", "{{.Size}}").stdout)
    print(f"openbao image size: {size / 1e6:.0f} MB")


@pytest.fixture
def server(openbao_image: str) -> Iterator[dict[str, Any]]:
    """A container running `server` with config and TLS bind-mounted, raft data on a volume."""
    ca = CA("openbao image test")
    leaf = ca.leaf(("vault.iklim.co",), ip_addresses=("127.0.0.1",))
    name = unique("certflow-openbao-")
    volume = unique("certflow-openbao-data-")
    with tempfile.TemporaryDirectory(prefix="certflow-openbao-img-") as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        (root / "certs").mkdir()
        (root / "config" / "server.hcl").write_text(_CONFIG)
        (root / "certs" / "fullchain.pem").write_bytes(ca.fullchain(leaf))
        key = root / "certs" / "privkey.pem"
        key.write_bytes(leaf.key_pem)
        key.chmod(0o600)
        os.chown(key, 100, 1000)  # readable by the image's vault user only
        ca_file = root / "ca.pem"
        ca_file.write_bytes(ca.root_pem)
        for sub in ("config", "certs"):
            (root / sub).chmod(0o755)
        try:
            assert _docker("volume", "create", volume).returncode == 0
            started = _docker(
                "run",
                "-d",
                "--name",
                name,
                "-p",
                "127.0.0.1::8200",
                "-v",
                f"{root / 'config'}:/vault/config:ro",
                "-v",
                f"{root / 'certs'}:/vault/certs:ro",
                "-v",
                f"{volume}:/vault/file",
                openbao_image,
                "server",
            )
            assert started.returncode == 0, started.stderr
            port = _docker("port", name, "8200/tcp").stdout.split()[0].rsplit(":", 1)[1]
            yield {"name": name, "port": int(port), "ca_file": ca_file, "volume": volume}
        finally:
            _docker("rm", "-f", "-v", name)
            _docker("volume", "rm", "-f", volume)


def _seal_status(client: httpx.Client, port: int, *, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.get(
                f"https://127.0.0.1:{port}/v1/sys/seal-status",
                extensions={"sni_hostname": "vault.iklim.co"},
            )
            body: dict[str, Any] = response.json()
            return body
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_server_runs_as_vault_over_tls_and_healthcheck_exit_codes(
    server: dict[str, Any],
) -> None:
    name, port = server["name"], server["port"]
    context = ssl.create_default_context(cafile=str(server["ca_file"]))
    with httpx.Client(verify=context, timeout=5) as client:
        status = _seal_status(client, port)
        assert (status["initialized"], status["sealed"], status["storage_type"]) == (
            False,
            True,
            "raft",
        )
        # PID 1 is bao itself, as the vault user; the fresh volume is the vault user's.
        proc = _docker("exec", name, "sh", "-c", "grep -E '^(Name|Uid|VmRSS)' /proc/1/status")
        fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
        assert fields["Name"].strip() == "bao"
        assert fields["Uid"].split()[:2] == ["100", "100"]
        owner = _docker("exec", name, "stat", "-c", "%u:%g", "/vault/file")
        assert owner.stdout.strip() == "100:1000"

        # The CLI's exit codes: 2 while uninitialised or sealed, 0 unsealed, 1 on error. The
        # stack's healthcheck built on them calls every state but an error alive: a sealed
        # member must stay in tasks.<service> DNS, where the unsealer and raft find it.
        stack_check = _stack_healthcheck()
        assert _docker("exec", name, *_HEALTHCHECK).returncode == 2
        assert _docker("exec", name, *stack_check).returncode == 0
        init = client.put(
            f"https://127.0.0.1:{port}/v1/sys/init",
            json={"secret_shares": 1, "secret_threshold": 1},
            extensions={"sni_hostname": "vault.iklim.co"},
            timeout=30,
        )
        assert init.status_code == 200, init.text[:200]
        key = Secret(init.json()["keys_base64"][0])
        assert _docker("exec", name, *_HEALTHCHECK).returncode == 2
        assert _docker("exec", name, *stack_check).returncode == 0
        unseal = client.put(
            f"https://127.0.0.1:{port}/v1/sys/unseal",
            json={"key": key},
            extensions={"sni_hostname": "vault.iklim.co"},
        )
        assert unseal.status_code == 200
        deadline = time.monotonic() + 30
        while (code := _docker("exec", name, *_HEALTHCHECK).returncode) != 0:
            assert code == 2
            assert time.monotonic() < deadline, "healthcheck never reported unsealed"
            time.sleep(0.5)
        assert _docker("exec", name, *stack_check).returncode == 0
        broken = [*_HEALTHCHECK[:2], "-address=https://127.0.0.1:9", "-tls-skip-verify"]
        assert _docker("exec", name, *broken).returncode == 1
        print(f"bao idle RSS in the container:{fields['VmRSS'].strip()}")
        logs = _docker("logs", name)
        assert key not in logs.stdout + logs.stderr


def test_the_deploy_check_accepts_an_image_with_either_cli(openbao_image: str) -> None:
    assert vault_cli_problem(openbao_image) == ""


def test_the_deploy_check_names_an_image_without_a_vault_cli(project_image: str) -> None:
    # The project image has a shell but neither `vault` nor `bao`: scripts/up stops before the
    # deploy with this message instead of letting Swarm restart the server in a loop.
    problem = vault_cli_problem(project_image)
    assert project_image in problem
    assert "neither `vault` nor `bao`" in problem


def _stack_entrypoint() -> list[str]:
    """The Vault service's entrypoint, as `docker stack config` renders it."""
    found = re.search(
        r"entrypoint:\n\s+- /bin/sh\n\s+- -c\n\s+- (.*)\n\s+- (vault-member)\n", _rendered_stack()
    )
    assert found, "the vault service has no /bin/sh -c entrypoint"
    return ["/bin/sh", "-c", _scalar(found.group(1)), found.group(2)]


def test_the_stack_entrypoint_keeps_a_members_cluster_port_in_its_data(openbao_image: str) -> None:
    """A member's cluster port is the one its raft data was created with, whatever slot runs it:
    raft knows the member by that address (stacks/README.md, "A member moved to another slot")."""
    entrypoint = _stack_entrypoint()
    volume = unique("certflow-member-data-")
    with tempfile.TemporaryDirectory(prefix="certflow-member-") as tmp:
        template = Path(tmp) / "vault.hcl"
        template.write_text('cluster_addr = "https://tasks.vault:@cluster_port@"\n')
        template.chmod(0o644)
        Path(tmp).chmod(0o755)

        def run(slot_port: str, *argv: str) -> subprocess.CompletedProcess[str]:
            return _docker(
                "run", "--rm", "-e", f"CERTFLOW_CLUSTER_PORT={slot_port}",
                "-v", f"{template}:/certflow/vault.hcl:ro", "-v", f"{volume}:/vault/file",
                "--entrypoint", entrypoint[0], openbao_image, *entrypoint[1:], *argv,
            )  # fmt: skip

        try:
            assert _docker("volume", "create", volume).returncode == 0
            first = run("8221", "cat", "/vault/config/certflow.hcl")
            assert first.returncode == 0, first.stderr
            assert first.stdout == 'cluster_addr = "https://tasks.vault:8221"\n'
            # The same data started under slot 3 (Swarm moved the member): it keeps 8221.
            moved = run(
                "8231", "cat", "/vault/config/certflow.hcl", "/vault/file/certflow-cluster-port"
            )
            assert moved.returncode == 0, moved.stderr
            assert moved.stdout == 'cluster_addr = "https://tasks.vault:8221"\n8221\n'
            # Whatever else the file holds, the member refuses to start and says where to look.
            bad = run("8211", "sh", "-c", "echo 22 > /vault/file/certflow-cluster-port")
            assert bad.returncode == 0, bad.stderr
            refused = run("8211", "cat", "/vault/config/certflow.hcl")
            assert refused.returncode != 0
            assert "/vault/file/certflow-cluster-port holds '22', not 82<slot>1" in refused.stderr
        finally:
            _docker("volume", "rm", "-f", volume)
