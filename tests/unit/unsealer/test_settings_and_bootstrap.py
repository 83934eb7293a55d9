"""Settings validation (one message naming the variable) and bootstrap's pure helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.unsealer.bootstrap import (
    repoint_secrets,
    secret_document,
    secret_name_problem,
    versioned_name,
)
from services.unsealer.keys import parse_keys
from services.unsealer.settings import UnsealerSettings
from shared.errors import ConfigError
from shared.settings import load_settings


def test_defaults_are_the_documented_interface() -> None:
    settings = load_settings(UnsealerSettings, {})
    assert settings.key_file == Path("/run/secrets/vault_unseal_key")
    assert settings.vault_service == "iklimco_vault"
    assert settings.tls_server_name == "vault.iklim.co"
    assert settings.vault_port == 8200
    assert settings.skip_verify is False
    assert settings.vault_addrs == ()


def test_static_addresses_are_parsed() -> None:
    settings = load_settings(
        UnsealerSettings, {"UNSEALER_VAULT_ADDRS": "https://10.0.1.5:8200/, https://vault:8201"}
    )
    assert settings.vault_addrs == ("https://10.0.1.5:8200", "https://vault:8201")


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"UNSEALER_VAULT_ADDRS": "http://10.0.0.1:8200"}, "UNSEALER_VAULT_ADDRS"),
        ({"UNSEALER_VAULT_ADDRS": "https://h:99999"}, "UNSEALER_VAULT_ADDRS"),
        ({"UNSEALER_VAULT_ADDRS": "https://h:8200/v1"}, "UNSEALER_VAULT_ADDRS"),
        ({"UNSEALER_FAST_INTERVAL": "0"}, "UNSEALER_FAST_INTERVAL"),
        ({"UNSEALER_SKIP_VERIFY": "perhaps"}, "UNSEALER_SKIP_VERIFY"),
        ({"UNSEALER_CA_FILE": "/nonexistent/ca.pem"}, "UNSEALER_CA_FILE"),
        ({"UNSEALER_VAULT_PORT": "0"}, "UNSEALER_VAULT_PORT"),
        ({"UNSEALER_BACKOFF_INITIAL": "10", "UNSEALER_BACKOFF_MAX": "5"}, "UNSEALER_BACKOFF_MAX"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(UnsealerSettings, env)


def test_secret_document_round_trips_through_the_key_parser() -> None:
    reply = {"keys": ["ab" * 33, "cd" * 33], "keys_base64": ["q" * 44, "r" * 44], "root_token": "t"}
    payload = secret_document(reply, 2, 2)
    document = json.loads(payload)
    assert "root_token" not in document
    assert document["unseal_shares"] == 2
    assert document["unseal_threshold"] == 2
    assert parse_keys(payload).keys == tuple(reply["keys_base64"])


def test_versioned_name() -> None:
    now = datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)
    assert versioned_name("vault_unseal_key", now) == "vault_unseal_key-20261128T120005Z"


def test_repoint_keeps_target_mode_and_other_secrets() -> None:
    refs = [
        {"SecretID": "old", "SecretName": "vault_unseal_key-1",
         "File": {"Name": "vault_unseal_key", "UID": "10001", "GID": "10001", "Mode": 256}},
        {"SecretID": "other", "SecretName": "db_password", "File": {"Name": "db_password"}},
    ]  # fmt: skip
    new, changed = repoint_secrets(
        refs, target="vault_unseal_key", old_names={"vault_unseal_key-1"}, new_id="n", new_name="v2"
    )
    assert changed
    assert new[0] == {"SecretID": "n", "SecretName": "v2", "File": refs[0]["File"]}
    assert new[1] == refs[1]
    again, changed_again = repoint_secrets(
        new, target="vault_unseal_key", old_names=set(), new_id="n", new_name="v2"
    )
    assert again == new
    assert not changed_again


def test_repoint_matches_an_old_name_under_another_target() -> None:
    refs = [{"SecretID": "old", "SecretName": "vault_unseal_key", "File": {"Name": "unseal"}}]
    new, changed = repoint_secrets(
        refs, target="vault_unseal_key", old_names={"vault_unseal_key"}, new_id="n", new_name="v2"
    )
    assert changed
    assert new[0]["File"]["Name"] == "unseal"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("vault_unseal_key", True),
        ("e2ed4_vault_unseal_key", True),
        ("bad/name", False),
        ("-leading", False),
        ("trailing_", False),
        ("x" * 42, True),
        ("x" * 43, False),
    ],
)
def test_secret_name_is_checked_before_vault_is_touched(name: str, ok: bool) -> None:
    assert (secret_name_problem(name) == "") is ok
