"""The local single-node Swarm the end-to-end benchmarks run on: images built, both stacks up
(real OpenBao, a raft cluster of 3, a first certificate from pebble), and everything removed at
the end. One place for ``bench.e2e_rotation`` and ``bench.rollout``."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.docker_engine import ensure_engine
from tests.support.e2e_flow import LocalFlow, bring_up, wait_for
from tests.support.e2e_images import build_project_image, remove_image
from tests.support.e2e_names import unique
from tests.support.openbao_image import build_openbao_image


@contextmanager
def local_stack() -> Iterator[LocalFlow]:
    """Both stacks up and verified; prints how long the bring-up took. Torn down on exit, the
    images included, whatever happened."""
    ensure_engine()
    suffix = unique("")
    project = build_project_image(f"certflow-bench:{suffix}")
    vault = build_openbao_image(f"certflow-bench-vault:{suffix}")
    try:
        with tempfile.TemporaryDirectory(prefix="certflow-bench-") as tmp:
            flow = LocalFlow(
                stack=f"bench{suffix}",
                workdir=Path(tmp) / "flow",
                image=project,
                vault_image=vault,
            )
            try:
                started = time.monotonic()
                flow.prepare()
                flow.issue_or_renew()
                bring_up(flow)
                took = time.monotonic() - started
                print(f"bring-up (both stacks, bootstrap, first verify): {took:.0f} s", flush=True)
                yield flow
            finally:
                flow.down()
    finally:
        remove_image(vault)
        remove_image(project)


def switch_mode(flow: LocalFlow, mode: str) -> None:
    """Redeploy the certs stack with the distributor in ``mode`` (restart or signal)."""
    if flow.reload_mode == mode:
        return
    flow.reload_mode = mode
    flow.deploy("certs")
    wait_for(
        f"the distributor in {mode} mode",
        lambda: flow.service_settled("cert-distributor"),
        timeout=180,
        every=2,
    )
