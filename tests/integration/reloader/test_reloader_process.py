"""``certflow reloader`` as a real process against real certbot renewals (pebble on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from shared.atomic import TEMP_MARKER
from shared.storagebox import State
from tests.integration.reloader.conftest import CERT_NAME, KEY_NAME, World
from tests.support.certflow_procs import wait_for
from tests.support.pki import key_pem, new_key


def _pem_body(key: bytes) -> str:
    """The base64 body of a PEM key: what must never show up in a log."""
    lines = key.decode().strip().splitlines()
    return "".join(lines[1:-1])


def _assert_no_key_material(world: World, text: str) -> None:
    for path in sorted(world.volume.archive.glob("privkey*.pem")):
        body = _pem_body(path.read_bytes())
        assert body not in text.replace("\n", "").replace("\\n", "")
        for line in path.read_text().splitlines()[1:-1]:
            assert line not in text


def _committed_with_live(world: World) -> int | None:
    snap = world.storage.snapshot()
    if snap.state is not State.COMMITTED or snap.manifest is None:
        return None
    if (snap.cert, snap.key) != world.live_pair():
        return None
    return snap.manifest.generation


def test_issuance_and_renewals_are_each_published_once_and_restart_does_not_republish(
    world: World,
) -> None:
    reloader = world.reloader(RELOADER_CHECK_INTERVAL="1")
    generations = [wait_for("first publish", lambda: _committed_with_live(world))]
    for _ in range(2):
        world.certbot.renew()
        previous = generations[-1]

        def newer(p: int = previous) -> int | None:
            g = _committed_with_live(world)
            return g if g is not None and g > p else None

        generations.append(wait_for("renewal published", newer))
    assert generations == [1, 2, 3]
    # One more periodic check after the last renewal, then count: one renewal is one publish.
    reloader.wait_check("current", after=time.time())
    assert reloader.metric("certflow_reloader_publishes_total") == 3.0
    assert [e["generation"] for e in reloader.events("cert.published")] == [1, 2, 3]

    snap = world.storage.snapshot()
    cert, key = world.live_pair()
    assert (world.storage.dir / CERT_NAME).read_bytes() == cert
    assert (world.storage.dir / KEY_NAME).read_bytes() == key
    assert stat.S_IMODE((world.storage.dir / KEY_NAME).stat().st_mode) == 0o600
    assert snap.manifest is not None
    health = reloader.health()
    assert health["status"] == "ok"
    assert health["checks"]["storage"]["generation"] == 3
    assert health["checks"]["storage"]["cert_md5"] == snap.manifest.cert.md5
    assert health["checks"]["source"]["fingerprint"] == snap.manifest.fingerprint
    assert "key_md5" not in json.dumps(health)  # /health is unauthenticated
    assert health["checks"]["last_publish"]["generation"] == 3
    assert reloader.metric("certflow_cert_not_after_timestamp_seconds") == (
        snap.manifest.leaf.not_after.timestamp()
    )
    assert reloader.terminate() == 0

    manifest_before = world.storage.manifest_raw()
    again = world.reloader()
    again.wait_check("current")
    assert again.metric("certflow_reloader_publishes_total") == 0.0
    assert world.storage.manifest_raw() == manifest_before
    assert again.terminate() == 0
    _assert_no_key_material(world, world.all_logs())


def test_damaged_storage_file_is_repaired_on_the_next_check(world: World) -> None:
    reloader = world.reloader(RELOADER_CHECK_INTERVAL="0.5")
    wait_for("first publish", lambda: _committed_with_live(world))
    # Half an upload, as a crashed rsync or a full disk might leave it.
    damaged = world.storage.dir / KEY_NAME
    damaged.write_bytes(damaged.read_bytes()[:50])
    assert world.storage.snapshot().state is State.INCONSISTENT
    generation = wait_for(
        "repair", lambda: g if (g := _committed_with_live(world)) and g > 1 else None
    )
    assert generation == 2
    assert stat.S_IMODE(damaged.stat().st_mode) == 0o600
    # The event is logged once the commit is done, so it can trail the manifest by a moment.
    wait_for("the repair event", lambda: len(reloader.events("cert.published")) >= 2)
    assert [e["action"] for e in reloader.events("cert.published")] == ["publish", "repair"]
    assert reloader.terminate() == 0


def test_an_invalid_renewal_is_refused_and_the_old_pair_stays(world: World) -> None:
    reloader = world.reloader(RELOADER_INVALID_GRACE="3", RELOADER_CHECK_INTERVAL="0.5")
    wait_for("first publish", lambda: _committed_with_live(world))
    published = (world.storage.dir / CERT_NAME).read_bytes(), world.storage.manifest_raw()

    # A renewal whose key is not the certificate's: new archive generation, symlinks repointed
    # the way certbot does it.
    archive = world.volume.archive
    (archive / "fullchain2.pem").write_bytes((archive / "fullchain1.pem").read_bytes())
    (archive / "privkey2.pem").write_bytes(key_pem(new_key()))
    os.chmod(archive / "privkey2.pem", 0o600)
    for name in ("fullchain", "privkey"):
        link = world.volume.live / f"{name}.pem"
        tmp = world.volume.live / f"{name}.pem.new"
        tmp.symlink_to(f"../../archive/iklim.co/{name}2.pem")
        tmp.replace(link)

    def refused() -> bool:
        source = reloader.health()["checks"]["source"]
        return bool(source["status"] != "ok" and source.get("reason") == "key_mismatch")

    wait_for("the refusal in /health", refused)
    body = reloader.health()
    assert "key_mismatch" in body["checks"]["source"]["message"]
    assert body["checks"]["source"]["status"] in {"degraded", "failing"}
    assert (
        reloader.metric("certflow_reloader_validation_failures_total", reason="key_mismatch") == 1.0
    )
    # Past the grace period an invalid source makes the service fail its health check.
    response = wait_for(
        "failing after the grace period",
        lambda: r if (r := reloader.health_response()).status_code == 503 else None,
    )
    assert response.json()["checks"]["source"]["status"] == "failing"
    # Checked many times, logged once.
    reloader.wait_check("rejected", after=time.time())
    assert len(reloader.events("cert.rejected")) == 1
    assert ((world.storage.dir / CERT_NAME).read_bytes(), world.storage.manifest_raw()) == published
    assert reloader.metric("certflow_reloader_publishes_total") == 1.0

    # certbot's next real renewal is accepted again.
    world.certbot.renew()
    wait_for("the next valid renewal", lambda: _committed_with_live(world) == 2)
    assert reloader.health()["checks"]["source"]["status"] == "ok"
    assert reloader.terminate() == 0
    _assert_no_key_material(world, world.all_logs())
    key_text = (archive / "privkey2.pem").read_bytes()
    serialization.load_pem_private_key(key_text, None)  # the refused key was a real key


def test_target_dir_removed_and_restored_while_running(world: World) -> None:
    reloader = world.reloader(RELOADER_CHECK_INTERVAL="0.5", RELOADER_RETRY_MAX="0.5")
    wait_for("first publish", lambda: _committed_with_live(world))
    away = world.storage.dir.parent / "unmounted"
    world.storage.dir.rename(away)

    def storage_failing() -> dict[str, Any] | None:
        body = reloader.health()
        check = body["checks"]["storage"]
        return body if check["status"] == "failing" else None

    body = wait_for("storage failing", storage_failing)
    assert body["status"] == "failing"
    assert "not a directory" in body["checks"]["storage"]["message"]
    assert body["checks"]["storage"]["since"]
    assert reloader.proc is not None
    assert reloader.proc.poll() is None

    # The mount comes back empty (a fresh Storage Box): republished, the generation still grows.
    world.storage.dir.mkdir()
    generation = wait_for("republished", lambda: _committed_with_live(world))
    assert generation == 2
    wait_for("health ok again", lambda: reloader.health()["status"] == "ok")
    assert len(reloader.events("storage.unavailable")) == 1
    assert reloader.terminate() == 0
    shutil.rmtree(away)


def test_once_exit_codes(world: World) -> None:
    first = world.once()
    assert first.returncode == 0, first.stderr
    assert world.storage.generation() == 1
    current = world.once()
    assert current.returncode == 0, current.stderr
    assert world.storage.generation() == 1

    (world.volume.live / "privkey.pem").unlink()
    (world.volume.live / "privkey.pem").write_bytes(key_pem(new_key()))
    refused = world.once()
    assert refused.returncode == 1
    assert "key_mismatch" in refused.stderr
    assert world.storage.generation() == 1

    missing = world.once(RELOADER_TARGET_DIR=str(world.tmp / "no-such-mount"))
    assert missing.returncode == 1
    assert "storage_error" in missing.stderr

    bad = world.once(RELOADER_KEY_MODE="0644")
    assert bad.returncode == 2
    assert "RELOADER_KEY_MODE" in bad.stderr
    for result in (first, current, refused, missing):
        _assert_no_key_material(world, result.stdout + result.stderr)
        assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_sigterm_exits_zero_and_leaves_no_temporaries(world: World) -> None:
    reloader = world.reloader()
    wait_for("first publish", lambda: _committed_with_live(world))
    world.certbot.renew()
    # SIGTERM as soon as the renewal lands: whatever the reloader was doing, it ends cleanly.
    assert reloader.terminate() == 0
    assert not [p for p in world.storage.dir.iterdir() if TEMP_MARKER in p.name]
    assert world.storage.snapshot().state is State.COMMITTED
    assert reloader.events("service.stopped")


def test_polling_only_detects_a_renewal(world: World) -> None:
    reloader = world.reloader(RELOADER_POLL_ONLY="true", RELOADER_CHECK_INTERVAL="0.5")
    wait_for("first publish", lambda: _committed_with_live(world))
    assert not reloader.events("watch.started")
    world.certbot.renew()
    assert wait_for("renewal published", lambda: _committed_with_live(world) == 2)
    assert reloader.terminate() == 0


def test_archive_left_in_place_only_symlink_escape_is_refused(world: World, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cert, _key = world.live_pair()
    (outside / "privkey.pem").write_bytes(key_pem(new_key()))
    link = world.volume.live / "privkey.pem"
    link.unlink()
    link.symlink_to(outside / "privkey.pem")
    result = world.once()
    assert result.returncode == 1
    assert "unsafe_path" in result.stderr
    assert world.storage.snapshot().state is State.EMPTY
    assert cert  # the certificate alone is never published without its key
