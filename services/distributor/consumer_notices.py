"""What the consumers' reports tell people: a pure function of the reports of the previous pass
and those of this one.

Notifications mark transitions (a halt starts, a halt clears, labels become unusable, every task
took a new certificate), never the state each pass sees again. The subject is the consumer and
the certificate, so the notifier's deduplication tells each condition once, and a resume ends
the halt it shares its subject with (``shared.notify.RESOLVES``).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.consumers import ConsumerReport, State
from shared.notify import Event, Kind

from .consumer_gate import short


def subject(service: str, fingerprint: str | None) -> str:
    """What a consumer notice is about: the service and the certificate it is brought to."""
    return f"{service} {short(fingerprint)}"


def _fields(report: ConsumerReport) -> dict[str, str | int]:
    # "consumer", not "service": a payload's own "service" is the certflow service that sends it.
    fields: dict[str, str | int] = {"consumer": report.service, "state": report.state.value}
    if report.fingerprint:
        fields["fingerprint"] = report.fingerprint
    if report.mode:
        fields["mode"] = report.mode
    if report.check:
        fields["check"] = report.check
    if report.message:
        fields["message"] = report.message
    older = len(report.serves_older)
    if older:
        fields["tasks_serving_old"] = older
    return fields


def _one(before: ConsumerReport | None, after: ConsumerReport) -> list[Event]:
    name = after.service
    fields = _fields(after)
    was = before.state if before is not None else None
    was_fp = before.fingerprint if before is not None else None
    same_fp = before is not None and was_fp == after.fingerprint
    events: list[Event] = []
    if was is State.HALTED and after.state is not State.HALTED:
        events.append(
            Event(
                Kind.CONSUMER_RESUMED,
                f"consumer {name} no longer halted: {after.state.value}"
                + (f" ({after.message})" if after.message else ""),
                subject=subject(name, was_fp),  # the halt's: this ends it
                fields=fields,
            )
        )
    # A halt that moved on to a newer certificate is told again, as a halt of that certificate.
    if after.state is State.HALTED and not (was is State.HALTED and same_fp):
        events.append(
            Event(
                Kind.CONSUMER_HALTED,
                f"consumer {name}: {after.message or 'reload halted'}",
                subject=subject(name, after.fingerprint),
                fields=fields,
            )
        )
    elif after.state is State.REPORTED and was is not State.REPORTED:
        # Also on first sight: a label just added wrong is the usual way to get here.
        events.append(
            Event(
                Kind.CONSUMER_REPORTED,
                f"consumer {name}: {after.message or 'its labels cannot be used'}",
                subject=subject(name, after.fingerprint),
                fields=fields,
            )
        )
    elif after.state is State.DONE and before is not None and not (was is State.DONE and same_fp):
        events.append(
            Event(
                Kind.CONSUMER_DONE,
                f"consumer {name}: every task took the installed certificate "
                f"{short(after.fingerprint)}",
                subject=subject(name, after.fingerprint),
                fields=fields,
            )
        )
    return events


def consumer_notices(
    before: Mapping[str, ConsumerReport], after: list[ConsumerReport]
) -> list[Event]:
    """The notifications this pass sends, given the reports of the pass before (by service).

    A consumer absent from ``after`` tells nothing: its label was removed, or this distributor
    is no longer the leader (the new leader's reports go on from the service labels). A consumer
    first seen in ``after`` tells only a halt or unusable labels: a process that just started (or
    just became leader) and finds it done has nothing new to say.
    """
    events: list[Event] = []
    for report in after:
        events += _one(before.get(report.service), report)
    return events
