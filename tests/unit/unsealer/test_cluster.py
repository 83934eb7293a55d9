"""The cluster view: roles, the one-active rule, who may be given an unproven key, and what the
key document's cluster id proves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.unsealer.cluster import (
    NO_OWNER,
    KeyOwner,
    MemberView,
    Owner,
    cluster_exists,
    judge,
    key_owner,
    plan_keys,
    roles,
    unsealed_cluster_ids,
)
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


HERE = "aea0926c-24b0-8d67-0ed4-dba6847e7d21"
THERE = "0b1c2d3e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("document", "members", "owner"),
    [
        (HERE, [HERE], Owner.THIS),
        (HERE, [HERE, HERE, None], Owner.THIS),  # a member unsealed this cycle has not said yet
        (HERE, [THERE], Owner.OTHER),
        (HERE, [THERE, None], Owner.OTHER),
        (None, [HERE], Owner.UNKNOWN),  # a line-format file or an older document
        (HERE, [], Owner.UNKNOWN),  # a full cluster restart: nobody unsealed to compare with
        (HERE, [None, None], Owner.UNKNOWN),
        (HERE, [HERE, THERE], Owner.UNKNOWN),  # two clusters behind one name: proves nothing
        (None, [], Owner.UNKNOWN),
    ],
)
def test_the_document_cluster_id_against_the_unsealed_members(
    document: str | None, members: list[str | None], owner: Owner
) -> None:
    assert key_owner(document, members).owner is owner


def test_a_mismatch_names_both_clusters() -> None:
    found = key_owner(HERE, [THERE, THERE])
    assert found.message == f"the key file is for cluster {HERE}, the members are cluster {THERE}"
    assert THERE in key_owner(HERE, [HERE, THERE]).message  # said, though it changes nothing


def test_only_unsealed_members_report_a_cluster_id() -> None:
    members = [
        m("a", replace(ACTIVE, cluster_id=HERE)),
        m("b", replace(STANDBY, cluster_id=HERE)),
        m("c", replace(SEALED, cluster_id=THERE)),  # cannot happen, and would not count
        m("d", None),
        m("e", UNINIT),
    ]
    assert unsealed_cluster_ids(members) == [HERE, HERE]


LEADER = m("a", replace(ACTIVE, cluster_id=HERE))
JOINERS = [m("b", SEALED, joining=True), m("c", SEALED, joining=True)]
THIS = key_owner(HERE, [HERE])
OTHER = key_owner(THERE, [HERE])


@pytest.mark.parametrize(
    ("members", "proven", "owner", "recipients", "refused"),
    [
        # a fresh unsealer beside an unsealed leader, only joiners sealed (retry_join shape)
        ([LEADER, *JOINERS], False, THIS, {"b", "c"}, False),
        ([LEADER, *JOINERS], False, NO_OWNER, set(), False),  # withheld: nobody to prove it on
        ([LEADER, *JOINERS], False, OTHER, set(), True),
        # members that look joined: the matching document goes to all, another to nobody
        ([LEADER, m("b", SEALED), m("c", SEALED)], False, THIS, {"b", "c"}, False),
        # a matching document may hold stale keys (a missed rekey): joined members go first
        ([LEADER, m("b", SEALED), *JOINERS[1:]], False, THIS, {"b"}, False),
        ([LEADER, m("b", SEALED), m("c", SEALED)], False, OTHER, set(), True),
        ([LEADER, m("b", SEALED), m("c", SEALED)], False, NO_OWNER, {"b"}, False),
        # the key unsealed a member in this process: that beats what the document says
        ([LEADER, *JOINERS], True, OTHER, {"b", "c"}, False),
        # nobody unsealed (full restart): today's way, one joined member first
        ([m("a", SEALED), m("b", SEALED)], False, NO_OWNER, {"a"}, False),
    ],
)
def test_the_plan_follows_the_proof(
    members: list[MemberView],
    proven: bool,
    owner: KeyOwner,
    recipients: set[str],
    refused: bool,
) -> None:
    plan = plan_keys(members, key_proven=proven, owner=owner)
    assert plan.recipients == recipients
    assert bool(plan.refused) is refused
    assert plan.proven is (proven or owner.owner is Owner.THIS)
    sealed = {v.address for v in members if v.health is not None and v.health.sealed}
    assert set(plan.withheld) == sealed - recipients


def test_a_refused_document_is_named_to_every_sealed_member() -> None:
    plan = plan_keys([LEADER, *JOINERS], key_proven=False, owner=OTHER)
    assert plan.refused == OTHER.message
    assert all(OTHER.message in why and "withheld" in why for why in plan.withheld.values())
