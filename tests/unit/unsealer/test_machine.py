"""The per-replica state machine, as a table of (observed status, memory, context) -> decision."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.unsealer.machine import (
    Context,
    Kind,
    Memory,
    after_join,
    after_rejection,
    after_reset,
    after_submit,
    after_unseal_error,
    decide,
    sealed_too_long,
)
from services.unsealer.status import SealStatus

NOW = 1000.0
UNINIT = SealStatus(initialized=False, sealed=True)
UNSEALED = SealStatus(initialized=True, sealed=False, t=3, n=5)
SEALED = SealStatus(initialized=True, sealed=True, t=3, n=5)


def sealed(progress: int, nonce: str) -> SealStatus:
    return replace(SEALED, progress=progress, nonce=nonce)


def ctx(now: float = NOW, keys: int = 3, fp: str | None = "fp1", stall: float = 30.0) -> Context:
    return Context(now=now, key_count=keys, fingerprint=fp, stall_timeout=stall)


CASES = [
    # (id, status, memory, context, kind, index)
    (
        "uninitialized is reported, never initialized",
        UNINIT,
        Memory(),
        ctx(),
        Kind.UNINITIALIZED,
        -1,
    ),
    ("unsealed: nothing", UNSEALED, Memory(), ctx(), Kind.NOTHING, -1),
    ("sealed, no attempt: start with key 0", SEALED, Memory(), ctx(), Kind.SUBMIT, 0),
    (
        "our attempt: next key",
        sealed(1, "n1"),
        Memory(attempt_nonce="n1", submitted=frozenset({0})),
        ctx(),
        Kind.SUBMIT,
        1,
    ),
    (
        "our attempt with a gap: lowest key not yet given",
        sealed(2, "n1"),
        Memory(attempt_nonce="n1", submitted=frozenset({0, 2})),
        ctx(),
        Kind.SUBMIT,
        1,
    ),
    (
        "foreign attempt: join it with key 0 (no reset)",
        sealed(1, "theirs"),
        Memory(),
        ctx(),
        Kind.SUBMIT,
        0,
    ),
    (
        "foreign attempt replacing an old one of ours: join from key 0",
        sealed(2, "theirs"),
        Memory(attempt_nonce="ours", submitted=frozenset({0, 1})),
        ctx(),
        Kind.SUBMIT,
        0,
    ),
    (
        "all our keys given, attempt open: watch (first sight)",
        sealed(2, "n1"),
        Memory(attempt_nonce="n1", submitted=frozenset({0, 1})),
        ctx(keys=2),
        Kind.WAIT,
        -1,
    ),
    (
        "all keys given, unchanged but not long enough: wait",
        sealed(2, "n1"),
        Memory(attempt_nonce="n1", submitted=frozenset({0, 1}), watch=("n1", 2), watch_since=990),
        ctx(keys=2),
        Kind.WAIT,
        -1,
    ),
    (
        "all keys given, unchanged past the stall timeout: reset",
        sealed(2, "n1"),
        Memory(attempt_nonce="n1", submitted=frozenset({0, 1}), watch=("n1", 2), watch_since=969),
        ctx(keys=2),
        Kind.RESET,
        -1,
    ),
    (
        "watched attempt moved: watch again instead of resetting",
        sealed(2, "n2"),
        Memory(attempt_nonce="n2", submitted=frozenset({0, 1}), watch=("n1", 2), watch_since=900),
        ctx(keys=2),
        Kind.WAIT,
        -1,
    ),
    (
        "key rejected, backoff running: back off",
        SEALED,
        Memory(rejections=1, retry_at=1005, rejected_fingerprint="fp1"),
        ctx(),
        Kind.BACK_OFF,
        -1,
    ),
    (
        "key rejected, backoff over: try again",
        SEALED,
        Memory(rejections=2, retry_at=999, rejected_fingerprint="fp1"),
        ctx(),
        Kind.SUBMIT,
        0,
    ),
    (
        "key rejected but the key file changed: try the new key at once",
        SEALED,
        Memory(rejections=3, retry_at=5000, rejected_fingerprint="fp1"),
        ctx(fp="fp2"),
        Kind.SUBMIT,
        0,
    ),
    (
        "key rejected, file unreadable now: keep backing off",
        SEALED,
        Memory(rejections=1, retry_at=5000, rejected_fingerprint="fp1"),
        ctx(fp=None, keys=0),
        Kind.BACK_OFF,
        -1,
    ),
    ("no usable keys: only observe", SEALED, Memory(), ctx(keys=0, fp=None), Kind.WAIT, -1),
    (
        "a foreign attempt while backing off is left alone",
        sealed(1, "theirs"),
        Memory(rejections=1, retry_at=2000, rejected_fingerprint="fp1"),
        ctx(),
        Kind.BACK_OFF,
        -1,
    ),
]


@pytest.mark.parametrize(
    ("status", "memory", "context", "kind", "index"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    status: SealStatus, memory: Memory, context: Context, kind: Kind, index: int
) -> None:
    decision = decide(status, memory, context)
    assert decision.kind is kind, decision.reason
    assert decision.index == index


def test_progress_is_never_a_reason_to_reset_while_we_can_contribute() -> None:
    for progress in (1, 2):
        for nonce in ("ours", "theirs"):
            memory = Memory(attempt_nonce="ours", submitted=frozenset({0}))
            decision = decide(sealed(progress, nonce), memory, ctx(stall=0.0))
            assert decision.kind is Kind.SUBMIT


def test_joining_marks_the_attempt_as_shared() -> None:
    decision = decide(sealed(1, "theirs"), Memory(), ctx())
    assert decision.memory.joined
    assert decision.memory.attempt_nonce == "theirs"
    memory = after_submit(decision.memory, 0, sealed(2, "theirs"))
    assert memory.submitted == frozenset({0})
    assert memory.joined


def test_a_full_attempt_of_ours() -> None:
    memory = Memory()
    status = SEALED
    for step, reply in enumerate([sealed(1, "n1"), sealed(2, "n1"), UNSEALED]):
        decision = decide(status, memory, ctx(now=NOW + step))
        assert decision.kind is Kind.SUBMIT
        assert decision.index == step
        memory = after_submit(decision.memory, decision.index, reply)
        status = reply
    assert memory == Memory(unseals=1)
    assert decide(status, memory, ctx()).kind is Kind.NOTHING


def test_first_share_landing_after_someone_elses_is_joined() -> None:
    decision = decide(SEALED, Memory(), ctx())
    memory = after_submit(decision.memory, 0, sealed(2, "n9"))  # a racing unsealer was first
    assert memory.joined
    assert memory.attempt_nonce == "n9"


def test_reply_with_progress_zero_forgets_the_attempt() -> None:
    memory = after_submit(Memory(attempt_nonce="n1", submitted=frozenset({0})), 1, SEALED)
    assert memory.attempt_nonce == ""
    assert memory.submitted == frozenset()


def test_rejection_of_our_own_attempt_backs_off() -> None:
    memory = Memory(attempt_nonce="n1", submitted=frozenset({0, 1}))
    after, ours = after_rejection(memory, now=NOW, fingerprint="fp1", delay=4.0)
    assert ours
    assert after.rejections == 1
    assert after.retry_at == NOW + 4.0
    assert after.rejected_fingerprint == "fp1"
    assert after.attempt_nonce == ""
    assert decide(SEALED, after, ctx(now=NOW + 1)).kind is Kind.BACK_OFF
    assert decide(SEALED, after, ctx(now=NOW + 4)).kind is Kind.SUBMIT
    again, _ = after_rejection(after, now=NOW + 4, fingerprint="fp1", delay=8.0)
    assert again.rejections == 2


def test_rejection_of_a_joined_attempt_is_not_our_key() -> None:
    memory = Memory(attempt_nonce="theirs", submitted=frozenset({0}), joined=True)
    after, ours = after_rejection(memory, now=NOW, fingerprint="fp1", delay=4.0)
    assert not ours
    assert after.rejections == 0
    assert decide(SEALED, after, ctx()).kind is Kind.SUBMIT


def test_unseal_clears_rejections() -> None:
    memory = Memory(rejections=3, retry_at=NOW - 1, rejected_fingerprint="fp1")
    assert decide(UNSEALED, memory, ctx()).memory.rejections == 0


def test_reset_forgets_the_attempt() -> None:
    memory = Memory(attempt_nonce="n1", submitted=frozenset({0}), watch=("n1", 1), watch_since=1)
    assert after_reset(memory).attempt_nonce == ""
    assert after_reset(memory).watch is None


def test_sealed_since_tracks_the_sealed_spell() -> None:
    first = decide(SEALED, Memory(), ctx(now=100)).memory
    assert first.sealed_since == 100
    later = decide(sealed(1, "x"), first, ctx(now=150)).memory
    assert later.sealed_since == 100
    assert sealed_too_long(later, 161, 60)
    assert not sealed_too_long(later, 159, 60)
    assert decide(UNSEALED, later, ctx(now=170)).memory.sealed_since is None


def test_seal_status_from_json_tolerates_variants() -> None:
    status = SealStatus.from_json(
        {
            "initialized": True,
            "sealed": True,
            "t": 2,
            "n": 3,
            "progress": 1,
            "nonce": None,
            "version": "2.6.2",
            "commit_date": "x",
        }
    )
    assert status.nonce == ""
    assert status.t == 2
    assert status.version == "2.6.2"
    assert SealStatus.from_json({}).sealed is True


def test_an_uninitialized_member_of_an_existing_cluster_is_not_joined_and_remembered() -> None:
    decision = decide(UNINIT, Memory(), replace(ctx(), cluster_exists=True))
    assert decision.kind is Kind.NOT_JOINED
    assert decision.memory.seen_uninitialized


def test_unsealed_forgets_that_the_member_was_joining() -> None:
    decision = decide(UNSEALED, Memory(seen_uninitialized=True), ctx())
    assert not decision.memory.seen_uninitialized


def test_a_withheld_member_waits_with_the_reason() -> None:
    sealed_member = SealStatus(initialized=True, sealed=True, t=1, n=1)
    decision = decide(sealed_member, Memory(), replace(ctx(), withheld="not yet"))
    assert decision.kind is Kind.WAIT
    assert decision.reason == "not yet"


def test_the_last_share_answered_sealed_waits_for_the_member_to_settle() -> None:
    reply = SealStatus(initialized=True, sealed=True, t=1, n=1, progress=0)
    memory = after_submit(Memory(), 0, reply, now=100.0, settle=5.0)
    assert memory.settling_until == 105.0
    waiting = decide(reply, memory, ctx(now=102.0))
    assert waiting.kind is Kind.WAIT
    again = decide(reply, memory, ctx(now=106.0))
    assert again.kind is Kind.SUBMIT


LEADER = "https://10.0.0.3:8200"
JOINING = replace(ctx(), cluster_exists=True, leader=LEADER)

JOIN_CASES = [
    # (id, status, memory, context, kind)
    ("not joined, an active member known: join it", UNINIT, Memory(), JOINING, Kind.JOIN),
    (
        "not joined, no active member: wait",
        UNINIT,
        Memory(),
        replace(JOINING, leader=""),
        Kind.NOT_JOINED,
    ),
    (
        "not joined, joined a moment ago: wait for the retry",
        UNINIT,
        Memory(join_at=NOW + 1),
        JOINING,
        Kind.NOT_JOINED,
    ),
    ("not joined, the retry is due: join again", UNINIT, Memory(join_at=NOW), JOINING, Kind.JOIN),
    (
        "no cluster at all: never joined, never initialized",
        UNINIT,
        Memory(),
        replace(JOINING, cluster_exists=False),
        Kind.UNINITIALIZED,
    ),
    (
        "joined by us, sealed: the key goes to it",
        SEALED,
        Memory(joined_by_us=True, seen_uninitialized=True),
        JOINING,
        Kind.SUBMIT,
    ),
    (
        "an unseal after our join failed: join again before any key",
        SEALED,
        Memory(joined_by_us=True, rejoin=True),
        JOINING,
        Kind.JOIN,
    ),
    (
        "rejoin due but no active member: wait",
        SEALED,
        Memory(joined_by_us=True, rejoin=True),
        replace(JOINING, leader=""),
        Kind.WAIT,
    ),
]


@pytest.mark.parametrize(
    ("status", "memory", "context", "kind"),
    [case[1:] for case in JOIN_CASES],
    ids=[case[0] for case in JOIN_CASES],
)
def test_join(status: SealStatus, memory: Memory, context: Context, kind: Kind) -> None:
    decision = decide(status, memory, context)
    assert decision.kind is kind, decision.reason


def test_a_join_is_remembered_and_paced() -> None:
    decision = decide(UNINIT, Memory(), JOINING)
    assert decision.kind is Kind.JOIN
    assert LEADER in decision.reason
    joined = after_join(decision.memory, now=NOW, ok=True, retry=5.0)
    assert joined.joined_by_us
    assert joined.seen_uninitialized
    # Still uninitialized at the next look (the join did not take): retried after 5 s only.
    assert decide(UNINIT, joined, replace(JOINING, now=NOW + 1)).kind is Kind.NOT_JOINED
    assert decide(UNINIT, joined, replace(JOINING, now=NOW + 5)).kind is Kind.JOIN
    failed = after_join(decision.memory, now=NOW, ok=False, retry=5.0)
    assert not failed.joined_by_us


def test_an_unseal_error_means_rejoin_only_for_a_member_we_joined() -> None:
    ours = Memory(joined_by_us=True, attempt_nonce="n1", submitted=frozenset({0}))
    assert after_unseal_error(ours).rejoin
    assert after_unseal_error(ours).attempt_nonce == ""
    theirs = Memory(seen_uninitialized=True)
    assert after_unseal_error(theirs) == theirs
    # Unsealed: a normal member again (no join memory left).
    assert decide(UNSEALED, after_unseal_error(ours), JOINING).memory == Memory()
