"""The unsealer's notifications reach a real HTTP receiver, through the real ``certflow
unsealer`` process against a Vault double over TLS (why the double: test_unsealer.py): a rejected
key (told once per streak, not per retry) and a member sealed past UNSEALER_SEALED_ALERT."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable

from tests.integration.unsealer.conftest import (
    Cluster,
    UnsealerProcess,
    sealed,
    wait_for,
    write_atomic,
)
from tests.support.leaks import assert_no_keys
from tests.support.notify_receiver import Receiver

from .test_unsealer import check, env_for

MakeUnsealer = Callable[..., UnsealerProcess]
TOKEN = "T0K3Nsecret"


def test_a_rejected_key_and_a_member_sealed_too_long_are_notified_once(
    cluster: Cluster, unsealers: MakeUnsealer, receiver: Receiver
) -> None:
    init = cluster.create_keys(1, 1)
    sim = cluster.replica("r1", args=("--wrong-key-status", "400"))
    wrong = [base64.b64encode(secrets.token_bytes(32)).decode()]
    key_file = cluster.key_file(wrong)
    unsealer = unsealers(
        env_for(
            cluster,
            [sim],
            key_file,
            UNSEALER_BACKOFF_INITIAL="1",
            UNSEALER_BACKOFF_MAX="2",
            UNSEALER_SEALED_ALERT="1",
            CERTFLOW_NOTIFY_WEBHOOK_URL=f"{receiver.url}/hook/{TOKEN}",
        )
    )
    receiver.wait_for(
        lambda r: {"unseal_key.rejected", "member.sealed"} <= set(r.kinds()),
        what="key rejected and member sealed",
    )

    # More rejections follow (backoff), each not told again.
    def rejections() -> int:
        value = check(unsealer, sim).get("key_rejections")
        return value if isinstance(value, int) else 0

    wait_for(lambda: rejections() >= 3, 30, "3 tries")
    write_atomic(key_file, init["keys_base64"][0] + "\n")
    wait_for(lambda: not sealed(sim), timeout=30, what="unsealed with the rotated key")
    assert unsealer.stop() == 0  # drains the queue
    kinds = receiver.kinds()
    assert kinds.count("unseal_key.rejected") == 1
    assert kinds.count("member.sealed") == 1
    bodies = {b["kind"]: b for b in receiver.bodies}
    rejected = bodies["unseal_key.rejected"]
    assert rejected["service"] == "vault-unsealer"
    assert rejected["fields"]["replica"] == sim.address
    assert rejected["subject"] == sim.address
    assert "HTTP 400" in rejected["fields"]["error"]
    sealed_body = bodies["member.sealed"]
    assert sealed_body["fields"]["sealed_alert"] == 1
    assert sealed_body["severity"] == "critical"
    assert_no_keys([json.dumps(receiver.bodies), unsealer.logs()], wrong + init["keys"])
    assert TOKEN not in unsealer.logs()
