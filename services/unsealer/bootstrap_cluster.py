"""The Vault side of ``certflow vault-bootstrap`` on a raft cluster: look before init, then watch.

Initializing a member while another member already holds a cluster would start a second,
separate cluster, so every member is asked first: one initialized member means "already
initialized, change nothing", and a member that does not answer means "cannot tell, change
nothing". After the init (of one member only, which bootstrap unseals to learn the cluster id;
the unsealer joins the others to it and unseals them), bootstrap waits, bounded, for exactly one
active member and every other member a standby, and turns on autopilot's dead-server cleanup so
that a member that comes back with a new identity (lost volume) does not leave a dead voter behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.unsealer.cluster import MemberView, judge, roles
from services.unsealer.status import MemberHealth, Role
from services.unsealer.vault_client import VaultClient
from shared.errors import VaultError
from shared.logs import get_logger

_log = get_logger(__name__)


@dataclass(frozen=True)
class Survey:
    initialized: tuple[str, ...]  # addresses that say initialized
    unreachable: dict[str, str]  # address -> why

    @property
    def clear_to_init(self) -> bool:
        return not self.initialized and not self.unreachable


def survey(members: Sequence[VaultClient]) -> Survey:
    initialized: list[str] = []
    unreachable: dict[str, str] = {}
    for member in members:
        try:
            if member.is_initialized():
                initialized.append(member.address)
        except VaultError as exc:
            unreachable[member.address] = str(exc)
    return Survey(tuple(initialized), unreachable)


def observe(members: Sequence[VaultClient]) -> dict[str, Role]:
    views = []
    for member in members:
        health: MemberHealth | None
        try:
            health = member.health()
        except VaultError:
            health = None
        views.append(MemberView(member.address, health))
    return roles(views)


def autopilot_settings(
    members: int, dead_after: str, stabilization: str = ""
) -> dict[str, object] | None:
    """Dead-server cleanup needs a quorum floor of 3; smaller clusters keep the defaults.

    ``stabilization``: how long a rejoined member must be healthy before autopilot makes it a
    voter again (the server's default is 10s); the distributor's DISTRIBUTOR_VOTER_WAIT must be
    longer, since the next member of a rolling restart stops only after it.
    """
    if members < 3:
        return None
    settings: dict[str, object] = {
        "cleanup_dead_servers": True,
        "dead_server_last_contact_threshold": dead_after,
        "min_quorum": members,
    }
    if stabilization:
        settings["server_stabilization_time"] = stabilization
    return settings


def await_cluster(
    members_now: Callable[[], Sequence[VaultClient]],
    *,
    root_token: str,
    dead_after: str,
    timeout: float,
    stabilization: str = "",
    poll: float = 1.0,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Role]:
    """Wait until one member is active and the rest standbys; configure autopilot on the way.

    ``members_now`` is asked on every poll: a member that Swarm replaced meanwhile (a new task, a
    new address) is followed. Returns the last roles seen; the caller decides what a timeout means.
    """
    deadline = clock() + timeout
    members = members_now()
    settings = autopilot_settings(len(members), dead_after, stabilization)
    configured = settings is None
    last: dict[str, Role] = {}
    while True:
        members = members_now()
        last = observe(members)
        active = [a for a, r in last.items() if r is Role.ACTIVE]
        if not configured and len(active) == 1:
            leader = next(m for m in members if m.address == active[0])
            try:
                leader.configure_autopilot(root_token, settings or {})
                configured = True
                say(
                    "Autopilot: dead-server cleanup on (a member unseen for "
                    f"{dead_after} is removed; quorum floor {len(members)})."
                )
                _log.info("bootstrap.autopilot_configured", leader=leader.address)
            except VaultError as exc:
                _log.warning("bootstrap.autopilot_retry", error=str(exc))
        whole = judge(last).ok and all(r in (Role.ACTIVE, Role.STANDBY) for r in last.values())
        if whole and configured:
            return last
        if clock() >= deadline:
            return last
        time.sleep(poll)
