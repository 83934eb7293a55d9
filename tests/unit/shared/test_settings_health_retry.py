"""The shared settings loader, health registry and retry policy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import Field

from shared import retry
from shared.errors import ConfigError, StorageError
from shared.health import HealthRegistry, Status, build_app
from shared.settings import ServiceSettings, load_settings


class _Settings(ServiceSettings):
    token: str = Field("", alias="TEST_TOKEN")
    count: int = Field(1, alias="TEST_COUNT", ge=1)


def test_defaults_and_environment() -> None:
    s = load_settings(_Settings, {"TEST_COUNT": "3", "CERTFLOW_NODE_NAME": "n1"})
    assert (s.count, s.health_port, s.node_name, s.log_format) == (3, 8080, "n1", "json")


def test_errors_name_the_variable_and_never_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_Settings, {"HEALTH_PORT": "s3cr3t-value", "TEST_COUNT": "0"})
    message = str(info.value)
    assert "HEALTH_PORT" in message
    assert "TEST_COUNT" in message
    assert "s3cr3t-value" not in message
    assert info.value.exit_code == 2


def test_file_variant_and_explicit_value_wins(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert load_settings(_Settings, {"TEST_TOKEN_FILE": str(secret)}).token == "from-file"
    both = {"TEST_TOKEN_FILE": str(secret), "TEST_TOKEN": "explicit"}
    assert load_settings(_Settings, both).token == "explicit"
    with pytest.raises(ConfigError, match="TEST_TOKEN_FILE"):
        load_settings(_Settings, {"TEST_TOKEN_FILE": str(tmp_path / "missing")})


def test_overall_status_is_the_worst_check_and_since_moves_only_on_change() -> None:
    now = [1000.0]
    health = HealthRegistry(service="s", node="n", version="v", clock=lambda: now[0])
    health.report("source", Status.OK, "fine")
    now[0] = 1010.0
    health.report("storage", Status.FAILING, "mount missing", errno="ENOENT")
    now[0] = 1020.0
    health.report("storage", Status.FAILING, "mount still missing", errno="ENOENT")
    snap = health.snapshot()
    assert snap["status"] == "failing"
    assert snap["checks"]["storage"]["since"] == snap["since"]
    assert snap["checks"]["storage"]["since"].startswith("1970-01-01T00:16:50")  # t=1010
    assert snap["problems"] == ["storage: mount still missing"]
    now[0] = 1030.0
    health.report("storage", Status.DEGRADED, "expires soon")
    assert health.snapshot()["status"] == "degraded"
    health.remove("storage")
    assert health.status is Status.OK
    assert health.check("source") is not None


def test_health_app_status_codes_over_asgi() -> None:
    health = HealthRegistry(service="s", node="n", version="v")
    app = build_app(health, CollectorRegistry())

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    import asyncio

    health.report("storage", Status.DEGRADED, "soon")
    assert asyncio.run(get("/health")).status_code == 200
    health.report("storage", Status.FAILING, "gone")
    response = asyncio.run(get("/health"))
    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["message"] == "gone"
    # Liveness (Docker's HEALTHCHECK) stays 200: a failing check is not a reason to be killed.
    livez = asyncio.run(get("/livez"))
    assert (livez.status_code, livez.json()["status"]) == (200, "alive")
    assert asyncio.run(get("/metrics")).status_code == 200


def test_retry_retries_only_named_errors_and_is_bounded() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise StorageError("EIO", errno_name="EIO")
        return "ok"

    assert retry.call_with_retry("flaky", flaky, on=(StorageError,)) == "ok"
    assert calls["n"] == 3

    def always() -> None:
        calls["n"] += 1
        raise StorageError("EIO")

    calls["n"] = 0
    with pytest.raises(StorageError):
        retry.call_with_retry("always", always, on=(StorageError,), attempts=4)
    assert calls["n"] == 4

    def other() -> None:
        calls["n"] += 1
        raise ValueError("not transient")

    calls["n"] = 0
    with pytest.raises(ValueError, match="not transient"):
        retry.call_with_retry("other", other, on=(StorageError,))
    assert calls["n"] == 1


def test_backoff_delay_grows_and_is_capped() -> None:
    import random

    assert retry.backoff_delay(3, initial=1, maximum=10) == 0.0  # waits disabled in tests
    retry.disable_waits(False)
    rng = random.Random(1)
    delays = [retry.backoff_delay(n, initial=1, maximum=10, rng=rng) for n in range(0, 7)]
    assert 1 <= delays[0] <= 1.2
    assert 2 <= delays[2] <= 2.4
    assert delays[6] == 10
    assert all(d <= 10 for d in delays)


def test_each_scheduled_retry_is_logged_with_its_wait() -> None:
    from structlog.testing import capture_logs

    def always() -> None:
        raise StorageError("EIO")

    with capture_logs() as logs, pytest.raises(StorageError):
        retry.call_with_retry("reading the box", always, on=(StorageError,), attempts=3)
    scheduled = [e for e in logs if e["event"] == "retry.scheduled"]
    assert [(e["what"], e["attempt"], e["wait_s"]) for e in scheduled] == [
        ("reading the box", 1, 0.0),
        ("reading the box", 2, 0.0),
    ]


def test_the_total_time_bounds_a_retry_too() -> None:
    calls = {"n": 0}

    def always() -> None:
        calls["n"] += 1
        raise StorageError("EIO")

    with pytest.raises(StorageError):
        retry.call_with_retry("slow", always, on=(StorageError,), attempts=1000, timeout=0.0)
    assert calls["n"] == 1


def test_backoff_delay_is_the_retry_policy_wait() -> None:
    import random

    retry.disable_waits(False)
    for failures in (1, 2, 5):
        wait = retry.Backoff(initial=0.5, maximum=4, rng=random.Random(7)).delay(failures)
        assert retry.backoff_delay(failures, initial=0.5, maximum=4, rng=random.Random(7)) == wait


def test_the_process_environment_is_the_default_and_nothing_else_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_COUNT", "4")
    assert load_settings(_Settings).count == 4
    # An explicit mapping replaces the process environment entirely.
    assert load_settings(_Settings, {}).count == 1


def test_empty_optional_values_mean_unset() -> None:
    from shared.settings import OptionalInt, OptionalPath

    class _Optional(ServiceSettings):
        port: OptionalInt = Field(None, alias="TEST_PORT")
        path: OptionalPath = Field(None, alias="TEST_PATH")

    loaded = load_settings(_Optional, {"TEST_PORT": "", "TEST_PATH": ""})
    assert (loaded.port, loaded.path) == (None, None)
    assert load_settings(_Optional, {"TEST_PORT": "9"}).port == 9
