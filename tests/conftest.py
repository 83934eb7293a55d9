"""Test-wide rules: tier markers from the directory, and a clean slate for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from shared import retry

_TIERS = ("unit", "integration", "e2e", "lab")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _clean_slate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No retry waits, no leaked environment or logging configuration between tests."""
    for name in list(__import__("os").environ):
        if name.startswith(
            ("RELOADER_", "DISTRIBUTOR_", "UNSEALER_", "VERIFY_", "CERTFLOW_", "HEALTH_", "LOG_")
        ):
            monkeypatch.delenv(name)
    retry.disable_waits(True)
    yield
    retry.disable_waits(False)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
