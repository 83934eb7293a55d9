"""``certflow unsealer`` as a real process against Vault doubles over real TLS.

Why the double here (the real server's behaviour is in test_unsealer_openbao.py): these tests need
shapes a real OpenBao 2.7 cluster cannot be put in on demand: a wrong key answered 500 as Vault
< 1.13 does (``--wrong-key-status 500``), independent single servers each in a chosen state at
once (one uninitialized beside initialized ones without a raft cluster behind them, one holding a
stranger's half-finished attempt with a threshold of 3), and a server that restarts sealed in a
loop in milliseconds.

Certificates name only vault.iklim.co while replicas are reached at 127.0.0.1, so every call
exercises the SNI + hostname check against UNSEALER_TLS_SERVER_NAME. Every log line, /health and
/metrics output is scanned for the keys (hex and base64).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.unsealer.conftest import (
    Cluster,
    UnsealerProcess,
    sealed,
    wait_for,
    write_atomic,
)
from tests.support.leaks import assert_no_keys
from tests.vaultsim.harness import SimProcess

MakeUnsealer = Callable[..., UnsealerProcess]


def env_for(
    cluster: Cluster, sims: list[SimProcess], key_file: Path, **extra: str
) -> dict[str, str]:
    return {
        "UNSEALER_VAULT_ADDRS": ",".join(s.address for s in sims),
        "UNSEALER_CA_FILE": str(cluster.tls.ca_file),
        "UNSEALER_KEY_FILE": str(key_file),
        "UNSEALER_SEALED_ALERT": "30",
        **extra,
    }


def check(unsealer: UnsealerProcess, sim: SimProcess) -> dict[str, object]:
    """The replica's /health check ({} until the first cycle has reported it)."""
    value: dict[str, object] = unsealer.health()["checks"].get(f"vault:{sim.address}", {})
    return value


def unseal_requests(sim: SimProcess) -> list[dict[str, object]]:
    out = []
    for line in sim.logs().splitlines():
        event = json.loads(line)
        if event.get("event") == "vaultsim.request" and event.get("path") == "/v1/sys/unseal":
            out.append(event)
    return out


