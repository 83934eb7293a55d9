"""Reading the installed copy and the Storage Box, with a pair certbot really issued (pebble)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.verify.checks import check_installed, check_published
from services.verify.observe import observe_installed, observe_published, within
from shared.certs import read_leaf
from shared.manifest import MANIFEST_NAME, FileEntry, Manifest
from tests.support.acme import Certbot, Pebble, SwagVolume

CERT = "STAR.iklim.co.full.crt"
KEY = "STAR.iklim.co_key.pem"


@dataclass
class Issued:
    fullchain: bytes
    key: bytes


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    root = tmp_path_factory.mktemp("acme")
    with Pebble(root / "pebble") as pebble:
        volume = SwagVolume(root / "swag")
        Certbot(pebble, volume).issue()
        yield Issued(
            (volume.live / "fullchain.pem").read_bytes(), (volume.live / "privkey.pem").read_bytes()
        )


def _publish(directory: Path, pair: Issued, generation: int = 3) -> Manifest:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CERT).write_bytes(pair.fullchain)
    (directory / KEY).write_bytes(pair.key)
    manifest = Manifest(
        generation=generation,
        published_at=datetime.now(UTC),
        cert=FileEntry.of(CERT, pair.fullchain),
        key=FileEntry.of(KEY, pair.key),
        leaf=read_leaf(pair.fullchain),
        publisher="test",
    )
    (directory / MANIFEST_NAME).write_bytes(manifest.to_json())
    return manifest


def test_a_committed_storage_box_and_its_installed_copy_agree(
    issued: Issued, tmp_path: Path
) -> None:
    manifest = _publish(tmp_path / "box", issued)
    installed_dir = tmp_path / "ssl"
    installed_dir.mkdir()
    (installed_dir / CERT).write_bytes(issued.fullchain)

    published = observe_published(tmp_path / "box", CERT, KEY)
    installed = observe_installed(installed_dir, CERT)

    assert published.state == "committed"
    assert published.generation == 3
    assert published.cert is not None
    assert published.cert.fingerprint == manifest.fingerprint
    assert installed.cert is not None
    assert installed.cert.fingerprint == manifest.fingerprint
    assert installed.cert.not_after == manifest.leaf.not_after
    assert check_published(published, reloader="r").ok
    assert check_installed(installed, published, distributor="d").ok


def test_a_half_uploaded_storage_box_is_not_committed(issued: Issued, tmp_path: Path) -> None:
    _publish(tmp_path / "box", issued)
    (tmp_path / "box" / CERT).write_bytes(issued.fullchain[: len(issued.fullchain) // 2])
    published = observe_published(tmp_path / "box", CERT, KEY)
    assert published.state.startswith("inconsistent")
    assert CERT in published.state
    assert not check_published(published, reloader="r").ok


def test_an_installed_copy_of_another_certificate_fails(issued: Issued, tmp_path: Path) -> None:
    from tests.support.pki import CA

    _publish(tmp_path / "box", issued)
    other = CA("other")
    (tmp_path / "ssl").mkdir()
    (tmp_path / "ssl" / CERT).write_bytes(other.fullchain(other.leaf()))
    result = check_installed(
        observe_installed(tmp_path / "ssl", CERT),
        observe_published(tmp_path / "box", CERT, KEY),
        distributor="iklimco_cert-distributor",
    )
    assert not result.ok
    assert "differs from the Storage Box generation 3" in result.summary


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "is missing"), (b"", "empty"), (b"-----BEGIN CERTIFICATE-----\nMII", "truncated")],
)
def test_a_missing_or_broken_installed_file_is_explained(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    if content is not None:
        (tmp_path / CERT).write_bytes(content)
    facts = observe_installed(tmp_path, CERT)
    assert facts.cert is None
    assert words in facts.error


def test_an_unmounted_storage_box_is_explained(tmp_path: Path) -> None:
    facts = observe_published(tmp_path / "not-mounted", CERT, KEY)
    assert "mount missing" in facts.error
    assert "mounted at" in check_published(facts, reloader="r").next_step


def test_a_read_that_hangs_is_reported_not_waited_for(tmp_path: Path) -> None:
    # A FIFO with no writer blocks its reader as a dead network mount does: a real blocked read.
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    fifo = ssl_dir / CERT
    os.mkfifo(fifo)
    started = time.monotonic()
    facts = within(0.5, str(ssl_dir), str(ssl_dir), lambda: observe_installed(ssl_dir, CERT))
    try:
        assert time.monotonic() - started < 10
        assert facts.cert is None
        assert facts.error == (
            f"reading {ssl_dir} has not returned in 0.5 s (a network mount not answering?)"
        )
    finally:
        # Let the reader left behind finish: a writer that opens and closes gives it EOF.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    # A read that returns in time is passed through unchanged.
    ok = within(5, "x", "x", lambda: observe_installed(tmp_path / "none", CERT))
    assert ok.error == f"{CERT} is missing"
