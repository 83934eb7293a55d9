"""The certflow error hierarchy, in one place.

    CertflowError                 base; ``str()`` is safe to log (never holds key material)
    ├── ConfigError               a bad setting; the process exits 2 at start
    ├── CertificateInvalid        a certificate/key pair failed validation (has a ``reason``)
    ├── ManifestInvalid           a manifest file cannot be parsed or is inconsistent
    ├── StorageError              filesystem trouble (mount missing, EIO, ENOTCONN, EACCES, ENOSPC)
    ├── DockerError               the Docker Engine API failed or refused
    │   └── UpdateOutOfSequence   a service write raced another one; retry with a fresh version
    └── VaultError                a Vault replica failed or refused
        ├── VaultUnreachable      transport: refused, timeout, TLS
        └── KeyRejected           the unseal key was rejected at the threshold (400 or 500 variant)

Adapters translate library errors (OSError, docker.errors.*, hvac.exceptions.*, requests/httpx)
into these with ``raise ... from exc``; the rest of the code only sees this tree.
"""

from __future__ import annotations

import errno
from enum import StrEnum


class CertflowError(Exception):
    """Base of every error certflow raises on purpose."""


class ConfigError(CertflowError):
    """An invalid or missing setting. The message names the variable."""

    exit_code = 2


class Reason(StrEnum):
    """Why a certificate/key pair was refused; also the ``reason`` label of a metric."""

    MISSING = "missing"
    EMPTY = "empty"
    NOT_PEM = "not_pem"
    TRUNCATED = "truncated"
    BAD_KEY = "bad_key"
    KEY_MISMATCH = "key_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    DOMAIN_MISMATCH = "domain_mismatch"
    CHAIN_ORDER = "chain_order"
    DOWNGRADE = "downgrade"
    UNSAFE_PATH = "unsafe_path"
    DIGEST_MISMATCH = "digest_mismatch"


class CertificateInvalid(CertflowError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class ManifestInvalid(CertflowError):
    """The manifest is unreadable or does not describe a consistent pair."""


class StorageError(CertflowError):
    """Filesystem trouble that is expected to pass (a remount, free space, permissions fixed)."""

    def __init__(self, message: str, *, errno_name: str | None = None) -> None:
        super().__init__(message)
        self.errno_name = errno_name

    @classmethod
    def from_oserror(cls, action: str, exc: OSError) -> StorageError:
        name = errno.errorcode.get(exc.errno or 0, "EUNKNOWN")
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(f"{action} failed{where}: {name} {exc.strerror or exc}", errno_name=name)


class DockerError(CertflowError):
    """The Docker Engine API failed or refused a request."""


class UpdateOutOfSequence(DockerError):
    """Swarm rejected a service update because its version was stale."""


class VaultError(CertflowError):
    """A Vault replica answered with an error."""


class VaultUnreachable(VaultError):
    """A Vault replica could not be reached (refused, timeout, TLS failure)."""


class KeyRejected(VaultError):
    """Vault rejected the unseal key once the threshold was reached."""
