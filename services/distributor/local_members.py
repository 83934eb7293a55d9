"""Probe this node's Vault members from inside their containers (the shell of member_probe.py).

One ``docker exec`` per member runs the member's own CLI twice (a Go program start each): a
member proven to serve the installed pair is probed again only every ``interval`` seconds, any
other member on every pass. So ``sealed`` may be up to ``interval`` old for a proven member.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor

from shared.docker_engine import DockerEngine
from shared.errors import DockerError, DockerNotFound
from shared.logs import get_logger
from shared.status import iso

from .facts import MemberProbe
from .member_probe import due, interpret, probe_argv, slot_of

_log = get_logger(__name__)

TASK_NAME_LABEL = "com.docker.swarm.task.name"
TASK_ID_LABEL = "com.docker.swarm.task.id"
# Two CLI calls of at most member_probe.CLI_TIMEOUT each, plus the shell and the exec itself.
EXEC_TIMEOUT = 20.0
_PARALLEL = 4  # members probed at once (a node runs one member in production, more in tests)


class LocalMemberProber:
    def __init__(
        self,
        engine: DockerEngine,
        *,
        service: str,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.service = service
        self.interval = interval
        self.clock = clock
        self._last: dict[str, tuple[MemberProbe, float]] = {}  # container ID -> probe, when
        self.probes = 0  # execs run (the cost; read by metrics and benchmarks)

    def forget(self, container_id: str) -> None:
        """Probe this member again on the next pass (it was just signalled)."""
        self._last.pop(container_id, None)

    def forget_tasks(self, task_ids: Collection[str]) -> None:
        """Probe these members (by Swarm task ID) again on the next pass: the coordinator's gate
        waits on their answer."""
        for cid, (probe, _at) in list(self._last.items()):
            if probe.task_id in task_ids:
                del self._last[cid]

    def probe(self, node_id: str, installed: str | None) -> list[MemberProbe]:
        """Every running member of the service on ``node_id``, by slot. Raises DockerError when
        the containers cannot be listed; a member whose exec fails is reported, not raised."""
        containers = self.engine.containers(self.service, node_id)
        members: list[MemberProbe] = []
        due_now: list[tuple[str, int | None, str, MemberProbe | None]] = []
        now = self.clock()
        for container in containers:
            cid = container.container_id
            last, last_at = self._last.get(cid, (None, None))
            if last is not None and not due(
                last, installed=installed, last_at=last_at, now=now, interval=self.interval
            ):
                members.append(last)
                continue
            slot = slot_of(container.labels.get(TASK_NAME_LABEL), self.service)
            due_now.append((cid, slot, container.labels.get(TASK_ID_LABEL, ""), last))
        # Side by side: each probe mostly waits on the member's CLI, and a rollout's gate waits
        # on the slowest of them.
        with ThreadPoolExecutor(max_workers=max(1, min(_PARALLEL, len(due_now)))) as pool:
            results = list(pool.map(lambda d: self._probe_one(d[0], d[1], d[2]), due_now))
        self.probes += len(due_now)
        for (cid, _slot, _task, last), member in zip(due_now, results, strict=True):
            if last is None or (last.serves_installed, last.sealed, last.trusted) != (
                member.serves_installed,
                member.sealed,
                member.trusted,
            ):
                _log.info(
                    "vault.member_probed",
                    slot=member.slot,
                    container=cid[:12],
                    serves_installed=member.serves_installed,
                    trusted=member.trusted,
                    sealed=member.sealed,
                    detail=member.detail,
                )
            self._last[cid] = (member, now)
            members.append(member)
        alive = {c.container_id for c in containers}
        for gone in set(self._last) - alive:
            del self._last[gone]
        return sorted(members, key=lambda m: (m.slot is None, m.slot or 0, m.container_id))

    def _probe_one(self, cid: str, slot: int | None, task_id: str) -> MemberProbe:
        base = MemberProbe(
            slot=slot,
            task_id=task_id,
            container_id=cid,
            checked_at=iso(self.clock()),  # before the CLI reads anything: never too late
        )
        try:
            result = self.engine.exec_in_container(cid, probe_argv(), timeout=EXEC_TIMEOUT)
        except DockerNotFound:
            return base.model_copy(update={"detail": "container gone"})
        except DockerError as exc:
            return base.model_copy(update={"detail": f"probe failed: {exc}"})
        verdict = interpret(result.exit_code, result.output)
        return base.model_copy(
            update={
                "fingerprint": verdict.fingerprint,
                "sealed": verdict.sealed,
                "active": verdict.active,
                "applied": verdict.applied,
                "serves_installed": verdict.serves_installed,
                "trusted": verdict.trusted,
                "detail": verdict.detail,
            }
        )
