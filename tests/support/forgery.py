"""What someone who can write the Storage Box could drop there: a forged pair and its manifest.

The pair is self-consistent (the key belongs to the leaf, the leaf is valid for the right names and
dates) and comes from a CA nobody trusts; the manifest is written last, as the reloader writes it,
either unsigned or signed with a key the distributors do not hold.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from shared.atomic import write_file_atomic
from shared.certs import leaf_info
from shared.manifest import MANIFEST_NAME, FileEntry, Manifest
from shared.manifest_auth import MacKeys, sign_manifest
from tests.support.pki import CA

FORGED_GENERATION = 999
FORGED_PUBLISHER = "attacker"


def forge_pair(
    box: Path, *, cert_name: str, key_name: str, signed_with: bytes | None = None
) -> None:
    attacker = CA("attacker")
    leaf = attacker.leaf()
    cert, key = attacker.fullchain(leaf), leaf.key_pem
    manifest = Manifest(
        generation=FORGED_GENERATION,
        published_at=datetime.now(UTC),
        cert=FileEntry.of(cert_name, cert),
        key=FileEntry.of(key_name, key),
        leaf=leaf_info(leaf.cert),
        publisher=FORGED_PUBLISHER,
    )
    raw = manifest.to_json()
    if signed_with is not None:
        raw = sign_manifest(MacKeys.of(signed_with), raw)
    write_file_atomic(box / cert_name, cert)
    write_file_atomic(box / key_name, key, mode=0o600)
    write_file_atomic(box / MANIFEST_NAME, raw)
