"""Which local Vault replicas missed the pair they were restarted for (pure).

The coordinator restarts Vault once per certificate and stamps the fingerprint on the containers
that restart creates (container label ``certflow.fingerprint``). A replica that starts on a node
whose distributor has not installed that pair yet (the node was rebooting, cut off, or its mount
lagged) loaded the previous files, and no further restart will come for it. The node's
distributor sends it one SIGHUP once the pair is in place: Vault re-reads its listener
certificate without sealing (a SIGHUP reloads Vault's TLS listener; it never seals).
"""

from __future__ import annotations

from collections.abc import Iterable

from .facts import LocalReplica


def stale_replicas(
    replicas: Iterable[LocalReplica],
    *,
    installed: str | None,
    installed_at: float | None,
    signalled: frozenset[str] = frozenset(),
) -> list[str]:
    """Container IDs that were created for ``installed`` but started before it was on disk."""
    if installed is None or installed_at is None:
        return []
    return [
        r.container_id
        for r in replicas
        if r.fingerprint == installed
        and r.started_at < installed_at
        and r.container_id not in signalled
    ]
