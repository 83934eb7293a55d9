"""Initialize Vault once and keep its unseal keys in a Docker secret, rotating it safely.

Order matters so that nothing is lost:
1. Check everything that can be checked before Vault is touched (Vault reachable and not yet
   initialized, this node a swarm manager, the root token file writable). An initialized Vault
   means: change nothing and say so.
2. Initialize. The keys exist only in memory now, so the secret is created next; if that fails, the
   keys go to a 0600 rescue file whose path is printed (never to the log). Just before, the
   initialized member is unsealed with those keys to learn its cluster id, which the key document
   records: the unsealer then knows the document is this cluster's from any unsealed member, and
   one of another cluster's is given to nobody. That step is bounded and may fail: the document
   then has no id, and nothing else changes.
3. Docker secrets are immutable: the secret is ``<name>-<UTC timestamp>`` with the label
   ``certflow.secret=<name>``. Each service that mounts the secret under the target ``<name>`` is
   repointed to the new one (same target, uid, gid, mode), the update is awaited, and only then are
   the previous versions removed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from services.unsealer.bootstrap_cluster import await_cluster, survey
from services.unsealer.cluster import judge
from services.unsealer.keys import valid_cluster_id
from services.unsealer.status import Role, SealStatus
from services.unsealer.vault_client import VaultClient
from shared.atomic import fsync_dir
from shared.docker_engine import DockerEngine
from shared.errors import DockerError, DockerNotFound, VaultError
from shared.logs import get_logger
from shared.swarm import FAILED_UPDATE_STATES, SecretInfo, SecretRef, ServiceState, SpecEdit

_log = get_logger(__name__)
LABEL = "certflow.secret"


class BootstrapError(DockerError):
    """Bootstrap could not finish; the message says what state things are in."""


@dataclass
class Outcome:
    initialized_now: bool
    secret_name: str = ""
    repointed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def secret_document(
    init_reply: dict[str, Any],
    shares: int,
    threshold: int,
    *,
    cluster_id: str | None = None,
    cluster_name: str | None = None,
) -> bytes:
    """What goes into the secret: ``vault operator init -format=json`` minus the root token,
    plus the cluster's id and name when known (readers of that format ignore extra fields)."""
    document: dict[str, Any] = {
        "unseal_keys_b64": list(init_reply["keys_base64"]),
        "unseal_keys_hex": list(init_reply["keys"]),
        "unseal_shares": shares,
        "unseal_threshold": threshold,
    }
    if cluster_id:
        document["cluster_id"] = cluster_id
    if cluster_name:
        document["cluster_name"] = cluster_name
    return (json.dumps(document, indent=2) + "\n").encode()


_SECRET_NAME = re.compile(r"\A[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?\Z")
_STAMP_LENGTH = len("-20260101T000000Z-ffff")
_MAX_SECRET_NAME = 64  # swarmkit's limit


def secret_name_problem(base: str) -> str:
    """Why Docker would refuse ``<base>-<timestamp>``; checked before Vault is touched."""
    if not _SECRET_NAME.match(base):
        return "must be letters, digits, '_', '.', '-' and start and end with a letter or digit"
    if len(base) + _STAMP_LENGTH > _MAX_SECRET_NAME:
        return (
            f"must be at most {_MAX_SECRET_NAME - _STAMP_LENGTH} characters (a timestamp is added)"
        )
    return ""


def versioned_name(base: str, now: datetime) -> str:
    return f"{base}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def repoint_secrets(
    refs: tuple[SecretRef, ...], *, target: str, old_names: set[str], new: SecretInfo
) -> tuple[tuple[SecretRef, ...], bool]:
    """Swap references to the old secret (by target name or old secret name) for the new one."""
    changed = False
    out: list[SecretRef] = []
    for ref in refs:
        if ref.target == target or ref.secret_name in old_names:
            changed = changed or ref.secret_id != new.secret_id
            out.append(replace(ref, secret_id=new.secret_id, secret_name=new.name))
        else:
            out.append(ref)
    return tuple(out), changed


def output_dir_problem(directory: Path) -> str:
    """Why ``directory`` cannot take the bootstrap's files; checked before Vault is touched."""
    if not directory.exists():
        return f"{directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable"
    return ""


