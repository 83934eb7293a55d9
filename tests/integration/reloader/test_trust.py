"""The trust check with a real ACME chain: certbot's fullchain from pebble verifies against
pebble's root for the Vault name, and is refused (nothing published, the last good pair stays)
against a bundle of another CA."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx

from tests.support.acme import Pebble
from tests.support.certflow_procs import wait_for
from tests.support.pki import CA

from .conftest import World


def _pebble_root(pebble: Pebble, into: Path) -> Path:
    """The root pebble issues under (random per run), from its management endpoint."""
    config = json.loads((pebble.workdir / "pebble.json").read_text())
    address = config["pebble"]["managementListenAddress"]
    pem = httpx.get(
        f"https://{address}/roots/0",
        verify=ssl.create_default_context(cafile=str(pebble.ca_bundle)),
        timeout=10,
    )
    pem.raise_for_status()
    into.write_bytes(pem.content)
    return into


def test_a_real_chain_verifies_for_the_vault_name_and_a_stranger_bundle_refuses_it(
    world: World, pebble: Pebble
) -> None:
    stranger = world.tmp / "stranger.pem"
    stranger.write_bytes(CA("not pebble").root_pem)
    trusted = _pebble_root(pebble, world.tmp / "pebble-root.pem")

    # Against a bundle the chain does not lead to: refused, nothing published.
    refusing = world.reloader(
        RELOADER_TRUST_BUNDLE=str(stranger), RELOADER_TRUST_NAME="vault.iklim.co"
    )
    refusing.wait_check("rejected")
    source = refusing.health()["checks"]["source"]
    assert source["reason"] == "untrusted"
    assert "unknown issuer" in source["message"]
    assert str(stranger) in source["message"]
    assert refusing.metric("certflow_reloader_validation_failures_total", reason="untrusted") == 1
    assert not world.storage.snapshot().committed
    assert refusing.terminate() == 0

    # Against pebble's root, for the Vault name under the wildcard: published.
    trusting = world.reloader(
        RELOADER_TRUST_BUNDLE=str(trusted), RELOADER_TRUST_NAME="vault.iklim.co"
    )
    wait_for("published", lambda: world.storage.generation() == 1)
    assert trusting.health()["checks"]["source"]["status"] == "ok"
    assert trusting.terminate() == 0
    published = world.storage.manifest_raw()

    # A renewal checked against the stranger bundle again: refused, the last good pair stays.
    refusing = world.reloader(RELOADER_TRUST_BUNDLE=str(stranger))
    world.certbot.renew()
    wait_for(
        "the renewal refused",
        lambda: refusing.events("cert.rejected"),
    )
    assert refusing.events("cert.rejected")[-1]["reason"] == "untrusted"
    assert world.storage.manifest_raw() == published
    assert refusing.terminate() == 0
