"""Shamir sharing of the double: any threshold subset recombines, fewer or mixed do not."""

from __future__ import annotations

import itertools
import secrets

import pytest

from tests.vaultsim import shamir


@pytest.mark.parametrize(("parts", "threshold"), [(2, 2), (3, 2), (5, 3), (7, 7)])
def test_every_threshold_subset_recombines(parts: int, threshold: int) -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, parts, threshold)
    assert all(len(s) == 33 for s in shares)
    assert len({s[-1] for s in shares}) == parts  # distinct x coordinates
    for subset in itertools.combinations(shares, threshold):
        assert shamir.combine(list(subset)) == secret


def test_fewer_than_threshold_gives_a_different_value() -> None:
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 5, 3)
    assert shamir.combine(shares[:2]) != secret


def test_shares_of_another_secret_do_not_combine_to_ours() -> None:
    ours = shamir.split(secrets.token_bytes(32), 3, 2)
    theirs = shamir.split(secrets.token_bytes(32), 3, 2)
    secret_of_ours = shamir.combine(ours[:2])
    if ours[0][-1] == theirs[1][-1]:
        # Share x-coordinates are random: two shares may carry the same one (about 1 in 255).
        with pytest.raises(ValueError, match="duplicate part"):
            shamir.combine([ours[0], theirs[1]])
    else:
        assert shamir.combine([ours[0], theirs[1]]) != secret_of_ours


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([b"\x01" * 33], "less than two"),
        ([b"\x01" * 33, b"\x02" * 32], "same length"),
        ([b"\x01" * 32 + b"\x05", b"\x02" * 32 + b"\x05"], "duplicate part"),
    ],
)
def test_combine_refuses_inconsistent_parts(shares: list[bytes], message: str) -> None:
    with pytest.raises(shamir.CombineError, match=message):
        shamir.combine(shares)


def test_split_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        shamir.split(b"x" * 32, 2, 3)
    with pytest.raises(ValueError):
        shamir.split(b"x" * 32, 256, 2)
