"""Reading the served-leaf probe's output (member_probe.py): a table of what the CLI prints."""

from __future__ import annotations

import pytest

from services.distributor.facts import MemberProbe
from services.distributor.member_probe import due, interpret, slot_of
from shared.certs import fingerprint
from tests.support.pki import CA

_CA = CA("probe unit")
_LEAF = _CA.leaf()
PEM = _LEAF.cert_pem.decode().strip()
FP = fingerprint(_LEAF.cert)
UNSEALED = '{"type": "shamir", "initialized": true, "sealed": false}'
SEALED = '{"type": "shamir", "initialized": true, "sealed": true}'
UNKNOWN = (
    'Error checking seal status: Get "https://127.0.0.1:8200/v1/sys/seal-status": tls: '
    "failed to verify certificate: x509: certificate signed by unknown authority"
)
REFUSED = (
    'Error checking seal status: Get "https://127.0.0.1:8200/v1/sys/seal-status": dial tcp '
    "127.0.0.1:8200: connect: connection refused"
)


def out(leaf: str, trust: str | None) -> str:
    text = f"@@pem\n{PEM}\n@@leaf {leaf}\n"
    return text + (f"@@trust {trust}\n" if trust is not None else "@@trust none\n")


# (exit code, output) -> (fingerprint, sealed, serves_installed, trusted, words in detail)
CASES = [
    (
        "unsealed, trusted",
        0,
        out(f"0\n{UNSEALED}", f"0\n{UNSEALED}"),
        (FP, False, True, True),
        "unsealed",
    ),
    ("sealed, trusted", 0, out(f"2\n{SEALED}", f"2\n{SEALED}"), (FP, True, True, True), "sealed"),
    (
        "old certificate served",
        0,
        out(f"1\n{UNKNOWN}", f"0\n{UNSEALED}"),
        (FP, False, False, True),  # sealed or not: the clients' trust call still says
        "serves another certificate",
    ),
    (
        "served, not trusted by clients",
        0,
        out(f"0\n{UNSEALED}", f"1\n{UNKNOWN}"),
        (FP, False, True, False),
        "not trusted",
    ),
    (
        "listener opening: one call answered, the other refused",
        0,
        out(f"2\n{SEALED}", f"1\n{REFUSED}"),
        (FP, True, True, None),  # not proven: the gate waits for the next probe
        "serves it, trust not proven",
    ),
    ("no CA bundle", 0, out(f"0\n{UNSEALED}", None), (FP, False, True, None), "no CA bundle"),
    (
        "not listening",
        0,
        out(f"1\n{REFUSED}", f"1\n{REFUSED}"),
        (FP, None, None, None),
        "connection refused",
    ),
    ("no CLI", 0, "@@cli missing\n", (None, None, None, None), "no vault or bao CLI"),
    (
        "certificate file unreadable",
        0,
        "@@leaf unreadable /vault/certs/x.crt\n",
        (None, None, None, None),
        "/vault/certs/x.crt",
    ),
    ("no shell", 126, "OCI runtime exec failed", (None, None, None, None), "did not run"),
    ("script failed", 3, "boom", (None, None, None, None), "exit 3"),
    ("garbage", 0, "hello", (None, None, None, None), "no probe output"),
    ("bad pem", 0, "@@pem\nnot a pem\n@@leaf 0\n{}", (None, None, None, None), "not PEM"),
    (
        "rc 2 without json is still sealed",
        0,
        out("2\nwhatever", "2\nwhatever"),
        (FP, True, True, True),
        "sealed",
    ),
]


