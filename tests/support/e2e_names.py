"""Unique names for what a test creates on the shared Docker engine (several sessions share it)."""

from __future__ import annotations

import secrets


def unique(prefix: str) -> str:
    """``prefix`` plus a random suffix, valid as a stack, service, secret or image tag name."""
    return f"{prefix}{secrets.token_hex(4)}"
