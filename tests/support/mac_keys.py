"""Manifest MAC key files for tests, written as an operator would (``openssl rand -hex 32``)."""

from __future__ import annotations

import secrets
from pathlib import Path


def write_key_file(path: Path, mode: int = 0o400) -> bytes:
    """A fresh random key in ``path``; returns the key exactly as certflow loads it.

    Hex text, never raw random bytes: the loader drops one trailing newline (as ``echo`` or an
    editor adds one), so raw bytes that happen to end in ``\\n`` or ``\\r`` (1 in 128) would load
    as a different, shorter key than the test signs with.
    """
    secret = secrets.token_hex(32).encode()
    path.write_bytes(secret)
    path.chmod(mode)
    return secret
