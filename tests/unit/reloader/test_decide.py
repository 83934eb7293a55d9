"""Change detection and health rules: pure functions of observed state and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.reloader.decide import Action, decide, expiry_status, invalid_source_status
from shared.certs import leaf_info
from shared.health import Status
from shared.manifest import FileEntry, Manifest
from shared.snapshot import Snapshot, State
from tests.support.pki import CA

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes, Manifest]:
    ca = CA()
    leaf = ca.leaf()
    cert, key = ca.fullchain(leaf), leaf.key_pem
    manifest = Manifest(
        generation=4,
        published_at=NOW,
        cert=FileEntry.of("c", cert),
        key=FileEntry.of("k", key),
        leaf=leaf_info(leaf.cert),
    )
    return cert, key, manifest


def test_same_pair_committed_is_current(pair: tuple[bytes, bytes, Manifest]) -> None:
    cert, key, manifest = pair
    d = decide(cert, key, Snapshot(State.COMMITTED, manifest, cert, key))
    assert (d.action, d.generation) == (Action.CURRENT, 4)


def test_a_different_pair_is_published_as_the_next_generation(
    pair: tuple[bytes, bytes, Manifest],
) -> None:
    cert, key, manifest = pair
    d = decide(cert + b"\n", key, Snapshot(State.COMMITTED, manifest, cert, key))
    assert (d.action, d.generation) == (Action.PUBLISH, 5)
    assert d.previous_not_after == manifest.leaf.not_after
    d = decide(cert, key + b"\n", Snapshot(State.COMMITTED, manifest, cert, key))
    assert d.action is Action.PUBLISH


def test_empty_storage_starts_at_one_or_above_what_was_seen(
    pair: tuple[bytes, bytes, Manifest],
) -> None:
    cert, key, _ = pair
    d = decide(cert, key, Snapshot(State.EMPTY))
    assert (d.action, d.generation, d.previous_not_after) == (Action.PUBLISH, 1, None)
    # A Storage Box emptied under a running reloader: generations still only grow.
    assert decide(cert, key, Snapshot(State.EMPTY), highest_seen=7).generation == 8


def test_inconsistent_or_corrupt_storage_is_repaired(pair: tuple[bytes, bytes, Manifest]) -> None:
    cert, key, manifest = pair
    d = decide(cert, key, Snapshot(State.INCONSISTENT, manifest, detail="key differs"))
    assert (d.action, d.generation) == (Action.REPAIR, 5)
    assert d.previous_not_after == manifest.leaf.not_after
    assert "key differs" in d.why
    d = decide(cert, key, Snapshot(State.CORRUPT, detail="bad json"), highest_seen=4)
    assert (d.action, d.generation, d.previous_not_after) == (Action.REPAIR, 5, None)
    # A committed generation lower than one already seen (restored backup) never lowers it.
    d = decide(cert + b" ", key, Snapshot(State.COMMITTED, manifest, cert, key), highest_seen=9)
    assert d.generation == 10


@pytest.mark.parametrize(
    ("days", "status"),
    [
        (60, Status.OK),
        (14.01, Status.OK),
        (13.9, Status.DEGRADED),
        (0.5, Status.DEGRADED),
        (0, Status.FAILING),
        (-3, Status.FAILING),
    ],
)
def test_expiry_status(days: float, status: Status) -> None:
    got, message = expiry_status(NOW + timedelta(days=days), NOW, warn_days=14)
    assert got is status
    assert message


def test_invalid_source_is_degraded_within_grace_then_failing() -> None:
    assert invalid_source_status(100.0, 100.0, grace=60) is Status.DEGRADED
    assert invalid_source_status(100.0, 159.9, grace=60) is Status.DEGRADED
    assert invalid_source_status(100.0, 160.0, grace=60) is Status.FAILING
    assert invalid_source_status(100.0, 100.0, grace=0) is Status.FAILING


@pytest.mark.parametrize(
    ("signer", "signing_key", "action"),
    [
        ("aaaa0000", "aaaa0000", Action.CURRENT),  # signed with the signing key
        ("aaaa0000", None, Action.CURRENT),  # authentication off
        ("bbbb1111", "aaaa0000", Action.RESIGN),  # rotation: signed with the previous key
        (None, "aaaa0000", Action.RESIGN),  # not checked/unsigned but committed: sign it
    ],
)
def test_a_manifest_signed_with_another_key_is_signed_again(
    pair: tuple[bytes, bytes, Manifest], signer: str | None, signing_key: str | None, action: Action
) -> None:
    cert, key, manifest = pair
    snapshot = Snapshot(State.COMMITTED, manifest, cert, key, signer=signer)
    d = decide(cert, key, snapshot, signing_key=signing_key)
    assert (d.action, d.generation) == (action, 4)


def test_an_unauthenticated_manifest_is_replaced_never_believed(
    pair: tuple[bytes, bytes, Manifest],
) -> None:
    cert, key, _ = pair
    d = decide(cert, key, Snapshot(State.UNAUTHENTICATED, detail="unsigned"), highest_seen=4)
    assert (d.action, d.generation) == (Action.REPAIR, 5)
    assert d.previous_not_after is None  # a forged notAfter is not a downgrade bar