def test_three_replicas_uninitialized_stalled_and_restarting(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(5, 3)
    keys = init["keys_base64"]
    uninitialized = cluster.replica("uninit", initialized=False)
    stalled = cluster.replica("stalled")
    # someone else's half-finished attempt: a well-formed share of ANOTHER Vault, then gone
    stranger = base64.b64encode(secrets.token_bytes(33)).decode()
    reply = stalled.unseal(stranger).json()
    assert reply["progress"] == 1
    assert reply["nonce"]
    looping = cluster.replica("looping", args=("--wrong-key-status", "500"))
    key_file = cluster.key_file(keys)
    unsealer = unsealers(env_for(cluster, [uninitialized, stalled, looping], key_file))

    wait_for(lambda: not sealed(stalled), what="stalled replica unsealed")
    wait_for(lambda: not sealed(looping), what="looping replica unsealed")
    for round_ in range(4):  # a replica restarting in a loop comes back sealed every time
        looping.restart()
        wait_for(lambda: not sealed(looping), timeout=10, what=f"unsealed after restart {round_}")

    wait_for(lambda: check(unsealer, looping).get("status") == "ok", what="health caught up")
    health = unsealer.health()
    un = check(unsealer, uninitialized)
    assert un["status"] == "degraded"
    # The others are initialized, so an uninitialized member is one waiting to join (raft), not
    # a Vault to bootstrap; either way it is never initialized by the unsealer.
    assert "not joined" in str(un["message"])
    assert "never initialized" in str(un["message"])
    assert un["initialized"] is False
    st = check(unsealer, stalled)
    assert st["status"] == "ok"
    assert st["sealed"] is False
    assert (st["t"], st["n"], st["progress"]) == (3, 5, 0)
    assert st["version"] == "1.19.0"
    assert st["last_seen"]
    assert uninitialized.status()["initialized"] is False  # never initialized by the unsealer

    metrics = unsealer.metrics()
    assert f'certflow_vault_sealed{{replica="{looping.address}"}} 0.0' in metrics
    assert f'certflow_vault_initialized{{replica="{uninitialized.address}"}} 0.0' in metrics
    assert unsealer.metric("certflow_unsealer_unseals_total", looping.address) >= 5
    assert unsealer.metric("certflow_unsealer_key_rejections_total", stalled.address) == 0

    events = [e["event"] for e in unsealer.events()]
    assert "unseal.joining" in events
    assert "unseal.joined_attempt_failed" in events
    assert "unseal.key_rejected" not in events
    assert "replica.uninitialized" in events
    assert unsealer.stop() == 0
    assert_no_keys([unsealer.logs(), json.dumps(health), metrics], keys + init["keys"] + [stranger])


def test_valid_foreign_share_is_continued_not_reset(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(5, 3)
    sim = cluster.replica("r1")
    sim.unseal(init["keys"][4])  # an operator typed share 5 and walked away
    # we hold only shares 1-3; joining adds two of them and Vault unseals with 5+1+2
    key_file = cluster.key_file(init["keys_base64"][:3])
    unsealer = unsealers(env_for(cluster, [sim], key_file, UNSEALER_STALL_TIMEOUT="3600"))
    wait_for(lambda: not sealed(sim), what="unsealed by continuing the attempt")
    statuses = [r["status"] for r in unseal_requests(sim)]
    assert statuses
    assert all(s == 200 for s in statuses)
    assert unsealer.metric("certflow_unsealer_resets_total", sim.address) == 0
    assert_no_keys([unsealer.logs(), unsealer.health_text(), unsealer.metrics()], init["keys"])


def test_stalled_attempt_we_cannot_finish_is_reset_after_the_timeout(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(3, 3)
    sim = cluster.replica("r1")
    key_file = cluster.key_file(init["keys_base64"][:2])  # one share short of the threshold
    unsealer = unsealers(
        env_for(cluster, [sim], key_file, UNSEALER_STALL_TIMEOUT="1", UNSEALER_SEALED_ALERT="2")
    )
    wait_for(
        lambda: unsealer.metric("certflow_unsealer_resets_total", sim.address) >= 1,
        what="stalled attempt reset",
    )
    wait_for(lambda: check(unsealer, sim).get("status") == "failing", what="sealed alert")
    assert "more keys than we hold" in str(check(unsealer, sim)["message"])
    assert sealed(sim)


@pytest.mark.parametrize("variant", ["400", "500"])
def test_wrong_key_backs_off_then_rotated_key_file_unseals(
    cluster: Cluster, unsealers: MakeUnsealer, variant: str
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("r1", args=("--wrong-key-status", variant))
    wrong = [base64.b64encode(secrets.token_bytes(32)).decode()]
    key_file = cluster.key_file(wrong)
    unsealer = unsealers(
        env_for(cluster, [sim], key_file, UNSEALER_BACKOFF_INITIAL="2", UNSEALER_BACKOFF_MAX="30")
    )
    wait_for(lambda: check(unsealer, sim).get("status") == "failing", what="key rejected reported")
    status = check(unsealer, sim)
    assert status["message"] == "key rejected; backing off"
    assert f"HTTP {variant}" in str(status["last_error"])
    assert unsealer.health()["status"] == "failing"
    # no hammering: over ~3 s of fast polling, the backoff allows only a couple of submissions
    wait_for(lambda: check(unsealer, sim).get("key_rejections") == 2, timeout=10, what="2nd try")
    submitted = unsealer.metric("certflow_unsealer_key_submissions_total", sim.address)
    assert submitted <= 3
    assert len(unseal_requests(sim)) <= 3
    assert sealed(sim)

    write_atomic(key_file, init["keys_base64"][0] + "\n")  # the secret content is rotated
    wait_for(lambda: not sealed(sim), timeout=10, what="unsealed with the rotated key")
    wait_for(lambda: check(unsealer, sim).get("status") == "ok", what="health recovered")
    assert check(unsealer, sim)["last_error"] is None
    events = [e["event"] for e in unsealer.events()]
    assert "unseal.key_rejected" in events
    assert "keys.changed" in events
    assert_no_keys(
        [unsealer.logs(), unsealer.health_text(), unsealer.metrics()], wrong + init["keys"]
    )


def test_two_unsealers_at_once_never_fail_an_attempt(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(5, 3)
    sims = [cluster.replica("a"), cluster.replica("b")]
    key_file = cluster.key_file(init["keys_base64"])
    env = env_for(cluster, sims, key_file)
    first = unsealers(env, name="u1")
    second = unsealers(env, name="u2")
    for round_ in range(6):
        for sim in sims:
            sim.restart()
        wait_for(lambda: not any(sealed(sim) for sim in sims), timeout=10, what=f"round {round_}")
    for sim in sims:
        statuses = [r["status"] for r in unseal_requests(sim)]
        assert statuses
        assert all(s == 200 for s in statuses), statuses
    for unsealer in (first, second):
        events = {e["event"] for e in unsealer.events()}
        assert not events & {"unseal.key_rejected", "unseal.joined_attempt_failed"}
        assert unsealer.metric("certflow_unsealer_resets_total", sims[0].address) == 0
        assert_no_keys([unsealer.logs(), unsealer.health_text(), unsealer.metrics()], init["keys"])


def test_once_exit_codes(cluster: Cluster, unsealers: MakeUnsealer) -> None:
    init = cluster.create_keys(3, 2)
    good = [cluster.replica("a"), cluster.replica("b")]
    key_file = cluster.key_file(init["keys"])
    ok = unsealers(env_for(cluster, good, key_file), start=False).once()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(not sealed(s) for s in good)
    uninit = cluster.replica("c", initialized=False)
    env = {**env_for(cluster, [*good, uninit], key_file), "UNSEALER_ONCE_WAIT": "1"}
    failed = unsealers(env, start=False).once()
    assert failed.returncode == 1
    # Initialized peers exist, so the uninitialized one is a member waiting to join.
    assert "not joined yet" in failed.stderr
    assert_no_keys([ok.stdout, ok.stderr, failed.stdout, failed.stderr], init["keys"])


def test_server_name_mismatch_is_unreachable_not_unsealed(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    result = unsealers(
        env_for(cluster, [sim], key_file, UNSEALER_TLS_SERVER_NAME="impostor.example"),
        start=False,
    ).once()
    assert result.returncode == 1
    assert "TLS verification failed" in result.stderr
    assert unseal_requests(sim) == []  # the key never left for an unverified server
    assert sealed(sim)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "empty"),
        ("{broken", "invalid JSON"),
        ("not-a-key\n", "line 1: not a hex or base64"),
    ],
)
def test_unusable_key_file_refuses_to_start(
    cluster: Cluster, unsealers: MakeUnsealer, content: str | None, message: str
) -> None:
    key_file = cluster.root / "keyfile"
    if content is not None:
        key_file.write_text(content)
        key_file.chmod(0o600)  # the content is what is wrong here, not the mode
    process = unsealers(
        {"UNSEALER_KEY_FILE": str(key_file), "UNSEALER_VAULT_ADDRS": "https://127.0.0.1:1"},
        start=False,
    )
    result = process.once()
    assert result.returncode == 2
    assert message in result.stderr
    assert "UNSEALER_KEY_FILE" in result.stderr


def test_bad_setting_exits_2_naming_the_variable(unsealers: MakeUnsealer) -> None:
    result = unsealers({"UNSEALER_VAULT_ADDRS": "http://x:1"}, start=False).once()
    assert result.returncode == 2
    assert "UNSEALER_VAULT_ADDRS" in result.stderr


def test_a_loose_key_file_is_refused_and_its_fix_is_seen_without_a_restart(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    key_file.chmod(0o644)
    unsealer = unsealers(env_for(cluster, [sim], key_file, UNSEALER_FAST_INTERVAL="0.1"))

    def keys_check() -> dict[str, object]:
        value: dict[str, object] = unsealer.health()["checks"].get("keys", {})
        return value

    wait_for(lambda: keys_check().get("status") == "failing", what="the key file refused")
    check = keys_check()
    assert check["mode"] == "0644"
    assert f"UNSEALER_KEY_FILE {key_file}: mode 0644 refused" in str(check["message"])
    # fast passes go on (the member is sealed): the check is re-reported each pass, the log
    # event is not, and no key went out
    seen: set[object] = set()

    def passes_reported() -> bool:
        seen.add(keys_check().get("updated"))
        return len(seen) >= 5

    wait_for(passes_reported, what="five passes reporting the refusal")
    assert sealed(sim)
    assert unseal_requests(sim) == []
    refused = [e for e in unsealer.events() if e["event"] == "keys.insecure_file"]
    assert len(refused) == 1
    assert refused[0]["level"] == "error"
    assert refused[0]["mode"] == "0644"

    key_file.chmod(0o400)  # fixed in place (a bind mount); a re-mounted secret restarts anyway
    wait_for(lambda: not sealed(sim), what="unsealed once the mode is fixed")
    wait_for(lambda: keys_check().get("status") == "ok", what="keys check recovered")
    assert "keys.usable_again" in [e["event"] for e in unsealer.events()]
    assert_no_keys([unsealer.logs(), unsealer.health_text(), unsealer.metrics()], init["keys"])


def test_once_refuses_a_loose_key_file_with_exit_2(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    key_file.chmod(0o640)
    result = unsealers(env_for(cluster, [sim], key_file), start=False).once()
    assert result.returncode == 2
    assert f"{key_file}: mode 0640 refused" in result.stderr
    assert "UNSEALER_KEY_FILE_GROUP_READ=true" in result.stderr
    assert unseal_requests(sim) == []
    assert sealed(sim)
    assert_no_keys([result.stdout, result.stderr], init["keys"])


def test_a_group_read_set_on_purpose_is_accepted_with_the_setting(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    key_file.chmod(0o440)
    env = env_for(cluster, [sim], key_file, UNSEALER_KEY_FILE_GROUP_READ="true")
    result = unsealers(env, start=False).once()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not sealed(sim)
    assert_no_keys([result.stdout, result.stderr], init["keys"])


def test_skip_verify_is_explicit_and_warned(cluster: Cluster, unsealers: MakeUnsealer) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    env = env_for(cluster, [sim], key_file, UNSEALER_TLS_SERVER_NAME="impostor.example")
    env.pop("UNSEALER_CA_FILE")
    result = unsealers({**env, "UNSEALER_SKIP_VERIFY": "true"}, start=False).once()
    assert result.returncode == 0, result.stdout + result.stderr
    warning = next(
        json.loads(line)
        for line in result.stdout.splitlines()
        if '"tls.verification_disabled"' in line
    )
    assert warning["level"] == "warning"
    assert not sealed(sim)


def test_key_file_broken_while_running_is_reported_not_fatal(
    cluster: Cluster, unsealers: MakeUnsealer
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("a")
    key_file = cluster.key_file(init["keys"])
    unsealer = unsealers(env_for(cluster, [sim], key_file))
    wait_for(lambda: not sealed(sim), what="first unseal")
    write_atomic(key_file, "this is not a key\n")
    sim.restart()

    def keys_failing() -> bool:
        keys_check = unsealer.health()["checks"].get("keys", {})
        return bool(keys_check.get("status") == "failing")

    wait_for(keys_failing, what="keys check failing")
    assert "holds more than one word" in unsealer.health()["checks"]["keys"]["message"]
    assert sealed(sim)
    assert unsealer.proc is not None
    assert unsealer.proc.poll() is None  # still running, still watching
    write_atomic(key_file, init["keys_base64"][0] + "\n")
    wait_for(lambda: not sealed(sim), timeout=10, what="unsealed after the file was fixed")
    wait_for(lambda: unsealer.health()["checks"]["keys"]["status"] == "ok", what="keys ok")
    assert_no_keys([unsealer.logs(), unsealer.health_text(), unsealer.metrics()], init["keys"])
