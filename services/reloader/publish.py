"""Atomic publish to the Storage Box: certificate, key, then the manifest as the commit point.

Each file goes through :func:`shared.atomic.write_file_atomic` (temp in the same directory, fsync,
rename). A crash between the steps leaves files that do not match the manifest (readers see
``inconsistent`` and keep their installed pair) until the next run republishes; a manifest only
ever names a pair that was completely written before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.atomic import write_file_atomic
from shared.certs import ValidPair
from shared.manifest import MANIFEST_NAME, FileEntry, Manifest
from shared.manifest_auth import MacKeys, sign_manifest


@dataclass(frozen=True, slots=True)
class Target:
    directory: Path
    cert_name: str
    key_name: str
    cert_mode: int = 0o644
    key_mode: int = 0o600
    uid: int | None = None
    gid: int | None = None


def build_manifest(
    target: Target,
    cert: bytes,
    key: bytes,
    pair: ValidPair,
    *,
    generation: int,
    now: datetime,
    publisher: str,
) -> Manifest:
    return Manifest(
        generation=generation,
        published_at=now,
        cert=FileEntry.of(target.cert_name, cert),
        key=FileEntry.of(target.key_name, key),
        leaf=pair.leaf,
        publisher=publisher,
    )


def publish(
    target: Target,
    cert: bytes,
    key: bytes,
    pair: ValidPair,
    *,
    generation: int,
    now: datetime,
    publisher: str,
    after_step: Callable[[str], None] | None = None,
    keys: MacKeys | None = None,
) -> Manifest:
    """Write ``cert`` and ``key`` under their final names, then the manifest. Returns the manifest.

    ``after_step(name)`` runs after each file is in place (``cert``, ``key``, ``manifest``); the
    crash-point tests use it to stop the publish at every step. With ``keys`` the manifest carries
    a MAC by the signing key. Raises StorageError.
    """
    manifest = build_manifest(
        target, cert, key, pair, generation=generation, now=now, publisher=publisher
    )
    d = target.directory
    write_file_atomic(
        d / target.cert_name, cert, mode=target.cert_mode, uid=target.uid, gid=target.gid
    )
    if after_step:
        after_step("cert")
    write_file_atomic(
        d / target.key_name, key, mode=target.key_mode, uid=target.uid, gid=target.gid
    )
    if after_step:
        after_step("key")
    write_manifest(target, manifest, keys)
    if after_step:
        after_step("manifest")
    return manifest


def manifest_bytes(manifest: Manifest, keys: MacKeys | None) -> bytes:
    raw = manifest.to_json()
    return sign_manifest(keys, raw) if keys is not None else raw


def write_manifest(target: Target, manifest: Manifest, keys: MacKeys | None) -> None:
    """Write (or rewrite, signed with the current signing key) the manifest: the commit point."""
    write_file_atomic(
        target.directory / MANIFEST_NAME,
        manifest_bytes(manifest, keys),
        mode=0o644,
        uid=target.uid,
        gid=target.gid,
    )
