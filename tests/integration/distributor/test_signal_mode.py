"""``signal`` mode: SIGHUP reaches the local containers of the Vault service and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.distributor.coordinator import FINGERPRINT_LABEL
from shared.swarm import service_state
from tests.support.pki import CA
from tests.unit.distributor.boxes import make_pair, publish

from .conftest import Fleet, StandIns, wait_for


def hups(directory: Path) -> dict[str, int]:
    return {
        p.name: p.read_text().count("HUP")
        for p in directory.iterdir()
        if not p.name.startswith("started-")
    }


def test_sighup_only_to_local_vault_containers(
    standins: StandIns, fleet: Fleet, tmp_path: Path, client: Any
) -> None:
    vault, vault_hups = standins.service("vault", replicas=2)
    _, other_hups = standins.service("other")
    _ctr, plain_hups = standins.container("plain")
    publish(tmp_path / "box", make_pair(CA(), 1))
    dist, _ = fleet.distributor(vault, mode="signal")
    before = service_state(client, vault)
    result = dist.sync_pass()
    assert result is not None
    assert result.newly_installed
    dist.reload_pass()
    wait_for("both vault containers got SIGHUP", lambda: sum(hups(vault_hups).values()) == 2)
    assert sorted(hups(vault_hups).values()) == [1, 1]
    # Nothing else was signalled, and nothing was restarted.
    assert hups(other_hups) == {}
    assert hups(plain_hups) == {}
    after = service_state(client, vault)
    assert after.force_update == before.force_update
    assert FINGERPRINT_LABEL not in after.labels
    # An already-current pass sends nothing more.
    dist.sync_pass()
    dist.reload_pass()
    assert sum(hups(vault_hups).values()) == 2
    assert dist.metrics.signals._value.get() == 2


def test_sighup_owed_before_a_crash_is_sent_after_restart(
    standins: StandIns, fleet: Fleet, tmp_path: Path
) -> None:
    vault, vault_hups = standins.service("vault")
    publish(tmp_path / "box", make_pair(CA(), 1))
    crashed, _ = fleet.distributor(vault, mode="signal", name="node")
    result = crashed.sync_pass()
    assert result is not None
    assert result.newly_installed
    # Killed here: installed, not yet signalled. The restarted distributor finds nothing to install
    # but still owes the SIGHUP.
    restarted, _ = fleet.distributor(vault, mode="signal", name="node")
    again = restarted.sync_pass()
    assert again is not None
    assert not again.newly_installed
    restarted.reload_pass()
    wait_for("vault container got SIGHUP", lambda: sum(hups(vault_hups).values()) == 1)
    restarted.reload_pass()
    assert sum(hups(vault_hups).values()) == 1
