"""Atomic file replacement: a file under its final name is always complete.

Write to a hidden temporary in the same directory, fsync, set mode/owner, ``rename`` over the
final name, fsync the directory. A crash leaves the old file or the new one, plus at worst a
temporary that :func:`remove_stale_temporaries` cleans on the next start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from shared.errors import StorageError

TEMP_MARKER = ".certflow-tmp-"


def temp_name(final: Path) -> Path:
    return final.parent / f".{final.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some network filesystems (sshfs, CIFS) refuse fsync on directories; the rename itself
        # is still atomic there, so this is not worth failing a publish for.
        if exc.errno not in {22, 95}:  # EINVAL, EOPNOTSUPP
            raise
    finally:
        os.close(fd)


def write_file_atomic(
    final: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Replace ``final`` with ``data`` atomically. Raises :class:`StorageError` on OS trouble."""
    tmp = temp_name(final)
    try:
        # Created with the final mode from the start: a key is never readable by others, even
        # for an instant under its temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError.from_oserror(f"writing {final.name}", exc) from exc
    except BaseException:
        # SIGTERM/KeyboardInterrupt mid-write: never leave the temporary behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_temporaries(directory: Path) -> list[str]:
    """Delete temporaries left by a crash. Returns the names removed."""
    removed: list[str] = []
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise StorageError.from_oserror(f"listing {directory}", exc) from exc
    for entry in entries:
        if TEMP_MARKER in entry.name:
            try:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_dir() and not entry.is_symlink():
                        for child in entry.iterdir():
                            child.unlink()
                        entry.rmdir()
                    else:
                        entry.unlink()
            except OSError as exc:  # EIO/ENOTCONN from a mount going away mid-cleanup
                raise StorageError.from_oserror(f"removing {entry.name}", exc) from exc
            removed.append(entry.name)
    return removed
