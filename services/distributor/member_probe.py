"""What a local Vault member serves, read from inside its container (pure: script and reading).

The check runs where Vault runs (``docker exec``), with the member's own CLI and files:

1. the first certificate of ``/vault/certs/$VAULT_CERT_FILE`` (the leaf installed on this node)
   goes to a temp file and is printed (public data);
2. ``<cli> status`` against ``https://127.0.0.1:8200`` trusting only that leaf: the TLS
   handshake succeeds exactly when the listener serves that leaf (and holds its key). Exit 0 is
   unsealed, 2 sealed or uninitialised, 1 an error ("signed by unknown authority": another
   certificate is served);
3. ``<cli> status`` trusting ``/certflow-ca/$VAULT_CA_FILE``: what Vault's clients check (run
   beside 2, not after it).

Each section starts with a ``@@`` line the reader below splits on. The environment is cleaned of
variables that would skip or redirect the check (a container may set ``VAULT_SKIP_VERIFY``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from cryptography import x509

from shared.certs import fingerprint

from .facts import MemberProbe

# Bounds each CLI call (VAULT_ in Vault, BAO_ in OpenBao); the exec itself is bounded too.
CLI_TIMEOUT = "5s"

PROBE_SCRIPT = f"""
unset VAULT_SKIP_VERIFY BAO_SKIP_VERIFY VAULT_AGENT_ADDR BAO_AGENT_ADDR VAULT_CACERT BAO_CACERT \
VAULT_CAPATH BAO_CAPATH VAULT_CLIENT_CERT BAO_CLIENT_CERT VAULT_CLIENT_KEY BAO_CLIENT_KEY
export VAULT_CLIENT_TIMEOUT={CLI_TIMEOUT} BAO_CLIENT_TIMEOUT={CLI_TIMEOUT}
cli=$(command -v vault || command -v bao) || {{ echo '@@cli missing'; exit 0; }}
leaf=$(mktemp 2>/dev/null) || leaf=/tmp/certflow-probe.$$
awk '/-----BEGIN CERTIFICATE-----/{{p=1}} p{{print}} /-----END CERTIFICATE-----/{{if(p)exit}}' \
  "/vault/certs/$VAULT_CERT_FILE" > "$leaf" 2>/dev/null
if [ ! -s "$leaf" ]; then
  echo "@@leaf unreadable /vault/certs/$VAULT_CERT_FILE"; rm -f "$leaf"; exit 0
fi
echo '@@pem'
cat "$leaf"
probe() {{
  "$cli" status -address=https://127.0.0.1:8200 -tls-skip-verify=false -format=json \
    ${{VAULT_TLS_NAME:+-tls-server-name="$VAULT_TLS_NAME"}} -ca-cert="$1" 2>&1
}}
ca="/certflow-ca/$VAULT_CA_FILE"
trust=none
if [ -n "$VAULT_CA_FILE" ] && [ -r "$ca" ]; then trust=yes; fi
# Both calls at once: each is a Go program start, and a rollout's gate waits on the answer.
probe "$leaf" > "$leaf.out" 2>&1 & first=$!
if [ "$trust" = yes ]; then probe "$ca" > "$leaf.trust" 2>&1 & second=$!; fi
wait "$first"; echo "@@leaf $?"; cat "$leaf.out"; echo
if [ "$trust" = yes ]; then wait "$second"; echo "@@trust $?"; cat "$leaf.trust"; echo
else echo '@@trust none'; fi
rm -f "$leaf" "$leaf.out" "$leaf.trust"
"""


def probe_argv() -> list[str]:
    return ["sh", "-c", PROBE_SCRIPT]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one probe proved: the fields of :class:`MemberProbe` that the output decides."""

    fingerprint: str | None
    sealed: bool | None
    serves_installed: bool | None
    trusted: bool | None
    detail: str
    active: bool | None = None
    applied: int | None = None


_SECTION = re.compile(r"^@@(\w+)(?: (.*))?$")
_DETAIL_MAX = 160


def _sections(output: str) -> dict[str, tuple[str, str]]:
    """``@@name arg`` headers -> (arg, body)."""
    found: dict[str, tuple[str, str]] = {}
    name: str | None = None
    arg = ""
    body: list[str] = []
    for line in output.splitlines():
        match = _SECTION.match(line.rstrip("\r"))
        if match:
            if name is not None:
                found[name] = (arg, "\n".join(body))
            name, arg, body = match.group(1), (match.group(2) or "").strip(), []
        elif name is not None:
            body.append(line)
    if name is not None:
        found[name] = (arg, "\n".join(body))
    return found


