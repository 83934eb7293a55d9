"""kill -9 of the reloader at random points while it publishes: never a mixed committed pair."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter

from shared.atomic import TEMP_MARKER
from shared.manifest import MANIFEST_NAME, FileEntry
from shared.storagebox import State
from tests.integration.reloader.conftest import CERT_NAME, KEY_NAME, ROOT, World

ITERATIONS = 30


def _point_live_at(world: World, generation: int) -> None:
    for name in ("cert", "chain", "fullchain", "privkey"):
        link = world.volume.live / f"{name}.pem"
        tmp = world.volume.live / f".{name}.pem.swap"
        tmp.symlink_to(f"../../archive/iklim.co/{name}{generation}.pem")
        tmp.replace(link)


def test_kill_9_at_random_points_never_commits_a_mixed_pair(world: World) -> None:
    world.certbot.renew()
    archive = world.volume.archive
    pairs = {
        g: (
            (archive / f"fullchain{g}.pem").read_bytes(),
            (archive / f"privkey{g}.pem").read_bytes(),
        )
        for g in (1, 2)
    }
    certs = {p[0] for p in pairs.values()}
    keys = {p[1] for p in pairs.values()}
    # Alternating between the two generations means every other pair expires a little earlier.
    env = world.env(RELOADER_ALLOW_DOWNGRADE="true")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services", "reloader", "--once"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # When, after start, a complete pass commits here (interpreter start-up and imports come
    # first). Kills are aimed around that instant and the aim follows what the last kill hit
    # (old pair: later, new pair: earlier), with random jitter, so most land near or inside the
    # few milliseconds of the publish.
    began = time.time()
    assert start().wait(60) == 0
    commit_at = (world.storage.dir / MANIFEST_NAME).stat().st_mtime - began
    rng = random.Random()
    aim = commit_at
    seen: Counter[str] = Counter()
    for i in range(ITERATIONS):
        _point_live_at(world, 1 + i % 2)
        proc = start()
        time.sleep(max(0.0, aim + rng.uniform(-0.01, 0.01)))
        proc.kill()
        proc.wait(10)
        seen["finished" if proc.returncode == 0 else "killed"] += 1

        snap = world.storage.snapshot()
        seen[snap.state.value] += 1
        assert snap.state in {State.COMMITTED, State.INCONSISTENT}, snap.detail
        assert snap.manifest is not None
        # The manifest only ever names a pair that exists as a pair: never cert of one
        # generation with the key of the other.
        named = [
            g
            for g, (cert, key) in pairs.items()
            if snap.manifest.cert == FileEntry.of(CERT_NAME, cert)
            and snap.manifest.key == FileEntry.of(KEY_NAME, key)
        ]
        assert len(named) == 1, "manifest names a mixed pair"
        if snap.state is State.COMMITTED:
            assert (snap.cert, snap.key) == pairs[named[0]]
            landed = "new pair" if named[0] == 1 + i % 2 else "old pair"
            seen[landed] += 1
            aim += rng.uniform(0.0, 0.01) * (1 if landed == "old pair" else -1)
        # Files under their final names are always complete (one of the two versions).
        assert (world.storage.dir / CERT_NAME).read_bytes() in certs
        assert (world.storage.dir / KEY_NAME).read_bytes() in keys

    # The next complete run repairs whatever the last kill left, and cleans temporaries.
    final = world.once(RELOADER_ALLOW_DOWNGRADE="true")
    assert final.returncode == 0, final.stderr
    snap = world.storage.snapshot()
    assert snap.state is State.COMMITTED
    assert (snap.cert, snap.key) == world.live_pair()
    assert not [p for p in world.storage.dir.iterdir() if TEMP_MARKER in p.name]
    print(f"kill -9 outcomes over {ITERATIONS} runs: {dict(seen)}")
