"""What someone who can write the Storage Box could drop there: a forged pair and its manifest.

The pair is self-consistent (the key belongs to the leaf, the leaf is valid for the right names and
dates) and comes from a CA nobody trusts; the manifest is written last, as the reloader writes it,
either unsigned or signed with a key the distributors do not hold.
"""

from __future__ import annotations

from pathlib import Path

from shared.atomic import write_file_atomic
from shared.manifest import MANIFEST_NAME
from shared.manifest_auth import MacKeys, sign_manifest
from tests.support.boxes import make_pair, publish
from tests.support.pki import CA

FORGED_GENERATION = 999
FORGED_PUBLISHER = "attacker"


def forge_pair(box: Path, *, signed_with: bytes | None = None) -> None:
    pair = make_pair(CA("attacker"), FORGED_GENERATION, publisher=FORGED_PUBLISHER)
    raw = pair.manifest.to_json()
    if signed_with is not None:
        raw = sign_manifest(MacKeys.of(signed_with), raw)
    publish(box, pair, manifest=False)
    write_file_atomic(box / MANIFEST_NAME, raw)