def _short(text: str) -> str:
    """The CLI's last meaningful error line, trimmed (its output holds no secrets: status only)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    wanted = [ln for ln in lines if "x509" in ln or "dial tcp" in ln or "rror" in ln]
    line = (wanted or lines or ["no output"])[-1]
    return line if len(line) <= _DETAIL_MAX else line[: _DETAIL_MAX - 3] + "..."


def _sealed(body: str) -> bool | None:
    try:
        doc = json.loads(body[body.index("{") :])
    except ValueError:
        return None
    sealed = doc.get("sealed") if isinstance(doc, dict) else None
    return sealed if isinstance(sealed, bool) else None


def _active(body: str) -> bool | None:
    """Whether an unsealed HA member leads (is the active member). The CLI leaves ``is_self``
    out when it is false, so a standby is an HA member without it."""
    try:
        doc = json.loads(body[body.index("{") :])
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("sealed") is not False or not doc.get("ha_enabled"):
        return None
    return doc.get("is_self") is True


def _applied(body: str) -> int | None:
    """An unsealed raft member's ``raft_applied_index`` (the CLI leaves it out while it is 0)."""
    try:
        doc = json.loads(body[body.index("{") :])
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("sealed") is not False:
        return None
    value = doc.get("raft_applied_index")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status(code_text: str, body: str) -> tuple[bool | None, bool | None, str]:
    """One status call trusting one file: (handshake accepted?, sealed, detail)."""
    try:
        code = int(code_text)
    except ValueError:
        return None, None, f"unreadable exit code {code_text!r}"
    if code in (0, 2):
        sealed = _sealed(body)
        if sealed is None:
            sealed = code == 2
        return True, sealed, "sealed" if sealed else "unsealed"
    if code == 1 and "signed by unknown authority" in body:
        return False, None, _short(body)
    # Refused, timed out, a name the certificate does not cover, ...: the handshake says nothing
    # about which certificate is served.
    return None, None, _short(body)


def interpret(exit_code: int, output: str) -> Verdict:
    """Read the probe's exit code and output (pure; table-tested)."""
    if exit_code != 0:
        what = "the probe did not run" if exit_code in (126, 127) else "the probe failed"
        return Verdict(None, None, None, None, f"{what} (exit {exit_code}): {_short(output)}")
    sections = _sections(output)
    if "cli" in sections:
        return Verdict(None, None, None, None, "no vault or bao CLI in the container")
    if "leaf" not in sections or "pem" not in sections:
        arg = sections.get("leaf", ("", ""))[0]
        reason = f"installed certificate unreadable ({arg})" if arg else "no probe output"
        return Verdict(None, None, None, None, reason)
    try:
        leaf = x509.load_pem_x509_certificate(sections["pem"][1].strip().encode())
    except ValueError:
        return Verdict(None, None, None, None, "installed certificate is not PEM")
    installed = fingerprint(leaf)
    serves, sealed, leaf_detail = _status(*sections["leaf"])
    trust_arg, trust_body = sections.get("trust", ("none", ""))
    if trust_arg == "none":
        trusted: bool | None = None
        trust_detail = "no CA bundle to check ($VAULT_CA_FILE)"
    else:
        trusted, trust_sealed, trust_detail = _status(trust_arg, trust_body)
        if sealed is None:
            # Serving another certificate (the old one, before a reload): the call that trusts
            # the clients' bundle still tells whether it is sealed.
            sealed = trust_sealed
    # Either call's answer says whether it leads, whichever certificate it serves.
    active = _active(sections["leaf"][1]) if serves else None
    if active is None and trust_arg != "none":
        active = _active(trust_body)
    applied = _applied(sections["leaf"][1]) if serves else None
    if applied is None and trust_arg != "none":
        applied = _applied(trust_body)
    if serves is True:
        if trusted is True:
            detail = leaf_detail
        elif trusted is False:
            detail = f"serves it, not trusted: {trust_detail}"
        else:
            detail = f"serves it, trust not proven: {trust_detail}"
    elif serves is False:
        detail = f"serves another certificate: {leaf_detail}"
    else:
        detail = f"cannot tell: {leaf_detail}"
    return Verdict(installed, sealed, serves, trusted, detail, active, applied)


def slot_of(task_name: str | None, service: str) -> int | None:
    """The slot in a task name ``<service>.<slot>.<task id>``; None for any other shape."""
    if not task_name or not task_name.startswith(service + "."):
        return None
    parts = task_name[len(service) + 1 :].split(".")
    return int(parts[0]) if len(parts) == 2 and parts[0].isdigit() else None


UNSETTLED_EVERY = 3.0


def due(
    last: MemberProbe | None,
    *,
    installed: str | None,
    last_at: float | None,
    now: float,
    interval: float,
) -> bool:
    """Probe again? A member proven to serve the installed pair and unsealed: once per
    ``interval`` (each probe starts a Go CLI twice in the container). Any other (sealed, not
    proven, not probed): every ``UNSETTLED_EVERY`` seconds, since a rolling restart waits on
    exactly those answers, and probing on every pass would cost a second of CPU per pass while
    a cluster starts."""
    if last is None or last_at is None or last.fingerprint != installed:
        return True  # never probed, or a new pair was installed since
    settled = last.proven and last.sealed is False
    return now - last_at >= (interval if settled else UNSETTLED_EVERY)
