"""The certflow error hierarchy, in one place.

    CertflowError                 base; ``str()`` is safe to log (never holds key material)
    ├── ConfigError               a bad setting; the process exits 2 at start
    ├── CertificateInvalid        a certificate/key pair failed validation (has a ``reason``)
    │   └── ChainUntrusted        the chain does not verify for the trust name against the bundle
    ├── ManifestInvalid           a manifest file cannot be parsed or is inconsistent
    │   └── ManifestUnauthenticated  its MAC is missing or wrong (has a ``reason`` and ``key_id``)
    ├── StorageError              filesystem trouble (mount missing, EIO, ENOTCONN, EACCES, ENOSPC)
    ├── DockerError               the Docker Engine API failed or refused
    │   ├── DockerNotFound        the service, container or secret asked for does not exist
    │   └── UpdateOutOfSequence   a service write raced another one; retry with a fresh version
    └── VaultError                a Vault replica failed or refused
        ├── VaultUnreachable      transport: refused, timeout, TLS
        └── KeyRejected           the unseal key was rejected at the threshold (400 or 500 variant)

Each adapter translates the errors of the library it wraps (OSError, docker-py and its requests
transport in :mod:`shared.docker_engine`, httpx where Vault is called) into these with
``raise ... from exc``; the rest of the code only sees this tree.
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
    UNTRUSTED = "untrusted"  # no path from the leaf to a CA of the configured trust bundle


class CertificateInvalid(CertflowError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class ChainUntrusted(CertificateInvalid):
    """The chain does not verify for the trust name against the trust bundle.

    ``reason`` is UNTRUSTED (unknown issuer, broken path), DOMAIN_MISMATCH (not valid for the
    name), EXPIRED or NOT_YET_VALID; the message names the leaf, never any key.
    """

    def __init__(self, reason: Reason, message: str, *, name: str) -> None:
        super().__init__(reason, message)
        self.name = name


class ManifestInvalid(CertflowError):
    """The manifest is unreadable or does not describe a consistent pair."""


class AuthReason(StrEnum):
    """Why a manifest did not authenticate; also the ``reason`` label of a metric."""

    UNSIGNED = "unsigned"  # no ``mac`` field (an old or a forged manifest)
    MALFORMED = "malformed"  # a ``mac`` field that is not ``hmac-sha256:<keyid>:<hex>``
    UNKNOWN_KEY = "unknown_key"  # signed with a key id that is not accepted here
    BAD_MAC = "bad_mac"  # the key id is accepted but the MAC does not match the content


class ManifestUnauthenticated(ManifestInvalid):
    """The manifest's MAC is missing or does not verify with any accepted key."""

    def __init__(self, reason: AuthReason, message: str, *, key_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.key_id = key_id


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


class DockerNotFound(DockerError):
    """The service, container or secret asked for does not exist (any more)."""


class UpdateOutOfSequence(DockerError):
    """Swarm rejected a service update because its version was stale."""


class VaultError(CertflowError):
    """A Vault replica answered with an error."""


class VaultUnreachable(VaultError):
    """A Vault replica could not be reached (refused, timeout, TLS failure)."""


class KeyRejected(VaultError):
    """Vault rejected the unseal key once the threshold was reached."""
