"""Initialize Vault once and keep its unseal keys in a Docker secret, rotating it safely.

Order matters so that nothing is lost:
1. Check everything that can be checked before Vault is touched (Vault reachable and not yet
   initialized, this node a swarm manager, the root token file writable). An initialized Vault
   means: change nothing and say so.
2. Initialize. The keys exist only in memory now, so the secret is created next; if that fails, the
   keys go to a 0600 rescue file whose path is printed (never to the log).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import docker.errors
import requests

from services.unsealer.vault_client import VaultClient
from shared.errors import DockerError, UpdateOutOfSequence, VaultError
from shared.logs import get_logger
from shared.retry import call_with_retry

_log = get_logger(__name__)
LABEL = "certflow.secret"
_FAILED_UPDATE_STATES = {"paused", "rollback_started", "rollback_paused", "rollback_completed"}


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


def secret_document(init_reply: dict[str, Any], shares: int, threshold: int) -> bytes:
    """What goes into the secret: ``vault operator init -format=json`` minus the root token."""
    document = {
        "unseal_keys_b64": list(init_reply["keys_base64"]),
        "unseal_keys_hex": list(init_reply["keys"]),
        "unseal_shares": shares,
        "unseal_threshold": threshold,
    }
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
    refs: list[dict[str, Any]], *, target: str, old_names: set[str], new_id: str, new_name: str
) -> tuple[list[dict[str, Any]], bool]:
    """Swap references to the old secret (by target name or old secret name) for the new one."""
    changed = False
    out: list[dict[str, Any]] = []
    for ref in refs:
        file_spec = ref.get("File") or {}
        if file_spec.get("Name") == target or ref.get("SecretName") in old_names:
            if ref.get("SecretID") != new_id:
                changed = True
            updated = dict(ref)
            updated["SecretID"], updated["SecretName"] = new_id, new_name
            out.append(updated)
        else:
            out.append(ref)
    return out, changed


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


class Bootstrap:
    def __init__(
        self,
        *,
        vault: VaultClient,
        docker_client: Any,
        secret_name: str,
        services: list[str],
        shares: int,
        threshold: int,
        out: TextIO,
        root_token_file: Path | None = None,
        rescue_dir: Path = Path(),
        converge_timeout: float = 300.0,
        poll: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.vault = vault
        self.docker = docker_client
        self.secret_name = secret_name
        self.services = services
        self.shares = shares
        self.threshold = threshold
        self.out = out
        self.root_token_file = root_token_file
        self.rescue_dir = rescue_dir
        self.converge_timeout = converge_timeout
        self.poll = poll
        self.clock = clock

    def run(self) -> Outcome:
        if self.vault.is_initialized():
            self._say(
                f"Vault at {self.vault.address} is already initialized: nothing changed "
                "(no secret created, no service updated)."
            )
            _log.info("bootstrap.already_initialized", vault=self.vault.address)
            return Outcome(initialized_now=False)
        self._preflight()
        token_fd = self._open_token_file()
        reply = self.vault.initialize(self.shares, self.threshold)
        _log.info(
            "bootstrap.initialized",
            vault=self.vault.address,
            shares=self.shares,
            threshold=self.threshold,
        )
        self._deliver_root_token(str(reply.get("root_token", "")), token_fd)
        payload = secret_document(reply, self.shares, self.threshold)
        del reply
        outcome = Outcome(initialized_now=True)
        secret = self._create_secret(payload)
        outcome.secret_name = secret.name
        self.rotate_to(secret, outcome)
        return outcome

    # -- steps -----------------------------------------------------------------------------
    def _preflight(self) -> None:
        try:
            swarm = self.docker.info().get("Swarm") or {}
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise BootstrapError(f"Docker engine not reachable: {exc}; Vault untouched") from exc
        if not swarm.get("ControlAvailable"):
            raise BootstrapError(
                "this node is not a swarm manager (secrets need one); Vault untouched"
            )

    def _open_token_file(self) -> int | None:
        if self.root_token_file is None:
            return None
        try:
            fd = os.open(self.root_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise BootstrapError(
                f"cannot write --root-token-file {self.root_token_file}: "
                f"{exc.strerror or exc}; Vault untouched"
            ) from None
        return fd

    def _deliver_root_token(self, token: str, fd: int | None) -> None:
        if fd is not None:
            try:
                os.write(fd, (token + "\n").encode())
            finally:
                os.close(fd)
            self._say(f"Root token written to {self.root_token_file} (mode 0600).")
            return
        # Once, to the terminal only: the log stream may be collected centrally.
        self._say(f"Root token (shown once, store it now): {token}")

    def _create_secret(self, payload: bytes) -> Any:
        name = versioned_name(self.secret_name, self.clock())
        try:
            existing = {s.name for s in self.docker.secrets.list(filters={"name": name})}
            if name in existing:
                name = f"{name}-{os.urandom(2).hex()}"
            secret = self.docker.secrets.create(
                name=name, data=payload, labels={LABEL: self.secret_name}
            )
            secret.reload()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            rescue = self.rescue_dir / f"vault-unseal-keys-{self.clock():%Y%m%dT%H%M%SZ}.json"
            _write_private(rescue, payload)
            raise BootstrapError(
                f"Vault is initialized but creating secret {name} failed ({exc}); the unseal keys "
                f"are in {rescue} (0600): create the secret from it, then delete the file"
            ) from exc
        _log.info("bootstrap.secret_created", secret=name)
        self._say(f"Created Docker secret {name} (label {LABEL}={self.secret_name}).")
        return secret

    def rotate_to(self, secret: Any, outcome: Outcome) -> None:
        """Repoint the services to ``secret``, wait for them, remove the previous versions."""
        previous = self._previous_versions(secret.id)
        old_names = {s.name for s in previous} | {self.secret_name}
        updated: list[Any] = []
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
            self._wait_converged(service.id, secret.id)
        for old in previous:
            try:
                old.remove()
            except docker.errors.APIError as exc:
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

    def _previous_versions(self, new_id: str) -> list[Any]:
        try:
            labelled = self.docker.secrets.list(filters={"label": f"{LABEL}={self.secret_name}"})
            plain = self.docker.secrets.list(filters={"name": self.secret_name})
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise BootstrapError(f"listing secrets failed: {exc}") from exc
        seen: dict[str, Any] = {}
        for secret in [*labelled, *plain]:
            # the name filter matches prefixes: keep exact names and our own labelled versions
            exact = secret.name == self.secret_name
            ours = (secret.attrs.get("Spec", {}).get("Labels") or {}).get(LABEL) == (
                self.secret_name
            )
            if secret.id != new_id and (exact or ours):
                seen[secret.id] = secret
        return list(seen.values())

    def _get_service(self, name: str) -> Any:
        try:
            return self.docker.services.get(name)
        except docker.errors.NotFound:
            _log.warning("bootstrap.service_missing", service=name)
            self._say(f"Service {name} not found: skipped.")
            return None
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise BootstrapError(f"inspecting service {name} failed: {exc}") from exc

    def _repoint(self, service: Any, secret: Any, old_names: set[str]) -> bool:
        def attempt() -> bool:
            service.reload()
            spec = service.attrs["Spec"]
            template = spec["TaskTemplate"]
            refs = template.get("ContainerSpec", {}).get("Secrets") or []
            new_refs, changed = repoint_secrets(
                refs,
                target=self.secret_name,
                old_names=old_names,
                new_id=secret.id,
                new_name=secret.name,
            )
            if not changed:
                return False
            template = dict(template)
            template["ContainerSpec"] = dict(template["ContainerSpec"], Secrets=new_refs)
            try:
                self.docker.api.update_service(
                    service.id,
                    service.version,
                    task_template=template,
                    fetch_current_spec=True,
                )
            except docker.errors.APIError as exc:
                if "update out of sequence" in str(exc):
                    raise UpdateOutOfSequence(str(exc)) from exc
                raise BootstrapError(f"updating service {spec['Name']} failed: {exc}") from exc
            return True

        changed = call_with_retry(
            "service.update", attempt, on=(UpdateOutOfSequence,), attempts=5, timeout=30
        )
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
                service = self.docker.services.get(service_id)
                state = (service.attrs.get("UpdateStatus") or {}).get("State")
                tasks = service.tasks(filters={"desired-state": "running"})
            except (docker.errors.DockerException, requests.RequestException) as exc:
                raise BootstrapError(f"watching the update of {service_id} failed: {exc}") from exc
            name = service.name
            if state in _FAILED_UPDATE_STATES:
                raise BootstrapError(
                    f"update of {name} ended in {state}; previous secrets kept. "
                    f"{(service.attrs.get('UpdateStatus') or {}).get('Message', '')}"
                )
            replicas = ((service.attrs["Spec"].get("Mode") or {}).get("Replicated") or {}).get(
                "Replicas"
            )
            current = [t for t in tasks if secret_id in _secret_ids(t)]
            stale = [t for t in tasks if secret_id not in _secret_ids(t)]
            running = [t for t in current if (t.get("Status") or {}).get("State") == "running"]
            expected = replicas if replicas is not None else max(1, len(current))
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


def _secret_ids(task: dict[str, Any]) -> set[str]:
    refs = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Secrets") or []
    return {str(ref.get("SecretID")) for ref in refs}


__all__ = ["Bootstrap", "BootstrapError", "Outcome", "VaultError", "secret_document"]
