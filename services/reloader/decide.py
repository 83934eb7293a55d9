"""Pure decisions of the reloader: what to do about the Storage Box, and how healthy things are.

No filesystem, no clock: the observed source bytes, the Storage Box snapshot and ``now`` come in,
a decision comes out. The shell (``service``) does the reading and the writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.snapshot import Snapshot, State
from shared.status import Status


class Action(StrEnum):
    CURRENT = "current"  # the Storage Box holds exactly the source pair, committed
    PUBLISH = "publish"  # a different (or no) pair is committed: publish the source pair
    REPAIR = "repair"  # the Storage Box is inconsistent or its manifest corrupt: republish
    RESIGN = "resign"  # the right pair, signed with a key that is no longer the signing key


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    generation: int  # the generation to write; the committed one for CURRENT
    previous_not_after: datetime | None  # the published leaf's notAfter (downgrade check)
    why: str


def decide(
    cert: bytes,
    key: bytes,
    snapshot: Snapshot,
    *,
    highest_seen: int = 0,
    signing_key: str | None = None,
) -> Decision:
    """Compare the source pair with what the Storage Box actually holds.

    ``highest_seen`` is the highest generation this process has seen or written: after a corrupt
    manifest (whose generation cannot be read) the next one still only grows. ``signing_key`` is
    the id of the key manifests are signed with (None: not authenticated): a committed manifest
    signed with another (still accepted) key is signed again, so that the old key can be dropped
    everywhere without any distributor refusing the current pair.
    """
    manifest = snapshot.manifest
    committed_generation = manifest.generation if manifest is not None else 0
    generation = max(committed_generation, highest_seen) + 1
    previous = manifest.leaf.not_after if manifest is not None else None
    if snapshot.state is State.COMMITTED and manifest is not None:
        if manifest.matches(cert, key):
            if signing_key is not None and snapshot.signer != signing_key:
                return Decision(
                    Action.RESIGN,
                    manifest.generation,
                    previous,
                    f"generation {manifest.generation} is signed with key id {snapshot.signer}, "
                    f"the signing key is {signing_key}",
                )
            return Decision(Action.CURRENT, manifest.generation, previous, "already published")
        return Decision(
            Action.PUBLISH,
            generation,
            previous,
            f"source differs from generation {manifest.generation}",
        )
    if snapshot.state is State.EMPTY:
        return Decision(Action.PUBLISH, generation, None, "nothing published yet")
    # INCONSISTENT (damaged file, interrupted publish), CORRUPT (manifest unreadable) or
    # UNAUTHENTICATED (not written by a holder of a key: nothing in it is believed).
    return Decision(
        Action.REPAIR, generation, previous, f"storage {snapshot.state}: {snapshot.detail}"
    )


def days_left(not_after: datetime, now: datetime) -> float:
    return (not_after - now) / timedelta(days=1)


def expiry_status(not_after: datetime, now: datetime, *, warn_days: float) -> tuple[Status, str]:
    """``failing`` once expired, ``degraded`` within ``warn_days`` (renewal is probably failing)."""
    left = days_left(not_after, now)
    if left <= 0:
        return Status.FAILING, f"published certificate expired at {not_after.isoformat()}"
    if left < warn_days:
        return (
            Status.DEGRADED,
            f"published certificate expires in {left:.1f} days (< {warn_days:g}); "
            "is renewal failing?",
        )
    return Status.OK, f"published certificate valid for {left:.1f} more days"


def invalid_source_status(invalid_since: float, now: float, *, grace: float) -> Status:
    """A refused source is ``degraded`` during the grace period, ``failing`` after it."""
    return Status.FAILING if now - invalid_since >= grace else Status.DEGRADED


@dataclass(frozen=True, slots=True)
class RejectionKey:
    """One refused source content: the same refusal is logged once, not on every check."""

    cert_sha256: str
    key_sha256: str
    reason: str
