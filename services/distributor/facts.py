"""What the distributor's decisions read: the peers' reports and their members' probes.

Plain data only, so the pure modules (``coordinator``, ``stop_order``) and the effectful ones
(``peers``, ``docker_ops``) share these types without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.consumers import ConsumerReport


class MemberProbe(BaseModel):
    """One local Vault member as its node's distributor last probed it (local_members.py).

    ``serves_installed``: the member's TLS listener serves exactly the leaf installed on its node
    (``fingerprint``), proven by a handshake that trusts only that leaf. ``trusted``: it also
    passes the check Vault's clients make (the CA bundle). None: the probe could not tell.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    slot: int | None = None  # Swarm task slot (com.docker.swarm.task.name <svc>.<slot>.<id>)
    task_id: str = ""
    container_id: str = ""
    fingerprint: str | None = None  # the installed leaf the probe compared with
    sealed: bool | None = None
    active: bool | None = None  # the raft leader (status' is_self); None: sealed or unknown
    # raft_applied_index (the last entry its state machine applied; status shows it when
    # unsealed on raft storage); None: not known. The gate reads catching up from it.
    applied: int | None = None
    serves_installed: bool | None = None
    trusted: bool | None = None
    detail: str = ""  # short reason, never a secret
    checked_at: str | None = None  # ISO time of the probe

    @property
    def proven(self) -> bool:
        """Serves the installed leaf, trusted by Vault's clients."""
        return self.serves_installed is True and self.trusted is True


class DistributorInfo(BaseModel):
    """What each distributor reports in ``/health`` (``info``); the coordinator parses it back."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str = ""
    hostname: str = ""
    fingerprint: str | None = None  # installed leaf fingerprint
    generation: int | None = None  # installed generation
    storagebox_generation: int | None = None  # newest committed generation seen on the Storage Box
    installed_at: str | None = None  # ISO time the installed generation was put in place
    last_sync: str | None = None  # ISO time of the last complete pass
    last_error: str | None = None
    members: list[MemberProbe] = []  # this node's Vault members; older peers report none
    # The operator's pause (certflow pause) as a manager's distributor read it: a worker's
    # distributor cannot read service labels and takes it from here.
    paused: str | None = None
    pause_known: bool = False  # this distributor read the pause itself (it runs on a manager)
    # The consumers (services labelled certflow.reload), on the Swarm leader's distributor only.
    consumers: list[ConsumerReport] = []
