"""Reading certbot's live dir: symlinks followed only inside the letsencrypt volume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.reloader.source import MAX_SIZE, read_source
from shared.errors import CertificateInvalid, Reason
from tests.support.pki import CA


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A certbot layout: live/iklim.co/*.pem -> ../../archive/iklim.co/*1.pem."""
    root = tmp_path / "etc" / "letsencrypt"
    live, archive = root / "live" / "iklim.co", root / "archive" / "iklim.co"
    live.mkdir(parents=True)
    archive.mkdir(parents=True)
    ca = CA()
    leaf = ca.leaf()
    (archive / "fullchain1.pem").write_bytes(ca.fullchain(leaf))
    (archive / "privkey1.pem").write_bytes(leaf.key_pem)
    for name in ("fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/iklim.co/{name}1.pem")
    return root


def _live(root: Path) -> Path:
    return root / "live" / "iklim.co"


def test_relative_symlinks_into_the_archive_are_followed(volume: Path) -> None:
    pair = read_source(_live(volume), volume)
    assert pair.cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert pair.key_path == (volume / "archive" / "iklim.co" / "privkey1.pem").resolve()
    assert pair.cert_digests.md5
    assert pair.key_digests.sha256


def test_plain_files_work_too(tmp_path: Path) -> None:
    (tmp_path / "fullchain.pem").write_bytes(b"c")
    (tmp_path / "privkey.pem").write_bytes(b"k")
    pair = read_source(tmp_path, tmp_path)
    assert (pair.cert, pair.key) == (b"c", b"k")


def test_symlink_loop_is_refused(volume: Path) -> None:
    live = _live(volume)
    (live / "privkey.pem").unlink()
    (live / "privkey.pem").symlink_to("loop-a")
    (live / "loop-a").symlink_to("privkey.pem")
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.UNSAFE_PATH
    assert "loop" in info.value.message


def test_symlink_outside_the_volume_is_refused(volume: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.pem"
    outside.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    live = _live(volume)
    (live / "privkey.pem").unlink()
    (live / "privkey.pem").symlink_to(os.path.relpath(outside, live))
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.UNSAFE_PATH
    assert "outside the letsencrypt volume" in info.value.message
    # Absolute links out are refused the same way (e.g. to /etc/hostname).
    (live / "fullchain.pem").unlink()
    (live / "fullchain.pem").symlink_to("/etc/hostname")
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.UNSAFE_PATH


def test_dangling_and_missing_files_are_missing(volume: Path) -> None:
    live = _live(volume)
    (volume / "archive" / "iklim.co" / "fullchain1.pem").unlink()
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.MISSING
    assert "dangling" in info.value.message
    with pytest.raises(CertificateInvalid) as info:
        read_source(volume / "live" / "other.org", volume)
    assert info.value.reason is Reason.MISSING


def test_non_regular_and_oversized_files_are_refused(volume: Path) -> None:
    live = _live(volume)
    (live / "fullchain.pem").unlink()
    (live / "fullchain.pem").mkdir()
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.UNSAFE_PATH
    (live / "fullchain.pem").rmdir()
    (live / "fullchain.pem").write_bytes(b"x" * (MAX_SIZE + 1))
    with pytest.raises(CertificateInvalid) as info:
        read_source(live, volume)
    assert info.value.reason is Reason.NOT_PEM
