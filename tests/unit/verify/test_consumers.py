"""Consumers (services labelled certflow.reload) in verify and status, from the distributors'
``/health`` as it arrives: JSON lists under ``info.consumers``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.verify.checks import evaluate
from services.verify.consumer_checks import check_consumers, read_consumers
from services.verify.facts import (
    CertFacts,
    DirFacts,
    HealthFacts,
    LogFacts,
    Observation,
    ServiceFacts,
)
from services.verify.report import to_json as verify_json
from services.verify.report import to_table as verify_table
from services.verify.status import State, summarize
from services.verify.status_view import to_json, to_table
from tests.unit.test_layers import EFFECTFUL, _hits, imports

NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
NEW = "AA:BB:" * 15 + "CC"
OLD = "11:22:" * 15 + "33"
NAMES = {
    "reloader": "iklimco_cert-reloader",
    "distributor": "iklimco_cert-distributor",
    "vault": "iklimco_vault",
    "unsealer": "iklimco_vault-unsealer",
}
DIST = NAMES["distributor"]
_ABSENT = object()


def _ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def _report(
    service: str,
    state: str = "done",
    *,
    mode: str = "restart",
    serves: tuple[str | None, ...] = (NEW, NEW),
    since: float = 600,
    message: str = "",
) -> dict[str, object]:
    """One entry of info.consumers, as the leader's distributor publishes it."""
    return {
        "service": service,
        "mode": mode,
        "signal": "SIGHUP" if mode == "signal" else "",
        "check": f"tls://{service}.iklim.co:443",
        "state": state,
        "message": message,
        "since": _ago(since),
        "fingerprint": NEW,
        "reloads": len(serves),
        "tasks": [
            {"where": f"slot {i} on n{i}", "task_id": f"t{i}", "running": True, "serves": fp}
            for i, fp in enumerate(serves, 1)
        ],
    }


def _distributor(n: int, consumers: object = _ABSENT, *, service: str = DIST) -> HealthFacts:
    info: dict[str, object] = {"generation": 7, "fingerprint": NEW}
    if consumers is not _ABSENT:
        info["consumers"] = consumers
    return HealthFacts(
        service=service,
        node=f"n{n}",
        address=f"10.0.2.{n}",
        status="ok",
        since=_ago(900),
        task_id=f"dist{n}",
        info=info,
    )


def _observation(*health: HealthFacts) -> Observation:
    cert = CertFacts(not_after=datetime(2027, 3, 1, tzinfo=UTC), fingerprint=NEW)
    return Observation(
        services=tuple(ServiceFacts(name, True) for name in NAMES.values()),
        reloader_logs=LogFacts(NAMES["reloader"]),
        installed=DirFacts("/opt/iklimco/ssl", "/opt/iklimco/ssl", cert=cert),
        published=DirFacts(
            "the Storage Box manifest", "/mnt/storagebox/ssl", cert=cert, state="committed"
        ),
        replicas=(),
        names=NAMES,
        health=health,
    )


def _leader(*reports: dict[str, object]) -> Observation:
    """The leader (n1) reports ``reports``; n2 publishes an empty list, n3 nothing (older)."""
    return _observation(_distributor(1, list(reports)), _distributor(2, []), _distributor(3))


