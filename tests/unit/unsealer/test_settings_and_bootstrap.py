"""Settings validation (one message naming the variable) and bootstrap's pure helpers."""

from __future__ import annotations

import base64
import io
import json
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.unsealer.bootstrap import (
    Bootstrap,
    BootstrapError,
    finish_private,
    open_private,
    output_dir_problem,
    repoint_secrets,
    secret_document,
    secret_name_problem,
    versioned_name,
)
from services.unsealer.keys import parse_keys
from services.unsealer.settings import UnsealerSettings
from services.unsealer.vault_client import TlsConfig, VaultClient
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.swarm import SecretInfo, SecretRef
from tests.support.fake_engine import FakeEngine


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


def test_secret_document_records_the_cluster_when_known() -> None:
    reply = {"keys": ["ab" * 32], "keys_base64": [base64.b64encode(b"k" * 32).decode()]}
    cluster = "aea0926c-24b0-8d67-0ed4-dba6847e7d21"
    payload = secret_document(reply, 1, 1, cluster_id=cluster, cluster_name="vault-cluster-1")
    document = json.loads(payload)
    assert document["cluster_id"] == cluster
    assert document["cluster_name"] == "vault-cluster-1"
    assert document["unseal_keys_b64"] == reply["keys_base64"]  # still `operator init` JSON
    assert parse_keys(payload).cluster_id == cluster
    assert "cluster_id" not in json.loads(secret_document(reply, 1, 1))


def test_versioned_name() -> None:
    now = datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)
    assert versioned_name("vault_unseal_key", now) == "vault_unseal_key-20261128T120005Z"


def test_repoint_keeps_target_mode_and_other_secrets() -> None:
    refs = (
        SecretRef("old", "vault_unseal_key-1", "vault_unseal_key", "10001", "10001", 0o400),
        SecretRef("other", "db_password", "db_password"),
    )
    v2 = SecretInfo("n", "v2", {})
    new, changed = repoint_secrets(
        refs, target="vault_unseal_key", old_names={"vault_unseal_key-1"}, new=v2
    )
    assert changed
    assert new[0] == SecretRef("n", "v2", "vault_unseal_key", "10001", "10001", 0o400)
    assert new[1] == refs[1]
    again, changed_again = repoint_secrets(new, target="vault_unseal_key", old_names=set(), new=v2)
    assert again == new
    assert not changed_again


def test_repoint_matches_an_old_name_under_another_target() -> None:
    refs = (SecretRef("old", "vault_unseal_key", "unseal"),)
    new, changed = repoint_secrets(
        refs,
        target="vault_unseal_key",
        old_names={"vault_unseal_key"},
        new=SecretInfo("n", "v2", {}),
    )
    assert changed
    assert new[0].target == "unseal"
    assert new[0].secret_id == "n"


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


def test_private_files_are_new_0600_files_in_the_given_directory(tmp_path: Path) -> None:
    fd = open_private(tmp_path, "root-token")
    finish_private(fd, tmp_path, b"token\n")
    written = tmp_path / "root-token"
    assert written.read_bytes() == b"token\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        open_private(tmp_path, "root-token")  # never truncates an existing file
    assert written.read_bytes() == b"token\n"
    with pytest.raises(ValueError, match="plain file name"):
        open_private(tmp_path, "../escape")


def test_a_planted_symlink_is_refused_and_nothing_is_written_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    out = tmp_path / "out"
    out.mkdir()
    (out / "root-token").symlink_to(victim)
    (out / "dangling").symlink_to(tmp_path / "would-be-created")
    for name in ("root-token", "dangling"):
        with pytest.raises(OSError, match="exists"):
            open_private(out, name)
    assert victim.read_bytes() == b"original"
    assert not (tmp_path / "would-be-created").exists()


def test_bootstrap_refuses_a_planted_token_symlink_before_vault_is_touched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    (tmp_path / "root-token").symlink_to(victim)
    bootstrap = Bootstrap(
        vault=None,  # type: ignore[arg-type]  # not reached: the file check comes first
        engine=FakeEngine(),
        secret_name="vault_unseal_key",
        services=[],
        shares=1,
        threshold=1,
        out=io.StringIO(),
        output_dir=tmp_path,
        root_token_file="root-token",
    )
    with pytest.raises(BootstrapError, match=r"File exists \(it must not exist yet\)"):
        bootstrap._open_token_file()
    assert victim.read_bytes() == b"original"


