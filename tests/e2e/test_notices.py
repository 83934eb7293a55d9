"""What the deployed stack tells its operators when something is wrong, each notice from the real
service that finds it, to a real webhook receiver on the host:

- a broken SWAG renewal (renewal.refused) and one from an untrusted issuer (trust.failed), from
  cert-reloader, with nothing published;
- the published certificate inside the warning window (cert.expiring), from cert-reloader;
- an unseal key that Vault rejects (unseal_key.rejected) and the member it leaves sealed past the
  alert (member.sealed), from vault-unsealer.

The other kinds (published, done, halted, resumed, paused, manifest refused, canary failed) are
asserted where test_rotation.py and test_forged_manifest.py cause them. Each test leaves the flow
as it found it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.docker_engine import open_engine
from shared.manifest import MANIFEST_NAME
from tests.support.bad_inputs import (
    BadRenewal,
    restore_generation,
    write_bad_generation,
    wrong_unseal_document,
)
from tests.support.e2e_flow import CERT_NAME, KEY_NAME, LocalFlow, docker, wait_for
from tests.support.leaks import assert_no_keys
from tests.support.notify_receiver import Receiver, noticed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _of_kind(receiver: Receiver, start: int, kind: str, timeout: float = 120) -> dict[str, Any]:
    bodies = noticed(receiver, start, kind, timeout=timeout)
    return next(b for b in bodies if b["kind"] == kind)


def _update(flow: LocalFlow, name: str, *argv: str) -> None:
    """A `docker service update` of one service, waited for until its tasks run the new spec."""
    docker("service", "update", "--detach", *argv, flow.service(name), timeout=120)
    wait_for(
        f"{name} to run its new settings",
        lambda: flow.service_settled(name),
        timeout=180,
        every=2,
    )


def _verified(flow: LocalFlow) -> bool:
    return flow.verify()[0] == 0


def test_bad_renewals_are_told_and_never_published(flow: LocalFlow, notices: Receiver) -> None:
    good = flow.swag.generation()
    box = (flow.storagebox / MANIFEST_NAME).read_bytes()
    installed = (flow.ssl_dir / CERT_NAME).read_bytes(), (flow.ssl_dir / KEY_NAME).read_bytes()
    cases: tuple[tuple[BadRenewal, str, str], ...] = (
        ("another key", "renewal.refused", "key_mismatch"),
        ("untrusted issuer", "trust.failed", "untrusted"),
    )
    for bad, kind, reason in cases:
        start = len(notices.bodies)
        write_bad_generation(flow.swag, bad)
        try:
            body = _of_kind(notices, start, kind)
            assert body["service"] == "cert-reloader", body
            assert body["fields"]["reason"] == reason, body
            assert "nothing published" in body["summary"], body
            # Refused, so nothing new on the Storage Box and nothing new installed.
            assert (flow.storagebox / MANIFEST_NAME).read_bytes() == box
            assert (flow.ssl_dir / CERT_NAME).read_bytes() == installed[0]
            assert (flow.ssl_dir / KEY_NAME).read_bytes() == installed[1]
        finally:
            restore_generation(flow.swag, good)
    assert notices.bodies[-1]["severity"] == "critical"  # the trust failure
    wait_for("verify to pass with the good pair back", lambda: _verified(flow), timeout=180)


def test_a_certificate_inside_the_warning_window_is_told(
    flow: LocalFlow, notices: Receiver
) -> None:
    """The published certificate is years from expiry; a warning window longer than that puts
    it inside, as the days running out would."""
    published = json.loads((flow.storagebox / MANIFEST_NAME).read_bytes())["leaf"]
    start = len(notices.bodies)
    _update(flow, "cert-reloader", "--env-add", "RELOADER_WARN_DAYS=36500")
    try:
        body = _of_kind(notices, start, "cert.expiring")
        assert body["service"] == "cert-reloader", body
        assert body["severity"] == "warning", body
        assert body["fields"]["warn_days"] == 36500, body
        assert 0 < body["fields"]["days_left"] < 36500, body
        assert body["fields"]["fingerprint"] == published["fingerprint_sha256"], body
    finally:
        _update(flow, "cert-reloader", "--env-rm", "RELOADER_WARN_DAYS")
    wait_for("verify to pass", lambda: _verified(flow), timeout=180)


def _unsealer_secret(flow: LocalFlow) -> str:
    return docker(
        "service", "inspect", flow.service("vault-unsealer"),
        "--format", "{{(index .Spec.TaskTemplate.ContainerSpec.Secrets 0).SecretName}}",
    ).strip()  # fmt: skip


def _point_unsealer_to(flow: LocalFlow, secret: str, *env: str) -> None:
    _update(
        flow, "vault-unsealer",
        "--secret-rm", _unsealer_secret(flow),
        "--secret-add", f"source={secret},target=vault_unseal_key,uid=10001,gid=10001,mode=0400",
        *env,
    )  # fmt: skip


def _key_document(flow: LocalFlow) -> str:
    """The document the unsealer reads (to make a wrong one of the same shape, and to check that
    no key of it goes out)."""
    for cid in docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.swarm.service.name={flow.service('vault-unsealer')}",
    ).split():
        out = docker("exec", "-u", "0", cid, "cat", "/run/secrets/vault_unseal_key", check=False)
        if out.startswith("{"):
            return out
    raise AssertionError("no unsealer container to read the key document from")


def _standby_container(flow: LocalFlow) -> str:
    """The container of a standby member (stopping it leaves Vault its active member)."""
    status = flow.certflow("status", "--json")
    members = json.loads(status.stdout)["members"]
    standby = {m["address"] for m in members if m["role"] == "standby"}
    for task in open_engine(ping=False).tasks(flow.service("vault")):
        if set(task.addresses.get(flow.network, ())) & standby and task.container_id:
            return task.container_id
    raise AssertionError(f"no standby member: {members}")


def test_a_wrong_unseal_key_and_the_member_it_leaves_sealed_are_told(
    flow: LocalFlow, notices: Receiver
) -> None:
    """The operator stores another cluster's keys in the secret; a standby member restarts
    (killed here) and Vault rejects the key. The unsealer tells of the rejection and, past
    UNSEALER_SEALED_ALERT (5 s here), of the member still sealed. The right key back: unsealed."""
    right = _key_document(flow)
    good = _unsealer_secret(flow)
    wrong_secret = f"{flow.stack}_wrong_unseal_key"
    wrong = wrong_unseal_document(right.encode()).decode()
    flow.create_secret(wrong_secret, wrong.encode())
    start = len(notices.bodies)
    try:
        _point_unsealer_to(flow, wrong_secret, "--env-add", "UNSEALER_SEALED_ALERT=5")
        killed = _standby_container(flow)
        docker("kill", killed)  # Swarm starts a new task for the slot, sealed
        bodies = noticed(notices, start, "unseal_key.rejected", "member.sealed", timeout=180)
    finally:
        _point_unsealer_to(flow, good, "--env-rm", "UNSEALER_SEALED_ALERT")
    rejected = next(b for b in bodies if b["kind"] == "unseal_key.rejected")
    sealed = next(b for b in bodies if b["kind"] == "member.sealed")
    assert rejected["service"] == sealed["service"] == "vault-unsealer", bodies
    assert rejected["severity"] == sealed["severity"] == "critical", bodies
    assert sealed["fields"]["replica"] == rejected["fields"]["replica"], bodies
    assert "sealed for" in sealed["summary"], sealed
    assert sealed["fields"]["key_rejections"] >= 1, sealed
    keys = [k for d in (right, wrong) for k in json.loads(d)["unseal_keys_b64"]]
    assert_no_keys([json.dumps(notices.bodies)], keys)
    # With the right key back every member is unsealed and serving again.
    wait_for("every member unsealed and verified", lambda: _verified(flow), timeout=240, every=3)
    deadline = time.monotonic() + 60
    while docker("secret", "ls", "-q", "--filter", f"name={wrong_secret}").strip():
        # A secret is removable once no task of the unsealer holds it any more.
        docker("secret", "rm", wrong_secret, check=False)
        assert time.monotonic() < deadline, f"{wrong_secret} is still in use"
        time.sleep(2)
