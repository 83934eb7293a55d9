"""The seal sampler's readings of its rounds: stretches without an active member, its resolution."""

from __future__ import annotations

import pytest

from tests.support.e2e_seal_sampler import (
    Sample,
    SealSampler,
    round_spacing,
    stretches_without_active,
)


def _rounds(*rounds: tuple[float, int]) -> list[Sample]:
    """(t, members answering active) per round."""
    return [Sample(t, unsealed=3, states={}, active=active) for t, active in rounds]


@pytest.mark.parametrize(
    ("rounds", "since", "expected"),
    [
        # One handover: no active member from 2.0 until the round at 2.5 found one.
        (_rounds((1.0, 1), (2.0, 0), (2.5, 1), (3.0, 1)), None, [0.5]),
        # Two stretches, the first over three rounds.
        (_rounds((0.0, 0), (0.2, 0), (0.4, 0), (0.6, 1), (1.0, 0), (1.2, 1)), None, [0.6, 0.2]),
        # ``since`` drops the rounds before it (a stretch from before the renewal).
        (_rounds((0.0, 0), (0.5, 1), (1.0, 0), (1.5, 1)), 0.75, [0.5]),
        # Still without one at the last round: up to that round.
        (_rounds((1.0, 1), (2.0, 0), (2.5, 0)), None, [0.5]),
        # A last round alone covers no time.
        (_rounds((1.0, 1), (2.0, 0)), None, []),
        (_rounds((1.0, 1), (2.0, 1)), None, []),
        ([], None, []),
    ],
)
def test_stretches_without_active(
    rounds: list[Sample], since: float | None, expected: list[float]
) -> None:
    assert stretches_without_active(rounds, since) == pytest.approx(expected)


def test_the_samplers_figures_are_the_stretches() -> None:
    sampler = SealSampler(image="unused", network="unused")
    sampler.samples = _rounds((0.0, 0), (0.2, 0), (0.4, 0), (0.6, 1), (1.0, 0), (1.2, 1))
    assert sampler.seconds_without_active() == pytest.approx(0.8)
    assert sampler.longest_without_active() == pytest.approx(0.6)
    assert sampler.longest_without_active(since=0.5) == pytest.approx(0.2)
    sampler.samples = []
    assert sampler.longest_without_active() == 0.0


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0.0, 0.2, 0.4, 0.6], (0.2, 0.2)),
        # A slow round (members that did not answer) shows in the longest, not the median.
        ([0.0, 0.2, 0.4, 1.4, 1.6], (0.2, 1.0)),
        ([0.0, 0.5], (0.5, 0.5)),
        ([0.0], None),
        ([], None),
    ],
)
def test_round_spacing(times: list[float], expected: tuple[float, float] | None) -> None:
    found = round_spacing(_rounds(*((t, 1) for t in times)))
    assert found == (None if expected is None else pytest.approx(expected))
