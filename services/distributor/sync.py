"""Follow the Storage Box: decide (pure) whether to install a committed generation, then do it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from shared.certs import ValidPair, validate_pair
from shared.errors import CertificateInvalid, Reason
from shared.logs import get_logger
from shared.manifest import Manifest
from shared.manifest_auth import MacKeys
from shared.snapshot import Snapshot, State
from shared.storagebox import read_snapshot
from shared.trust import TrustBundle, check_pair_trust

from .install import Installed, PairInstaller

_log = get_logger(__name__)


class Step(StrEnum):
    INSTALL = "install"  # a committed generation differs from what is installed
    CURRENT = "current"  # installed already equals the committed generation
    WAIT = "wait"  # nothing committed yet, or an upload is in progress: keep the installed pair


@dataclass(frozen=True, slots=True)
class SyncPlan:
    step: Step
    detail: str = ""


def plan(snapshot: Snapshot, installed: Installed | None) -> SyncPlan:
    """What to do about ``snapshot`` given what is installed (pure)."""
    if snapshot.state is State.EMPTY:
        return SyncPlan(Step.WAIT, "nothing published on the Storage Box yet")
    if snapshot.state is State.UNAUTHENTICATED:
        return SyncPlan(Step.WAIT, f"Storage Box manifest refused: {snapshot.detail}")
    if snapshot.state is State.CORRUPT:
        return SyncPlan(Step.WAIT, f"Storage Box manifest unreadable: {snapshot.detail}")
    if snapshot.state is State.INCONSISTENT:
        return SyncPlan(
            Step.WAIT, f"Storage Box files do not match its manifest: {snapshot.detail}"
        )
    if snapshot.manifest is None:
        return SyncPlan(Step.WAIT, "no manifest")
    if installed is not None and (
        installed.manifest.generation == snapshot.manifest.generation
        and installed.manifest.cert == snapshot.manifest.cert
        and installed.manifest.key == snapshot.manifest.key
    ):
        return SyncPlan(Step.CURRENT)
    return SyncPlan(Step.INSTALL)


@dataclass(frozen=True, slots=True)
class SyncResult:
    step: Step
    installed: Installed | None  # what is installed after this pass
    seen_generation: int | None  # generation of the Storage Box manifest, if one was read
    detail: str = ""
    newly_installed: bool = False


class Syncer:
    """One idempotent reconcile pass: Storage Box -> target directory."""

    def __init__(
        self,
        source: Path,
        installer: PairInstaller,
        *,
        names: tuple[str, ...],
        keys: MacKeys | None = None,
        trust: TrustBundle | None = None,
        trust_name: str | None = None,
    ) -> None:
        self.source = source
        self.installer = installer
        self.names = names
        self.keys = keys
        self.trust = trust
        self.trust_name = trust_name

    def sync_once(self, now: datetime) -> SyncResult:
        """Raises StorageError (mount or target trouble), ManifestUnauthenticated (the manifest
        was not written by a key holder) or CertificateInvalid (bad or untrusted pair)."""
        # The manifest is authenticated first (inside read_snapshot): a refused one names
        # nothing that is read, compared or installed.
        snapshot = read_snapshot(
            self.source,
            cert_name=self.installer.cert_name,
            key_name=self.installer.key_name,
            keys=self.keys,
        )
        if snapshot.auth_error is not None:
            raise snapshot.auth_error
        installed = self.installer.installed()
        seen = snapshot.manifest.generation if snapshot.manifest else None
        decision = plan(snapshot, installed)
        if decision.step is not Step.INSTALL:
            return SyncResult(decision.step, installed, seen, decision.detail)
        manifest, cert, key = _committed(snapshot)
        pair = self._validate(manifest, cert, key, now)
        result = self.installer.install(cert, key, manifest)
        _log.info(
            "cert.installed",
            generation=manifest.generation,
            fingerprint=pair.leaf.fingerprint_sha256,
            not_after=pair.leaf.not_after.isoformat(),
            directory=result.directory,
        )
        return SyncResult(Step.INSTALL, result, seen, newly_installed=True)

    def _validate(self, manifest: Manifest, cert: bytes, key: bytes, now: datetime) -> ValidPair:
        # The reloader already refused downgrades; a distributor follows what was committed.
        pair = validate_pair(cert, key, names=self.names, now=now)
        check_pair_trust(cert, self.trust, name=self.trust_name, now=now)
        if pair.leaf.fingerprint_sha256 != manifest.fingerprint:
            raise CertificateInvalid(
                Reason.DIGEST_MISMATCH,
                "manifest names a different leaf fingerprint than the certificate it commits",
            )
        return pair


def _committed(snapshot: Snapshot) -> tuple[Manifest, bytes, bytes]:
    if snapshot.manifest is None or snapshot.cert is None or snapshot.key is None:
        raise ValueError("snapshot is not committed")  # plan() only says INSTALL when it is
    return snapshot.manifest, snapshot.cert, snapshot.key
