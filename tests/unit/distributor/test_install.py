"""The pair installer: one rename publishes both files; crashes and readers never see a mix."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.distributor.install import DATA_LINK, PairInstaller
from shared.atomic import TEMP_MARKER
from shared.manifest import MANIFEST_NAME, Manifest
from tests.support.boxes import CERT, KEY, Pair, make_pair, publish
from tests.support.pki import CA

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    ca = CA()
    return [make_pair(ca, generation) for generation in (1, 2, 3)]


def installer(target: Path, **kwargs: object) -> PairInstaller:
    return PairInstaller(target, cert_name=CERT, key_name=KEY, **kwargs)  # type: ignore[arg-type]


def read_final(target: Path) -> tuple[bytes, bytes, Manifest]:
    return (
        (target / CERT).read_bytes(),
        (target / KEY).read_bytes(),
        Manifest.from_json((target / MANIFEST_NAME).read_bytes()),
    )


def test_install_publishes_both_names_as_links_into_one_generation(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    inst = installer(tmp_path)
    result = inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    assert os.readlink(tmp_path / DATA_LINK) == result.directory
    for name in (CERT, KEY, MANIFEST_NAME):
        assert os.readlink(tmp_path / name) == f"{DATA_LINK}/{name}"
    cert, key, manifest = read_final(tmp_path)
    assert (cert, key) == (pairs[0].cert, pairs[0].key)
    assert manifest == pairs[0].manifest
    installed = inst.installed()
    assert installed is not None
    assert installed.manifest.generation == 1


def test_key_mode_and_owner_are_configurable(tmp_path: Path, pairs: list[Pair]) -> None:
    uid, gid = 4242, 4343  # as root we may hand the files to Vault's container user
    if os.geteuid() != 0:
        uid, gid = os.getuid(), os.getgid()
    inst = installer(tmp_path, key_mode=0o640, cert_mode=0o644, uid=uid, gid=gid)
    inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    key_stat = (tmp_path / KEY).stat()
    cert_stat = (tmp_path / CERT).stat()
    assert stat.S_IMODE(key_stat.st_mode) == 0o640
    assert stat.S_IMODE(cert_stat.st_mode) == 0o644
    assert (key_stat.st_uid, key_stat.st_gid) == (uid, gid)
    assert (cert_stat.st_uid, cert_stat.st_gid) == (uid, gid)


def test_default_key_mode_is_0600(tmp_path: Path, pairs: list[Pair]) -> None:
    installer(tmp_path).install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    assert stat.S_IMODE((tmp_path / KEY).stat().st_mode) == 0o600


def test_previous_generation_is_kept_and_older_ones_cleaned(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    inst = installer(tmp_path, keep=2)
    for pair in pairs:
        inst.install(pair.cert, pair.key, pair.manifest)
    assert len(inst.generations()) == 2
    assert read_final(tmp_path)[0] == pairs[-1].cert


def test_clean_start_removes_crash_leftovers(tmp_path: Path, pairs: list[Pair]) -> None:
    inst = installer(tmp_path)
    inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    half = tmp_path / f"..g000002-x{TEMP_MARKER}123"
    half.mkdir()
    (half / CERT).write_bytes(pairs[1].cert[:10])
    os.symlink("..g000002-x", tmp_path / f"{DATA_LINK}{TEMP_MARKER}9-ab")
    removed = inst.clean_start()
    assert sorted(removed) == sorted([half.name, f"{DATA_LINK}{TEMP_MARKER}9-ab"])
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]
    assert read_final(tmp_path)[0] == pairs[0].cert


def test_regular_files_from_an_old_install_are_replaced_by_links(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    (tmp_path / CERT).write_bytes(b"old")
    (tmp_path / KEY).write_bytes(b"old")
    installer(tmp_path).install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    assert (tmp_path / CERT).is_symlink()
    assert read_final(tmp_path)[1] == pairs[0].key


def test_damaged_installed_file_is_not_reported_as_installed(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    inst = installer(tmp_path)
    result = inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    (tmp_path / result.directory / CERT).write_bytes(b"damaged")
    assert inst.installed() is None


def _assert_one_complete_generation(target: Path, by_cert: dict[bytes, bytes]) -> int:
    before = os.readlink(target / DATA_LINK)
    cert, key, manifest = read_final(target)
    assert os.readlink(target / DATA_LINK) == before
    assert by_cert[cert] == key, "certificate and key from different generations"
    assert manifest.matches(cert, key), "local manifest does not describe the installed pair"
    return manifest.generation


def test_installer_killed_at_random_points_leaves_one_complete_generation(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    sources = []
    for index, pair in enumerate(pairs):
        source = tmp_path / f"src{index}"
        publish(source, pair)
        sources.append(str(source))
    target = tmp_path / "target"
    inst = installer(target)
    inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    by_cert = {p.cert: p.key for p in pairs}
    rng = random.Random(3)  # deterministic delays, not crypto
    seen_generations = set()
    interrupted = 0  # kills that left a half-written generation behind
    for _ in range(50):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.distributor.install_loop", str(target), *sources],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        threading.Event().wait(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        seen_generations.add(_assert_one_complete_generation(target, by_cert))
        if [p for p in target.iterdir() if TEMP_MARKER in p.name]:
            interrupted += 1
        inst.clean_start()
        assert not [p for p in target.iterdir() if TEMP_MARKER in p.name]
        assert len(inst.generations()) <= 2
        assert inst.installed() is not None
    # The kills landed at different points of the cycle, not always before the first install.
    assert len(seen_generations) > 1
    # ... and many of them mid-install (about half, measured), which is the point of the test.
    assert interrupted >= 5, interrupted


def test_reader_never_sees_a_mismatch_during_1000_swaps(tmp_path: Path, pairs: list[Pair]) -> None:
    """A reader opens both final names; if ``..data`` did not move meanwhile they must agree.

    (Two opens that straddle a swap are detected by the reader and retried, as any reader of a
    pair must; what may never happen is a mix within one generation or a partial file.)
    """
    inst = installer(tmp_path)
    inst.install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    by_cert = {p.cert: p.key for p in pairs}
    done = threading.Event()
    stats = {"consistent": 0, "straddled": 0, "mismatch": 0}

    def reader() -> None:
        while not done.is_set():
            before = os.readlink(tmp_path / DATA_LINK)
            try:
                cert = (tmp_path / CERT).read_bytes()
                key = (tmp_path / KEY).read_bytes()
            except FileNotFoundError:
                cert = key = b""
            after = os.readlink(tmp_path / DATA_LINK)
            if before != after:
                stats["straddled"] += 1
            elif by_cert.get(cert) == key:
                stats["consistent"] += 1
            else:
                stats["mismatch"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for swap in range(1000):
            pair = pairs[swap % len(pairs)]
            inst.install(pair.cert, pair.key, pair.manifest)
    finally:
        done.set()
        thread.join()
    assert stats["mismatch"] == 0, stats
    assert stats["consistent"] > 100, stats


def test_generation_dir_is_traversable_under_a_strict_umask(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    old = os.umask(0o077)
    try:
        result = installer(tmp_path).install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / result.directory).stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / KEY).stat().st_mode) == 0o600


def test_install_time_is_read_back_from_the_generation_name(
    tmp_path: Path, pairs: list[Pair]
) -> None:
    from datetime import UTC, datetime, timedelta

    from services.distributor.install import installed_at

    before = datetime.now(UTC)
    result = installer(tmp_path).install(pairs[0].cert, pairs[0].key, pairs[0].manifest)
    when = installed_at(result.directory)
    assert when is not None
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert installed_at("..data") is None
