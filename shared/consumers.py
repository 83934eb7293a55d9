"""Consumers of the certificate other than Vault: the labels that opt a service in, and the
report every reader of ``/health`` shares (pure).

A Swarm service opts in with labels on its own service spec, so adding or removing one needs no
redeploy of certflow:

- ``certflow.reload=restart|signal|none``: how it takes a new pair (``none``: watched only);
- ``certflow.signal=SIGHUP``: the signal of ``signal`` mode (default SIGHUP);
- ``certflow.check=tls://<name>:<port>``: where its tasks serve the pair. Each task is reached
  on its own overlay address at that port, with ``<name>`` as the TLS server name: the leaf it
  serves there proves its reload. Without a check, certflow can only tell that the task was
  restarted (or signalled) after its node had the pair.

The memory of a consumer's rollout is kept in labels certflow writes on the same service, so a
new Swarm leader's distributor continues it instead of repeating it:

- ``certflow.fingerprint``: the certificate every task of it has taken (done);
- ``certflow.reloaded``: ``<fingerprint> <unit>=<task>,...``: the tasks asked to reload for that
  certificate, each recorded before its order goes out. A unit is a replicated service's slot or
  a global service's node: one reload per unit per certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from shared.rollout import FINGERPRINT_LABEL

RELOAD_LABEL = "certflow.reload"
SIGNAL_LABEL = "certflow.signal"
CHECK_LABEL = "certflow.check"
DONE_LABEL = FINGERPRINT_LABEL
RELOADED_LABEL = "certflow.reloaded"

MODES = ("restart", "signal", "none")
DEFAULT_SIGNAL = "SIGHUP"
# Signals a reload may send. SIGKILL and SIGSTOP are never a reload; the others here are what
# servers use (nginx and haproxy: HUP/USR2; postgres: HUP; apache: USR1; unbound: HUP).
SIGNALS = frozenset(
    {"SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH", "SIGALRM"}
)


class LabelProblem(ValueError):
    """A consumer's labels that certflow cannot act on; the message names the label."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # the TLS server name (SNI) and the name the leaf must be valid for
    port: int

    @property
    def address(self) -> str:
        return f"tls://{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    service: str
    mode: str  # restart, signal, none
    signal: str = DEFAULT_SIGNAL
    check: Check | None = None


def parse_check(value: str) -> Check:
    """``tls://<name>:<port>``; raises :class:`LabelProblem`."""
    text = value.strip()
    if not text.startswith("tls://"):
        raise LabelProblem(f"{CHECK_LABEL}={value!r}: expected tls://<name>:<port>")
    host, sep, port = text.removeprefix("tls://").rstrip("/").rpartition(":")
    name = host.strip().lower().rstrip(".")
    if not sep or not name or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise LabelProblem(f"{CHECK_LABEL}={value!r}: expected tls://<name>:<port>")
    if any(not (c.isalnum() or c in "-._") for c in name):
        raise LabelProblem(f"{CHECK_LABEL}={value!r}: {name!r} is not a DNS name")
    return Check(name, int(port))


def consumer_spec(service: str, labels: dict[str, str]) -> ConsumerSpec:
    """What ``labels`` ask of ``service``; raises :class:`LabelProblem` naming the bad label."""
    mode = labels.get(RELOAD_LABEL, "").strip().lower()
    if mode not in MODES:
        raise LabelProblem(
            f"{RELOAD_LABEL}={labels.get(RELOAD_LABEL, '')!r}: expected one of {', '.join(MODES)}"
        )
    signal = labels.get(SIGNAL_LABEL, DEFAULT_SIGNAL).strip().upper() or DEFAULT_SIGNAL
    if not signal.startswith("SIG"):
        signal = f"SIG{signal}"
    if signal not in SIGNALS:
        raise LabelProblem(
            f"{SIGNAL_LABEL}={labels.get(SIGNAL_LABEL, '')!r}: expected one of "
            f"{', '.join(sorted(SIGNALS))}"
        )
    raw_check = labels.get(CHECK_LABEL)
    check = parse_check(raw_check) if raw_check is not None and raw_check.strip() else None
    return ConsumerSpec(service=service, mode=mode, signal=signal, check=check)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """One recorded reload: the unit (slot or node) and the task asked to reload."""

    unit: str
    task_id: str


def reloaded_from_label(value: str | None, fingerprint: str | None) -> tuple[Reloaded, ...]:
    """The reloads recorded for ``fingerprint``; () for another certificate or a bad label."""
    if not value or fingerprint is None:
        return ()
    fp, _, items = value.partition(" ")
    if fp != fingerprint:
        return ()
    out: list[Reloaded] = []
    for item in filter(None, items.split(",")):
        unit, sep, task = item.partition("=")
        if not sep or not unit or not task:
            return ()
        out.append(Reloaded(unit, task))
    return tuple(out)


def reloaded_label(fingerprint: str, items: tuple[Reloaded, ...]) -> str:
    return f"{fingerprint} " + ",".join(f"{r.unit}={r.task_id}" for r in items)


# -- the report: /health info.consumers, read back by certflow status and verify ---------------


class State(StrEnum):
    DONE = "done"  # every task took the installed certificate (recorded)
    RELOADING = "reloading"  # a task was asked to reload; the gate waits for it
    WAITING = "waiting"  # not yet: nodes without the pair, a task not back, a node down
    HALTED = "halted"  # a reloaded task is not back (or not serving the pair) past the bound
    REPORTED = "reported"  # its labels or its check name are wrong: skipped, never reloaded
    PAUSED = "paused"  # an operator paused certflow
    WATCHED = "watched"  # certflow.reload=none: what it serves is shown, nothing is done


class ConsumerTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    where: str  # "slot 2 on host-b"
    task_id: str = ""
    running: bool = False
    serves: str | None = None  # the leaf fingerprint served at the check address
    detail: str = ""  # why it is not known, or what it serves instead


class ConsumerReport(BaseModel):
    """One consumer as the leader's distributor last saw it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    service: str
    mode: str = ""  # restart, signal, none; "" when the label is unreadable
    signal: str = ""
    check: str = ""  # tls://<name>:<port>, "" when none
    state: State
    message: str = ""
    since: str | None = None  # ISO time it entered this state
    fingerprint: str | None = None  # the certificate it is being brought to
    reloads: int = 0  # reloads recorded for that certificate
    tasks: list[ConsumerTask] = []

    @property
    def serves_older(self) -> list[ConsumerTask]:
        """Running tasks whose check shows a leaf other than the one distributed."""
        if self.fingerprint is None:
            return []
        return [
            t
            for t in self.tasks
            if t.running and t.serves is not None and t.serves != self.fingerprint
        ]
