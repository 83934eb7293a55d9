"""Both stack files pass the docker CLI's own compose validation and interpolate as documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

STACKS = Path(__file__).resolve().parents[3] / "stacks"
CERTS = STACKS / "docker-stack-certs.yml"
VAULT = STACKS / "docker-stack-vault.yml"


def _config(path: Path, **env: str) -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the docker CLI is required (scripts/bootstrap installs it)")
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME"}}
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "${" not in result.stdout
    return result.stdout


def _block(rendered: str, service: str) -> str:
    """The rendered text of one service (indented two spaces under ``services:``)."""
    match = re.search(rf"^  {re.escape(service)}:\n((?:    .*\n|\n)*)", rendered, re.MULTILINE)
    assert match, f"service {service} missing"
    return match.group(1)


def test_certs_stack_defaults_are_the_runbook_values() -> None:
    rendered = _config(CERTS)
    reloader = _block(rendered, "cert-reloader")
    distributor = _block(rendered, "cert-distributor")
    assert "replicas: 1" in reloader
    assert "node.labels.swag == true" in reloader
    assert re.search(
        r"source: /opt/iklimco/swag/config\n\s+target: /swag-config\n\s+read_only: true", reloader
    )
    assert "source: /mnt/storagebox/ssl" in reloader
    assert "mode: global" in distributor
    assert re.search(
        r"source: /mnt/storagebox/ssl\n\s+target: \S+\n\s+read_only: true", distributor
    )
    assert "source: /opt/iklimco/ssl" in distributor
    assert "source: /var/run/docker.sock" in distributor
    assert "DISTRIBUTOR_VAULT_SERVICE: iklimco_vault" in distributor
    # The trust check is on: both check the chain against the bundle Vault's clients use.
    assert "RELOADER_TRUST_BUNDLE: /certflow-ca/ca-certificates.crt" in reloader
    assert "RELOADER_TRUST_NAME: vault.iklim.co" in reloader
    assert "DISTRIBUTOR_TRUST_BUNDLE: /certflow-ca/ca-certificates.crt" in distributor
    assert "DISTRIBUTOR_TRUST_NAME: vault.iklim.co" in distributor
    for block in (reloader, distributor):
        assert re.search(
            r"source: /etc/ssl/certs\n\s+target: /certflow-ca\n\s+read_only: true", block
        )
        assert "CERTFLOW_CERT_NAME: STAR.iklim.co.full.crt" in block
        assert "CERTFLOW_KEY_NAME: STAR.iklim.co_key.pem" in block


def test_vault_stack_defaults() -> None:
    rendered = _config(VAULT)
    vault = _block(rendered, "vault")
    unsealer = _block(rendered, "vault-unsealer")
    assert "image: hashicorp/vault:1.19.0" in vault
    assert re.search(r"source: /opt/iklimco/ssl\n\s+target: /vault/certs", vault)
    update = re.search(r"update_config:\n((?:        .*\n)+)", vault)
    assert update
    assert "parallelism: 1" in update.group(1)
    assert "order: stop-first" in update.group(1)
    # Swarm waits (almost) for ever between members: the coordinator moves the update on once
    # the restarted member is back (services/distributor/coordinator.py, the gate).
    assert "delay: 8760h0m0s" in update.group(1)
    assert "failure_action: pause" in update.group(1)
    # Sealed (exit 2) counts as alive; only an error (exit 1) fails the check: a sealed member
    # must stay in tasks.<service> DNS, where the unsealer and raft (the cluster port) find it.
    # The CLI is whichever of vault/bao the image has.
    assert "command -v vault || command -v bao" in vault
    assert '"$cli" status -address=https://127.0.0.1:8200' in vault
    assert "[ $? -ne 1 ]" in vault
    # The server configuration is a per-task Swarm config; the pair's names reach it by env.
    # The entrypoint writes it to /vault/config with the cluster port kept in the member's volume.
    assert "target: /certflow/vault.hcl" in vault
    assert "> /vault/config/certflow.hcl" in vault
    assert "f=/vault/file/certflow-cluster-port" in vault
    assert "exec docker-entrypoint.sh" in vault
    assert "CERTFLOW_CLUSTER_PORT: 82{{.Task.Slot}}1" in vault
    assert "VAULT_CERT_FILE: STAR.iklim.co.full.crt" in vault
    assert "replicas: 3" in vault
    assert "target: /vault/file" in vault
    template = (VAULT.parent / "vault" / "vault.hcl.tmpl").read_text()
    assert 'storage "raft"' in template
    # No retry_join: the unsealer joins new members by address (the template says why).
    assert "retry_join {" not in template
    assert 'cluster_addr = "https://tasks.{{.Service.Name}}:@cluster_port@"' in template
    assert 'cluster_address = "0.0.0.0:@cluster_port@"' in template
    assert 'tls_cert_file   = "/vault/certs/{{env "VAULT_CERT_FILE"}}"' in template
    assert re.search(
        r"source: vault_unseal_key\n\s+target: vault_unseal_key\n(?:\s+\w+: .*\n)*?\s+mode: 256",
        unsealer,
    ), "vault_unseal_key must be mounted with mode 0400"
    assert "vault: null" in vault
    assert "vault: null" in unsealer
    tail = rendered[rendered.index("\nnetworks:") :]
    assert "driver: overlay" in tail
    assert re.search(r"vault_unseal_key:\n\s+name: vault_unseal_key\n\s+external: true", tail)


def test_every_name_and_path_follows_the_environment() -> None:
    env = {
        "CERTFLOW_IMAGE": "certflow-test:x1",
        "VAULT_IMAGE": "certflow-vaultsim:x1",
        "SWAG_CONFIG_DIR": "/tmp/e2e/swag",
        "STORAGEBOX_SSL_DIR": "/tmp/e2e/storagebox",
        "VAULT_SSL_DIR": "/tmp/e2e/ssl",
        "SWAG_NODE_LABEL": "certflow-e2e-x1",
        "VAULT_SERVICE": "e2ex1_vault",
        "VAULT_DOMAIN": "vault.example.test",
        "CERT_DOMAIN": "example.test",
        "CERT_FILE_NAME": "STAR.example.test.full.crt",
        "KEY_FILE_NAME": "STAR.example.test_key.pem",
        "VAULT_UNSEAL_SECRET": "e2ex1_unseal",
        "VAULT_UPDATE_DELAY": "7s",
        "VAULT_REPLICAS": "3",
        "VAULT_PUBLISHED_PORT": "18200",
        "VAULT_RAFT_VOLUME": "e2ex1_vault-raft",
        "VAULT_CONFIG_NAME": "e2ex1_vault_config",
    }
    certs = _config(CERTS, **env)
    vault = _config(VAULT, **env)
    for rendered in (certs, vault):
        # Paths inside the containers stay fixed; every host path, name and domain moves.
        assert "iklim" not in "".join(re.findall(r"source: .*|iklim.co.*", rendered))
        assert "iklimco_vault" not in rendered
    assert "node.labels.certflow-e2e-x1 == true" in certs
    assert "/swag-config/etc/letsencrypt/live/example.test" in certs
    assert "image: certflow-test:x1" in certs
    assert "image: certflow-vaultsim:x1" in vault
    assert "replicas: 3" in vault
    assert "delay: 7s" in vault
    assert "published: 18200" in vault
    assert "name: e2ex1_unseal" in vault
    assert "VAULT_KEY_FILE: STAR.example.test_key.pem" in vault
    # One volume per slot by default; per node on request (Swarm renders the Go template).
    assert (
        "name: e2ex1_vault-raft-{{if eq `slot` `node`}}node{{else}}{{.Task.Slot}}{{end}}" in vault
    )
    per_node = _config(VAULT, **env, VAULT_RAFT_VOLUME_PER="node")
    assert "e2ex1_vault-raft-{{if eq `node` `node`}}node{{else}}" in per_node


def test_certs_stack_mounts_the_manifest_key_private_in_both_services() -> None:
    rendered = _config(CERTS, CERTFLOW_MANIFEST_SECRET="prod_manifest_key_v2")
    for service in ("cert-reloader", "cert-distributor"):
        block = _block(rendered, service)
        assert "CERTFLOW_MANIFEST_KEY_FILES: /run/secrets/certflow_manifest_key" in block
        assert re.search(
            r"source: certflow_manifest_key\n\s+target: certflow_manifest_key\n"
            r"\s+uid: \"0\"\n\s+gid: \"0\"\n\s+mode: (0400|256)",
            block,
        ), block
    assert re.search(
        r"certflow_manifest_key:\n\s+name: prod_manifest_key_v2\n\s+external: true", rendered
    )


def test_the_certflow_services_share_the_vault_network_verify_runs_on() -> None:
    certs, vault = _config(CERTS), _config(VAULT)
    for service in ("cert-reloader", "cert-distributor"):
        assert re.search(r"networks:\n\s+default: null\n\s+vault: null", _block(certs, service))
    assert "vault: null" in _block(vault, "vault-unsealer")

    def definition(rendered: str) -> str:
        networks = rendered.split("\nnetworks:\n", 1)[1]
        match = re.search(r"^  vault:\n((?:    .*\n)*)", networks, re.MULTILINE)
        assert match, "no vault network"
        return match.group(1)

    # Either stack file may create it (same stack name); both must declare it the same way.
    assert definition(certs) == definition(vault)
    assert "attachable: true" in definition(certs)
