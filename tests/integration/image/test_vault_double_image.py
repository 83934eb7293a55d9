"""The Vault double's image runs from the stack's own Vault configuration, and the stack's Vault
healthcheck counts a sealed (and an uninitialized) Vault as alive but a dead listener as not.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e_images import build_vaultsim_image, remove_image
from tests.support.e2e_names import unique
from tests.support.pki import CA

STACK = Path(__file__).resolve().parents[3] / "stacks" / "docker-stack-vault.yml"


def _rendered_vault() -> tuple[str, str]:
    """(VAULT_LOCAL_CONFIG, healthcheck shell command) as `docker stack config` renders them."""
    out = subprocess.run(
        ["docker", "stack", "config", "-c", str(STACK)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = re.search(r"VAULT_LOCAL_CONFIG: '(.*)'", out)
    check = re.search(r"- CMD-SHELL\n\s+- (.*)", out)
    assert config
    assert check
    return config.group(1), check.group(1)


@pytest.fixture(scope="module")
def double_image(project_image: str) -> Iterator[str]:
    tag = build_vaultsim_image(f"certflow-test-vault:{unique('img')}", project_image=project_image)
    yield tag
    remove_image(tag)


@pytest.fixture
def vault_container(double_image: str, tmp_path: Path) -> Iterator[str]:
    ca = CA("double-image")
    leaf = ca.leaf(("iklim.co", "*.iklim.co"))
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "STAR.iklim.co.full.crt").write_bytes(ca.fullchain(leaf))
    (certs / "STAR.iklim.co_key.pem").write_bytes(leaf.key_pem)
    (certs / "STAR.iklim.co_key.pem").chmod(0o600)
    config, _ = _rendered_vault()
    name = unique("certflow-vault-double-")
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-e",
            f"VAULT_LOCAL_CONFIG={config}",
            "-v",
            f"{certs}:/vault/certs:ro",
            double_image,
            "server",
        ],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _health(container: str, command: str) -> int:
    return subprocess.run(
        ["docker", "exec", container, "sh", "-c", command], capture_output=True
    ).returncode


def _vault_status(container: str) -> int:
    return subprocess.run(
        [
            "docker",
            "exec",
            container,
            "vault",
            "status",
            "-address=https://127.0.0.1:8200",
            "-tls-skip-verify",
        ],
        capture_output=True,
    ).returncode


def _wait_listening(container: str) -> None:
    deadline = time.monotonic() + 30
    while _vault_status(container) == 1:
        if time.monotonic() > deadline:
            logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
            raise AssertionError(f"the double did not listen: {logs.stdout}{logs.stderr}")
        time.sleep(0.3)


def _put(container: str, path: str, body: dict[str, object]) -> dict[str, object]:
    script = (
        "import json,ssl,sys,urllib.request as u\n"
        "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
        "r=u.Request('https://127.0.0.1:8200'+sys.argv[1],data=sys.argv[2].encode(),"
        "method='PUT')\n"
        "print(u.urlopen(r,context=c).read().decode())\n"
    )
    out = subprocess.run(
        ["docker", "exec", container, "python3", "-c", script, path, json.dumps(body)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


def test_stack_healthcheck_counts_sealed_as_alive(vault_container: str, double_image: str) -> None:
    _, healthcheck = _rendered_vault()
    healthcheck = healthcheck.replace("$$", "$")
    _wait_listening(vault_container)
    # Uninitialized: `vault status` says 2, the stack's check passes.
    assert _vault_status(vault_container) == 2
    assert _health(vault_container, healthcheck) == 0
    init = _put(vault_container, "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
    keys = init["keys"]
    assert isinstance(keys, list)
    # Initialized and sealed: still alive.
    assert _vault_status(vault_container) == 2
    assert _health(vault_container, healthcheck) == 0
    _put(vault_container, "/v1/sys/unseal", {"key": keys[0]})
    assert _vault_status(vault_container) == 0
    assert _health(vault_container, healthcheck) == 0
    # A hung process fails the check: the container is frozen and the same check runs from a
    # sidecar sharing its network namespace (exec into a frozen container is impossible).
    subprocess.run(["docker", "pause", vault_container], check=True)
    try:
        side = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                f"container:{vault_container}",
                "--entrypoint",
                "sh",
                double_image,
                "-c",
                healthcheck,
            ],
            capture_output=True,
            timeout=60,
        )
        assert side.returncode != 0
    finally:
        subprocess.run(["docker", "unpause", vault_container], check=True)


def test_the_double_says_it_is_a_stand_in(vault_container: str) -> None:
    _wait_listening(vault_container)
    logs = subprocess.run(["docker", "logs", vault_container], capture_output=True, text=True)
    assert "a test stand-in, not HashiCorp Vault" in logs.stdout + logs.stderr
