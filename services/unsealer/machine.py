"""The per-replica unseal state machine: pure functions of (observed status, memory, now).

:func:`decide` picks the next step for one replica; :func:`after_submit`, :func:`after_rejection`
and :func:`after_reset` fold the outcome back into the replica's :class:`Memory`. Nothing here does
I/O or reads a clock, so every case is a unit test row.

Rules (why):
- Never initialize: that is an operator's decision (``certflow vault-bootstrap``). On a raft
  cluster an uninitialized member whose cluster exists has not joined yet: with ``join`` on, it is
  joined to the active member by address (``sys/storage/raft/join``), at most once per
  ``join_retry`` seconds; otherwise it is waited for (its own ``retry_join``).
- Why we join rather than rely on ``retry_join`` through ``tasks.<service>``: that name also
  resolves to the joiner itself and to other joiners. A joiner's unseal call holds its state lock
  until its join pass is through, and the pass asks a random address for the challenge with no
  timeout: landing on itself or on another joiner mid-unseal, it waits for ever (measured: two of
  three members stuck for the whole 300 s bootstrap). Joined by address, the pass never waits on a
  sealed member, and a wrong key is answered at once (500 ``error decrypting challenge``).
- Give a key only where the cluster view allows it (``Context.withheld`` says why not): an unproven
  key goes to one joined member first, or to members we joined ourselves, or to every member when
  the key file names the cluster an unsealed member reports, and to nobody when it names another
  (see :mod:`services.unsealer.cluster`); a member joined by its own ``retry_join`` is locked for
  good by a wrong key.
- After the last share, a joining member may answer ``sealed, progress 0`` and become a standby
  seconds later: wait ``settle`` seconds and re-poll instead of submitting again.
- Never reset an attempt just because ``progress > 0``: another unsealer replica or an operator may
  be half-way. Vault ignores a byte-identical share, so joining someone's attempt with our keys is
  harmless and finishes it; several unsealers at once therefore never make an attempt fail.
- Reset only an attempt we cannot move any more (all our keys given) that has not changed for
  ``stall_timeout``.
- A key rejected in an attempt that was ours alone means the key is wrong: back off exponentially
  and retry only when the backoff ends or the key file changes. A rejection in an attempt that held
  someone else's shares proves nothing about our key: start a fresh attempt at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from services.unsealer.status import SealStatus


@dataclass(frozen=True)
class Memory:
    """What we remember about one replica between observations."""

    attempt_nonce: str = ""  # the attempt we are feeding (ours or one we joined)
    submitted: frozenset[int] = frozenset()  # our key indices given to that attempt
    joined: bool = False  # the attempt had shares before our first one
    watch: tuple[str, int] | None = None  # (nonce, progress) we cannot move any more
    watch_since: float | None = None
    rejections: int = 0  # consecutive rejections of our key
    retry_at: float = 0.0
    rejected_fingerprint: str | None = None
    sealed_since: float | None = None  # first observation of the current sealed spell
    unseals: int = 0
    seen_uninitialized: bool = False  # seen not joined: treat as joining until it unseals once
    settling_until: float = 0.0  # gave the last share; wait for the member before giving more
    joined_by_us: bool = False  # we joined it by address: a wrong key is answered, not a lock
    join_at: float = 0.0  # not before this: the next join call
    rejoin: bool = False  # an unseal after our join failed: its challenge may be stale


class Kind(StrEnum):
    NOTHING = "nothing"  # unsealed: nothing to do
    SUBMIT = "submit"  # send key number ``index``
    RESET = "reset"  # the attempt stalled: reset it
    BACK_OFF = "back_off"  # our key was rejected; wait until ``retry_at``
    WAIT = "wait"  # an attempt we cannot move is open; watching it for a stall
    UNINITIALIZED = "uninitialized"  # report; never initialize
    NOT_JOINED = "not_joined"  # uninitialized while the cluster exists: not joinable now
    JOIN = "join"  # join it to the active member (``Context.leader``)


@dataclass(frozen=True)
class Decision:
    kind: Kind
    memory: Memory
    index: int = -1
    reason: str = ""
    retry_at: float = 0.0


@dataclass(frozen=True)
class Context:
    now: float
    key_count: int  # 0: keys unknown/unreadable (we only observe)
    fingerprint: str | None  # of the key file content, to notice a rotation
    stall_timeout: float
    cluster_exists: bool = False  # some member is initialized: an uninitialized one is joining
    withheld: str = ""  # non-empty: do not give this member a key now, and why
    leader: str = ""  # the active member's address, when joining is on and one is known


def _sealed_since(memory: Memory, status: SealStatus, now: float) -> float | None:
    if status.initialized and not status.sealed:
        return None
    return memory.sealed_since if memory.sealed_since is not None else now


def decide(status: SealStatus, memory: Memory, ctx: Context) -> Decision:
    now = ctx.now
    memory = replace(memory, sealed_since=_sealed_since(memory, status, now))
    if not status.initialized:
        fresh = Memory(
            sealed_since=memory.sealed_since,
            unseals=memory.unseals,
            seen_uninitialized=True,
            join_at=memory.join_at,
        )
        if not ctx.cluster_exists:
            return Decision(Kind.UNINITIALIZED, fresh, reason="not initialized")
        if ctx.leader and now >= memory.join_at:
            return Decision(Kind.JOIN, fresh, reason=f"not joined yet: joining it to {ctx.leader}")
        why = "waiting for an active member to join it to" if not ctx.leader else "join retry"
        return Decision(Kind.NOT_JOINED, fresh, reason=f"not joined yet ({why})")
    if not status.sealed:
        # success clears the rejection history too: the key in use works; and an unsealed member
        # has joined, so a later sealed spell at this address is a restart, not a join
        return Decision(Kind.NOTHING, Memory(unseals=memory.unseals), reason="unsealed")
    rotated = ctx.fingerprint is not None and ctx.fingerprint != memory.rejected_fingerprint
    if memory.rejections and now < memory.retry_at and not rotated:
        return Decision(Kind.BACK_OFF, memory, reason="key rejected", retry_at=memory.retry_at)
    if now < memory.settling_until and status.progress == 0:
        return Decision(Kind.WAIT, memory, reason="key given; waiting for the member to unseal")
    if memory.rejoin and status.progress == 0:
        if ctx.leader and now >= memory.join_at:
            return Decision(Kind.JOIN, memory, reason=f"joining it again to {ctx.leader}")
        return Decision(Kind.WAIT, memory, reason="waiting to join it again")
    if ctx.withheld:
        return Decision(Kind.WAIT, memory, reason=ctx.withheld)
    if ctx.key_count <= 0:
        return Decision(Kind.WAIT, memory, reason="no usable keys")
    if status.progress == 0:
        # No attempt open (or it was just reset/finished): start one with our first key.
        fresh = replace(memory, attempt_nonce="", submitted=frozenset(), joined=False, watch=None)
        return Decision(Kind.SUBMIT, fresh, index=0, reason="start attempt")
    if status.nonce and status.nonce == memory.attempt_nonce:
        given = memory.submitted
        joined = memory.joined
    else:
        given, joined = frozenset(), True  # someone else's attempt: continue it
    pending = [i for i in range(ctx.key_count) if i not in given]
    if pending:
        updated = replace(
            memory, attempt_nonce=status.nonce, submitted=given, joined=joined, watch=None
        )
        reason = "join attempt" if joined and not given else "continue attempt"
        return Decision(Kind.SUBMIT, updated, index=pending[0], reason=reason)
    # All our keys are in and the attempt is still below the threshold.
    point = (status.nonce, status.progress)
    if memory.watch != point:
        watched = replace(memory, watch=point, watch_since=now)
        return Decision(Kind.WAIT, watched, reason="attempt needs more keys than we hold")
    since = memory.watch_since if memory.watch_since is not None else now
    if now - since >= ctx.stall_timeout:
        return Decision(Kind.RESET, memory, reason="attempt stalled")
    return Decision(Kind.WAIT, memory, reason="attempt needs more keys than we hold")


def after_submit(
    memory: Memory, index: int, reply: SealStatus, *, now: float = 0.0, settle: float = 0.0
) -> Memory:
    """Fold an accepted share (a 200 reply) into memory.

    ``settle``: how long a member that took the last share and still says sealed (a raft member
    finishing its join) is given before it is sent a key again.
    """
    if reply.initialized and not reply.sealed:
        return Memory(unseals=memory.unseals + 1)
    if reply.progress == 0:
        # Either the attempt reached its threshold and the member is still finishing (a joining
        # raft member answers so) or someone reset it under us. Both: start over, but not before
        # the member had time to finish.
        last_share = reply.t <= 1 or len(memory.submitted | {index}) >= reply.t
        return replace(
            memory,
            attempt_nonce="",
            submitted=frozenset(),
            joined=False,
            settling_until=now + settle if last_share else 0.0,
        )
    if reply.nonce != memory.attempt_nonce:
        # A new attempt began with this share; it was ours from the start if progress is 1.
        return replace(
            memory,
            attempt_nonce=reply.nonce,
            submitted=frozenset({index}),
            joined=reply.progress > 1,
            watch=None,
        )
    return replace(memory, submitted=memory.submitted | {index})


def after_rejection(
    memory: Memory, *, now: float, fingerprint: str | None, delay: float
) -> tuple[Memory, bool]:
    """The attempt failed at the threshold. Returns (memory, our key is the culprit)."""
    cleared = replace(memory, attempt_nonce="", submitted=frozenset(), joined=False, watch=None)
    if memory.joined:
        return cleared, False
    return (
        replace(
            cleared,
            rejections=memory.rejections + 1,
            retry_at=now + delay,
            rejected_fingerprint=fingerprint,
        ),
        True,
    )


def after_join(memory: Memory, *, now: float, ok: bool, retry: float) -> Memory:
    """Fold a join call in: the next one waits ``retry`` seconds whatever the outcome (a join
    that went through shows as initialized at the next look; one that did not is tried again)."""
    return replace(memory, joined_by_us=ok, rejoin=False, join_at=now + retry)


def after_unseal_error(memory: Memory) -> Memory:
    """An unseal call failed without rejecting the key. On a member we joined, the challenge it
    holds may be gone (the leader changed): join it again before the next key."""
    if not memory.joined_by_us:
        return memory
    return replace(memory, rejoin=True, attempt_nonce="", submitted=frozenset(), joined=False)


def after_reset(memory: Memory) -> Memory:
    return replace(memory, attempt_nonce="", submitted=frozenset(), joined=False, watch=None)


def sealed_too_long(memory: Memory, now: float, threshold: float) -> bool:
    return memory.sealed_since is not None and now - memory.sealed_since >= threshold
