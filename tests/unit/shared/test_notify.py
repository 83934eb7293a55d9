"""Notifications, the pure parts: the dedup/rate-limit decision as tables, the payload's safety,
the settings' URL checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.distributor.settings import DistributorSettings
from services.reloader.settings import ReloaderSettings
from services.unsealer.settings import UnsealerSettings
from shared.errors import ConfigError
from shared.notifier import Notifier
from shared.notify import Event, Kind, Severity, payload, title_and_body
from shared.notify_policy import Limits, Memory, Verdict, admit
from shared.settings import NotifySettings, load_settings

A = ("cert.published", "fp-a")
B = ("cert.published", "fp-b")
H = ("rollout.halted", "fp-a")


def run(steps: list[tuple[float, tuple[str, str]]], limits: Limits) -> list[Verdict]:
    memory = Memory()
    verdicts = []
    for now, key in steps:
        verdict, memory = admit(key, memory, now, limits)
        verdicts.append(verdict)
    return verdicts


S, D, R = Verdict.SEND, Verdict.DEDUPLICATED, Verdict.RATE_LIMITED


@pytest.mark.parametrize(
    ("steps", "limits", "expected"),
    [
        pytest.param([(0, A), (1, A)], Limits(60, 10), [S, D], id="same kind+subject: once"),
        pytest.param([(0, A), (1, B)], Limits(60, 10), [S, S], id="other subject: sent"),
        pytest.param([(0, A), (1, H)], Limits(60, 10), [S, S], id="other kind: sent"),
        pytest.param([(0, A), (60, A)], Limits(60, 10), [S, S], id="after the window: again"),
        pytest.param(
            [(0, A), (50, A), (61, A)], Limits(60, 10), [S, D, S], id="a duplicate never extends"
        ),
        pytest.param([(0, A), (0, A)], Limits(0, 10), [S, S], id="dedup 0: off"),
        pytest.param(
            [(0, A), (1, B), (2, H)], Limits(60, 2), [S, S, R], id="rate: 3rd in a minute refused"
        ),
        pytest.param(
            [(0, A), (1, B), (60.5, H)], Limits(60, 2), [S, S, S], id="rate: window slides"
        ),
        pytest.param(
            [(0, A), (1, B), (2, H), (61, H)],
            Limits(600, 2),
            [S, S, R, S],
            id="rate-limited is not remembered as sent",
        ),
        pytest.param(
            [(0, A), (1, A), (2, A), (3, B)],
            Limits(60, 2),
            [S, D, D, S],
            id="duplicates do not use the rate",
        ),
    ],
)
def test_admit(
    steps: list[tuple[float, tuple[str, str]]], limits: Limits, expected: list[Verdict]
) -> None:
    assert run(steps, limits) == expected


def test_memory_forgets_what_no_window_needs() -> None:
    memory = Memory()
    for t in range(100):
        _, memory = admit(("k", str(t)), memory, float(t * 100), Limits(60, 5))
    assert len(memory.last_sent) == 1
    assert len(memory.recent) == 1


SECRET = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def test_payload_never_holds_key_material_whatever_the_caller_passes() -> None:
    event = Event(
        Kind.CERT_PUBLISHED,
        "generation 7 published",
        subject="ab:cd",
        fields={
            "generation": 7,
            "fingerprint": "ab:cd",
            "private_key": "s3cr3t-bytes",
            "unseal_key": "dGhpcyBpcyBhIGtleQ==",
            "token": "hvs.abcdef",
            "root_token": "hvs.root",
            "password": "hunter2",
            "key": "k",
            "pem": SECRET,
            "blob": b"raw bytes",
            "nested": {"private_key": "x"},
        },
        service="cert-reloader",
        node="vm1",
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    data = payload(event)
    text = json.dumps(data) + "".join(title_and_body(data))
    for secret in ("s3cr3t", "dGhpcyBpcyBhIGtleQ", "hvs.", "hunter2", "BEGIN", "raw bytes"):
        assert secret not in text
    assert data["fields"] == {"generation": 7, "fingerprint": "ab:cd"}
    assert data == {
        "kind": "cert.published",
        "severity": "info",
        "summary": "generation 7 published",
        "subject": "ab:cd",
        "service": "cert-reloader",
        "node": "vm1",
        "time": "2026-01-02T03:04:05Z",
        "fields": {"generation": 7, "fingerprint": "ab:cd"},
    }


def test_a_summary_holding_pem_is_withheld() -> None:
    data = payload(Event(Kind.RENEWAL_REFUSED, f"refused: {SECRET}"))
    assert "BEGIN" not in json.dumps(data)
    assert data["severity"] == "warning"


def test_severity_can_be_raised_by_the_caller() -> None:
    event = Event(Kind.CERT_EXPIRING, "3 days left", severity=Severity.CRITICAL)
    assert payload(event)["severity"] == "critical"


@pytest.mark.parametrize("cls", [ReloaderSettings, DistributorSettings, UnsealerSettings])
def test_every_sending_service_has_the_one_notify_definition(cls: type[NotifySettings]) -> None:
    assert issubclass(cls, NotifySettings)
    settings = load_settings(cls, {})
    assert settings.notify_webhook_url is None
    assert settings.notify_urls == ()
    notifier = Notifier.from_settings(settings, service="s", node="n")
    assert not notifier.enabled
    assert notifier.notify(Event(Kind.CERT_PUBLISHED, "x")) is None  # off: no thread, no queue


TOKEN = "T0K3Nsecret"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CERTFLOW_NOTIFY_WEBHOOK_URL", f"ftp://host/{TOKEN}"),
        ("CERTFLOW_NOTIFY_WEBHOOK_URL", f"https:///{TOKEN}"),
        ("CERTFLOW_NOTIFY_WEBHOOK_URL", f"https://host:99999/{TOKEN}"),
        ("CERTFLOW_NOTIFY_WEBHOOK_URL", f"https://host/a {TOKEN}"),
        ("CERTFLOW_NOTIFY_WEBHOOK_URL", TOKEN),
        ("CERTFLOW_NOTIFY_URLS", f"json://127.0.0.1/x, bogus://{TOKEN}"),
        ("CERTFLOW_NOTIFY_URLS", f"slack://{TOKEN}"),
        ("CERTFLOW_NOTIFY_TIMEOUT", "0"),
        ("CERTFLOW_NOTIFY_QUEUE_SIZE", "0"),
        ("CERTFLOW_NOTIFY_RATE_PER_MINUTE", "0"),
    ],
)
def test_a_bad_setting_names_the_variable_never_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ReloaderSettings, {name: value})
    assert name in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_urls_are_shown_by_scheme_and_host_only() -> None:
    settings = load_settings(
        UnsealerSettings,
        {
            "CERTFLOW_NOTIFY_WEBHOOK_URL": f"https://user:{TOKEN}@hooks.example:8443/{TOKEN}?t=1",
            "CERTFLOW_NOTIFY_URLS": f"slack://{TOKEN}/B1/C1 jsons://recv.example/{TOKEN}",
        },
    )
    shown = repr(settings) + json.dumps(settings.model_dump(mode="json"))
    assert TOKEN not in shown
    assert settings.notify_webhook_url is not None
    assert settings.notify_webhook_url.name == "https://hooks.example:8443"
    assert [u.name for u in settings.notify_urls] == ["slack://", "jsons://recv.example"]
