"""Consumer benchmark on the local single-node Swarm: a renewal -> every consumer serving the new
leaf, with 3 consumers beside Vault, and how often each was restarted (or signalled) for it.

    .venv/bin/python -m bench.consumers [--rotations 3]

Brings both stacks up (real OpenBao, a raft cluster of 3), then adds three real consumers (nginx
from Debian's package, serving the installed pair with TLS, each with a check address):

- ``web``: ``certflow.reload=restart``, 2 replicas;
- ``edge``: ``certflow.reload=signal`` (SIGHUP), 2 replicas;
- ``mesh``: ``certflow.reload=restart``, global (one task per node: one here).

Then ``--rotations`` real certbot renewals against pebble. Per renewal and consumer it prints
the seconds from the renewal (and from certbot being done) until the leader's distributor
recorded it done, which it does only once every task served the new leaf at its check address;
the tasks Swarm created per slot (restarts) and the SIGHUPs sent; and Vault's own rollout time
beside them. Figures, not assertions: the exit status is 0 unless the flow itself failed.
Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

from bench.local_stack import local_stack
from shared.certs import read_leaf
from tests.support import consumer_flow
from tests.support.consumer_flow import Consumer, reload_labels
from tests.support.e2e_flow import FlowError, LocalFlow, docker, wait_for


@dataclass
class Figures:
    name: str
    mode: str
    tasks: int
    seconds: list[float] = field(default_factory=list)  # renewal -> recorded done
    after_certbot: list[float] = field(default_factory=list)
    restarts: list[dict[int, int]] = field(default_factory=list)  # per renewal, per slot
    signals: list[int] = field(default_factory=list)  # per renewal


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.consumers",
        description="Renewal -> every consumer serving the new leaf, 3 consumers beside Vault "
        "on the local single-node swarm (real certbot, real OpenBao, real nginx).",
    )
    parser.add_argument("--rotations", type=int, default=3, help="renewals to run (default 3)")
    return parser


def _vault_done_at(flow: LocalFlow, fingerprint: str) -> float | None:
    checks = (flow.health("cert-distributor") or {}).get("checks") or {}
    reload = checks.get("reload") or {}
    if reload.get("decision") != "done" or reload.get("fingerprint") != fingerprint:
        return None
    since = reload.get("decision_since")
    return datetime.fromisoformat(str(since)).timestamp() if since else None


def _signals_since(flow: LocalFlow, since: float, service: str) -> int:
    return sum(
        1
        for line in flow.service_log_lines("cert-distributor", since)
        if "consumer.task_signalled" in line and service in line
    )


def _renewal(flow: LocalFlow, consumers: dict[str, Consumer], figures: dict[str, Figures]) -> str:
    renewed_at = time.time()
    flow.issue_or_renew()
    certbot_done = time.time()
    fingerprint = read_leaf(flow.certbot_pair()[0]).fingerprint_sha256
    done: dict[str, float] = {}

    def every_done() -> bool:
        for name, report in flow.consumer_reports().items():
            if report.get("state") == "done" and report.get("fingerprint") == fingerprint:
                since = report.get("since")
                done.setdefault(name, datetime.fromisoformat(str(since)).timestamp())
        return all(c.name in done for c in consumers.values())

    wait_for("every consumer recorded done", every_done, timeout=300, every=0.5)
    vault_at: dict[str, float] = {}

    def vault_done() -> bool:
        at = _vault_done_at(flow, fingerprint)
        if at is not None:
            vault_at["at"] = at
        return at is not None

    wait_for("Vault's rollout recorded done", vault_done, timeout=300, every=0.5)
    time.sleep(3)  # a late second reload would show by now
    lines = [f"renewal (certbot took {certbot_done - renewed_at:.1f} s):"]
    for short, consumer in consumers.items():
        fig = figures[short]
        took = done[consumer.name] - renewed_at
        fig.seconds.append(took)
        fig.after_certbot.append(done[consumer.name] - certbot_done)
        restarts = flow.restarts_since(renewed_at, consumer.name)
        fig.restarts.append(restarts)
        signals = _signals_since(flow, renewed_at, consumer.name)
        fig.signals.append(signals)
        lines.append(
            f"  {short:<5} {fig.mode:<8} {fig.tasks} task(s): serving the new leaf, recorded "
            f"+{took:.1f} s ({done[consumer.name] - certbot_done:.1f} s after certbot); "
            f"tasks started per slot {dict(sorted(restarts.items()))}, SIGHUPs {signals}"
        )
    lines.append(
        f"  vault  restart  3 member(s): rollout recorded +{vault_at['at'] - renewed_at:.1f} s"
    )
    return "\n".join(lines)


def _summary(figures: dict[str, Figures]) -> str:
    lines = ["", "per consumer over every renewal:"]
    for short, fig in figures.items():
        per = "restarts per task per renewal" if fig.mode == "restart" else "SIGHUPs per renewal"
        counts = (
            sorted({n for r in fig.restarts for n in r.values()})
            if fig.mode == "restart"
            else sorted(set(fig.signals))
        )
        lines.append(
            f"  {short:<5} {fig.mode:<8} renewal -> recorded done: p50 "
            f"{statistics.median(fig.seconds):.1f} s, max {max(fig.seconds):.1f} s "
            f"(after certbot: p50 {statistics.median(fig.after_certbot):.1f} s); {per}: {counts}"
        )
    worst = max(max(f.seconds) for f in figures.values())
    lines.append(f"  every consumer serving the new leaf: at most {worst:.1f} s after the renewal")
    return "\n".join(lines)


def _bench(flow: LocalFlow, rotations: int) -> None:
    consumers = {
        "web": Consumer(
            flow.service("web"), reload_labels("restart", check="tls://web.iklim.co:8443"), 2
        ),
        "edge": Consumer(
            flow.service("edge"),
            reload_labels("signal", check="tls://edge.iklim.co:8443", signal="SIGHUP"),
            2,
        ),
        "mesh": Consumer(
            flow.service("mesh"),
            reload_labels("restart", check="tls://mesh.iklim.co:8443"),
            replicas=None,
        ),
    }
    figures = {
        short: Figures(short, c.labels["certflow.reload"], c.replicas or 1)
        for short, c in consumers.items()
    }
    try:
        flow.add_consumers(*consumers.values())
        fingerprint = read_leaf(flow.certbot_pair()[0]).fingerprint_sha256
        wait_for(
            "the consumers recorded on the installed certificate",
            lambda: all(
                flow.consumer_reports().get(c.name, {}).get("fingerprint") == fingerprint
                and flow.consumer_reports().get(c.name, {}).get("state") == "done"
                for c in consumers.values()
            ),
            timeout=180,
            every=1,
        )
        for n in range(rotations):
            print(f"\n[{n + 1}/{rotations}] {_renewal(flow, consumers, figures)}", flush=True)
        print(_summary(figures), flush=True)
    finally:
        consumer_flow.remove(docker, *(c.name for c in consumers.values()))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with local_stack() as flow:
            _bench(flow, args.rotations)
    except FlowError as exc:
        print(f"bench.consumers: the flow failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
