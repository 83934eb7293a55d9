"""Which consumer reports notify: a table of (report before, report now) -> notices."""

from __future__ import annotations

import json

import pytest

from services.distributor.consumer_notices import consumer_notices, subject
from shared.consumers import ConsumerReport, ConsumerTask, State
from shared.notify import RESOLVES, Kind, Severity, payload, title_and_body
from shared.notify_policy import Limits, Memory, Verdict, admit

pytestmark = pytest.mark.unit

FP, OLD = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66", "99:88:77:66:55:44:33:22:11:00:FF:EE"
SVC = "iklimco_proxy"


def r(state: State, fp: str | None = FP, message: str = "", service: str = SVC) -> ConsumerReport:
    return ConsumerReport(
        service=service,
        mode="signal",
        signal="SIGHUP",
        check="tls://proxy.iklim.co:443",
        state=state,
        message=message or f"{state.value} message",
        fingerprint=fp,
    )


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # halted: when it starts, whatever came before (a fresh process too)
        (r(State.RELOADING), r(State.HALTED), ["consumer.halted"]),
        (None, r(State.HALTED), ["consumer.halted"]),
        (r(State.HALTED), r(State.HALTED), []),
        (r(State.HALTED, OLD), r(State.HALTED), ["consumer.halted"]),  # a halt on a new cert
        # resumed: leaving a halt, to whatever comes next
        (r(State.HALTED), r(State.RELOADING), ["consumer.resumed"]),
        (r(State.HALTED), r(State.WAITING), ["consumer.resumed"]),
        (r(State.HALTED), r(State.PAUSED), ["consumer.resumed"]),
        (r(State.HALTED), r(State.DONE), ["consumer.resumed", "consumer.done"]),
        (r(State.HALTED), r(State.REPORTED), ["consumer.resumed", "consumer.reported"]),
        (r(State.HALTED, OLD), r(State.RELOADING), ["consumer.resumed"]),
        # reported: on entering it, first sight included (a label just added wrong)
        (r(State.DONE), r(State.REPORTED), ["consumer.reported"]),
        (None, r(State.REPORTED, None), ["consumer.reported"]),
        (r(State.REPORTED), r(State.REPORTED, message="another problem"), []),
        (r(State.REPORTED, OLD), r(State.REPORTED), []),
        # done: only when it becomes done for a certificate in this process's sight
        (r(State.RELOADING), r(State.DONE), ["consumer.done"]),
        (r(State.WAITING), r(State.DONE), ["consumer.done"]),
        (r(State.REPORTED), r(State.DONE), ["consumer.done"]),  # labels fixed
        (r(State.DONE, OLD), r(State.DONE), ["consumer.done"]),  # recorded for the new cert
        (r(State.DONE), r(State.DONE), []),
        (None, r(State.DONE), []),  # a fresh process (or a new leader) finds it done
        # the rest of the way tells nothing
        (r(State.DONE, OLD), r(State.WAITING), []),
        (r(State.WAITING), r(State.RELOADING), []),
        (r(State.RELOADING), r(State.PAUSED), []),  # the operator's pause is told by the rollout
        (r(State.PAUSED), r(State.RELOADING), []),
        (r(State.REPORTED), r(State.WAITING), []),
        (None, r(State.WATCHED), []),
        (r(State.WATCHED, OLD), r(State.WATCHED), []),
        (None, r(State.RELOADING), []),
    ],
)
def test_consumer_notices(
    before: ConsumerReport | None, after: ConsumerReport, expected: list[str]
) -> None:
    previous = {before.service: before} if before is not None else {}
    assert [e.kind.value for e in consumer_notices(previous, [after])] == expected


def test_a_consumer_that_is_gone_tells_nothing() -> None:
    # Label removed, DISTRIBUTOR_CONSUMERS turned off, or no longer the leader: not a resume.
    assert consumer_notices({SVC: r(State.HALTED)}, []) == []


def test_each_consumer_is_judged_against_its_own_past() -> None:
    before = {"a": r(State.RELOADING, service="a"), "b": r(State.HALTED, service="b")}
    after = [
        r(State.HALTED, service="a"),
        r(State.HALTED, service="b"),
        r(State.REPORTED, service="c"),
    ]
    events = consumer_notices(before, after)
    assert [(e.kind.value, e.fields["consumer"]) for e in events] == [
        ("consumer.halted", "a"),
        ("consumer.reported", "c"),
    ]


def test_a_halt_names_the_consumer_and_shares_its_subject_with_its_resume() -> None:
    halted = r(State.HALTED, message="reload halted for 130s: slot 2 on vm2: not running yet")
    halted = halted.model_copy(
        update={
            "tasks": [ConsumerTask(where="slot 1 on vm1", running=True, serves=OLD)],
        }
    )
    (event,) = consumer_notices({SVC: r(State.RELOADING)}, [halted])
    assert event.kind is Kind.CONSUMER_HALTED
    assert event.level is Severity.CRITICAL
    assert event.summary == f"consumer {SVC}: {halted.message}"
    assert event.fields == {
        "consumer": SVC,
        "state": "halted",
        "fingerprint": FP,
        "mode": "signal",
        "check": "tls://proxy.iklim.co:443",
        "message": halted.message,
        "tasks_serving_old": 1,
    }
    assert event.subject == subject(SVC, FP) == f"{SVC} aabbccddeeff"
    (resumed,) = consumer_notices({SVC: halted}, [r(State.RELOADING)])
    assert resumed.subject == event.subject  # it ends the halt (shared.notify.RESOLVES)
    assert resumed.summary == f"consumer {SVC} no longer halted: reloading (reloading message)"


@pytest.mark.parametrize(
    ("kind", "severity"),
    [
        (Kind.CONSUMER_HALTED, Severity.CRITICAL),
        (Kind.CONSUMER_RESUMED, Severity.INFO),
        (Kind.CONSUMER_REPORTED, Severity.WARNING),
        (Kind.CONSUMER_DONE, Severity.INFO),
    ],
)
def test_default_severities(kind: Kind, severity: Severity) -> None:
    from shared.notify import DEFAULT_SEVERITY

    assert DEFAULT_SEVERITY[kind] is severity


def test_a_second_halt_after_a_resume_is_news_not_a_duplicate() -> None:
    limits = Limits(dedup_seconds=3600, per_minute=20)
    memory = Memory()
    seen: list[tuple[str, Verdict]] = []
    before: dict[str, ConsumerReport] = {SVC: r(State.RELOADING)}
    for t, state in enumerate([State.HALTED, State.HALTED, State.RELOADING, State.HALTED]):
        report = r(state)
        for event in consumer_notices(before, [report]):
            clears = tuple((k.value, event.subject) for k in RESOLVES.get(event.kind, ()))
            verdict, memory = admit(
                (event.kind.value, event.subject), memory, float(t), limits, clears
            )
            seen.append((event.kind.value, verdict))
        before = {SVC: report}
    assert seen == [
        ("consumer.halted", Verdict.SEND),
        ("consumer.resumed", Verdict.SEND),
        ("consumer.halted", Verdict.SEND),
    ]


def test_a_report_message_holding_key_material_never_reaches_the_payload() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    (event,) = consumer_notices({}, [r(State.REPORTED, message=f"not reloaded: {pem}")])
    data = payload(event)
    text = json.dumps(data) + "".join(title_and_body(data))
    assert "BEGIN" not in text
    assert "MIIEvQ" not in text
    assert data["fields"]["consumer"] == SVC
