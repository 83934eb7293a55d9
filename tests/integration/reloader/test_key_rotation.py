"""Manifest key rotation with real processes: a certbot-renewed SWAG volume, ``certflow reloader``
and ``certflow distributor`` restarted with new key settings at each operator step (as a Swarm
secret change redeploys them). No pair is refused during the three steps; afterwards a manifest
signed with the dropped key is refused.
"""

from __future__ import annotations

from pathlib import Path

from shared.atomic import write_file_atomic
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MacKeys, key_id, manifest_signer, sign_manifest
from tests.support.certflow_procs import DistributorProcess, wait_for
from tests.support.mac_keys import write_key_file

from .conftest import CERT_NAME, KEY_NAME, ReloaderProcess, World


def _key_file(path: Path) -> bytes:
    return write_key_file(path)


class Node:
    """One distributor, restarted with new settings; every run's log kept for the assertions."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.target = world.tmp / "node-ssl"
        self.runs: list[DistributorProcess] = []

    def start(self, keys: str) -> DistributorProcess:
        if self.runs:
            assert self.runs[-1].stop() == 0
        run = DistributorProcess(
            self.world.storage.dir,
            self.target,
            self.world.tmp / f"distributor-{len(self.runs)}.log",
            CERTFLOW_MANIFEST_KEY_FILES=keys,
        )
        self.runs.append(run)
        return run

    @property
    def current(self) -> DistributorProcess:
        return self.runs[-1]

    def wait_generation(self, generation: int) -> None:
        wait_for(f"generation {generation} installed", lambda: self._at(generation))

    def _at(self, generation: int) -> bool:
        return self.current.generation() == generation and self.sync_ok()

    def sync_ok(self) -> bool:
        return bool(self.current.health()["checks"]["sync"]["status"] == "ok")


def test_rotating_the_manifest_key_refuses_nothing_then_the_old_key_is_refused(
    world: World,
) -> None:
    old_path, new_path = world.tmp / "key-old", world.tmp / "key-new"
    old, new = _key_file(old_path), _key_file(new_path)
    node = Node(world)
    reloaders: list[ReloaderProcess] = []

    def reloader(keys: str) -> ReloaderProcess:
        if reloaders:
            assert reloaders[-1].terminate() == 0
        reloaders.append(world.reloader(CERTFLOW_MANIFEST_KEY_FILES=keys))
        return reloaders[-1]

    def signer() -> str | None:
        return manifest_signer((world.storage.dir / MANIFEST_NAME).read_bytes())

    # Before: one key everywhere.
    reloader(str(old_path))
    node.start(str(old_path))
    node.wait_generation(1)
    assert signer() == key_id(old)

    # Step 1: the new key is accepted everywhere; the reloader still signs with the old one.
    node.start(f"{old_path},{new_path}")
    reloader(f"{old_path},{new_path}")
    node.wait_generation(1)
    world.certbot.renew()
    node.wait_generation(2)
    assert signer() == key_id(old)

    # Step 2: the new key signs. The committed manifest is signed again at once (same
    # generation), so the old key can go without any node seeing an unsigned-for-it pair.
    r = reloader(f"{new_path},{old_path}")
    wait_for("the manifest signed with the new key", lambda: signer() == key_id(new))
    assert r.events("manifest.resigned")[0]["key_id"] == key_id(new)
    assert node.sync_ok()
    assert node.current.generation() == 2
    world.certbot.renew()
    node.wait_generation(3)
    assert signer() == key_id(new)

    # Step 3: the old key is dropped everywhere.
    node.start(str(new_path))
    reloader(str(new_path))
    node.wait_generation(3)
    reloaders[-1].wait_check("current")
    assert reloaders[-1].health()["checks"]["storage"]["signed_by"] == key_id(new)

    # No refusal anywhere during the rotation.
    for run in node.runs:
        assert run.events("manifest.refused") == []
        assert run.events("cert.refused") == []
    for proc in reloaders:
        assert proc.events("manifest.refused") == []
        assert proc.events("cert.rejected") == []

    # Afterwards a manifest signed with the dropped key (say, a stale copy someone restores) is
    # refused, and the node keeps generation 3.
    installed = (node.target / CERT_NAME).read_bytes(), (node.target / KEY_NAME).read_bytes()
    raw = (world.storage.dir / MANIFEST_NAME).read_bytes()
    write_file_atomic(world.storage.dir / MANIFEST_NAME, sign_manifest(MacKeys.of(old), raw))

    def refused() -> dict[str, object] | None:
        check: dict[str, object] = node.current.health()["checks"]["sync"]
        return check if check["status"] == "failing" else None

    check = wait_for("the old-key manifest refused", refused)
    assert check["reason"] == "unknown_key"
    assert check["key_id"] == key_id(old)
    assert key_id(old) in str(check["message"])
    assert ((node.target / CERT_NAME).read_bytes(), (node.target / KEY_NAME).read_bytes()) == (
        installed
    )
    assert node.current.generation() == 3
    assert node.current.events("manifest.refused")[0]["key_id"] == key_id(old)
    assert node.current.stop() == 0
    logs = world.all_logs() + "".join(run.logs() for run in node.runs)
    for secret in (old, new):
        assert secret.hex() not in logs
