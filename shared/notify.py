"""Notification events: what happened, told to people (webhook, chat, email).

An :class:`Event` carries a kind, a severity, a one-line summary and a few *safe* fields
(fingerprint, generation, slot, reason ...). The payload sent anywhere is built only by
:func:`payload` from those: fields that are not strings or numbers, fields named like key material
(the same names the logs redact) and values that look like PEM are left out, so a caller's mistake
cannot put a key or a token into a message. Delivery is :mod:`shared.notifier`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.logs import is_secret_field

FieldValue = str | int | float | bool


class Kind(StrEnum):
    CERT_PUBLISHED = "cert.published"
    RENEWAL_REFUSED = "renewal.refused"
    CERT_EXPIRING = "cert.expiring"
    ROLLOUT_DONE = "rollout.done"
    ROLLOUT_HALTED = "rollout.halted"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_PAUSED = "rollout.paused"
    MANIFEST_REFUSED = "manifest.refused"
    TRUST_FAILED = "trust.failed"
    CANARY_FAILED = "canary.failed"
    UNSEAL_KEY_REJECTED = "unseal_key.rejected"
    MEMBER_SEALED = "member.sealed"
    CONSUMER_HALTED = "consumer.halted"
    CONSUMER_RESUMED = "consumer.resumed"
    CONSUMER_REPORTED = "consumer.reported"
    CONSUMER_DONE = "consumer.done"


# A notice that ends a condition: once it is sent, the next notice of that condition (same
# subject) is news again, not a duplicate of the one before.
RESOLVES: dict[Kind, tuple[Kind, ...]] = {
    Kind.ROLLOUT_RESUMED: (Kind.ROLLOUT_HALTED, Kind.ROLLOUT_PAUSED),
    Kind.CONSUMER_RESUMED: (Kind.CONSUMER_HALTED,),
}


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


DEFAULT_SEVERITY: Mapping[Kind, Severity] = {
    Kind.CERT_PUBLISHED: Severity.INFO,
    Kind.RENEWAL_REFUSED: Severity.WARNING,
    Kind.CERT_EXPIRING: Severity.WARNING,
    Kind.ROLLOUT_DONE: Severity.INFO,
    Kind.ROLLOUT_HALTED: Severity.CRITICAL,
    Kind.ROLLOUT_RESUMED: Severity.INFO,
    Kind.ROLLOUT_PAUSED: Severity.CRITICAL,
    Kind.MANIFEST_REFUSED: Severity.CRITICAL,
    Kind.TRUST_FAILED: Severity.CRITICAL,
    Kind.CANARY_FAILED: Severity.CRITICAL,
    Kind.UNSEAL_KEY_REJECTED: Severity.CRITICAL,
    Kind.MEMBER_SEALED: Severity.CRITICAL,
    # Halted: a reloaded task is not back, so the consumer may run a task short until someone acts.
    Kind.CONSUMER_HALTED: Severity.CRITICAL,
    Kind.CONSUMER_RESUMED: Severity.INFO,
    Kind.CONSUMER_REPORTED: Severity.WARNING,
    Kind.CONSUMER_DONE: Severity.INFO,
}

_PEM_MARK = "-----BEGIN"
_MAX_TEXT = 500  # a summary or field is one line for people, not a document


@dataclass(frozen=True, slots=True)
class Event:
    """One notification. ``subject`` says what it is about (a fingerprint, a slot, a node) and,
    with the kind, is what deduplication compares. ``service``, ``node`` and ``at`` are filled in
    by the notifier when left empty."""

    kind: Kind
    summary: str
    subject: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity | None = None
    service: str = ""
    node: str = ""
    at: datetime | None = None

    @property
    def level(self) -> Severity:
        return self.severity if self.severity is not None else DEFAULT_SEVERITY[self.kind]


def _safe_text(value: str) -> str | None:
    if _PEM_MARK in value:
        return None
    line = " ".join(value.split())
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 1] + "…"


def safe_fields(fields: Mapping[str, Any]) -> dict[str, FieldValue]:
    """Only strings and numbers, never a field named like key material, never PEM text."""
    out: dict[str, FieldValue] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or is_secret_field(name):
            continue
        if isinstance(value, bool | int | float):
            out[name] = value
        elif isinstance(value, str):
            text = _safe_text(value)
            if text is not None:
                out[name] = text
    return out


def payload(event: Event) -> dict[str, Any]:
    """The JSON object a webhook receives (also the source of the chat/email text)."""
    at = event.at if event.at is not None else datetime.now(UTC)
    return {
        "kind": event.kind.value,
        "severity": event.level.value,
        "summary": _safe_text(event.summary) or "(summary withheld: it looked like key material)",
        "subject": _safe_text(event.subject) or "",
        "service": event.service,
        "node": event.node,
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "fields": safe_fields(event.fields),
    }


def title_and_body(data: Mapping[str, Any]) -> tuple[str, str]:
    """Chat/email text from a payload (so it holds nothing the payload does not)."""
    title = f"certflow {data['severity']}: {data['kind']} on {data['node'] or data['service']}"
    lines = [str(data["summary"]), ""]
    lines += [f"{name}: {value}" for name, value in data["fields"].items()]
    lines.append(f"service: {data['service']}, node: {data['node']}, time: {data['time']}")
    return title, "\n".join(lines)
