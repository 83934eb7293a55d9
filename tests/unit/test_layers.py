"""Layers point down: pure decision modules import data types, never adapters; adapters import
no decision module. Read from the source (imports as written), so a new edge fails here."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PURE = [
    "services.distributor.coordinator",
    "services.distributor.stop_order",
    "services.distributor.task_order",
    "services.distributor.consumer_gate",
    "services.distributor.consumer_notices",
    "services.verify.consumer_checks",
    "shared.consumers",
    "services.distributor.member_probe",
    "services.distributor.signal_canary",
    "services.distributor.rollout_notices",
    "services.distributor.facts",
    "services.reloader.decide",
    "services.verify.checks",
    "services.verify.facts",
    "services.verify.status",
    "shared.swarm",
    "shared.snapshot",
    "shared.status",
    "shared.notify_policy",
]
ADAPTERS = [
    "shared.docker_engine",
    "shared.storagebox",
    "shared.health",
    "services.distributor.docker_ops",
    "services.distributor.peers",
    "services.verify.observe",
]
# What does I/O: the engine, HTTP, the filesystem watcher, the web framework.
EFFECTFUL = {"docker", "requests", "httpx", "watchdog", "fastapi", "uvicorn", *ADAPTERS}
DECISIONS = {m for m in PURE if not m.endswith(("facts", "swarm", "snapshot", "status"))}


def imports(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            found.add(base)
    return found


def _hits(found: set[str], banned: set[str]) -> set[str]:
    return {name for name in found for b in banned if name == b or name.startswith(b + ".")}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_adapter(module: str) -> None:
    assert _hits(imports(module), EFFECTFUL) == set()


@pytest.mark.parametrize("module", ADAPTERS)
def test_adapters_import_no_decision_module(module: str) -> None:
    assert _hits(imports(module), DECISIONS) == set()
