"""Atomic replacement: complete files under final names, modes from the start, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shared.atomic import TEMP_MARKER, remove_stale_temporaries, temp_name, write_file_atomic
from shared.errors import StorageError


def test_write_replaces_the_file_with_the_requested_mode(tmp_path: Path) -> None:
    final = tmp_path / "key.pem"
    final.write_bytes(b"old")
    write_file_atomic(final, b"new contents", mode=0o600)
    assert final.read_bytes() == b"new contents"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    write_file_atomic(final, b"x" * 300_000, mode=0o640, uid=os.getuid(), gid=os.getgid())
    assert final.stat().st_size == 300_000
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "cert.pem"
    final.write_bytes(b"old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt  # what SIGINT looks like halfway through the write

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(final, b"new")
    monkeypatch.undo()
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_os_errors_become_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        write_file_atomic(tmp_path / "missing-dir" / "cert.pem", b"data")
    assert info.value.errno_name == "ENOENT"
    assert "cert.pem" in str(info.value)
    with pytest.raises(StorageError):
        remove_stale_temporaries(tmp_path / "missing-dir")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    keep = tmp_path / "STAR.iklim.co.full.crt"
    keep.write_bytes(b"cert")
    stale = temp_name(keep)
    stale.write_bytes(b"half")
    stale_dir = tmp_path / f".d{TEMP_MARKER}1"
    stale_dir.mkdir()
    (stale_dir / "f").write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale.name, stale_dir.name])
    assert [p.name for p in tmp_path.iterdir()] == [keep.name]
    assert stale.name.startswith(".")
    assert TEMP_MARKER in stale.name