@pytest.mark.parametrize(
    ("code", "output", "expected", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_interpret(
    code: int,
    output: str,
    expected: tuple[str | None, bool | None, bool | None, bool | None],
    words: str,
) -> None:
    verdict = interpret(code, output)
    assert (verdict.fingerprint, verdict.sealed, verdict.serves_installed, verdict.trusted) == (
        expected
    )
    assert words in verdict.detail
    assert len(verdict.detail) < 250


@pytest.mark.parametrize(
    ("name", "slot"),
    [
        ("vault.1.abc", 1),
        ("vault.12.abc", 12),
        ("other.1.abc", None),
        ("vault.x.abc", None),
        ("vault.1", None),
        (None, None),
        ("vault.nodeid.abc.def", None),
    ],
)
def test_slot_of(name: str | None, slot: int | None) -> None:
    assert slot_of(name, "vault") == slot


def _member(**kw: object) -> MemberProbe:
    base: dict[str, object] = {
        "fingerprint": FP,
        "serves_installed": True,
        "trusted": True,
        "sealed": False,
    }
    return MemberProbe.model_validate({**base, **kw})


@pytest.mark.parametrize(
    ("last", "installed", "age", "expected"),
    [
        (None, FP, 0, True),  # never probed
        (_member(), FP, 10, False),  # proven, unsealed, recent: spared
        (_member(), FP, 60, True),  # ... until the interval passed
        (_member(), "OTHER", 1, True),  # a new pair was installed
        (_member(serves_installed=False), FP, 1, False),  # not proven: every 3 s
        (_member(serves_installed=False), FP, 3, True),
        (_member(trusted=None), FP, 3, True),
        (_member(sealed=True), FP, 1, False),  # sealed: a rolling restart waits on it, 3 s
        (_member(sealed=True), FP, 3, True),
    ],
)
def test_due(last: MemberProbe | None, installed: str, age: float, expected: bool) -> None:
    at = None if last is None else 1000.0
    assert due(last, installed=installed, last_at=at, now=1000.0 + age, interval=60) is expected


HA_ACTIVE = '{"sealed": false, "ha_enabled": true, "is_self": true, "leader_address": "x"}'
HA_STANDBY = '{"sealed": false, "ha_enabled": true, "leader_address": "x"}'  # is_self omitted


@pytest.mark.parametrize(
    ("leaf", "trust", "active"),
    [
        (f"0\n{HA_ACTIVE}", f"0\n{HA_ACTIVE}", True),
        (f"0\n{HA_STANDBY}", f"0\n{HA_STANDBY}", False),
        (f"1\n{UNKNOWN}", f"0\n{HA_STANDBY}", False),  # old certificate: the trust call says
        (f"1\n{UNKNOWN}", f"0\n{HA_ACTIVE}", True),
        (f"0\n{UNSEALED}", f"0\n{UNSEALED}", None),  # not HA
        (f"2\n{SEALED}", f"2\n{SEALED}", None),
        (f"1\n{REFUSED}", f"1\n{REFUSED}", None),
    ],
)
def test_the_active_member_is_read_from_is_self(leaf: str, trust: str, active: bool | None) -> None:
    assert interpret(0, out(leaf, trust)).active is active


RAFT_STANDBY = (
    '{"sealed": false, "ha_enabled": true, "raft_committed_index": 64, "raft_applied_index": 61}'
)


@pytest.mark.parametrize(
    ("leaf", "trust", "applied"),
    [
        (f"0\n{RAFT_STANDBY}", f"0\n{RAFT_STANDBY}", 61),
        (f"1\n{UNKNOWN}", f"0\n{RAFT_STANDBY}", 61),  # old certificate: the trust call says
        (f"0\n{HA_STANDBY}", f"0\n{HA_STANDBY}", None),  # index 0 (the CLI leaves it out)
        (f"2\n{SEALED}", f"2\n{SEALED}", None),  # a sealed member has none
        (f"1\n{REFUSED}", f"1\n{REFUSED}", None),
        ('0\n{"sealed": false, "raft_applied_index": "7"}', f"1\n{REFUSED}", None),  # not a number
        ('0\n{"sealed": false, "raft_applied_index": true}', f"1\n{REFUSED}", None),
    ],
)
def test_the_raft_applied_index_is_read_from_status(
    leaf: str, trust: str, applied: int | None
) -> None:
    assert interpret(0, out(leaf, trust)).applied == applied