@pytest.mark.parametrize(
    ("make", "problem"),
    [(lambda p: p / "missing", "does not exist"), (lambda p: p / "file", "is not a directory")],
)
def test_the_output_directory_must_exist(
    tmp_path: Path, make: Callable[[Path], Path], problem: str
) -> None:
    (tmp_path / "file").write_text("x")
    assert problem in output_dir_problem(make(tmp_path))
    assert output_dir_problem(tmp_path) == ""


def test_the_token_path_names_the_output_directory_and_there_is_no_default(tmp_path: Path) -> None:
    from services.unsealer.bootstrap_cli import _output

    assert _output(None, str(tmp_path / "root-token")) == (tmp_path, "root-token")
    assert _output(tmp_path, "root-token") == (tmp_path, "root-token")
    assert _output(tmp_path, None) == (tmp_path, None)
    with pytest.raises(ConfigError, match=r"--output-dir .* required"):
        _output(None, None)
    with pytest.raises(ConfigError, match=r"--output-dir: .* does not exist"):
        _output(tmp_path / "missing", None)
    with pytest.raises(ConfigError, match="differs from --output-dir"):
        _output(tmp_path / "a", str(tmp_path / "b" / "root-token"))


CLUSTER_ID = "aea0926c-24b0-8d67-0ed4-dba6847e7d21"


@dataclass
class FakeVault:
    """Just enough of ``sys/init``, ``seal-status`` and ``unseal`` for one fresh member."""

    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    unseal_works: bool = True
    cluster_id: str = CLUSTER_ID
    initialized: bool = False
    sealed: bool = True

    def handle(self, request: httpx.Request, calls: list[str]) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if path == "/v1/sys/init" and request.method == "GET":
            return httpx.Response(200, json={"initialized": self.initialized})
        if path == "/v1/sys/init":
            self.initialized = True
            raw = base64.b64decode(self.key)
            body = {"keys": [raw.hex()], "keys_base64": [self.key], "root_token": "s.root"}
            return httpx.Response(200, json=body)
        if path == "/v1/sys/unseal":
            if not self.unseal_works:
                return httpx.Response(500, json={"errors": ["internal error"]})
            self.sealed = json.loads(request.content)["key"] != self.key
        status: dict[str, object] = {"initialized": self.initialized, "sealed": self.sealed}
        if not self.sealed:
            status |= {"cluster_id": self.cluster_id, "cluster_name": "vault-cluster-1"}
        return httpx.Response(200, json=status)


class RecordingEngine(FakeEngine):
    """Puts the secret's creation in the same call list as the Vault calls (their order)."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> SecretInfo:
        self.calls.append("create secret")
        return super().create_secret(name, data, labels)


def run_bootstrap(vault: FakeVault, tmp_path: Path) -> tuple[list[str], bytes, str]:
    calls: list[str] = []
    engine = RecordingEngine(calls)
    out = io.StringIO()
    transport = httpx.MockTransport(lambda request: vault.handle(request, calls))
    with VaultClient(
        "https://10.0.0.5:8200", TlsConfig(None, "vault.iklim.co"), transport=transport
    ) as client:
        Bootstrap(
            vault=client,
            engine=engine,
            secret_name="vault_unseal_key",
            services=[],
            shares=1,
            threshold=1,
            out=out,
            output_dir=tmp_path,
            root_token_file="root-token",
        ).run()
    (payload,) = engine.secret_data.values()
    return calls, payload, out.getvalue()


def test_bootstrap_unseals_the_first_member_and_records_its_cluster(tmp_path: Path) -> None:
    vault = FakeVault()
    calls, payload, said = run_bootstrap(vault, tmp_path)
    assert calls.index("PUT /v1/sys/unseal") < calls.index("create secret")
    assert parse_keys(payload).cluster_id == CLUSTER_ID
    assert json.loads(payload)["cluster_name"] == "vault-cluster-1"
    assert CLUSTER_ID in said
    assert vault.key not in said


def test_a_failed_unseal_still_stores_the_keys_without_a_cluster_id(tmp_path: Path) -> None:
    vault = FakeVault(unseal_works=False)
    _, payload, said = run_bootstrap(vault, tmp_path)
    keys = parse_keys(payload)
    assert keys.keys == (vault.key,)  # the keys reached the secret all the same
    assert keys.cluster_id is None
    assert "no cluster id" in said
    assert vault.key not in said


def test_an_id_the_unsealer_would_refuse_is_not_recorded(tmp_path: Path) -> None:
    _, payload, said = run_bootstrap(FakeVault(cluster_id="not an id"), tmp_path)
    assert parse_keys(payload).cluster_id is None  # the key file stays readable
    assert "no cluster id" in said
