"""Test helper: put a committed pair on a directory the way the reloader does (manifest last)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import write_file_atomic
from shared.certs import leaf_info
from shared.manifest import MANIFEST_NAME, FileEntry, Manifest
from tests.support.pki import CA, Issued

CERT = "STAR.iklim.co.full.crt"
KEY = "STAR.iklim.co_key.pem"


@dataclass(frozen=True)
class Pair:
    cert: bytes
    key: bytes
    manifest: Manifest


def make_pair(
    ca: CA, generation: int, leaf: Issued | None = None, *, publisher: str = "test"
) -> Pair:
    leaf = leaf or ca.leaf()
    cert, key = ca.fullchain(leaf), leaf.key_pem
    manifest = Manifest(
        generation=generation,
        published_at=datetime.now(UTC),
        cert=FileEntry.of(CERT, cert),
        key=FileEntry.of(KEY, key),
        leaf=leaf_info(leaf.cert),
        publisher=publisher,
    )
    return Pair(cert, key, manifest)


def publish(directory: Path, pair: Pair, *, manifest: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_file_atomic(directory / CERT, pair.cert)
    write_file_atomic(directory / KEY, pair.key, mode=0o600)
    if manifest:
        write_file_atomic(directory / MANIFEST_NAME, pair.manifest.to_json())
