"""scripts/test runs the tests against the installed wheel, not the source tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import services
import shared

# Read at import: tests/conftest.py removes every CERTFLOW_* variable before each test.
_WHEEL = os.environ.get("CERTFLOW_TEST_WHEEL") == "1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not _WHEEL, reason="only under scripts/test (CERTFLOW_TEST_WHEEL=1)")
@pytest.mark.parametrize("package", [services, shared], ids=lambda p: p.__name__)
def test_the_packages_come_from_site_packages(package: object) -> None:
    origin = Path(str(getattr(package, "__file__", ""))).resolve()
    assert "site-packages" in origin.parts, origin
    assert not origin.is_relative_to(ROOT / package.__name__), origin  # type: ignore[attr-defined]
