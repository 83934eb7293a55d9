"""The pair installer: both files change together, or not at all, even across ``kill -9``.

Layout of the target directory (the idea of Kubernetes' atomic writer for secret volumes)::

    ..g000007-20261128T124512.123456Z-1a2b/   a complete generation (never modified once named)
        STAR.iklim.co.full.crt, STAR.iklim.co_key.pem, certflow-manifest.json
    ..data -> ..g000007-...                    the one pointer; swapped by a single rename
    STAR.iklim.co.full.crt -> ..data/STAR.iklim.co.full.crt
    STAR.iklim.co_key.pem  -> ..data/STAR.iklim.co_key.pem
    certflow-manifest.json -> ..data/certflow-manifest.json   (the local manifest)

A generation is written into a temporary directory, fsynced, renamed to its final name, and only
then published by renaming a fresh symlink over ``..data``. A crash leaves either the old or the
new pointer, plus at worst a temporary that :meth:`PairInstaller.clean_start` removes. A reader
that opens both names while ``..data`` does not move gets one generation; the reload (restart or
SIGHUP) only happens after the swap, so Vault reads a consistent pair.
Older generations are kept (``keep``) for rollback.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import TEMP_MARKER, fsync_dir
from shared.errors import ManifestInvalid, StorageError
from shared.logs import get_logger
from shared.manifest import MANIFEST_NAME, Manifest

DATA_LINK = "..data"
_VERSION_DIR = re.compile(r"^\.\.g(?P<gen>\d+)-(?P<ts>\d{8}T\d{6}\.\d{6}Z)-[0-9a-f]+$")

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Installed:
    manifest: Manifest
    directory: str  # name of the version directory ``..data`` points to


def _version_key(name: str) -> str:
    match = _VERSION_DIR.match(name)
    return match.group("ts") if match else ""


def installed_at(directory: str) -> datetime | None:
    """When a generation directory was installed (its name carries the time, UTC)."""
    stamp = _version_key(directory)
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


class PairInstaller:
    def __init__(
        self,
        target: Path,
        *,
        cert_name: str,
        key_name: str,
        key_mode: int = 0o600,
        cert_mode: int = 0o644,
        uid: int | None = None,
        gid: int | None = None,
        keep: int = 2,
    ) -> None:
        if keep < 2:
            raise ValueError("keep must be at least 2 (the current and the previous generation)")
        self.target = target
        self.cert_name = cert_name
        self.key_name = key_name
        self.key_mode = key_mode
        self.cert_mode = cert_mode
        self.uid = uid
        self.gid = gid
        self.keep = keep

    # -- reading -------------------------------------------------------------------------------

    def current_dir(self) -> str | None:
        """The generation directory ``..data`` points to; None before the first install."""
        try:
            return os.readlink(self.target / DATA_LINK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError.from_oserror(f"reading {DATA_LINK}", exc) from exc

    def installed(self) -> Installed | None:
        """The installed generation, when it is complete and its files match its manifest."""
        directory = self.current_dir()
        if directory is None:
            return None
        base = self.target / directory
        try:
            manifest = Manifest.from_json((base / MANIFEST_NAME).read_bytes())
            cert = (base / self.cert_name).read_bytes()
            key = (base / self.key_name).read_bytes()
        except (FileNotFoundError, NotADirectoryError, ManifestInvalid):
            return None  # damaged or foreign content: the next install replaces it
        except OSError as exc:
            raise StorageError.from_oserror(f"reading installed pair in {base}", exc) from exc
        if not manifest.matches(cert, key):
            return None
        if not self._links_ok():
            return None
        return Installed(manifest=manifest, directory=directory)

    def generations(self) -> list[str]:
        """Complete generation directories, newest install first."""
        try:
            names = [e.name for e in self.target.iterdir() if _VERSION_DIR.match(e.name)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError.from_oserror(f"listing {self.target}", exc) from exc
        return sorted(names, key=_version_key, reverse=True)

    def _links_ok(self) -> bool:
        for name in (self.cert_name, self.key_name, MANIFEST_NAME):
            try:
                if os.readlink(self.target / name) != f"{DATA_LINK}/{name}":
                    return False
            except OSError:
                return False
        return True

    # -- writing -------------------------------------------------------------------------------

    def clean_start(self) -> list[str]:
        """Remove temporaries a crash left behind and generations beyond ``keep``."""
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            removed = [e.name for e in self.target.iterdir() if TEMP_MARKER in e.name]
        except OSError as exc:
            raise StorageError.from_oserror(f"preparing {self.target}", exc) from exc
        for name in removed:
            self._remove(self.target / name)
        removed += self._prune()
        if removed:
            _log.info("install.cleaned", removed=removed)
        return removed

    def install(self, cert: bytes, key: bytes, manifest: Manifest) -> Installed:
        """Write a new generation and publish it with one rename. Raises StorageError."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        micros = f"{time.time_ns() // 1000 % 1_000_000:06d}"
        final = f"..g{manifest.generation:06d}-{stamp}.{micros}Z-{secrets.token_hex(2)}"
        tmp = self.target / f"{final}{TEMP_MARKER}{os.getpid()}"
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            os.mkdir(tmp)
            # Not left to the umask: Vault's user must traverse it (the key itself stays 0600).
            os.chmod(tmp, 0o755)  # noqa: S103
            self._chown_path(tmp)
            self._write(tmp / self.cert_name, cert, self.cert_mode)
            self._write(tmp / self.key_name, key, self.key_mode)
            self._write(tmp / MANIFEST_NAME, manifest.to_json(), 0o644)
            fsync_dir(tmp)
            os.rename(tmp, self.target / final)
            fsync_dir(self.target)
            self._point(DATA_LINK, final)
            for name in (self.cert_name, self.key_name, MANIFEST_NAME):
                self._ensure_link(name)
            fsync_dir(self.target)
        except OSError as exc:
            self._remove(tmp)
            raise StorageError.from_oserror(
                f"installing generation {manifest.generation}", exc
            ) from exc
        except BaseException:
            # SIGTERM/KeyboardInterrupt mid-install: the old pointer is still in place.
            self._remove(tmp)
            raise
        self._prune()
        return Installed(manifest=manifest, directory=final)

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        # Created with no group/other bits; the final mode is set after the owner is.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.uid is not None or self.gid is not None:
                os.fchown(
                    fd, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
                )
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _chown_path(self, path: Path) -> None:
        if self.uid is not None or self.gid is not None:
            os.chown(
                path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
            )

    def _point(self, link: str, destination: str) -> None:
        tmp = self.target / f"{link}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.symlink(destination, tmp)
            os.replace(tmp, self.target / link)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _ensure_link(self, name: str) -> None:
        wanted = f"{DATA_LINK}/{name}"
        path = self.target / name
        with contextlib.suppress(OSError):
            if os.readlink(path) == wanted:
                return
        if path.is_dir() and not path.is_symlink():
            raise StorageError(f"{path} is a directory; it must be a file or a symlink")
        # A regular file from an older, non-atomic install is replaced by the link in one rename.
        self._point(name, wanted)

    def _prune(self) -> list[str]:
        current = self.current_dir()
        others = [n for n in self.generations() if n != current]
        doomed = others[self.keep - 1 :]
        for name in doomed:
            self._remove(self.target / name)
        return doomed

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            else:
                shutil.rmtree(path)
