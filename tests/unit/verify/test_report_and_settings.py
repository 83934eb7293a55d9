"""Rendering of verify results and its settings (environment + flags)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.verify import cli
from services.verify.report import to_json, to_table
from services.verify.result import Outcome, Result
from shared.errors import ConfigError

RESULTS = [
    Result("service iklimco_vault", Outcome.OK, "converged: 2/2 tasks running", details={"n": 2}),
    Result(
        "vault 10.0.1.5 seal",
        Outcome.FAIL,
        "sealed",
        "docker service logs iklimco_vault-unsealer --tail 50",
        {"at": datetime(2027, 1, 1, tzinfo=UTC)},
    ),
]


def test_json_report_is_machine_readable() -> None:
    doc = json.loads(to_json(RESULTS, checked_at=datetime(2026, 11, 28, tzinfo=UTC)))
    assert doc["ok"] is False
    assert doc["failed"] == 1
    assert doc["checks"][0] == {
        "check": "service iklimco_vault",
        "outcome": "ok",
        "summary": "converged: 2/2 tasks running",
        "next": None,
        "details": {"n": 2},
    }
    assert doc["checks"][1]["next"].startswith("docker service logs")
    assert doc["checks"][1]["details"]["at"] == "2027-01-01T00:00:00+00:00"


def test_table_shows_each_failure_with_what_to_do_next() -> None:
    table = to_table(RESULTS, width=100)
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert "ok" in lines[1]
    assert "FAIL" in lines[2]
    assert "next: docker service logs iklimco_vault-unsealer" in table
    assert lines[-1] == "verify: 1 of 2 checks failed"
    assert all(len(line) <= 100 for line in lines)


def test_table_says_when_everything_holds() -> None:
    assert to_table(RESULTS[:1], width=100).splitlines()[-1] == "verify: everything holds"


def _args(**values: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    args = parser.parse_args([])
    for key, value in values.items():
        setattr(args, key, value)
    return args


def test_defaults_are_the_runbook_names() -> None:
    settings = cli.settings_from(_args(), {})
    assert settings.service("reloader") == "iklimco_cert-reloader"
    assert settings.service("distributor") == "iklimco_cert-distributor"
    assert settings.service("vault") == "iklimco_vault"
    assert settings.service("unsealer") == "iklimco_vault-unsealer"
    assert settings.network == "iklimco_vault"
    assert settings.ssl_dir == Path("/opt/iklimco/ssl")
    assert settings.storagebox_dir == Path("/mnt/storagebox/ssl")
    assert settings.vault_server_name == "vault.iklim.co"
    assert settings.vault_port == 8200
    assert settings.vault_ca_file is None


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    env = {"VERIFY_STACK": "fromenv", "VERIFY_LOG_TAIL": "7", "VERIFY_VAULT_SERVICE": "v1"}
    settings = cli.settings_from(_args(stack="e2eab", vault_ca_file=str(ca)), env)
    assert settings.service("reloader") == "e2eab_cert-reloader"
    assert settings.service("vault") == "v1"
    assert settings.log_tail == 7
    assert settings.vault_ca_file == ca


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"VERIFY_VAULT_PORT": "0"}, "VERIFY_VAULT_PORT"),
        ({"VERIFY_TIMEOUT": "soon"}, "VERIFY_TIMEOUT"),
        ({"VERIFY_VAULT_CA_FILE": "/nonexistent/ca.pem"}, "VERIFY_VAULT_CA_FILE"),
        ({"VERIFY_STACK": ""}, "VERIFY_STACK"),
    ],
)
def test_a_bad_setting_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        cli.settings_from(_args(), env)


def test_bad_setting_exits_2_through_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main

    assert main(["verify", "--timeout", "-1"]) == 2
    assert "VERIFY_TIMEOUT" in capsys.readouterr().err
