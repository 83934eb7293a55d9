"""Authenticated manifests: an HMAC over the manifest, keyed by a secret only certflow holds.

The Storage Box is shared storage: anyone who can write it could otherwise publish a pair and a
manifest that agree with each other. The reloader adds ``"mac": "hmac-sha256:<keyid>:<hex>"``
computed over the canonical JSON (sorted keys, no spaces, ASCII) of every other field of the
manifest document; distributors accept a manifest only when that MAC verifies with one of their
keys. The canonical form is computed from the parsed document, not the file's bytes, so the
pretty-printed file and the signed payload are independent of each other's whitespace.

Keys are held in :class:`MacKeys`: the first one signs, every one is accepted (rotation adds the
new key everywhere first, then makes it first, then drops the old one). A key is only ever named
by its public id (the first 8 hex digits of its SHA-256); no ``repr``, message or log holds key
bytes. Everything here is pure except :func:`load_key_files`, the loader the settings use at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import AuthReason, ManifestInvalid, ManifestUnauthenticated

ALGORITHM = "hmac-sha256"
MAC_FIELD = "mac"
MIN_KEY_BYTES = 32
_TAG = re.compile(r"^hmac-sha256:(?P<kid>[0-9a-f]{8}):(?P<mac>[0-9a-f]{64})$")


def key_id(secret: bytes) -> str:
    """Public id of a key: safe to log, to show on /health and to write in the manifest."""
    return hashlib.sha256(secret).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class MacKey:
    key_id: str
    secret: bytes = field(repr=False)
    source: str = ""  # where it was loaded from (a path), for operators

    def __repr__(self) -> str:
        return f"MacKey(id={self.key_id}, source={self.source!r})"


@dataclass(frozen=True, slots=True)
class MacKeys:
    """The signing key (first) and every accepted key (all of them, the signing key included)."""

    keys: tuple[MacKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one key is needed")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"the same key is listed twice (key id {_first_duplicate(ids)})")
        short = [k.source or k.key_id for k in self.keys if len(k.secret) < MIN_KEY_BYTES]
        if short:
            raise ValueError(f"key shorter than {MIN_KEY_BYTES} bytes: {', '.join(short)}")

    @classmethod
    def of(cls, *secrets: bytes) -> MacKeys:
        return cls(tuple(MacKey(key_id(s), s) for s in secrets))

    @property
    def signing(self) -> MacKey:
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)

    def get(self, kid: str) -> MacKey | None:
        return next((k for k in self.keys if k.key_id == kid), None)

    def __repr__(self) -> str:
        return f"MacKeys(signing={self.signing.key_id}, accepted={','.join(self.ids)})"


def _first_duplicate(ids: list[str]) -> str:
    seen: set[str] = set()
    for kid in ids:
        if kid in seen:
            return kid
        seen.add(kid)
    return ""


def _mac(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def sign(keys: MacKeys, payload: bytes) -> str:
    """The tag of ``payload`` with the signing key: ``hmac-sha256:<keyid>:<hex>``."""
    key = keys.signing
    return f"{ALGORITHM}:{key.key_id}:{_mac(key.secret, payload)}"


def tag_key_id(tag: str) -> str | None:
    """The key id a tag claims, or None when the tag is malformed."""
    match = _TAG.match(tag)
    return match.group("kid") if match else None


def verify(keys: MacKeys, payload: bytes, tag: str) -> bool:
    """True when ``tag`` is a MAC of ``payload`` by one of ``keys`` (constant-time compare)."""
    match = _TAG.match(tag)
    if match is None:
        return False
    key = keys.get(match.group("kid"))
    if key is None:
        return False
    return hmac.compare_digest(_mac(key.secret, payload), match.group("mac"))


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes a manifest's MAC covers: every field except ``mac``, canonical JSON."""
    body = {k: v for k, v in doc.items() if k != MAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _document(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"manifest is not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    return doc


def sign_manifest(keys: MacKeys, raw: bytes) -> bytes:
    """``raw`` (a manifest file's JSON) with its ``mac`` field set by the signing key."""
    doc = _document(raw)
    doc[MAC_FIELD] = sign(keys, canonical(doc))
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def manifest_signer(raw: bytes) -> str | None:
    """The key id a manifest's ``mac`` claims (not verified), or None."""
    try:
        tag = _document(raw).get(MAC_FIELD)
    except ManifestInvalid:
        return None
    return tag_key_id(tag) if isinstance(tag, str) else None


def authenticate_manifest(keys: MacKeys, raw: bytes) -> str:
    """The id of the key that signed ``raw``; raises :class:`ManifestUnauthenticated` (why, and
    the claimed key id) or :class:`ManifestInvalid` (not a JSON object)."""
    doc = _document(raw)
    tag = doc.get(MAC_FIELD)
    if tag is None:
        raise ManifestUnauthenticated(AuthReason.UNSIGNED, "manifest has no mac (unsigned)")
    kid = tag_key_id(tag) if isinstance(tag, str) else None
    if kid is None:
        raise ManifestUnauthenticated(
            AuthReason.MALFORMED, f"manifest mac is not {ALGORITHM}:<keyid>:<hex>"
        )
    accepted = ",".join(keys.ids)
    if keys.get(kid) is None:
        raise ManifestUnauthenticated(
            AuthReason.UNKNOWN_KEY,
            f"manifest signed with key id {kid}, not an accepted key ({accepted})",
            key_id=kid,
        )
    if not verify(keys, canonical(doc), str(tag)):
        raise ManifestUnauthenticated(
            AuthReason.BAD_MAC,
            f"manifest mac does not match its content for key id {kid} (altered or forged)",
            key_id=kid,
        )
    return kid


# -- loading (the only side effect here; the settings call it once at start) -------------------


def read_key_file(path: Path) -> bytes:
    """A key file's bytes (one trailing newline dropped, as ``echo`` or an editor adds one).

    ValueError (naming the path, never the content) when it is missing, unreadable, readable or
    writable by group/others, or shorter than :data:`MIN_KEY_BYTES`.
    """
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{path} is accessible by group/others (mode {mode:04o}); make it 0400 or 0600"
        )
    secret = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(secret) < MIN_KEY_BYTES:
        raise ValueError(f"{path} holds fewer than {MIN_KEY_BYTES} bytes; use 32+ random bytes")
    return secret


def load_key_files(paths: Iterable[Path]) -> MacKeys:
    """The keys of ``paths`` in order (the first signs). ValueError names the file at fault."""
    keys = tuple(MacKey(key_id(s), s, str(p)) for p in paths for s in (read_key_file(p),))
    return MacKeys(keys)


def parse_key_files(value: object) -> MacKeys | None:
    """The setting's value (comma-separated paths) -> keys; empty: None (not authenticated)."""
    if value is None or isinstance(value, MacKeys):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a comma-separated list of key file paths")
    paths = [Path(p.strip()) for p in value.split(",") if p.strip()]
    return load_key_files(paths) if paths else None
