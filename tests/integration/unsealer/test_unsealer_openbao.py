"""``certflow unsealer`` against a real OpenBao raft cluster (``bao server`` processes on loopback).

What only a real server shows: members that have not joined yet (uninitialized while the cluster
exists), the unsealer joining them to the active member by address (the Swarm stack's shape: no
``retry_join``), a wrong key answered by a joined member, a member whose raft data was lost coming
back with a new identity, and the one-active rule. Some tests keep the other shape, members that
join by their own ``retry_join`` stanzas naming every other member, with the unsealer's join off:
there the key document's cluster id (written by ``certflow vault-bootstrap``) is what lets a fresh
unsealer give the key to joiners beside an unsealed leader, or refuse a document of another cluster.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.unsealer.bootstrap import Bootstrap, secret_document
from services.unsealer.keys import parse_keys
from services.unsealer.vault_client import TlsConfig, VaultClient
from tests.integration.unsealer.conftest import UnsealerProcess, write_atomic
from tests.support.fake_engine import FakeEngine
from tests.support.leaks import assert_no_keys
from tests.support.openbao import BaoCluster, InitResult

MakeUnsealer = Callable[..., UnsealerProcess]


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[BaoCluster]:
    with BaoCluster(3, base_dir=tmp_path, retry_join=False) as cluster:
        yield cluster


@pytest.fixture
def bao_retry_join(tmp_path: Path) -> Iterator[BaoCluster]:
    with BaoCluster(3, base_dir=tmp_path, retry_join=True) as cluster:
        yield cluster


def env_for(cluster: BaoCluster, key_file: Path, **extra: str) -> dict[str, str]:
    return {
        "UNSEALER_VAULT_ADDRS": ",".join(cluster.address(i) for i in range(cluster.size)),
        "UNSEALER_CA_FILE": str(cluster.ca_file),
        "UNSEALER_TLS_SERVER_NAME": cluster.tls_name,
        "UNSEALER_KEY_FILE": str(key_file),
        "UNSEALER_SEALED_ALERT": "60",
        "UNSEALER_BACKOFF_INITIAL": "0.5",
        "UNSEALER_BACKOFF_MAX": "2",
        **extra,
    }


def write_keys(path: Path, keys: list[str]) -> Path:
    path.write_text("\n".join(keys) + "\n")
    path.chmod(0o600)
    return path


def write_document(path: Path, init: InitResult, cluster_id: str) -> Path:
    """The key document as ``certflow vault-bootstrap`` writes it, naming ``cluster_id``."""
    reply = {
        "keys_base64": list(init.keys_b64),
        "keys": [base64.b64decode(k).hex() for k in init.keys_b64],
    }
    shares = len(init.keys_b64)
    write_atomic(path, secret_document(reply, shares, shares, cluster_id=cluster_id).decode())
    return path


def wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def checks(unsealer: UnsealerProcess) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = unsealer.health()["checks"]
    return found


def member_check(unsealer: UnsealerProcess, cluster: BaoCluster, i: int) -> dict[str, Any]:
    return checks(unsealer).get(f"vault:{cluster.address(i)}", {})


def formed(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> tuple[InitResult, UnsealerProcess]:
    """A formed cluster (1 active, 2 standby voters) and an unsealer holding its key."""
    init = bao.bootstrap()
    bao.wait_all_voters(init.root_token)
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    return init, unsealers(env_for(bao, keys))


def all_answer(cluster: BaoCluster) -> bool:
    """Every member answers seal-status within its timeout (a locked member does not)."""
    for i in range(cluster.size):
        try:
            cluster.seal_status(i)
        except Exception:
            return False
    return True


def test_one_initialized_member_then_the_others_join_and_are_unsealed(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init = bao.init(0)
    # Members 1 and 2 are not joined: never reported as "run vault-bootstrap".
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    unsealer = unsealers(env_for(bao, keys))
    wait(lambda: bao.roles().count("active") == 1 and bao.roles().count("standby") == 2, "cluster")
    wait(lambda: checks(unsealer).get("cluster", {}).get("status") == "ok", "cluster check ok")
    cluster_check = checks(unsealer)["cluster"]
    assert "1 active, 2 standby" in cluster_check["message"]
    roles = {member_check(unsealer, bao, i)["role"] for i in range(3)}
    assert roles == {"active", "standby"}
    metrics = unsealer.metrics()
    assert "certflow_unsealer_active_members 1.0" in metrics
    assert 'role="active"} 1.0' in metrics
    logs = unsealer.logs()
    assert "vault-bootstrap" not in logs  # the joiners were joined, never sent to bootstrap
    assert logs.count('"raft.joined"') == 2, logs
    assert f'certflow_unsealer_raft_joins_total{{replica="{bao.address(1)}"}} 1.0' in metrics
    assert all(key not in logs + unsealer.health_text() + metrics for key in init.keys_b64)


def test_members_joining_by_their_own_retry_join_are_waited_for_and_unsealed(
    bao_retry_join: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    bao = bao_retry_join
    init = bao.init(0)
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    unsealer = unsealers(env_for(bao, keys, UNSEALER_RAFT_JOIN="false"))
    wait(lambda: bao.roles().count("active") == 1 and bao.roles().count("standby") == 2, "cluster")
    assert '"raft.joined"' not in unsealer.logs()


def submissions(unsealer: UnsealerProcess, cluster: BaoCluster, i: int) -> float:
    return unsealer.metric("certflow_unsealer_key_submissions_total", cluster.address(i))


def test_a_fresh_unsealer_gives_joiners_beside_an_unsealed_leader_a_key_naming_the_cluster(
    bao_retry_join: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    bao = bao_retry_join
    init = bao.init(0)
    # First a key of no cluster: member 0 (sealed, joined) refuses it with a clean 400, and 1 and
    # 2, which cannot join while 0 is sealed, are seen not joined: joiners to this process.
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    keys = tmp_path / "keys"
    write_atomic(keys, wrong + "\n")
    env = env_for(bao, keys, UNSEALER_RAFT_JOIN="false", UNSEALER_FAST_INTERVAL="0.2")
    unsealer = unsealers(env)
    wait(
        lambda: (
            "key rejected" in str(member_check(unsealer, bao, 0).get("message"))
            and all(member_check(unsealer, bao, i).get("role") == "not joined" for i in (1, 2))
        ),
        "the key refused by member 0, members 1 and 2 seen not joined",
    )
    # Someone else unseals the leader: this process has unsealed nothing, and the only sealed
    # members are joiners, so a key file that does not name the cluster is withheld for good.
    bao.unseal(0, init.keys_b64[0])
    wait(lambda: bao.role(0) == "active", "member 0 active")
    wait(
        lambda: all(
            "joining" in str(member_check(unsealer, bao, i).get("message")) for i in (1, 2)
        ),
        "the key withheld from the joiners",
    )
    time.sleep(3)  # several passes
    assert submissions(unsealer, bao, 1) == submissions(unsealer, bao, 2) == 0
    # The key document naming this cluster: the leader reports the same id, so it is given to
    # the joiners at once, with nothing to prove it on first.
    write_document(keys, init, bao.cluster_id(0))
    wait(
        lambda: sorted(bao.roles()) == ["active", "standby", "standby"],
        "one active member and two standbys",
        timeout=90,
    )
    assert all_answer(bao)
    assert any(e.get("event") == "keys.cluster_matches" for e in unsealer.events())
    texts = [unsealer.logs(), unsealer.health_text(), unsealer.metrics()]
    assert_no_keys(texts, [*init.keys_b64, wrong])
    assert all(init.root_token not in text for text in texts)


def test_a_key_file_of_another_cluster_is_given_to_no_member(
    bao_retry_join: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    bao = bao_retry_join
    init = bao.init(0)
    bao.unseal(0, init.keys_b64[0])
    # 1 and 2 fetch their join challenge and wait for the key: initialized and sealed, they look
    # joined, yet a wrong key would lock them for good.
    wait(lambda: bao.roles() == ["active", "sealed", "sealed"], "members 1 and 2 joining")
    here = bao.cluster_id(0)
    with BaoCluster(1, base_dir=tmp_path, retry_join=False) as other:
        stranger = other.init(0)
        other.unseal(0, stranger.keys_b64[0])
        there = other.cluster_id(0)
    keys = write_document(tmp_path / "keys", stranger, there)
    env = env_for(bao, keys, UNSEALER_RAFT_JOIN="false", UNSEALER_FAST_INTERVAL="0.2")
    unsealer = unsealers(env)
    mismatch = f"the key file is for cluster {there}, the members are cluster {here}"
    wait(
        lambda: mismatch in str(checks(unsealer).get("cluster", {}).get("message")),
        "the mismatch named on /health",
    )
    time.sleep(3)  # several passes with the stranger's document in place
    assert all_answer(bao), "a member stopped answering: it was given another cluster's key"
    assert checks(unsealer)["cluster"]["status"] == "failing"
    for i in (1, 2):
        assert mismatch in str(member_check(unsealer, bao, i).get("message"))
        assert submissions(unsealer, bao, i) == 0
    refused = [e for e in unsealer.events() if e.get("event") == "keys.other_cluster"]
    assert refused, "no keys.other_cluster event"
    assert refused[0]["key_cluster"] == there
    # The right document comes back: every member is unsealed.
    write_document(keys, init, here)
    wait(
        lambda: sorted(bao.roles()) == ["active", "standby", "standby"],
        "one active member and two standbys",
        timeout=90,
    )
    assert all_answer(bao)
    wait(lambda: checks(unsealer).get("cluster", {}).get("status") == "ok", "cluster check ok")
    texts = [unsealer.logs(), unsealer.health_text(), unsealer.metrics()]
    assert_no_keys(texts, [*init.keys_b64, *stranger.keys_b64])
    assert all(t not in text for t in (init.root_token, stranger.root_token) for text in texts)


def test_vault_bootstrap_records_the_cluster_id_a_fresh_unsealer_proves_its_key_with(
    bao_retry_join: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    bao = bao_retry_join
    engine = FakeEngine()  # no Docker: the secret's content is what is looked at
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with VaultClient(bao.address(0), TlsConfig(bao.ca_file, bao.tls_name)) as first:
        Bootstrap(
            vault=first,
            engine=engine,
            secret_name="vault_unseal_key",
            services=[],
            shares=1,
            threshold=1,
            out=io.StringIO(),
            output_dir=private,
            root_token_file="root-token",
        ).run()
    (document,) = engine.secret_data.values()
    status = bao.seal_status(0)  # bootstrap unsealed member 0 to learn its cluster
    assert parse_keys(document).cluster_id == status["cluster_id"]
    assert json.loads(document)["cluster_name"] == status["cluster_name"]
    keys = tmp_path / "keys"
    write_atomic(keys, document.decode())
    unsealer = unsealers(env_for(bao, keys, UNSEALER_RAFT_JOIN="false"))
    wait(
        lambda: sorted(bao.roles()) == ["active", "standby", "standby"],
        "one active member and two standbys",
        timeout=90,
    )
    assert '"keys.cluster_matches"' in unsealer.logs()
    texts = [unsealer.logs(), unsealer.health_text(), unsealer.metrics()]
    assert_no_keys(texts, list(parse_keys(document).keys))


def test_not_joined_members_are_named_so_never_sent_to_bootstrap(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init = bao.init(0)
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    # One pass: member 0 (it holds the cluster) is unsealed, 1 and 2 have not joined yet.
    first = unsealers(env_for(bao, keys, UNSEALER_ONCE_WAIT="0"), start=False).once()
    assert first.returncode == 1
    assert "not joined yet" in first.stderr
    assert "run certflow vault-bootstrap" not in first.stderr


def test_once_waits_for_members_still_joining(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init = bao.init(0)
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    # One --once from the start: member 0 proves the key, then 1 and 2 join and are unsealed.
    done = unsealers(env_for(bao, keys, UNSEALER_ONCE_WAIT="45"), start=False).once()
    assert done.returncode == 0, done.stderr
    assert bao.roles().count("active") == 1
    assert bao.roles().count("standby") == 2


def test_a_fresh_unsealer_with_only_joiners_sealed_unseals_them(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    # No joined sealed member to prove the key on: the joiners are members the unsealer joins
    # itself, and those answer a wrong key with an error, so the unproven key may go to them.
    init = bao.init(0)
    bao.unseal(0, init.keys_b64[0])  # the leader is up before any unsealer runs
    wait(lambda: bao.role(0) == "active", "member 0 active")
    keys = write_keys(tmp_path / "keys", list(init.keys_b64))
    done = unsealers(env_for(bao, keys, UNSEALER_ONCE_WAIT="30"), start=False).once()
    assert done.returncode == 0, done.stderr
    assert sorted(bao.roles()) == ["active", "standby", "standby"]


def test_a_wrong_key_given_to_a_member_it_joined_is_refused_and_locks_nothing(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init = bao.init(0)
    bao.unseal(0, init.keys_b64[0])
    wait(lambda: bao.role(0) == "active", "member 0 active")
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    keys = write_keys(tmp_path / "keys", [other])
    unsealer = unsealers(env_for(bao, keys, UNSEALER_FAST_INTERVAL="0.2"))
    wait(
        lambda: all(
            "key rejected" in str(member_check(unsealer, bao, i).get("message")) for i in (1, 2)
        ),
        "the key rejected on both joined members",
    )
    assert all_answer(bao), "a member stopped answering after a wrong key"
    write_keys(keys, list(init.keys_b64))
    wait(
        lambda: sorted(bao.roles()) == ["active", "standby", "standby"],
        "one active member and two standbys",
    )
    assert other not in unsealer.logs() + unsealer.health_text()


def test_a_wrong_key_locks_no_member_and_the_right_one_unseals_in_one_pass(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init = bao.bootstrap()  # a formed cluster: 1 active, 2 standbys
    bao.wait_all_voters(init.root_token)
    # Member 1 restarts (joined, sealed) and member 2 loses its raft data (it must join again, as
    # a new member). With one voter of three left there is no leader, so there is no active
    # member to join member 2 to: it stays "not joined" until member 1 is unsealed.
    bao.restart(1)
    wait(lambda: bao.roles()[1] == "sealed", "the restarted member sealed")
    bao.stop(2)
    wait(lambda: bao.role(0) != "active", "the last unsealed member without a leader")
    bao.wipe(2)
    # The key file holds a key of another cluster (same shape: 32 bytes, base64).
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    keys = write_keys(tmp_path / "keys", [other])
    unsealer = unsealers(env_for(bao, keys, UNSEALER_FAST_INTERVAL="0.2"))
    wait(
        lambda: "key rejected" in str(member_check(unsealer, bao, 1).get("message")),
        "the key rejected on the joined member",
    )
    time.sleep(3)  # several passes with the wrong key in place
    assert all_answer(bao), "a member stopped answering: it was given the unproven key"
    assert checks(unsealer)["cluster"]["status"] == "failing"  # no active member: said so
    # The right secret comes back: the joined member first, then the joiner once it can join.
    write_keys(keys, list(init.keys_b64))
    wait(
        lambda: sorted(bao.roles()) == ["active", "standby", "standby"],
        "one active member and two standbys",
        timeout=60,
    )
    assert all_answer(bao)
    assert other not in unsealer.logs() + unsealer.health_text()


def test_a_member_that_lost_its_raft_data_rejoins_and_the_cluster_keeps_quorum(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    init, unsealer = formed(bao, unsealers, tmp_path)
    old_id = bao.node_id(1)
    bao.wipe(1)
    wait(lambda: bao.roles().count("standby") == 2, "the wiped member back as a standby")
    assert bao.node_id(1) != old_id
    peers = bao.raft_peers(init.root_token)
    assert bao.node_id(1) in {p["node_id"] for p in peers}
    # Quorum holds: a write succeeds through the rejoined member.
    assert bao.kv_put(init.root_token, "after/wipe", {"ok": "1"}, member=1) >= 1
    wait(lambda: checks(unsealer).get("cluster", {}).get("status") == "ok", "cluster check ok")


def test_full_cluster_restart_is_unsealed_with_one_active_member(
    bao: BaoCluster, unsealers: MakeUnsealer, tmp_path: Path
) -> None:
    _, unsealer = formed(bao, unsealers, tmp_path)
    for i in range(3):
        bao.stop(i)
    for i in range(3):
        bao.start(i)
    wait(
        lambda: bao.roles().count("active") == 1 and bao.roles().count("standby") == 2,
        "one active member and two standbys after a full restart",
        timeout=90,
    )
    wait(lambda: checks(unsealer).get("cluster", {}).get("status") == "ok", "cluster check ok")
