"""Follow the Storage Box: decide (pure) whether to install a committed generation, then do it.

Network mounts (CIFS, sshfs) deliver no inotify events for other clients' writes, so the service
polls; :class:`ChangeWatcher` turns watchdog events, where they do arrive, into an early wake-up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from shared.certs import ValidPair, validate_pair
from shared.errors import CertificateInvalid, Reason
from shared.logs import get_logger
from shared.manifest import Manifest
from shared.storagebox import Snapshot, State, read_snapshot

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
    ) -> None:
        self.source = source
        self.installer = installer
        self.names = names

    def sync_once(self, now: datetime) -> SyncResult:
        """Raises StorageError (mount or target trouble) or CertificateInvalid (bad pair)."""
        installed = self.installer.installed()
        snapshot = read_snapshot(
            self.source, cert_name=self.installer.cert_name, key_name=self.installer.key_name
        )
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


# Only changes wake the loop. Watchdog also reports opens and read-only closes, and the
# distributor's own reads of the Storage Box would otherwise wake it again at once, forever.
_CHANGES = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_CLOSED,
    }
)


class _Wake(FileSystemEventHandler):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _CHANGES:
            self._event.set()


class ChangeWatcher:
    """Sets ``wake`` on filesystem events in ``directory``; polling stays the source of truth."""

    def __init__(self, directory: Path, wake: threading.Event) -> None:
        self.directory = directory
        self.wake = wake
        self._observer: Any = None

    @property
    def watching(self) -> bool:
        return self._observer is not None

    def start(self, *, quiet: bool = False) -> bool:
        """False when the directory cannot be watched (missing mount); polling covers it."""
        if self._observer is not None:
            return True
        observer = Observer()
        try:
            observer.schedule(_Wake(self.wake), str(self.directory), recursive=False)
            observer.start()
        except (OSError, RuntimeError) as exc:
            if not quiet:
                _log.warning("watch.unavailable", directory=str(self.directory), error=str(exc))
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
