"""The reloader's reconcile step and loop (the imperative shell around ``decide``).

``Reloader.reconcile()`` is idempotent: it reads the source and the Storage Box, decides, and does
at most one publish. The loop calls it on every debounced change and on every timer tick, so missed
events, duplicates and restarts cost nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.reloader.decide import (
    Action,
    RejectionKey,
    days_left,
    decide,
    expiry_status,
    invalid_source_status,
)
from services.reloader.metrics import ReloaderMetrics
from services.reloader.publish import Target, publish, write_manifest
from services.reloader.settings import ReloaderSettings
from services.reloader.source import SourcePair, read_source
from shared.atomic import remove_stale_temporaries
from shared.certs import ValidPair, validate_pair
from shared.digests import Digests
from shared.errors import CertificateInvalid, ChainUntrusted, StorageError
from shared.health import HealthRegistry, StallWatch, Status, report_manifest_auth
from shared.logs import get_logger
from shared.manifest import Manifest
from shared.notifier import Notifier
from shared.notify import Event, Kind, Severity
from shared.retry import backoff_delay, retrying
from shared.snapshot import Snapshot, State
from shared.storagebox import read_snapshot
from shared.trust import check_pair_trust
from shared.watch import ChangeWatcher, Wake

_log = get_logger(__name__)
_RACE_RETRIES = 2
_RACE_TIMEOUT = 10.0


class _SourceMoved(Exception):
    """The source changed under a refusal (certbot mid-swap): read it again."""


class Outcome(StrEnum):
    PUBLISHED = "published"
    CURRENT = "current"
    REJECTED = "rejected"
    STORAGE_ERROR = "storage_error"
    SOURCE_ERROR = "source_error"

    @property
    def ok(self) -> bool:
        return self in {Outcome.PUBLISHED, Outcome.CURRENT}


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    message: str
    generation: int | None = None


def _cert_md5(cert: bytes | None) -> dict[str, str | None]:
    """The certificate file's digest, for comparing with ``md5sum`` on a node. Nothing about the
    key is published: /health is unauthenticated and the logs are collected centrally."""
    return {"cert_md5": Digests.of(cert).md5 if cert is not None else None}


class Reloader:
    def __init__(
        self,
        settings: ReloaderSettings,
        health: HealthRegistry,
        metrics: ReloaderMetrics,
        *,
        clock: Callable[[], float] = time.time,
        after_step: Callable[[str], None] | None = None,
        settle: float = 0.05,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.health = health
        self.metrics = metrics
        # Off unless the service passes its notifier (built from CERTFLOW_NOTIFY_*).
        self.notifier = notifier or Notifier((), service="cert-reloader", node=settings.node_name)
        self._expiring_told: str | None = None
        self._clock = clock
        self._after_step = after_step
        self._settle = settle
        self.target = Target(
            directory=settings.target_dir,
            cert_name=settings.cert_name,
            key_name=settings.key_name,
            cert_mode=settings.cert_mode,
            key_mode=settings.key_mode,
            uid=settings.file_uid,
            gid=settings.file_gid,
        )
        self.highest_generation = 0
        self._last_rejection: RejectionKey | None = None
        self._invalid_since: float | None = None
        self._storage_problem: str | None = None
        self._last_error: tuple[str, float] | None = None
        self._last_seen: tuple[str, str] | None = None
        self.health.report("last_publish", Status.OK, "nothing published by this process yet")
        self.health.report("last_error", Status.OK, "no error yet")
        self._unauthenticated_seen: str | None = None
        self._report_auth()

    def _report_auth(self) -> None:
        keys = self.settings.manifest_keys
        report_manifest_auth(
            self.health,
            self.metrics.auth_enabled,
            keys,
            message=f"manifests signed with key id {keys.signing.key_id}" if keys else "",
            signing_key=keys.signing.key_id if keys else None,
            accepted_keys=list(keys.ids) if keys else [],
        )

    # -- the step ------------------------------------------------------------------------------

    def reconcile(self) -> Result:
        # certbot repoints fullchain.pem and privkey.pem one after the other: a read between the
        # two sees a mismatched pair. When the source has changed since, it is read again instead
        # of reporting (and logging) a refusal of a state that no longer exists.
        try:
            for attempt in retrying(
                "reading the source again after it changed during the check",
                on=(_SourceMoved,),
                attempts=_RACE_RETRIES,
                timeout=_RACE_TIMEOUT,
                initial=0.0,  # _source_moved() has waited for the swap to settle already
                maximum=0.0,
                level=logging.DEBUG,
            ):
                with attempt:
                    result = self._reconcile_once(last_attempt=False)
                    if result is None:
                        raise _SourceMoved
                    return result
        except _SourceMoved:
            pass
        # Still moving: report what is there now.
        final = self._reconcile_once(last_attempt=True)
        assert final is not None  # the last attempt always returns a result
        return final

    def _source_moved(self) -> bool:
        """After a refusal: has the source changed since it was read (a swap in progress)?"""
        if self._settle:
            time.sleep(self._settle)
        try:
            source = read_source(self.settings.source_dir, self.settings.volume_root)
        except (CertificateInvalid, StorageError):
            return False
        return self._last_seen != (source.cert_digests.sha256, source.key_digests.sha256)

    def _reconcile_once(self, *, last_attempt: bool) -> Result | None:
        """One pass; ``None`` when the source changed under a refusal and should be re-read."""
        self._last_seen = None
        now_ts = self._clock()
        now = datetime.fromtimestamp(now_ts, UTC)
        try:
            snapshot = read_snapshot(
                self.settings.target_dir,
                cert_name=self.settings.cert_name,
                key_name=self.settings.key_name,
                keys=self.settings.manifest_keys,
            )
        except StorageError as exc:
            self._report_source_only(now, now_ts)
            return self._finish(self._storage_failed(exc, now_ts), now_ts)
        self._storage_recovered()
        if snapshot.manifest is not None:
            self.highest_generation = max(self.highest_generation, snapshot.manifest.generation)
        self._report_storage(snapshot, now)

        try:
            source = read_source(self.settings.source_dir, self.settings.volume_root)
        except CertificateInvalid as exc:
            if not last_attempt and self._source_moved():
                return None
            return self._finish(self._rejected(None, exc, now_ts), now_ts)
        except StorageError as exc:
            return self._finish(self._source_failed(exc, now_ts), now_ts)

        self._last_seen = (source.cert_digests.sha256, source.key_digests.sha256)
        keys = self.settings.manifest_keys
        decision = decide(
            source.cert,
            source.key,
            snapshot,
            highest_seen=self.highest_generation,
            signing_key=keys.signing.key_id if keys is not None else None,
        )
        try:
            pair = validate_pair(
                source.cert,
                source.key,
                names=self.settings.names,
                now=now,
                # An already-published pair is not compared with itself.
                previous_not_after=(
                    None if decision.action is Action.CURRENT else decision.previous_not_after
                ),
                allow_downgrade=self.settings.allow_downgrade,
            )
            self._check_trust(source.cert, now)
        except CertificateInvalid as exc:
            if not last_attempt and self._source_moved():
                return None
            return self._finish(self._rejected(source, exc, now_ts), now_ts)
        self._source_valid(source, pair)

        if decision.action is Action.CURRENT:
            return self._finish(
                Result(Outcome.CURRENT, "already published", decision.generation), now_ts
            )
        if decision.action is Action.RESIGN and snapshot.manifest is not None:
            return self._finish(self._resign(snapshot.manifest, decision.why, now_ts), now_ts)
        if decision.action is Action.REPAIR:
            _log.warning("storage.repairing", why=decision.why, generation=decision.generation)
        try:
            manifest = publish(
                self.target,
                source.cert,
                source.key,
                pair,
                generation=decision.generation,
                now=now,
                publisher=self.settings.node_name,
                after_step=self._after_step,
                keys=keys,
            )
        except StorageError as exc:
            self.clean_temporaries()
            return self._finish(self._storage_failed(exc, now_ts), now_ts)
        return self._finish(self._published(manifest, decision.action, now_ts, now), now_ts)

    def _check_trust(self, cert: bytes, now: datetime) -> None:
        """Raises ChainUntrusted when a trust bundle is set and the chain does not verify."""
        check_pair_trust(cert, self.settings.trust_bundle, name=self.settings.trust_name, now=now)

    def _resign(self, manifest: Manifest, why: str, now_ts: float) -> Result:
        """Rewrite the committed manifest (same generation, same pair) with the signing key."""
        try:
            write_manifest(self.target, manifest, self.settings.manifest_keys)
        except StorageError as exc:
            self.clean_temporaries()
            return self._storage_failed(exc, now_ts)
        keys = self.settings.manifest_keys
        signer = keys.signing.key_id if keys is not None else None
        self.metrics.resigns.inc()
        _log.info("manifest.resigned", generation=manifest.generation, key_id=signer, why=why)
        now = datetime.fromtimestamp(now_ts, UTC)
        self._report_committed(manifest, now, signer=signer)
        return Result(
            Outcome.CURRENT, f"generation {manifest.generation} signed again", manifest.generation
        )

    def clean_temporaries(self) -> None:
        """Remove temporaries an interrupted publish left behind (best effort)."""
        try:
            removed = remove_stale_temporaries(self.settings.target_dir)
        except StorageError:
            return
        if removed:
            _log.info("storage.temporaries_removed", count=len(removed), names=removed)

    # -- outcomes ------------------------------------------------------------------------------

    def _finish(self, result: Result, now_ts: float) -> Result:
        self.metrics.last_check.set(now_ts)
        status = Status.OK if result.outcome.ok else Status.DEGRADED
        self.health.report(
            "last_check",
            status,
            f"{result.outcome}: {result.message}",
            at=datetime.fromtimestamp(now_ts, UTC),
            outcome=result.outcome.value,
        )
        if result.outcome.ok and self._last_error is not None:
            message, at = self._last_error
            self.health.report(
                "last_error", Status.OK, f"resolved: {message}", at=datetime.fromtimestamp(at, UTC)
            )
        return result

    def _error(self, message: str, now_ts: float, **details: Any) -> None:
        self._last_error = (message, now_ts)
        self.health.report(
            "last_error",
            Status.DEGRADED,
            message,
            at=datetime.fromtimestamp(now_ts, UTC),
            **details,
        )

    def _published(
        self, manifest: Manifest, action: Action, now_ts: float, now: datetime
    ) -> Result:
        self.highest_generation = max(self.highest_generation, manifest.generation)
        self.metrics.publishes.inc()
        self.metrics.generation.set(manifest.generation)
        self.metrics.not_after.set(manifest.leaf.not_after.timestamp())
        _log.info(
            "cert.published",
            generation=manifest.generation,
            action=action.value,
            not_after=manifest.leaf.not_after.isoformat(),
            serial=manifest.leaf.serial,
            fingerprint=manifest.fingerprint,
            cert_md5=manifest.cert.md5,
        )
        self.notifier.notify(
            Event(
                Kind.CERT_PUBLISHED,
                f"certificate generation {manifest.generation} published, "
                f"valid until {manifest.leaf.not_after.isoformat()}",
                subject=manifest.fingerprint,
                fields={
                    "generation": manifest.generation,
                    "fingerprint": manifest.fingerprint,
                    "not_after": manifest.leaf.not_after.isoformat(),
                    "serial": manifest.leaf.serial,
                    "action": action.value,
                },
            )
        )
        self.health.report(
            "last_publish",
            Status.OK,
            f"generation {manifest.generation} published ({action.value})",
            at=datetime.fromtimestamp(now_ts, UTC),
            generation=manifest.generation,
        )
        keys = self.settings.manifest_keys
        self._report_committed(manifest, now, signer=keys.signing.key_id if keys else None)
        return Result(Outcome.PUBLISHED, f"generation {manifest.generation}", manifest.generation)

    def _rejected(
        self, source: SourcePair | None, exc: CertificateInvalid, now_ts: float
    ) -> Result:
        if self._invalid_since is None:
            self._invalid_since = now_ts
        key = RejectionKey(
            cert_sha256=source.cert_digests.sha256 if source else "",
            key_sha256=source.key_digests.sha256 if source else "",
            reason=exc.reason.value,
        )
        details: dict[str, Any] = {"reason": exc.reason.value, "invalid_since": self._invalid_since}
        if source is not None:
            details.update(_cert_md5(source.cert))
        if key != self._last_rejection:
            # Once per distinct source content: a broken renewal is not re-logged every check.
            self._last_rejection = key
            self.metrics.validation_failures.labels(reason=exc.reason.value).inc()
            _log.error(
                "cert.rejected",
                reason=exc.reason.value,
                error=exc.message,
                source_dir=str(self.settings.source_dir),
                **{k: v for k, v in details.items() if k.endswith("md5")},
            )
            self._notify_refused(key, exc)
        status = invalid_source_status(
            self._invalid_since, now_ts, grace=self.settings.invalid_grace
        )
        details["invalid_since"] = datetime.fromtimestamp(self._invalid_since, UTC)
        self.health.report(
            "source",
            status,
            f"refused, nothing published: {exc}",
            **details,
        )
        self._error(f"cert.rejected: {exc}", now_ts, reason=exc.reason.value)
        return Result(Outcome.REJECTED, str(exc))

    def _notify_refused(self, key: RejectionKey, exc: CertificateInvalid) -> None:
        """Once per distinct refused content (the caller's guard), like the log event."""
        untrusted = isinstance(exc, ChainUntrusted)
        fields: dict[str, Any] = {"reason": exc.reason.value, "error": exc.message}
        if isinstance(exc, ChainUntrusted):
            fields["trust_name"] = exc.name
        self.notifier.notify(
            Event(
                Kind.TRUST_FAILED if untrusted else Kind.RENEWAL_REFUSED,
                f"renewed certificate refused, nothing published ({exc.reason.value}): "
                f"{exc.message}",
                subject=f"{exc.reason.value}:{key.cert_sha256}",
                fields=fields,
            )
        )

    def _source_valid(self, source: SourcePair, pair: ValidPair) -> None:
        if self._invalid_since is not None:
            _log.info("source.valid_again")
        self._invalid_since = None
        self._last_rejection = None
        self.health.report(
            "source",
            Status.OK,
            f"valid {pair.key_type} pair, leaf expires {pair.leaf.not_after.isoformat()}",
            **_cert_md5(source.cert),
            fingerprint=pair.leaf.fingerprint_sha256,
            not_after=pair.leaf.not_after,
            serial=pair.leaf.serial,
            cert_file=str(source.cert_path),
            key_file=str(source.key_path),
        )

    def _source_failed(self, exc: StorageError, now_ts: float) -> Result:
        self.metrics.storage_errors.inc()
        _log.error("source.unreadable", error=str(exc), errno=exc.errno_name)
        self.health.report("source", Status.FAILING, f"cannot read the source: {exc}")
        self._error(f"source.unreadable: {exc}", now_ts)
        return Result(Outcome.SOURCE_ERROR, str(exc))

    def _storage_failed(self, exc: StorageError, now_ts: float) -> Result:
        self.metrics.storage_errors.inc()
        message = str(exc)
        if message != self._storage_problem:
            _log.error(
                "storage.unavailable",
                error=message,
                errno=exc.errno_name,
                target_dir=str(self.settings.target_dir),
            )
            self._storage_problem = message
        self.health.report(
            "storage",
            Status.FAILING,
            f"Storage Box unavailable: {message}",
            errno=exc.errno_name,
            target_dir=str(self.settings.target_dir),
        )
        self._error(f"storage.unavailable: {message}", now_ts, errno=exc.errno_name)
        return Result(Outcome.STORAGE_ERROR, message)

    def _storage_recovered(self) -> None:
        if self._storage_problem is not None:
            _log.info("storage.available", target_dir=str(self.settings.target_dir))
            self._storage_problem = None
            self.clean_temporaries()

    def _report_source_only(self, now: datetime, now_ts: float) -> None:
        """Keep the source check current while the Storage Box cannot be read."""
        with contextlib.suppress(CertificateInvalid, StorageError):
            source = read_source(self.settings.source_dir, self.settings.volume_root)
            pair = validate_pair(source.cert, source.key, names=self.settings.names, now=now)
            self._check_trust(source.cert, now)
            self._source_valid(source, pair)

    # -- storage health ------------------------------------------------------------------------

    def _report_committed(
        self, manifest: Manifest, now: datetime, *, signer: str | None = None
    ) -> None:
        status, message = expiry_status(
            manifest.leaf.not_after, now, warn_days=self.settings.warn_days
        )
        self.metrics.not_after.set(manifest.leaf.not_after.timestamp())
        self.metrics.generation.set(manifest.generation)
        self._notify_expiry(manifest, now, status, message)
        self.health.report(
            "storage",
            status,
            f"generation {manifest.generation} committed; {message}",
            state=State.COMMITTED.value,
            generation=manifest.generation,
            cert_md5=manifest.cert.md5,
            fingerprint=manifest.fingerprint,
            not_after=manifest.leaf.not_after,
            days_left=round(days_left(manifest.leaf.not_after, now), 2),
            target_dir=str(self.settings.target_dir),
            signed_by=signer,
        )

    def _notify_expiry(
        self, manifest: Manifest, now: datetime, status: Status, message: str
    ) -> None:
        """Told once when the committed certificate crosses into RELOADER_WARN_DAYS (and once
        more if it expires), not on every check."""
        if status is Status.OK:
            self._expiring_told = None
            return
        told = f"{manifest.fingerprint}:{status.value}"
        if told == self._expiring_told:
            return
        self._expiring_told = told
        self.notifier.notify(
            Event(
                Kind.CERT_EXPIRING,
                message,
                subject=told,
                severity=Severity.CRITICAL if status is Status.FAILING else Severity.WARNING,
                fields={
                    "fingerprint": manifest.fingerprint,
                    "generation": manifest.generation,
                    "not_after": manifest.leaf.not_after.isoformat(),
                    "days_left": round(days_left(manifest.leaf.not_after, now), 2),
                    "warn_days": self.settings.warn_days,
                },
            )
        )

    def _report_storage(self, snapshot: Snapshot, now: datetime) -> None:
        if snapshot.state is State.COMMITTED and snapshot.manifest is not None:
            self._report_committed(snapshot.manifest, now, signer=snapshot.signer)
            return
        if snapshot.state is State.UNAUTHENTICATED and snapshot.auth_error is not None:
            error = snapshot.auth_error
            if snapshot.detail != self._unauthenticated_seen:
                # Once per distinct refusal: someone wrote a manifest without our key.
                self._unauthenticated_seen = snapshot.detail
                self.metrics.manifest_refused.labels(reason=error.reason.value).inc()
                _log.error(
                    "manifest.refused",
                    reason=error.reason.value,
                    key_id=error.key_id or "unsigned",
                    error=str(error),
                    target_dir=str(self.settings.target_dir),
                )
        else:
            self._unauthenticated_seen = None
        message = {
            State.EMPTY: "nothing published yet",
            State.INCONSISTENT: f"files do not match the manifest ({snapshot.detail}); repairing",
            State.CORRUPT: f"manifest unreadable ({snapshot.detail}); repairing",
            State.UNAUTHENTICATED: f"manifest refused ({snapshot.detail}); republishing",
        }.get(snapshot.state, snapshot.detail)
        self.health.report(
            "storage",
            Status.DEGRADED,
            message,
            state=snapshot.state.value,
            generation=snapshot.manifest.generation if snapshot.manifest else None,
            target_dir=str(self.settings.target_dir),
        )


def run_loop(reloader: Reloader, watcher: ChangeWatcher, stop: threading.Event) -> int:
    """Reconcile on every change and timer tick until ``stop``; back off while storage fails."""
    settings = reloader.settings
    reloader.clean_temporaries()
    failures = 0
    # A pass normally takes milliseconds; one blocked on a dead Storage Box mount shows as failing.
    stall = StallWatch(
        reloader.health,
        "last_check",
        limit=max(10.0, settings.check_interval),
        what=f"the check (reading {settings.source_dir}, writing {settings.target_dir})",
    )
    stall.start()
    try:
        while not stop.is_set():
            watcher.ensure_started()
            stall.begin()
            try:
                result = reloader.reconcile()
            finally:
                stall.end()
            if result.outcome in {Outcome.STORAGE_ERROR, Outcome.SOURCE_ERROR}:
                failures += 1
                timeout = backoff_delay(
                    failures,
                    initial=min(1.0, settings.check_interval),
                    maximum=min(settings.retry_max, settings.check_interval),
                )
            else:
                failures = 0
                timeout = settings.check_interval
            # Floor: with test-disabled waits a failing check must still not spin the CPU.
            wake = watcher.wait(stop, max(timeout, 0.05))
            if wake is Wake.STOP:
                break
            _log.debug("check.wake", why=wake.value)
    finally:
        stall.stop()
        watcher.stop()
    return 0
