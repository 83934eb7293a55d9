"""The cluster view: roles, the one-active rule, and who may be given an unproven key."""

from __future__ import annotations

import pytest

from services.unsealer.cluster import MemberView, cluster_exists, judge, plan_keys, roles
from services.unsealer.status import MemberHealth, Role

ACTIVE = MemberHealth(initialized=True, sealed=False, standby=False)
STANDBY = MemberHealth(initialized=True, sealed=False, standby=True)
SEALED = MemberHealth(initialized=True, sealed=True, standby=True)
UNINIT = MemberHealth(initialized=False, sealed=True, standby=False)


def m(address: str, health: MemberHealth | None, *, joining: bool = False) -> MemberView:
    return MemberView(address, health, joining)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([m("a", UNINIT), m("b", UNINIT)], {"a": Role.UNINITIALIZED, "b": Role.UNINITIALIZED}),
        ([m("a", SEALED), m("b", UNINIT)], {"a": Role.SEALED, "b": Role.NOT_JOINED}),
        (
            [m("a", ACTIVE), m("b", STANDBY), m("c", None)],
            {"a": Role.ACTIVE, "b": Role.STANDBY, "c": Role.UNREACHABLE},
        ),
    ],
)
def test_roles_name_a_joining_member_only_when_the_cluster_exists(
    members: list[MemberView], expected: dict[str, Role]
) -> None:
    assert roles(members) == expected


def test_an_unreachable_member_does_not_make_a_cluster() -> None:
    assert not cluster_exists([m("a", None), m("b", UNINIT)])


@pytest.mark.parametrize(
    ("member_roles", "ok", "fragment"),
    [
        ({"a": Role.ACTIVE, "b": Role.STANDBY, "c": Role.STANDBY}, True, "1 active, 2 standby"),
        ({"a": Role.STANDBY, "b": Role.SEALED}, False, "no active member"),
        ({"a": Role.ACTIVE, "b": Role.ACTIVE}, False, "2 members claim to be active: a, b"),
        ({}, False, "no Vault member found"),
        ({"a": Role.ACTIVE, "b": Role.NOT_JOINED}, True, "1 not joined"),
    ],
)
def test_judge_wants_exactly_one_active_member(
    member_roles: dict[str, Role], ok: bool, fragment: str
) -> None:
    verdict = judge(member_roles)
    assert verdict.ok is ok
    assert fragment in verdict.message


def test_a_proven_key_goes_to_every_sealed_member_joiners_included() -> None:
    plan = plan_keys(
        [m("a", ACTIVE), m("b", SEALED), m("c", SEALED, joining=True), m("d", UNINIT)],
        key_proven=True,
    )
    assert plan.recipients == {"b", "c"}
    assert plan.withheld == {}


def test_an_unproven_key_goes_to_one_joined_member_first() -> None:
    plan = plan_keys([m("c", SEALED), m("b", SEALED), m("a", ACTIVE)], key_proven=False)
    assert plan.recipients == {"b"}
    assert "tried on b first" in plan.withheld["c"]


def test_an_unproven_key_never_goes_to_a_member_seen_joining() -> None:
    plan = plan_keys([m("a", ACTIVE), m("b", SEALED, joining=True)], key_proven=False)
    assert plan.recipients == frozenset()
    assert "joining" in plan.withheld["b"]


def test_a_full_cluster_restart_starts_with_one_member() -> None:
    plan = plan_keys([m("a", SEALED), m("b", SEALED), m("c", SEALED)], key_proven=False)
    assert plan.recipients == {"a"}
    assert set(plan.withheld) == {"b", "c"}