def open_private(directory: Path, name: str) -> int:
    """A new file ``name`` in ``directory``, mode 0600, for writing.

    Never an existing entry: O_EXCL refuses a file (or a planted symlink) already there and
    O_NOFOLLOW a symlink, so nothing is ever written through a link to somewhere else.
    """
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"{name!r} is not a plain file name")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd


def finish_private(fd: int, directory: Path, data: bytes) -> None:
    """Write ``data`` to ``fd`` from :func:`open_private`, fsync it and its directory, close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


class Bootstrap:
    def __init__(
        self,
        *,
        vault: VaultClient,
        engine: DockerEngine,
        members: Sequence[VaultClient] = (),
        members_now: Callable[[], Sequence[VaultClient]] | None = None,
        autopilot_dead_after: str = "10m",
        autopilot_stabilization: str = "",
        secret_name: str,
        services: list[str],
        shares: int,
        threshold: int,
        out: TextIO,
        output_dir: Path,
        root_token_file: str | None = None,
        converge_timeout: float = 300.0,
        poll: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.vault = vault
        # Every member of the cluster, the one to initialize first (it defaults to that one alone);
        # ``members_now`` finds them again (after a member was replaced), else the list is fixed.
        self.members = [vault, *(m for m in members if m.address != vault.address)]
        self._members_now = members_now or (lambda: self.members)
        self.autopilot_dead_after = autopilot_dead_after
        self.autopilot_stabilization = autopilot_stabilization
        self.engine = engine
        self.secret_name = secret_name
        self.services = services
        self.shares = shares
        self.threshold = threshold
        self.out = out
        self.output_dir = output_dir
        self.root_token_file = root_token_file
        self.converge_timeout = converge_timeout
        self.poll = poll
        self.clock = clock

    def run(self) -> Outcome:
        found = survey(self.members)
        if found.initialized:
            self._say(
                "Vault is already initialized: nothing changed (no secret created, no service "
                f"updated; initialized: {', '.join(found.initialized)})."
            )
            _log.info("bootstrap.already_initialized", vault=list(found.initialized))
            return Outcome(initialized_now=False)
        if found.unreachable:
            unseen = "; ".join(f"{a}: {why}" for a, why in found.unreachable.items())
            raise BootstrapError(
                f"cannot reach every member ({unseen}); a member that cannot be seen may already "
                "hold a cluster, and an init now would start a second one; Vault untouched"
            )
        self._preflight()
        token_fd = self._open_token_file()
        reply = self.vault.initialize(self.shares, self.threshold)
        _log.info(
            "bootstrap.initialized",
            vault=self.vault.address,
            shares=self.shares,
            threshold=self.threshold,
        )
        root_token = str(reply.get("root_token", ""))
        self._deliver_root_token(root_token, token_fd)
        cluster = self._unseal_first(list(reply.get("keys_base64") or ()))
        payload = secret_document(
            reply,
            self.shares,
            self.threshold,
            cluster_id=cluster.cluster_id,
            cluster_name=cluster.cluster_name,
        )
        del reply
        outcome = Outcome(initialized_now=True)
        secret = self._create_secret(payload)
        outcome.secret_name = secret.name
        self.rotate_to(secret, outcome)
        if len(self.members) > 1:
            self._await_cluster(root_token, secret.name)
        del root_token
        return outcome

    def _await_cluster(self, root_token: str, secret_name: str) -> None:
        """The unsealer now has the keys: wait for one active member and the others standbys."""
        self._say(
            f"Waiting for the cluster: the other {len(self.members) - 1} member(s) join "
            f"{self.vault.address} and are unsealed."
        )
        member_roles = await_cluster(
            self._members_now,
            root_token=root_token,
            dead_after=self.autopilot_dead_after,
            stabilization=self.autopilot_stabilization,
            timeout=self.converge_timeout,
            say=self._say,
        )
        summary = ", ".join(f"{a}: {r.value}" for a, r in sorted(member_roles.items()))
        whole = judge(member_roles).ok and all(
            r in (Role.ACTIVE, Role.STANDBY) for r in member_roles.values()
        )
        if not whole:
            raise BootstrapError(
                f"Vault is initialized and its keys are in secret {secret_name}, but the cluster "
                f"is not whole after {self.converge_timeout:.0f} s ({summary}); the unsealer's "
                "/health says why"
            )
        self._say(f"Cluster formed: {summary}.")
        _log.info("bootstrap.cluster_formed", members=len(member_roles))

    # -- steps -----------------------------------------------------------------------------
    def _unseal_first(self, keys: list[str]) -> SealStatus:
        """Unseal the member just initialized and return its status (cluster id and name).

        The keys are in memory only until the secret exists: nothing here may keep them from it,
        so any failure gives an empty status (a document without an id) and a warning.
        """
        try:
            status = self.vault.seal_status()
            for key in keys[: self.threshold]:
                if not status.sealed:
                    break
                status = self.vault.submit_key(key)
            status = self.vault.seal_status()  # trust the member, not the unseal reply
        except Exception as exc:  # any failure at all: the keys must reach the secret
            why = str(exc) if isinstance(exc, VaultError) else type(exc).__name__
            return self._no_cluster_id(f"unsealing {self.vault.address} failed: {why}")
        if status.sealed or not valid_cluster_id(status.cluster_id):
            # an id the unsealer would refuse must not make the whole key file unreadable
            return self._no_cluster_id(f"{self.vault.address} did not report a cluster id")
        _log.info(
            "bootstrap.unsealed_first",
            vault=self.vault.address,
            cluster_id=status.cluster_id,
            cluster_name=status.cluster_name,
        )
        self._say(
            f"Unsealed {self.vault.address}: cluster {status.cluster_name or '?'} "
            f"({status.cluster_id}); the key document records this cluster id."
        )
        return status

    def _no_cluster_id(self, why: str) -> SealStatus:
        _log.warning("bootstrap.cluster_id_unknown", error=why)
        self._say(
            f"The key document has no cluster id ({why}); the unsealer proves the key on a "
            "joined member instead."
        )
        return SealStatus(initialized=True, sealed=True)

    def _preflight(self) -> None:
        try:
            me = self.engine.local_node()
        except DockerError as exc:
            raise BootstrapError(f"Docker engine not reachable: {exc}; Vault untouched") from exc
        if not me.is_manager:
            raise BootstrapError(
                "this node is not a swarm manager (secrets need one); Vault untouched"
            )

    def _open_token_file(self) -> int | None:
        if self.root_token_file is None:
            return None
        try:
            return open_private(self.output_dir, self.root_token_file)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise BootstrapError(
                f"cannot create --root-token-file {self.root_token_file} in {self.output_dir}: "
                f"{why} (it must not exist yet); Vault untouched"
            ) from None

    def _deliver_root_token(self, token: str, fd: int | None) -> None:
        if fd is not None:
            finish_private(fd, self.output_dir, (token + "\n").encode())
            where = self.output_dir / self.root_token_file if self.root_token_file else None
            self._say(f"Root token written to {where} (mode 0600).")
            return
        # Once, to the terminal only: the log stream may be collected centrally.
        self._say(f"Root token (shown once, store it now): {token}")

    def _create_secret(self, payload: bytes) -> SecretInfo:
        name = versioned_name(self.secret_name, self.clock())
        try:
            if name in {s.name for s in self.engine.secrets(name=name)}:
                name = f"{name}-{os.urandom(2).hex()}"
            secret = self.engine.create_secret(name, payload, {LABEL: self.secret_name})
        except DockerError as exc:
            rescue_name = (
                f"vault-unseal-keys-{self.clock():%Y%m%dT%H%M%SZ}-{os.urandom(2).hex()}.json"
            )
            finish_private(open_private(self.output_dir, rescue_name), self.output_dir, payload)
            rescue = self.output_dir / rescue_name
            raise BootstrapError(
                f"Vault is initialized but creating secret {name} failed ({exc}); the unseal keys "
                f"are in {rescue} (0600): create the secret from it, then delete the file"
            ) from exc
        _log.info("bootstrap.secret_created", secret=name)
        self._say(f"Created Docker secret {name} (label {LABEL}={self.secret_name}).")
        return secret

    def rotate_to(self, secret: SecretInfo, outcome: Outcome) -> None:
        """Repoint the services to ``secret``, wait for them, remove the previous versions."""
        previous = self._previous_versions(secret.secret_id)
        old_names = {s.name for s in previous} | {self.secret_name}
        updated: list[ServiceState] = []
        for name in self.services:
            service = self._get_service(name)
            if service is None:
                outcome.skipped.append(name)
                continue
            if self._repoint(service, secret, old_names):
                updated.append(service)
                outcome.repointed.append(name)
            else:
                outcome.skipped.append(name)
        for service in updated:
            self._wait_converged(service.service_id, secret.secret_id)
        for old in previous:
            try:
                self.engine.remove_secret(old.secret_id)
            except DockerError as exc:
                outcome.kept.append(old.name)
                _log.warning("bootstrap.old_secret_kept", secret=old.name, error=str(exc))
                continue
            outcome.removed.append(old.name)
            _log.info("bootstrap.old_secret_removed", secret=old.name)
        if outcome.repointed:
            self._say("Repointed " + ", ".join(outcome.repointed) + f" to {secret.name}.")
        if outcome.removed:
            self._say("Removed previous secret(s): " + ", ".join(outcome.removed) + ".")
        if outcome.kept:
            self._say("Still in use, kept: " + ", ".join(outcome.kept) + ".")
        self._say(
            f"For the next `docker stack deploy`, set VAULT_UNSEAL_SECRET={secret.name} "
            "so the stack refers to the current secret."
        )

    def _previous_versions(self, new_id: str) -> list[SecretInfo]:
        try:
            labelled = self.engine.secrets(label=f"{LABEL}={self.secret_name}")
            plain = self.engine.secrets(name=self.secret_name)
        except DockerError as exc:
            raise BootstrapError(f"listing secrets failed: {exc}") from exc
        seen: dict[str, SecretInfo] = {}
        for secret in [*labelled, *plain]:
            # the name filter matches prefixes: keep exact names and our own labelled versions
            exact = secret.name == self.secret_name
            ours = secret.labels.get(LABEL) == self.secret_name
            if secret.secret_id != new_id and (exact or ours):
                seen[secret.secret_id] = secret
        return list(seen.values())

    def _get_service(self, name: str) -> ServiceState | None:
        try:
            return self.engine.service(name)
        except DockerNotFound:
            _log.warning("bootstrap.service_missing", service=name)
            self._say(f"Service {name} not found: skipped.")
            return None
        except DockerError as exc:
            raise BootstrapError(f"inspecting service {name} failed: {exc}") from exc

    def _repoint(self, service: ServiceState, secret: SecretInfo, old_names: set[str]) -> bool:
        def edit_for(current: ServiceState) -> SpecEdit | None:
            refs, changed = repoint_secrets(
                current.secrets, target=self.secret_name, old_names=old_names, new=secret
            )
            return SpecEdit(secrets=refs) if changed else None

        try:
            changed = self.engine.update_service(
                service.name, edit_for, what="repointing the secret", attempts=5
            ).posted
        except DockerError as exc:
            raise BootstrapError(f"updating service {service.name} failed: {exc}") from exc
        if changed:
            _log.info("bootstrap.service_repointed", service=service.name, secret=secret.name)
        else:
            _log.info("bootstrap.service_not_using_secret", service=service.name)
            self._say(f"Service {service.name} does not mount {self.secret_name}: skipped.")
        return changed

    def _wait_converged(self, service_id: str, secret_id: str) -> None:
        deadline = time.monotonic() + self.converge_timeout
        while True:
            try:
                service = self.engine.service(service_id)
                tasks = self.engine.tasks(service_id, running_only=False)
            except DockerError as exc:
                raise BootstrapError(f"watching the update of {service_id} failed: {exc}") from exc
            name, state = service.name, service.update_state
            if state in FAILED_UPDATE_STATES:
                raise BootstrapError(
                    f"update of {name} ended in {state}; previous secrets kept. "
                    f"{service.update_message}"
                )
            current = [t for t in tasks if secret_id in t.secret_ids]
            stale = [t for t in tasks if secret_id not in t.secret_ids]
            running = [t for t in current if t.state == "running"]
            expected = service.replicas if service.replicas is not None else max(1, len(current))
            if not stale and len(running) >= expected and state in (None, "completed"):
                _log.info("bootstrap.service_converged", service=name, tasks=len(running))
                return
            if time.monotonic() > deadline:
                raise BootstrapError(
                    f"{name} did not converge on the new secret within "
                    f"{self.converge_timeout:.0f} s; previous secrets kept"
                )
            time.sleep(self.poll)

    def _say(self, message: str) -> None:
        print(message, file=self.out, flush=True)


__all__ = ["Bootstrap", "BootstrapError", "Outcome", "VaultError", "secret_document"]
