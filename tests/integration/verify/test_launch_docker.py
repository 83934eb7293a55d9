"""The one-off container that ``certflow status``/``verify`` start from a host, on the real engine:
it runs on the overlay with read-only bind mounts, its stdout, stderr and exit code come back
separately, it is removed afterwards, and one that does not finish in time is killed and removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.docker_engine import DockerPyEngine
from shared.errors import DockerError
from shared.swarm import BindMount, OneOff
from tests.support.e2e_names import unique
from tests.support.images import ensure_base_image

_PROBE = """
import os, socket, sys
print(open('/box/STAR.crt').read().strip())
print(os.environ['VERIFY_STACK'])
try:
    open('/box/written', 'w')
    print('writable')
except OSError as exc:
    print('read-only' if exc.errno == 30 else exc)
print('on the overlay' if socket.gethostbyname(socket.gethostname()).startswith('10.') else 'off')
print('a line on stderr', file=sys.stderr)
sys.exit(3)
"""


def _left(client: Any, label: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"certflow.oneoff={label}"}))


def test_a_one_off_runs_on_the_overlay_with_read_only_mounts_and_is_removed(
    client: Any, network: str, tmp_path: Path
) -> None:
    (tmp_path / "STAR.crt").write_text("the certificate\n")
    label = unique("t-")
    oneoff = OneOff(
        image=ensure_base_image(),
        argv=("python3", "-c", _PROBE),
        network=network,
        env={"VERIFY_STACK": "prod"},
        mounts=(BindMount(str(tmp_path), "/box"),),
        labels={"certflow.oneoff": label},
    )
    result = DockerPyEngine(client).run_oneoff(oneoff, timeout=120)
    assert result.exit_code == 3
    assert result.stdout.splitlines() == ["the certificate", "prod", "read-only", "on the overlay"]
    assert result.stderr.strip() == "a line on stderr"
    assert not (tmp_path / "written").exists()
    assert _left(client, label) == []


def test_a_one_off_that_does_not_finish_in_time_is_killed_and_removed(
    client: Any, network: str
) -> None:
    label = unique("t-")
    oneoff = OneOff(
        image=ensure_base_image(),
        argv=("sleep", "600"),
        network=network,
        labels={"certflow.oneoff": label},
    )
    with pytest.raises(DockerError, match="not finished after 3 s"):
        DockerPyEngine(client).run_oneoff(oneoff, timeout=3)
    assert _left(client, label) == []


def test_container_networks_names_the_networks_of_a_container(client: Any, network: str) -> None:
    container = client.containers.run(
        ensure_base_image(), ["sleep", "600"], network=network, detach=True, remove=False
    )
    try:
        engine = DockerPyEngine(client)
        assert network in (engine.container_networks(container.id) or frozenset())
        assert network in (engine.container_networks(container.id[:12]) or frozenset())
        assert engine.container_networks(unique("certflow-no-such-container-")) is None
    finally:
        container.remove(force=True)
