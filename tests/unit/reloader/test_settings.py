"""Reloader settings: defaults, operator names, and errors that name the variable (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.reloader.settings import ReloaderSettings
from shared.errors import ConfigError
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_the_runbook_paths() -> None:
    s = load_settings(ReloaderSettings, {})
    assert s.source_dir == Path("/swag-config/etc/letsencrypt/live/iklim.co")
    assert s.target_dir == Path("/mnt/storagebox/ssl")
    assert (s.cert_name, s.key_name) == ("STAR.iklim.co.full.crt", "STAR.iklim.co_key.pem")
    assert s.domain == "iklim.co"
    assert s.names == ("iklim.co", "*.iklim.co")
    assert s.health_port == 8080
    assert s.check_interval == 60
    assert s.key_mode == 0o600
    assert (s.file_uid, s.file_gid) == (None, None)
    assert not s.allow_downgrade
    assert not s.poll_only
    assert s.warn_days == 14
    assert s.volume_root == Path("/swag-config/etc/letsencrypt")
    assert s.archive_dir == Path("/swag-config/etc/letsencrypt/archive/iklim.co")


def test_operator_values() -> None:
    s = load_settings(
        ReloaderSettings,
        {
            "CERTFLOW_DOMAIN": "Example.ORG.",
            "CERTFLOW_REQUIRED_NAMES": "vault.example.org, example.org,vault.example.org",
            "RELOADER_KEY_MODE": "0640",
            "RELOADER_FILE_UID": "1000",
            "RELOADER_FILE_GID": "",
            "RELOADER_ALLOW_DOWNGRADE": "true",
            "RELOADER_POLL_ONLY": "1",
            "RELOADER_CHECK_INTERVAL": "0.5",
            "RELOADER_SOURCE_ROOT": "/swag",
        },
    )
    assert s.domain == "example.org"
    assert s.names == ("vault.example.org", "example.org")
    assert s.key_mode == 0o640
    assert (s.file_uid, s.file_gid) == (1000, None)
    assert s.allow_downgrade
    assert s.poll_only
    assert s.volume_root == Path("/swag")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEALTH_PORT", "70000"),
        ("RELOADER_KEY_MODE", "0644"),
        ("RELOADER_KEY_MODE", "rw-------"),
        ("RELOADER_KEY_MODE", "0200"),
        ("RELOADER_CHECK_INTERVAL", "-3"),
        ("RELOADER_DEBOUNCE", "-1"),
        ("RELOADER_ALLOW_DOWNGRADE", "perhaps"),
        ("RELOADER_FILE_UID", "-5"),
        ("CERTFLOW_CERT_NAME", "../escape.crt"),
        ("CERTFLOW_KEY_NAME", ".hidden"),
        ("CERTFLOW_DOMAIN", "*.iklim.co"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(ReloaderSettings, {variable: value})
    assert variable in str(info.value)
    assert value not in str(info.value)


def test_cert_and_key_names_must_differ() -> None:
    with pytest.raises(ConfigError, match="CERTFLOW_KEY_NAME"):
        load_settings(ReloaderSettings, {"CERTFLOW_KEY_NAME": "STAR.iklim.co.full.crt"})


def _certflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_setting_exits_2_with_one_message_naming_the_variable() -> None:
    result = _certflow("reloader", env={"HEALTH_PORT": "not-a-port-9f3a"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "HEALTH_PORT" in lines[0]
    assert "not-a-port-9f3a" not in result.stderr + result.stdout


def test_help_lists_the_settings() -> None:
    result = _certflow("reloader", "--help", env={})
    assert result.returncode == 0
    for name in ("--once", "RELOADER_SOURCE_DIR", "RELOADER_TARGET_DIR", "HEALTH_PORT"):
        assert name in result.stdout
