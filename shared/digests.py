"""Content digests of certificate files (MD5 as the runbook names it, SHA-256 for integrity)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Digests:
    md5: str
    sha256: str
    size: int

    @classmethod
    def of(cls, data: bytes) -> Digests:
        return cls(
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
        )
