"""Checks that no secret reached an output, failing without showing the secret.

A plain ``assert key not in text`` would print the key (and the text around it) in the test
report exactly when it leaked, so these raise with the place's name only.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping


def key_forms(keys: Iterable[str]) -> list[str]:
    """Every way a key could leak: as given, and as hex and base64 of its bytes."""
    out: set[str] = set()
    for key in keys:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = base64.b64decode(key)
        out.update({key, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()})
        out.add(base64.urlsafe_b64encode(raw).decode())
    return sorted(out)


def assert_absent(needles: Iterable[str], texts: Mapping[str, str], what: str = "a secret") -> None:
    """None of ``needles`` in any of ``texts`` (place name -> text); the failure names the place
    and how many needles it holds, never a needle."""
    wanted = [n for n in needles if n]
    for where, text in texts.items():
        found = sum(1 for n in wanted if n in text)
        if found:
            raise AssertionError(f"{what} appeared in {where} ({found} of {len(wanted)} forms)")


def assert_no_keys(texts: list[str], keys: list[str]) -> None:
    """No unseal key in any of ``texts``, in any form, not even its first 16 characters."""
    forms = key_forms(keys)
    assert_absent(
        [*forms, *(f[:16] for f in forms)],
        {f"output {i}": t for i, t in enumerate(texts)},
        "key material",
    )
