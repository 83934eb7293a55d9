"""The manifest (commit point) and reading a committed pair back from a directory."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.certs import validate_pair
from shared.digests import Digests
from shared.errors import ManifestInvalid, StorageError
from shared.manifest import MANIFEST_NAME, FileEntry, Manifest
from shared.snapshot import Snapshot, State
from shared.storagebox import MAX_FILE_BYTES, read_snapshot
from tests.support.pki import CA

CERT, KEY = "STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem"


def _manifest(generation: int = 3) -> tuple[Manifest, bytes, bytes]:
    ca = CA()
    leaf = ca.leaf()
    cert, key = ca.fullchain(leaf), leaf.key_pem
    pair = validate_pair(cert, key, names=["iklim.co"], now=datetime.now(UTC))
    manifest = Manifest(
        generation=generation,
        published_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        cert=FileEntry.of(CERT, cert),
        key=FileEntry.of(KEY, key),
        leaf=pair.leaf,
        publisher="node-1",
    )
    return manifest, cert, key


def test_digests_are_md5_sha256_and_size() -> None:
    d = Digests.of(b"abc")
    assert d.md5 == "900150983cd24fb0d6963f7d28e17f72"
    assert d.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert d.size == 3


def test_manifest_round_trips_through_json() -> None:
    manifest, cert, key = _manifest()
    raw = manifest.to_json()
    doc = json.loads(raw)
    assert doc["generation"] == 3
    assert doc["files"]["cert"]["md5"] == Digests.of(cert).md5
    assert doc["leaf"]["sans"] == ["iklim.co", "*.iklim.co"]
    assert "PRIVATE" not in raw.decode()
    again = Manifest.from_json(raw)
    assert again == manifest
    assert again.matches(cert, key)
    assert not again.matches(key, cert)
    assert not again.matches(cert, key[:-1])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"schema": 2}',
        b'{"schema": 1}',
        b'{"schema": 1, "generation": "x"}',
    ],
)
def test_corrupt_manifests_raise_manifest_invalid(raw: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        Manifest.from_json(raw)


def test_manifest_generation_must_be_positive() -> None:
    manifest, _, _ = _manifest()
    doc = json.loads(manifest.to_json())
    doc["generation"] = 0
    with pytest.raises(ManifestInvalid, match="generation"):
        Manifest.from_json(json.dumps(doc).encode())
    doc["generation"] = 5
    del doc["files"]["key"]["sha256"]
    with pytest.raises(ManifestInvalid):
        Manifest.from_json(json.dumps(doc).encode())


def _write(
    directory: Path, manifest: Manifest | None, cert: bytes | None, key: bytes | None
) -> None:
    if manifest is not None:
        (directory / MANIFEST_NAME).write_bytes(manifest.to_json())
    if cert is not None:
        (directory / CERT).write_bytes(cert)
    if key is not None:
        (directory / KEY).write_bytes(key)


def test_snapshot_states(tmp_path: Path) -> None:
    manifest, cert, key = _manifest()

    def read() -> Snapshot:
        return read_snapshot(tmp_path, cert_name=CERT, key_name=KEY)

    assert read().state is State.EMPTY
    _write(tmp_path, manifest, cert, None)
    snap = read()
    assert snap.state is State.INCONSISTENT
    assert KEY in snap.detail
    _write(tmp_path, None, None, key)
    snap = read()
    assert snap.committed
    assert (snap.cert, snap.key, snap.manifest) == (cert, key, manifest)
    _write(tmp_path, None, cert[:-10], None)
    snap = read()
    assert snap.state is State.INCONSISTENT
    assert snap.detail == f"{CERT} differ from the manifest"
    assert snap.manifest == manifest
    (tmp_path / MANIFEST_NAME).write_bytes(b'{"schema": 1, "gen')
    assert read().state is State.CORRUPT


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        read_snapshot(tmp_path / "gone", cert_name=CERT, key_name=KEY)
    assert info.value.errno_name == "ENOENT"


def test_a_directory_in_place_of_a_file_is_a_storage_error(tmp_path: Path) -> None:
    manifest, cert, _ = _manifest()
    _write(tmp_path, manifest, cert, None)
    (tmp_path / KEY).mkdir()
    with pytest.raises(StorageError) as info:
        read_snapshot(tmp_path, cert_name=CERT, key_name=KEY)
    assert info.value.errno_name == "EISDIR"


def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    # Anyone who can write the Storage Box could leave a FIFO under the manifest's name; a plain
    # open() would block the distributor's pass until a writer came.
    os.mkfifo(tmp_path / MANIFEST_NAME)
    with pytest.raises(StorageError) as info:
        read_snapshot(tmp_path, cert_name=CERT, key_name=KEY)
    assert info.value.errno_name == "EINVAL"
    assert "not a regular file" in str(info.value)


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    manifest, cert, key = _manifest()
    _write(tmp_path, manifest, cert, key)
    (tmp_path / CERT).write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(StorageError) as info:
        read_snapshot(tmp_path, cert_name=CERT, key_name=KEY)
    assert info.value.errno_name == "EFBIG"


def test_an_unreadable_directory_is_a_storage_error_not_a_bare_oserror(tmp_path: Path) -> None:
    # Path.is_dir() swallows only "missing" errors; any other (here ENAMETOOLONG, on a dead
    # network mount EIO or ENOTCONN) must come out as a StorageError naming the errno, or the
    # service loop that expects StorageError would crash.
    with pytest.raises(StorageError) as info:
        read_snapshot(tmp_path / ("x" * 300), cert_name=CERT, key_name=KEY)
    assert info.value.errno_name == "ENAMETOOLONG"