# -- verify -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obs", "ok", "in_summary", "in_next"),
    [
        pytest.param(
            _observation(_distributor(1, []), _distributor(2)),
            True,
            ["no consumer services labelled certflow.reload", "--label-add certflow.reload="],
            [],
            id="no-consumers",
        ),
        pytest.param(
            _leader(_report("web"), _report("mq", mode="signal", serves=(NEW,))),
            True,
            [
                "2 consumers (reported by the distributor on n1)",
                f"web (restart) done, sha256 {NEW[:23]} (2 tasks)",
                f"mq (signal) done, sha256 {NEW[:23]} (1 task)",
            ],
            [],
            id="all-done",
        ),
        pytest.param(
            _leader(
                _report("web", "waiting", serves=(NEW,)),
                _report("mq", "reloading", serves=(NEW,)),
                _report("db", "paused", serves=(NEW,)),
                _report("lb", "watched", mode="none", serves=(NEW,)),
            ),
            True,
            ["web (restart) waiting", "mq (restart) reloading", "db (restart) paused", "lb (none)"],
            [],
            id="waiting-reloading-paused-watched-are-shown-not-failed",
        ),
        pytest.param(
            _leader(_report("web", serves=(NEW, OLD)), _report("mq")),
            False,
            [
                f"web: slot 2 on n2 serves sha256 {OLD[:23]}, older than the distributed sha256 "
                f"{NEW[:23]}",
                f"slot 1 on n1: sha256 {NEW[:23]}, slot 2 on n2: sha256 {OLD[:23]}",
                "mq (restart) done",
            ],
            [f"docker service logs {DIST} --since 30m", "docker service update --force web"],
            id="serves-older",
        ),
        pytest.param(
            _leader(_report("web", "reloading", serves=(NEW, OLD))),
            False,
            ["web: slot 2 on n2 serves sha256"],
            ["a reload of web is under way: run certflow verify again once it is done"],
            id="serves-older-while-reloading",
        ),
        pytest.param(
            _leader(_report("lb", "watched", mode="none", serves=(OLD,))),
            False,
            ["lb: slot 1 on n1 serves sha256"],
            ["certflow only watches lb (certflow.reload=none)", "docker service update --force lb"],
            id="watched-serving-older",
        ),
        pytest.param(
            _leader(_report("web", "halted", serves=(NEW, None), message="slot 2 not back")),
            False,
            [f"web: halted since {_ago(600)}: slot 2 not back"],
            ["docker service ps web --no-trunc", f"docker service logs {DIST} --since 30m"],
            id="halted",
        ),
        pytest.param(
            _leader(
                _report(
                    "api",
                    "reported",
                    mode="",
                    serves=(),
                    message="certflow.reload='restrat': expected one of restart, signal, none",
                )
            ),
            False,
            [
                "api: its labels cannot be used: certflow.reload='restrat': expected one of",
                "api (no mode) reported, no task",
            ],
            ["fix the labels of api: docker service update --label-add certflow.reload="],
            id="reported-bad-label",
        ),
    ],
)
def test_the_consumers_check(
    obs: Observation, ok: bool, in_summary: list[str], in_next: list[str]
) -> None:
    result = check_consumers(obs)
    assert result.check == "consumers"
    assert result.ok is ok, result.summary
    for fragment in in_summary:
        assert fragment in result.summary
    for fragment in in_next:
        assert fragment in result.next_step
    assert bool(result.next_step) is not ok


@pytest.mark.parametrize(
    ("consumers", "ok", "fragment"),
    [
        pytest.param(
            {"web": "done"},
            False,
            "info.consumers of the distributor on n1 is a dict, not a list of consumer reports",
            id="not-a-list",
        ),
        pytest.param("oops", False, "is a str, not a list", id="a-string"),
        pytest.param(
            [_report("web"), {"service": "mq"}, "junk", {"state": "done"}],
            True,
            "web (restart) done",
            id="bad-entries-left-out",
        ),
    ],
)
def test_malformed_consumers_never_crash(consumers: object, ok: bool, fragment: str) -> None:
    result = check_consumers(_observation(_distributor(1, consumers)))
    assert result.ok is ok
    assert fragment in result.summary
    if ok:
        assert "(3 malformed report(s) left out)" in result.summary
        assert result.details["ignored_entries"] == 3
    else:
        assert "run one certflow version everywhere" in result.next_step


def test_the_newest_reports_win_when_two_distributors_report() -> None:
    """After the leadership moved, the former leader's reports linger for a moment."""
    former = _distributor(1, [_report("web", "reloading", serves=(NEW, OLD), since=900)])
    leader = _distributor(2, [_report("web", "done", since=30)])
    for health in ((former, leader), (leader, former)):
        consumers = read_consumers(health, DIST)
        assert consumers.source == "n2"
        assert consumers.also == ("n1",)
        assert consumers.reports[0].state.value == "done"
    result = check_consumers(_observation(former, leader))
    assert result.ok, result.summary
    assert "older reports of the distributor on n1 left out" in result.summary


def test_only_the_distributors_reports_count() -> None:
    unreachable = HealthFacts(service=DIST, node="n2", error="ConnectTimeout: timed out")
    other = _distributor(3, [_report("web", "halted")], service=NAMES["reloader"])
    result = check_consumers(_observation(unreachable, other))
    assert result.ok
    assert result.details["consumers"] == []


