"""Fixtures the integration tests of several services share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.notify_receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver on loopback, for the notifications a test's service sends."""
    with receiving() as r:
        yield r
