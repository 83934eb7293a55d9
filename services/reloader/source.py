"""Reading certbot's live pair safely.

``fullchain.pem`` and ``privkey.pem`` are relative symlinks into ``archive/<domain>/``. Each file is
opened once (following the links) and the path actually opened is checked to lie inside the
letsencrypt volume, so a link to ``/etc/shadow`` or a loop is refused instead of published. The
check uses the open descriptor (``/proc/self/fd``), not a separate ``realpath``, so a symlink
swapped between the check and the read cannot slip through.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from shared.digests import Digests
from shared.errors import CertificateInvalid, Reason, StorageError

CERT_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"
# certbot's files are a few KiB; anything this large is not a certificate and is not read whole.
MAX_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourcePair:
    cert: bytes
    key: bytes
    cert_path: Path  # the archive file each symlink led to
    key_path: Path

    @property
    def cert_digests(self) -> Digests:
        return Digests.of(self.cert)

    @property
    def key_digests(self) -> Digests:
        return Digests.of(self.key)


def _opened_path(fd: int, fallback: str) -> Path:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc: the resolved name is the best we have
        return Path(os.path.realpath(fallback))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def read_safely(path: Path, root: Path) -> tuple[bytes, Path]:
    """Bytes of ``path`` (symlinks followed) if it resolves to a regular file inside ``root``."""
    real_root = Path(os.path.realpath(root))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        if path.is_symlink():
            raise CertificateInvalid(
                Reason.MISSING, f"{path.name} is a dangling symlink to {os.readlink(path)}"
            ) from None
        raise CertificateInvalid(Reason.MISSING, f"{path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CertificateInvalid(Reason.UNSAFE_PATH, f"{path.name} is a symlink loop") from None
        raise StorageError.from_oserror(f"opening source {path.name}", exc) from exc
    try:
        opened = _opened_path(fd, str(path))
        if not _within(opened, real_root):
            raise CertificateInvalid(
                Reason.UNSAFE_PATH,
                f"{path.name} resolves to {opened}, outside the letsencrypt volume {real_root}",
            )
        info = os.fstat(fd)
        if not (info.st_mode & 0o170000) == 0o100000:
            raise CertificateInvalid(Reason.UNSAFE_PATH, f"{path.name} is not a regular file")
        if info.st_size > MAX_SIZE:
            raise CertificateInvalid(
                Reason.NOT_PEM, f"{path.name} is {info.st_size} bytes, too large for a PEM file"
            )
        chunks: list[bytes] = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_SIZE:
                raise CertificateInvalid(Reason.NOT_PEM, f"{path.name} grew past {MAX_SIZE} bytes")
        return b"".join(chunks), opened
    except OSError as exc:
        raise StorageError.from_oserror(f"reading source {path.name}", exc) from exc
    finally:
        os.close(fd)


def read_source(source_dir: Path, root: Path) -> SourcePair:
    """certbot's current pair. Raises CertificateInvalid (missing/unsafe) or StorageError."""
    cert, cert_path = read_safely(source_dir / CERT_FILE, root)
    key, key_path = read_safely(source_dir / KEY_FILE, root)
    return SourcePair(cert=cert, key=key, cert_path=cert_path, key_path=key_path)