def test_verify_runs_the_check_and_json_lists_every_consumer() -> None:
    obs = _leader(_report("web", serves=(NEW, OLD)), _report("mq", "waiting", serves=(None,)))
    results = evaluate(obs, log_tail=20, stack="iklimco")
    consumers = next(r for r in results if r.check == "consumers")
    assert not consumers.ok
    doc = json.loads(verify_json(results, checked_at=NOW))
    rows = next(c for c in doc["checks"] if c["check"] == "consumers")["details"]["consumers"]
    assert [(r["service"], r["state"], r["mode"]) for r in rows] == [
        ("web", "done", "restart"),
        ("mq", "waiting", "restart"),
    ]
    assert rows[0]["check"] == "tls://web.iklim.co:443"
    assert [t["serves"] for t in rows[0]["tasks"]] == [NEW, OLD]
    assert rows[0]["issues"]
    assert rows[1]["issues"] == []
    assert "mq (restart) waiting, not known (1 task)" in consumers.summary
    table = verify_table(results, width=100)
    assert "consumers" in table
    assert "next: docker service logs" in table


# -- status -----------------------------------------------------------------------------------


def test_status_lists_every_consumer_with_its_state_and_what_each_task_serves() -> None:
    obs = _leader(
        _report("web"),
        _report("mq", "watched", mode="none", serves=(NEW,), message="watched only"),
    )
    status = summarize(obs, now=NOW)
    assert status.state is State.OK, status.reasons
    table = to_table(status, stack="iklimco", checked_at=NOW)
    assert "Consumers (reported by the distributor on n1):" in table
    lines = table.splitlines()
    web = next(i for i, line in enumerate(lines) if line.startswith("web "))
    assert "restart" in lines[web]
    assert "tls://web.iklim.co:443" in lines[web]
    assert " done " in lines[web]
    assert lines[web].endswith("-")  # no message when done
    assert lines[web + 1] == f"  slot 1 on n1: sha256 {NEW[:23]}"
    assert lines[web + 2] == f"  slot 2 on n2: sha256 {NEW[:23]}"
    mq = next(line for line in lines if line.startswith("mq "))
    assert "watched" in mq
    assert mq.endswith("watched only")

    doc = json.loads(to_json(status, checked_at=NOW))
    assert doc["consumers_source"] == "n1"
    assert [(c["service"], c["state"]) for c in doc["consumers"]] == [
        ("web", "done"),
        ("mq", "watched"),
    ]
    assert doc["consumers"][0]["tasks"][1] == {
        "where": "slot 2 on n2",
        "serves": f"sha256 {NEW[:23]}",
    }


def test_status_without_consumers_says_how_one_opts_in() -> None:
    status = summarize(_leader(), now=NOW)
    assert status.state is State.OK
    assert status.consumers == ()
    text = to_table(status, stack="iklimco", checked_at=NOW)
    assert "Consumers: none (no service is labelled certflow.reload)" in text


@pytest.mark.parametrize(
    ("report", "state", "reason"),
    [
        pytest.param(
            _report("web", "halted", message="slot 2 not back"),
            State.ATTENTION,
            "consumer web: halted since",
            id="halted",
        ),
        pytest.param(
            _report("api", "reported", message="certflow.check='x': expected tls://<name>:<port>"),
            State.ATTENTION,
            "consumer api: its labels cannot be used: certflow.check='x'",
            id="reported",
        ),
        pytest.param(
            _report("web", serves=(NEW, OLD)),
            State.ATTENTION,
            "consumer web: slot 2 on n2 serves sha256",
            id="done-but-serving-older",
        ),
        pytest.param(
            _report("web", "reloading", serves=(NEW, OLD), since=30),
            State.ROLLING,
            "consumer web: slot 2 on n2 serves sha256",
            id="reloading",
        ),
        pytest.param(
            _report("web", "waiting", since=30, message="n3 has not the pair yet"),
            State.ROLLING,
            "consumer web: waiting since",
            id="waiting",
        ),
        pytest.param(
            _report("web", "waiting", since=3600, message="n3 has not the pair yet"),
            State.ATTENTION,
            "n3 has not the pair yet",
            id="waiting-too-long",
        ),
    ],
)
def test_status_state_follows_the_consumers(
    report: dict[str, object], state: State, reason: str
) -> None:
    status = summarize(_leader(report), now=NOW)
    assert status.state is state
    assert any(reason in r for r in status.reasons), status.reasons


def test_status_names_a_malformed_consumers_list() -> None:
    status = summarize(_observation(_distributor(1, {"web": "done"})), now=NOW)
    assert status.state is State.ATTENTION
    assert any(
        r.startswith("consumers: info.consumers of the distributor on n1") for r in status.reasons
    )


@pytest.mark.parametrize("module", ["services.verify.consumer_checks", "services.verify.result"])
def test_the_new_verify_modules_are_pure(module: str) -> None:
    """tests/unit/test_layers.py's rule, for the modules this feature added beside checks.py."""
    assert _hits(imports(module), EFFECTFUL) == set()
