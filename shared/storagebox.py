"""Reading a committed pair from a directory that holds ``certflow-manifest.json``.

The reloader uses it to see what is published (change detection reads the Storage Box itself, not
memory); distributors use it to decide whether there is a new committed generation to install.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from shared.errors import ManifestInvalid, ManifestUnauthenticated, StorageError
from shared.manifest import MANIFEST_NAME, Manifest
from shared.manifest_auth import MacKeys, authenticate_manifest
from shared.snapshot import Snapshot, State

__all__ = ["Snapshot", "State", "read_snapshot"]


# A manifest, a chain or a key is a few KiB; anything far larger is not ours to load into memory.
MAX_FILE_BYTES = 1 << 20


def _read(path: Path) -> bytes | None:
    """The file's bytes; None when it does not exist.

    The Storage Box is writable by others: a FIFO under a file's name must not hang the pass
    (O_NONBLOCK opens it at once; then it is refused as not a regular file), nor may a huge file
    fill the memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError.from_oserror(f"reading {path.name}", exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            code = errno.EISDIR if stat.S_ISDIR(info.st_mode) else errno.EINVAL
            raise StorageError(
                f"reading {path.name} failed: not a regular file, refused",
                errno_name=errno.errorcode[code],
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StorageError.from_oserror(f"reading {path.name}", exc) from exc
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise StorageError(
            f"reading {path.name} failed: larger than {MAX_FILE_BYTES} bytes, refused",
            errno_name=errno.errorcode[errno.EFBIG],
        )
    return data


def read_snapshot(
    directory: Path, *, cert_name: str, key_name: str, keys: MacKeys | None = None
) -> Snapshot:
    """What ``directory`` holds now. Raises StorageError when the directory cannot be read.

    With ``keys``, the manifest is authenticated first: one whose MAC does not verify is reported
    as UNAUTHENTICATED and nothing it names is read or trusted.
    """
    try:
        # Not Path.is_dir(): it turns only "missing" errors into False and lets EIO/ENOTCONN from
        # a network mount whose server is gone escape as a bare OSError.
        is_dir = stat.S_ISDIR(directory.stat().st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as exc:
        raise StorageError.from_oserror(f"reading {directory}", exc) from exc
    if not is_dir:
        raise StorageError(
            f"{directory} is not a directory (mount missing?)",
            errno_name=errno.errorcode[errno.ENOENT],
        )
    raw = _read(directory / MANIFEST_NAME)
    if raw is None:
        return Snapshot(State.EMPTY, detail="no manifest")
    signer = None
    try:
        if keys is not None:
            signer = authenticate_manifest(keys, raw)
        manifest = Manifest.from_json(raw)
    except ManifestUnauthenticated as exc:
        return Snapshot(State.UNAUTHENTICATED, detail=str(exc), auth_error=exc)
    except ManifestInvalid as exc:
        return Snapshot(State.CORRUPT, detail=str(exc))
    cert = _read(directory / cert_name)
    key = _read(directory / key_name)
    if cert is None or key is None:
        missing = [n for n, d in ((cert_name, cert), (key_name, key)) if d is None]
        return Snapshot(
            State.INCONSISTENT, manifest, detail=f"missing {', '.join(missing)}", signer=signer
        )
    if not manifest.matches(cert, key):
        bad = [
            n
            for n, entry, data in (
                (cert_name, manifest.cert, cert),
                (key_name, manifest.key, key),
            )
            if not entry.matches(data)
        ]
        return Snapshot(
            State.INCONSISTENT,
            manifest,
            detail=f"{', '.join(bad)} differ from the manifest",
            signer=signer,
        )
    return Snapshot(State.COMMITTED, manifest, cert, key, signer=signer)
