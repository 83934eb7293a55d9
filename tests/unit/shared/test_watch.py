"""The change watcher on real inotify: a burst is one wake-up, own reads and other dirs are not.

The reloader watches certbot's tree recursively with a debounce; the distributor watches the flat
Storage Box directory with a short settle time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.watch import ChangeWatcher, Wake


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, ChangeWatcher]]:
    root = tmp_path / "letsencrypt"
    (root / "live" / "iklim.co").mkdir(parents=True)
    (root / "archive" / "iklim.co").mkdir(parents=True)
    (root / "renewal").mkdir()
    watcher = ChangeWatcher(
        root,
        (root / "live" / "iklim.co", root / "archive" / "iklim.co"),
        debounce=0.3,
    )
    assert watcher.ensure_started()
    assert watcher.watching
    try:
        yield root, watcher
    finally:
        watcher.stop()


def _renew(root: Path, n: int) -> None:
    archive, live = root / "archive" / "iklim.co", root / "live" / "iklim.co"
    for name in ("cert", "chain", "fullchain", "privkey"):
        (archive / f"{name}{n}.pem").write_bytes(b"x" * 100)
    for name in ("cert", "chain", "fullchain", "privkey"):
        tmp = live / f"{name}.pem.new"
        tmp.symlink_to(f"../../archive/iklim.co/{name}{n}.pem")
        tmp.replace(live / f"{name}.pem")


def test_a_certbot_style_burst_is_one_wake_up(layout: tuple[Path, ChangeWatcher]) -> None:
    root, watcher = layout
    stop = threading.Event()
    _renew(root, 1)
    assert watcher.wait(stop, 10) is Wake.CHANGE
    assert watcher.wait(stop, 1.0) is Wake.TIMER


def test_reading_the_files_does_not_wake_it(layout: tuple[Path, ChangeWatcher]) -> None:
    root, watcher = layout
    _renew(root, 1)
    stop = threading.Event()
    assert watcher.wait(stop, 10) is Wake.CHANGE
    # On a loaded machine the burst's last events can arrive after the debounce; let them pass
    # first, so that only the reads below are under test.
    for _ in range(10):
        if watcher.wait(stop, 1.0) is Wake.TIMER:
            break
    for name in ("fullchain", "privkey"):
        (root / "live" / "iklim.co" / f"{name}.pem").read_bytes()
    assert watcher.wait(stop, 1.0) is Wake.TIMER


def test_other_directories_are_ignored(layout: tuple[Path, ChangeWatcher]) -> None:
    root, watcher = layout
    (root / "renewal" / "iklim.co.conf").write_text("x")
    (root / "live" / "iklim.co.other").mkdir()
    assert watcher.wait(threading.Event(), 1.0) is Wake.TIMER


def test_stop_interrupts_the_wait(layout: tuple[Path, ChangeWatcher]) -> None:
    _, watcher = layout
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert watcher.wait(stop, 30) is Wake.STOP


def test_a_root_created_later_is_watched_once_it_exists(tmp_path: Path) -> None:
    root = tmp_path / "letsencrypt"
    watcher = ChangeWatcher(root, (root / "live" / "iklim.co",), debounce=0.1)
    try:
        assert not watcher.ensure_started()
        assert not watcher.watching
        (root / "live" / "iklim.co").mkdir(parents=True)
        assert watcher.ensure_started()
        assert watcher.watching
        stop = threading.Event()
        (root / "live" / "iklim.co" / "fullchain.pem").write_bytes(b"x")
        assert watcher.wait(stop, 5) is Wake.CHANGE
    finally:
        watcher.stop()


def test_polling_only_never_starts_inotify(tmp_path: Path) -> None:
    watcher = ChangeWatcher(tmp_path, (tmp_path,), debounce=0.1, use_inotify=False)
    assert not watcher.ensure_started()
    assert not watcher.watching
    (tmp_path / "x").write_bytes(b"x")
    assert watcher.wait(threading.Event(), 0.3) is Wake.TIMER


def test_a_flat_directory_wakes_on_its_own_entries_only(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "sub").mkdir(parents=True)
    watcher = ChangeWatcher(box, debounce=0.05, recursive=False)
    try:
        assert watcher.ensure_started()
        stop = threading.Event()
        (box / "sub" / "deeper.pem").write_bytes(b"x")
        assert watcher.wait(stop, 0.5) is Wake.TIMER
        (box / "certflow-manifest.json").write_bytes(b"{}")
        assert watcher.wait(stop, 5) is Wake.CHANGE
        (box / "certflow-manifest.json").read_bytes()
        assert watcher.wait(stop, 0.5) is Wake.TIMER
    finally:
        watcher.stop()
