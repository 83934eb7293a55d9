"""Vault restarts per renewal with 1, 3 and 10 distributor coordinators racing, on a real swarm.

    .venv/bin/python -m bench.distributor_restarts [--renewals 3] [--counts 1,3,10]

Each coordinator is a full in-process distributor in restart mode (all on this single-node swarm,
so every one of them believes it is the leader: the worst case, as during a leadership change).
A stand-in Vault service replaces Vault; restarts are counted from the containers it started.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from services.distributor.coordinator import Kind
from services.distributor.service import Distributor
from shared.logs import configure_logging
from tests.integration.distributor.conftest import Fleet, StandIns
from tests.support.boxes import make_pair, publish
from tests.support.docker_engine import ensure_engine
from tests.support.images import ensure_base_image
from tests.support.pki import CA


def converge(dist: Distributor, deadline: float) -> None:
    while time.monotonic() < deadline:
        dist.sync_pass()
        dist.reload_pass()
        check = dist.health.check("reload")
        if check and check.details.get("decision") == Kind.DONE.value:
            return
        time.sleep(0.1)
    raise SystemExit("coordinators did not converge")


def _report(reporter: Distributor, done: threading.Event) -> None:
    while not done.is_set():
        reporter.sync_pass()
        reporter.reload_pass()
        done.wait(0.2)


def run(count: int, renewals: int, client: object, image: str) -> tuple[list[int], float, int]:
    with tempfile.TemporaryDirectory(prefix="certflow-bench-") as tmp:
        root = Path(tmp)
        standins, fleet = StandIns(client, image, root), Fleet(client, root)
        try:
            vault, hup_dir = standins.service(certs_from="reporter")
            ca = CA()
            publish(root / "box", make_pair(ca, 1))
            reporter, url = fleet.distributor(vault, mode="none", name="reporter")
            coordinators = [
                fleet.distributor(vault, name=f"c{i}", peer=url)[0] for i in range(count)
            ]
            per_renewal: list[int] = []
            started = time.monotonic()
            for generation in range(1, renewals + 1):
                if generation > 1:
                    publish(root / "box", make_pair(ca, generation))
                reporter.sync_pass()
                before = len(list(hup_dir.glob("started-*")))
                deadline = time.monotonic() + 180
                threads = [
                    threading.Thread(target=converge, args=(c, deadline)) for c in coordinators
                ]
                done = threading.Event()
                # The node's distributor probes the member and reports it (the coordinators'
                # gate reads that report), in its own loop as in Swarm.
                probing = threading.Thread(target=_report, args=(reporter, done))
                probing.start()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                done.set()
                probing.join()
                per_renewal.append(len(list(hup_dir.glob("started-*"))) - before)
            elapsed = (time.monotonic() - started) / renewals
            conflicts = sum(int(c.metrics.update_conflicts._value.get()) for c in coordinators)
            return per_renewal, elapsed, conflicts
        finally:
            fleet.close()
            standins.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renewals", type=int, default=3)
    parser.add_argument("--counts", default="1,3,10")
    args = parser.parse_args()
    configure_logging(service="bench", node="bench", level="error")
    client = ensure_engine()
    image = ensure_base_image()
    print(f"Vault restarts per renewal ({args.renewals} renewals per row, real dockerd swarm)")
    print(f"{'distributors':>12} {'restarts/renewal':>18} {'conflicts':>10} {'s/renewal':>10}")
    for count in (int(c) for c in args.counts.split(",")):
        per_renewal, elapsed, conflicts = run(count, args.renewals, client, image)
        shown = ",".join(str(n) for n in per_renewal)
        print(f"{count:>12} {shown:>18} {conflicts:>10} {elapsed:>10.1f}")


if __name__ == "__main__":
    main()
