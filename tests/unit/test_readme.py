"""The README's configuration reference is generated from the settings classes: keep them equal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_reference_matches_the_settings() -> None:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts/config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert f"{module.BEGIN}\n{module.render()}\n{module.END}" in readme, (
        "README config reference is stale: run .venv/bin/python scripts/config_reference.py --write"
    )
