"""The OpenBao harness against the real ``bao`` binary: cluster forming, restarts, wipes, writes.

Timings use ``performance_multiplier = 1`` (the harness default), so elections take ~1 s instead
of OpenBao's default ~5 s; behaviour is the same, only faster.

Not tested here: autopilot's dead-server cleanup after a wipe. OpenBao 2.7.2 refuses a
``dead_server_last_contact_threshold`` under 1m (HTTP 400), so the dead peer goes away only after
more than a minute, too long for this tier.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest

from tests.support.openbao import (
    MIN_DEAD_SERVER_THRESHOLD,
    BaoCluster,
    BaoError,
    KvWriter,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster() -> Iterator[BaoCluster]:
    with BaoCluster(3) as bao:
        yield bao


@pytest.fixture
def single() -> Iterator[BaoCluster]:
    with BaoCluster(1) as bao:
        yield bao


def test_three_members_form_one_cluster(cluster: BaoCluster) -> None:
    assert cluster.roles() == ["uninitialized"] * 3
    started = time.monotonic()
    init = cluster.init(0)
    # init does not unseal, and the others have not joined: they are no members to initialise.
    assert cluster.roles() == ["sealed", "not joined", "not joined"]
    cluster.unseal_joined(0, init.keys_b64)
    cluster.wait_roles(lambda roles: roles[0] == "active")
    # OpenBao refuses a dead-server threshold under a minute.
    with pytest.raises(BaoError) as caught:
        cluster.set_autopilot(init.root_token, dead_server_last_contact_threshold="10s")
    assert caught.value.status == 400
    assert "should not be set to less than 1m" in str(caught.value)
    # Joiners become voters after autopilot's stabilization time: 2 s instead of 10 s.
    cluster.set_autopilot(init.root_token, server_stabilization_time="2s")
    config = cluster.api(0).json(
        "GET", "sys/storage/raft/autopilot/configuration", token=init.root_token
    )["data"]
    assert (config["cleanup_dead_servers"], config["min_quorum"]) == (True, 3)
    assert (
        config["dead_server_last_contact_threshold"] == "1m0s" == MIN_DEAD_SERVER_THRESHOLD + "0s"
    )
    cluster.unseal_joined(1, init.keys_b64)
    cluster.unseal_joined(2, init.keys_b64)
    roles = cluster.wait_roles(["active", "standby", "standby"])
    print(f"init to all unsealed: {time.monotonic() - started:.2f}s; roles {roles}")

    peers = cluster.raft_peers(init.root_token)
    assert sorted(p["node_id"] for p in peers) == ["bao0", "bao1", "bao2"]
    assert [p["node_id"] for p in peers if p["leader"]] == ["bao0"]

    state = cluster.wait_all_voters(init.root_token)
    assert sorted(state["voters"]) == ["bao0", "bao1", "bao2"]
    print(f"init to all voters: {time.monotonic() - started:.2f}s")

    # Health codes as the facts file has them: 200 active, 429 standby.
    assert [cluster.health(i).code for i in range(3)] == [200, 429, 429]
    # A write through a standby is forwarded; a read through the other standby sees it.
    assert cluster.kv_put(init.root_token, "app/one", {"v": "1"}, member=1) == 1
    # Standbys read their own copy, so the write shows there once replicated (404 until then).
    deadline = time.monotonic() + 10
    while True:
        try:
            if cluster.kv_get(init.root_token, "app/one", member=2) == {"v": "1"}:
                break
        except BaoError as exc:
            if exc.status != 404:
                raise
        assert time.monotonic() < deadline, "write never replicated to the other standby"
        time.sleep(0.1)


def test_restarted_standby_comes_back_sealed_and_initialized(cluster: BaoCluster) -> None:
    init = cluster.bootstrap()
    standby = cluster.roles().index("standby")
    old_pid = cluster.pid(standby)
    cluster.restart(standby)
    assert cluster.pid(standby) != old_pid
    status = cluster.seal_status(standby)
    assert (status["initialized"], status["sealed"]) == (True, True)
    assert cluster.role(standby) == "sealed"
    assert cluster.health(standby).code == 503

    # Secrets stay out of reprs, error messages and server logs. A wrong key on a joined
    # member is a clean 400 (on one that has not joined yet it would hang: not tried here).
    text = repr(init) + str(init)
    assert init.keys_b64[0] not in text
    assert init.root_token not in text
    assert "<1 hidden>" in text
    wrong = "A" * 43 + "="
    with pytest.raises(BaoError) as caught:
        cluster.unseal(standby, wrong)
    assert caught.value.status == 400
    assert "message authentication failed" in str(caught.value)
    assert wrong not in str(caught.value)
    assert all(init.keys_b64[0] not in cluster.log_text(i) for i in range(3))

    cluster.unseal_joined(standby, init.keys_b64)
    cluster.wait_roles(lambda roles: roles[standby] == "standby" and roles.count("active") == 1)


def test_wiped_member_rejoins_with_a_new_node_id(cluster: BaoCluster) -> None:
    init = cluster.bootstrap()
    standby = cluster.roles().index("standby")
    cluster.wipe(standby)
    assert cluster.node_id(standby) == f"bao{standby}-g1"
    # Fresh storage: not initialised until retry_join brings it in, then sealed.
    assert cluster.role(standby) in ("not joined", "sealed")
    cluster.unseal_joined(standby, init.keys_b64)
    cluster.wait_roles(lambda roles: roles[standby] == "standby" and roles.count("active") == 1)
    ids = {p["node_id"] for p in cluster.raft_peers(init.root_token)}
    # The new identity is a peer; the old one stays listed (dead) until autopilot's cleanup,
    # which cannot run sooner than its 1m minimum threshold (see the module docstring).
    assert f"bao{standby}-g1" in ids
    assert f"bao{standby}" in ids
    assert cluster.kv_put(init.root_token, "after/wipe", {"ok": "yes"}) == 1


def test_single_member_serves_and_reloads_its_certificate(single: BaoCluster) -> None:
    assert single.role(0) == "uninitialized"
    init = single.bootstrap()
    assert single.roles() == ["active"]
    assert single.kv_put(init.root_token, "x", {"a": "b"}) == 1
    assert single.kv_get(init.root_token, "x") == {"a": "b"}

    port = int(single.address(0).rsplit(":", 1)[1])

    def served_serial() -> int:
        context = ssl.create_default_context(cafile=str(single.ca_file))
        with context.wrap_socket(
            __import__("socket").create_connection(("127.0.0.1", port), timeout=5),
            server_hostname=single.tls_name,
        ) as sock:
            der = sock.getpeercert(binary_form=True)
        from cryptography import x509

        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    before = served_serial()
    leaf = single.issue_leaf()
    single.replace_tls(single.ca.fullchain(leaf), leaf.key_pem)
    assert served_serial() == before  # nothing changes until SIGHUP
    single.sighup(0)
    deadline = time.monotonic() + 10
    while served_serial() != leaf.cert.serial_number:
        assert time.monotonic() < deadline, "new certificate not served after SIGHUP"
        time.sleep(0.1)
    assert single.roles() == ["active"]


def test_kv_writer_records_writes_and_the_gap_of_a_failover(cluster: BaoCluster) -> None:
    init = cluster.bootstrap(server_stabilization_time="2s")
    cluster.enable_kv(init.root_token)
    cluster.wait_all_voters(init.root_token)
    active = cluster.active()
    through = (active + 1) % 3  # a standby that stays up: writes are forwarded to the active
    cluster.api(through).wait_kv_ready(init.root_token)
    writer = KvWriter(
        cluster.address(through),
        cluster.ca_file,
        init.root_token,
        tls_name=cluster.tls_name,
        interval=0.2,
        max_duration=20,
    )
    with writer:
        time.sleep(1.0)
        cluster.kill(active)  # a crash: no active member until an election
        cluster.wait_roles(
            lambda roles: roles.count("active") == 1 and roles[active] == "unreachable",
            timeout=20,
        )
        # A standby may answer 307 (to the old, then the new active) for a few seconds after
        # the election: wait, bounded, for writes to go through again.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (writer.attempts and writer.attempts[-1].ok):
            time.sleep(0.2)
    attempts = writer.attempts
    assert len(attempts) >= 8
    assert writer.succeeded >= 5
    assert attempts[0].ok
    assert attempts[-1].ok
    assert writer.failed == len(attempts) - writer.succeeded
    # The crash shows as a gap longer than the period, and every error names no secret.
    assert writer.longest_gap_s > 0.2
    assert all(init.root_token not in e for e in writer.errors)
    print(
        f"kv writer: {len(attempts)} attempts, {writer.failed} failed, "
        f"longest gap {writer.longest_gap_s:.2f}s, errors {sorted(set(writer.errors))}"
    )


def test_kv_writer_is_bounded_and_records_failures(single: BaoCluster) -> None:
    # Sealed server: every write is a recorded 503, and the count bound ends the writer.
    writer = KvWriter(single.address(0), single.ca_file, "no-token", interval=0.05, max_count=4)
    writer.start().wait(timeout=10)
    writer.stop()
    assert [a.ok for a in writer.attempts] == [False] * 4
    assert all("HTTP 503" in e for e in writer.errors), writer.errors
    assert writer.longest_gap_s >= 0.15
