"""End to end on the real single-node Swarm: someone who can write the Storage Box drops a forged
pair and manifest into it. The distributor refuses it (its /health names the reason and the key
id), the node keeps its installed pair, and Vault is not restarted: its tasks keep their start
times. The stacks run with the manifest key as a Swarm secret, as ``scripts/up`` deploys them.

The reloader is scaled to 0 while the forgery is looked at (it would otherwise repair the Storage
Box at its next check and the refusal could pass between two polls), then back to 1: it replaces
the forgery with the real pair and still nothing restarts Vault.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from shared.manifest_auth import key_id
from tests.support.e2e_flow import (
    CERT_NAME,
    KEY_NAME,
    FlowError,
    LocalFlow,
    docker,
    wait_for,
)
from tests.support.forgery import forge_pair
from tests.support.notify_receiver import Receiver, noticed

pytestmark = [pytest.mark.timeout(900)]
T = TypeVar("T")

_HEALTH = (
    "import urllib.request, urllib.error\n"
    "try:\n"
    "    print(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=5).read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.read().decode())\n"
)


def _containers(flow: LocalFlow, name: str) -> list[str]:
    label = f"label=com.docker.swarm.service.name={flow.service(name)}"
    return docker("ps", "-q", "--filter", label).split()


def _distributor_health(flow: LocalFlow) -> dict[str, Any]:
    (container,) = _containers(flow, "cert-distributor")
    body: dict[str, Any] = json.loads(docker("exec", container, "python3", "-c", _HEALTH))
    return body


def _poll(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """``probe`` until truthy; a container between tasks (exec fails) is just "not yet"."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (FlowError, ValueError, KeyError) as exc:
            last = exc
        else:
            last = value
            if value:
                return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _sync(flow: LocalFlow) -> dict[str, Any]:
    check: dict[str, Any] = _distributor_health(flow)["checks"]["sync"]
    return check


def _vault_started(flow: LocalFlow) -> dict[str, str]:
    """Each running Vault container and when it started."""
    ids = _containers(flow, "vault")
    out = docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", *ids)
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def _forge(flow: LocalFlow, *, signed_with: bytes | None) -> None:
    forge_pair(flow.storagebox, signed_with=signed_with)


def _scale_reloader(flow: LocalFlow, replicas: int) -> None:
    docker("service", "scale", "--detach", f"{flow.service('cert-reloader')}={replicas}")
    wait_for(
        f"{replicas} reloader task(s)",
        lambda: len(_containers(flow, "cert-reloader")) == replicas,
        timeout=120,
    )


def test_a_forged_pair_on_the_storage_box_is_refused_and_vault_keeps_running(
    flow: LocalFlow, notices: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    start = len(notices.bodies)
    _poll("the distributor in sync", lambda: _sync(flow)["status"] == "ok", 120)
    assert _distributor_health(flow)["checks"]["manifest_auth"]["enabled"] is True
    installed = (flow.ssl_dir / CERT_NAME).read_bytes(), (flow.ssl_dir / KEY_NAME).read_bytes()
    vault_before = _vault_started(flow)
    assert len(vault_before) == flow.vault_replicas
    updates_before = flow.force_update_count()
    _scale_reloader(flow, 0)
    try:
        stranger = secrets.token_bytes(32)
        for signed_with, reason, kid in (
            (None, "unsigned", "unsigned"),
            (stranger, "unknown_key", key_id(stranger)),
        ):
            _forge(flow, signed_with=signed_with)

            def refused(reason: str = reason) -> dict[str, Any] | None:
                check = _sync(flow)
                return check if check.get("reason") == reason else None

            check = _poll(f"the {reason} forgery refused", refused, 60)
            assert check["status"] == "failing"
            assert check["key_id"] == kid
            assert kid in check["message"]
            assert "keeping the installed pair" in check["message"]
            # Several distributor polls later the node still has its pair and Vault its tasks.
            time.sleep(6)
            assert (
                (flow.ssl_dir / CERT_NAME).read_bytes(),
                (flow.ssl_dir / KEY_NAME).read_bytes(),
            ) == installed
            assert _vault_started(flow) == vault_before
            assert flow.force_update_count() == updates_before
        # Each refused manifest reached the webhook, naming why.
        refusals = [
            b
            for b in noticed(notices, start, "manifest.refused")
            if b["kind"] == "manifest.refused"
        ]
        assert all(b["service"] == "cert-distributor" for b in refusals), refusals
    finally:
        _scale_reloader(flow, 1)
    # The reloader puts the real pair back (a new generation of the same certificate).
    _poll("the distributor back in sync", lambda: _sync(flow)["status"] == "ok", 120)
    assert (flow.ssl_dir / CERT_NAME).read_bytes() == installed[0]
    time.sleep(6)
    assert _vault_started(flow) == vault_before
    assert flow.force_update_count() == updates_before
    # The reloader task was just started again: verify once it runs (healthy) too.
    wait_for(
        "the reloader running again",
        lambda: flow.service_settled("cert-reloader"),
        timeout=120,
        every=2,
    )
    code, out = flow.verify(as_json=False)
    assert code == 0, out
    with capsys.disabled():
        print(f"\nforged manifest e2e: checks took {time.monotonic() - started:.1f} s")
