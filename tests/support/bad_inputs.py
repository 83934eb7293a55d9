"""Bad inputs a test writes into a real flow: a broken SWAG renewal, a wrong unseal key.

Both the single-node e2e flow and the 3-node lab use them, each through its own Docker access;
only the bytes are made here.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

from tests.support.acme import SwagVolume
from tests.support.pki import CA, key_pem, new_key

BadRenewal = Literal["another key", "truncated chain", "expired", "untrusted issuer"]


def write_bad_generation(swag: SwagVolume, kind: BadRenewal) -> int:
    """Write what a broken SWAG renewal would: a new archive generation and the live symlinks
    pointing at it, each swapped in atomically as certbot does. Returns the bad generation."""
    good_chain = (swag.live / "fullchain.pem").read_bytes()
    blocks = good_chain.split(b"-----END CERTIFICATE-----\n")
    if kind == "another key":
        fullchain, key = good_chain, key_pem(new_key("ec"))
    elif kind == "truncated chain":
        intermediate = blocks[1]
        fullchain = (
            blocks[0] + b"-----END CERTIFICATE-----\n" + intermediate[: len(intermediate) // 2]
        )
        key = (swag.live / "privkey.pem").read_bytes()
    elif kind == "untrusted issuer":
        # Valid names, dates and key, from a CA that Vault's clients do not trust.
        ca = CA("untrusted-issuer")
        leaf = ca.leaf(days=2000)  # outlives the published one: not refused as a downgrade
        fullchain, key = ca.fullchain(leaf), leaf.key_pem
    else:  # expired
        ca = CA("expired-issuer")
        now = datetime.now(UTC)
        leaf = ca.leaf(not_before=now - timedelta(days=100), not_after=now - timedelta(days=1))
        fullchain, key = ca.fullchain(leaf), leaf.key_pem
    number = swag.generation() + 1
    cert_only = fullchain.split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
    files = {
        "cert": cert_only,
        "chain": fullchain[len(cert_only) :],
        "fullchain": fullchain,
        "privkey": key,
    }
    for name, data in files.items():
        target = swag.archive / f"{name}{number}.pem"
        target.write_bytes(data)
        target.chmod(0o600 if name == "privkey" else 0o644)
    _link_generation(swag, number)
    return number


def restore_generation(swag: SwagVolume, number: int) -> None:
    """Point the live symlinks back at generation ``number`` and drop the bad one after it."""
    _link_generation(swag, number)
    for bad in swag.archive.glob(f"*{number + 1}.pem"):
        bad.unlink()


def _link_generation(swag: SwagVolume, number: int) -> None:
    for name in ("cert", "chain", "fullchain", "privkey"):
        link = swag.live / f"{name}.pem"
        tmp = link.with_name(f".{name}.tmp")
        os.symlink(f"../../archive/{swag.domain}/{name}{number}.pem", tmp)
        os.replace(tmp, link)


def wrong_unseal_document(right: bytes) -> bytes:
    """An unseal key document shaped like ``right`` (same number and size of keys) whose keys
    are random: what an operator who pasted another cluster's keys would store."""
    doc = json.loads(right)
    size = len(base64.b64decode(doc["unseal_keys_b64"][0]))
    keys = [secrets.token_bytes(size) for _ in doc["unseal_keys_b64"]]
    doc["unseal_keys_b64"] = [base64.b64encode(k).decode() for k in keys]
    doc["unseal_keys_hex"] = [k.hex() for k in keys]
    return json.dumps(doc).encode()
