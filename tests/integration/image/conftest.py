"""One project image per test session, built from the local base and removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.docker_engine import ensure_engine
from tests.support.e2e_images import build_project_image, remove_image
from tests.support.e2e_names import unique


@pytest.fixture(scope="session")
def project_image() -> Iterator[str]:
    ensure_engine()
    tag = build_project_image(f"certflow-test:{unique('img')}")
    yield tag
    remove_image(tag)
