"""A key file its group or others may read or write is refused, by mode, never by content.

Real files with real modes in a tmp dir; the settings come through ``load_settings`` and the
unsealer's own cycle reports the refusal (its one member is a closed port: no Vault is needed to
see that the file is refused before any member could be given a key).
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from services.unsealer.keys import KeyFile, KeyFileError, KeyFileInsecure, mode_problem
from services.unsealer.metrics import UnsealerMetrics
from services.unsealer.service import Unsealer
from services.unsealer.settings import UnsealerSettings
from shared.errors import ConfigError
from shared.health import HealthRegistry
from shared.settings import load_settings

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
FRAGMENTS = [KEY, KEY[:12], base64.b64decode(KEY).hex()[:16]]

# (mode, group read allowed, accepted?, words the reason must hold)
TABLE = [
    (0o400, False, True, ""),
    (0o600, False, True, ""),
    (0o700, False, True, ""),
    (0o400, True, True, ""),
    (0o440, True, True, ""),
    (0o640, True, True, ""),
    (0o440, False, False, "its group may read it (set UNSEALER_KEY_FILE_GROUP_READ=true"),
    (0o640, False, False, "its group may read it"),
    (0o644, False, False, "its group may read it and others may read it"),
    (0o644, True, False, "others may read it"),
    (0o604, False, False, "others may read it"),
    (0o604, True, False, "others may read it"),
    (0o444, True, False, "others may read it"),
    (0o660, False, False, "its group may read/write it"),
    (0o660, True, False, "its group may write it"),
    (0o620, True, False, "its group may write it"),
    (0o602, False, False, "others may write it"),
    (0o410, True, False, "its group may execute it"),
    (0o401, False, False, "others may execute it"),
    (0o777, True, False, "its group may write/execute it and others may read/write/execute it"),
]


@pytest.mark.parametrize(
    ("mode", "group_read", "accepted", "reason"),
    TABLE,
    ids=[f"{m:04o}-{'group' if g else 'strict'}" for m, g, _, _ in TABLE],
)
def test_mode_decision(mode: int, group_read: bool, accepted: bool, reason: str) -> None:
    problem = mode_problem(mode, group_read=group_read)
    assert (problem == "") is accepted
    assert reason in problem
    if group_read or accepted:
        assert "UNSEALER_KEY_FILE_GROUP_READ" not in problem  # no hint where it cannot help


def _key_file(directory: Path, mode: int) -> Path:
    path = directory / "vault_unseal_key"
    path.write_text(KEY + "\n")
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o444, 0o602])
def test_a_loose_file_is_refused_naming_file_and_mode_never_the_key(
    tmp_path: Path, mode: int
) -> None:
    path = _key_file(tmp_path, mode)
    with pytest.raises(KeyFileInsecure) as caught:
        KeyFile(path).read()
    message = str(caught.value)
    assert str(path) in message
    assert f"mode {mode:04o} refused" in message
    assert caught.value.mode == f"{mode:04o}"
    assert isinstance(caught.value, KeyFileError | ConfigError)  # exit 2 where it stops a command
    for fragment in FRAGMENTS:
        assert fragment not in message
    with pytest.raises(KeyFileInsecure):
        KeyFile(path).check_mode()


@pytest.mark.parametrize("mode", [0o400, 0o600])
def test_an_owner_only_file_is_read(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, mode)
    assert KeyFile(path).read().keys == (KEY,)
    KeyFile(path).check_mode()


@pytest.mark.parametrize("mode", [0o440, 0o640])
def test_a_group_read_is_accepted_only_with_the_setting(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, mode)
    with pytest.raises(KeyFileInsecure, match="UNSEALER_KEY_FILE_GROUP_READ=true"):
        KeyFile(path).read()
    assert KeyFile(path, group_read=True).read().keys == (KEY,)


@pytest.mark.parametrize("mode", [0o644, 0o460, 0o660])
def test_the_setting_never_allows_others_or_a_group_write(tmp_path: Path, mode: int) -> None:
    with pytest.raises(KeyFileInsecure):
        KeyFile(_key_file(tmp_path, mode), group_read=True).read()


def test_the_check_of_a_missing_file_is_left_to_the_read(tmp_path: Path) -> None:
    KeyFile(tmp_path / "absent").check_mode()  # no error: read() names "does not exist"


def test_the_setting_defaults_off_and_parses_booleans() -> None:
    assert load_settings(UnsealerSettings, {}).key_file_group_read is False
    on = load_settings(UnsealerSettings, {"UNSEALER_KEY_FILE_GROUP_READ": "true"})
    assert on.key_file_group_read is True


@pytest.mark.parametrize("value", ["maybe", "0440", "group", "2"])
def test_the_setting_refuses_nonsense_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="UNSEALER_KEY_FILE_GROUP_READ") as caught:
        load_settings(UnsealerSettings, {"UNSEALER_KEY_FILE_GROUP_READ": value})
    assert value not in str(caught.value).replace("UNSEALER_KEY_FILE_GROUP_READ", "")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connect is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _unsealer(key_file: Path, port: int, **env: str) -> tuple[Unsealer, HealthRegistry]:
    settings = load_settings(
        UnsealerSettings,
        {
            "UNSEALER_KEY_FILE": str(key_file),
            "UNSEALER_VAULT_ADDRS": f"https://127.0.0.1:{port}",
            "UNSEALER_DOCKER_DISCOVERY": "false",
            "UNSEALER_CONNECT_TIMEOUT": "5",
            **env,
        },
    )
    health = HealthRegistry(service="vault-unsealer", node="test", version="0")
    return Unsealer(settings, health=health, metrics=UnsealerMetrics()), health


def test_the_unsealer_refuses_a_loose_file_on_health_logs_it_once_and_sees_the_fix(
    tmp_path: Path, closed_port: int
) -> None:
    path = _key_file(tmp_path, 0o644)
    unsealer, health = _unsealer(path, closed_port)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                unsealer.cycle()
        check = health.snapshot()["checks"]["keys"]
        assert check["status"] == "failing"
        assert check["mode"] == "0644"
        assert check["path"] == str(path)
        assert str(path) in check["message"]
        assert "mode 0644 refused" in check["message"]
        refused = [e for e in logs if e["event"] == "keys.insecure_file"]
        assert len(refused) == 1, "said once, not every pass"
        assert refused[0]["mode"] == "0644"
        assert refused[0]["log_level"] == "error"
        texts = [repr(logs), repr(health.snapshot())]
        for fragment in FRAGMENTS:
            assert all(fragment not in text for text in texts)

        os.chmod(path, 0o400)  # fixed in place: no restart
        with capture_logs() as logs:
            unsealer.cycle()
        check = health.snapshot()["checks"]["keys"]
        assert check["status"] == "ok", check
        assert [e["event"] for e in logs if e["event"].startswith("keys.")] == ["keys.usable_again"]

        os.chmod(path, 0o640)  # loosened again while no member needs a key: still seen
        unsealer.cycle()
        assert health.snapshot()["checks"]["keys"]["status"] == "failing"
    finally:
        unsealer.close()


def test_the_unsealer_takes_a_group_read_file_with_the_setting(
    tmp_path: Path, closed_port: int
) -> None:
    path = _key_file(tmp_path, 0o440)
    strict, strict_health = _unsealer(path, closed_port)
    allowed, allowed_health = _unsealer(path, closed_port, UNSEALER_KEY_FILE_GROUP_READ="true")
    try:
        strict.cycle()
        allowed.cycle()
        assert strict_health.snapshot()["checks"]["keys"]["status"] == "failing"
        assert "keys" not in allowed_health.snapshot()["checks"]  # no member needed a key
    finally:
        strict.close()
        allowed.close()
