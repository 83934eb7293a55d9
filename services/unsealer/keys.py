"""The unseal key file: parsing and validation, with errors that never contain key material.

Accepted layouts:
- one key per line (hex or base64; blank lines and ``#`` comments ignored);
- the JSON of ``vault operator init -format=json`` (``unseal_keys_b64`` or ``unseal_keys_hex``);
- the JSON of the ``/sys/init`` API (``keys_base64`` or ``keys``).

A JSON document may also name the cluster its keys belong to (``cluster_id``, written by
``certflow vault-bootstrap``): an unsealed member reports its cluster's id, so the unsealer can tell
a key file of this cluster from one of another before giving a key to anyone.

Keys are read when an unseal attempt needs them and dropped afterwards (:class:`KeyFile` keeps only
the path). Each key is checked to decode (hex first, then base64, as Vault does) to 16-33 bytes.

A file that its group or others may read or write is refused before its content is read
(:func:`mode_problem`), as lrstanley/vault-unseal does: only a group read the stack grants on
purpose may be allowed (``UNSEALER_KEY_FILE_GROUP_READ``); docs/unseal-key-file.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from services.unsealer.status import MAX_CLUSTER_ID
from shared.errors import ConfigError

MIN_KEY_BYTES, MAX_KEY_BYTES = 16, 33
MAX_FILE_BYTES = 64 * 1024
_HEX = re.compile(r"\A(?:[0-9a-fA-F]{2})+\Z")
_JSON_FIELDS = ("unseal_keys_b64", "unseal_keys_hex", "keys_base64", "keys")
# Vault's cluster ids are UUIDs; the charset also keeps a hand-edited value harmless in logs.
_CLUSTER_ID = re.compile(rf"\A[0-9A-Za-z][0-9A-Za-z._:-]{{0,{MAX_CLUSTER_ID - 1}}}\Z")


GROUP_READ_SETTING = "UNSEALER_KEY_FILE_GROUP_READ"


class KeyFileError(ConfigError):
    """The key file is missing, unreadable or malformed. The message holds no key material."""


class KeyFileInsecure(KeyFileError):
    """The key file's mode lets its group or others at it; refused before its content is read."""

    def __init__(self, message: str, *, mode: str) -> None:
        super().__init__(message)
        self.mode = mode  # "0644": what /health and the log show beside the message


def mode_problem(mode: int, *, group_read: bool) -> str:
    """Why a key file with permission bits ``mode`` must not be used; ``""`` when it may be.

    The owner's bits are free (0400 and 0600 are both fine). Others get nothing, the group gets
    nothing, or a read alone when ``group_read`` (the stack grants it on purpose) says so.
    """
    group, others = (mode >> 3) & 0o7, mode & 0o7
    if group_read:
        group &= ~0o4
    problems = []
    if group:
        problems.append(f"its group may {_rights(group)} it")
    if others:
        problems.append(f"others may {_rights(others)} it")
    if not problems:
        return ""
    reason = " and ".join(problems)
    if not group_read and not others and group == 0o4:
        reason += (
            f" (set {GROUP_READ_SETTING}=true only if the stack mounts the secret for a group on "
            "purpose)"
        )
    return reason


def _rights(bits: int) -> str:
    return "/".join(
        name for flag, name in ((4, "read"), (2, "write"), (1, "execute")) if bits & flag
    )


@dataclass(frozen=True)
class UnsealKeys:
    """Keys for one attempt. ``fingerprint`` identifies the content without revealing it."""

    keys: tuple[str, ...]
    fingerprint: str
    cluster_id: str | None = None  # the cluster the document says the keys belong to

    def __repr__(self) -> str:  # never show the keys, even in a traceback or debugger
        return (
            f"UnsealKeys(count={len(self.keys)}, fingerprint={self.fingerprint}, "
            f"cluster_id={self.cluster_id})"
        )

    __str__ = __repr__


def decode_key(key: str) -> bytes | None:
    """Vault's decoding: hex when it decodes to a usable length, else standard base64."""
    if _HEX.match(key):
        raw = bytes.fromhex(key)
        if MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES:
            return raw
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES else None


def parse_keys(data: bytes, *, source: str = "key file") -> UnsealKeys:
    """Parse the file content; raise :class:`KeyFileError` naming the problem, not the content."""
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{source}: too large ({len(data)} bytes) for an unseal key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{source}: not UTF-8 text") from None
    stripped = text.strip()
    if not stripped:
        raise KeyFileError(f"{source}: empty")
    cluster_id = None
    if stripped.startswith(("{", "[")):
        keys, cluster_id = _from_json(stripped, source)
    else:
        keys = _from_lines(text, source)
    if len(set(keys)) != len(keys):
        raise KeyFileError(f"{source}: the same key appears more than once")
    return UnsealKeys(keys=tuple(keys), fingerprint=fingerprint(data), cluster_id=cluster_id)


def fingerprint(data: bytes) -> str:
    """A short digest of the whole file: tells a rotated file apart, reveals nothing usable."""
    return hashlib.sha256(b"certflow-unseal-key-file\0" + data).hexdigest()[:16]


def _from_json(text: str, source: str) -> tuple[list[str], str | None]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # position only: exc.doc / str(exc) could quote the content
        raise KeyFileError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{source}: JSON must be an object with {' or '.join(_JSON_FIELDS)}")
    return _json_keys(document, source), _cluster_id(document, source)


def valid_cluster_id(value: object) -> bool:
    """What a key document may hold as ``cluster_id`` (bootstrap writes nothing else)."""
    return isinstance(value, str) and _CLUSTER_ID.match(value) is not None


def _cluster_id(document: dict[str, object], source: str) -> str | None:
    value = document.get("cluster_id")
    if value is None:  # absent, or null: a document that does not say (older ones)
        return None
    if not isinstance(value, str) or not valid_cluster_id(value):
        raise KeyFileError(
            f"{source}: cluster_id must be a non-empty string of at most {MAX_CLUSTER_ID} "
            "letters, digits, '.', '_', ':' or '-'"
        )
    return value


def _json_keys(document: dict[str, object], source: str) -> list[str]:
    for name in _JSON_FIELDS:
        if name not in document:
            continue
        value = document[name]
        if not isinstance(value, list) or not value:
            raise KeyFileError(f"{source}: {name} must be a non-empty list of strings")
        keys: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise KeyFileError(f"{source}: {name}[{index}] is not a string")
            keys.append(_checked(item.strip(), f"{source}: {name}[{index}]"))
        return keys
    raise KeyFileError(
        f"{source}: JSON has none of the fields {', '.join(_JSON_FIELDS)}"
        " (is this the output of `vault operator init -format=json`?)"
    )


def _from_lines(text: str, source: str) -> list[str]:
    keys: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if any(ch.isspace() for ch in item):
            raise KeyFileError(f"{source}: line {number} holds more than one word")
        keys.append(_checked(item, f"{source}: line {number}"))
    if not keys:
        raise KeyFileError(f"{source}: no keys (only comments or blank lines)")
    return keys


def _checked(item: str, where: str) -> str:
    if not item:
        raise KeyFileError(f"{where}: empty key")
    if decode_key(item) is None:
        raise KeyFileError(
            f"{where}: not a hex or base64 unseal key of {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes"
            f" ({len(item)} characters)"
        )
    return item


class KeyFile:
    """The key file by path; content is read per attempt and not kept."""

    def __init__(self, path: Path, *, group_read: bool = False) -> None:
        self.path = path
        self.group_read = group_read

    def read(self) -> UnsealKeys:
        """The keys, after the mode check on the very file opened (no swap between the two)."""
        try:
            with self.path.open("rb") as handle:
                self._check(os.fstat(handle.fileno()).st_mode)
                data = handle.read()
        except FileNotFoundError:
            raise KeyFileError(
                f"UNSEALER_KEY_FILE: {self.path} does not exist (is the vault_unseal_key "
                "secret mounted?)"
            ) from None
        except IsADirectoryError:
            raise KeyFileError(f"UNSEALER_KEY_FILE: {self.path} is a directory") from None
        except OSError as exc:
            raise KeyFileError(
                f"UNSEALER_KEY_FILE: cannot read {self.path}: {exc.strerror or type(exc).__name__}"
            ) from None
        return parse_keys(data, source=f"UNSEALER_KEY_FILE {self.path}")

    def check_mode(self) -> None:
        """The mode check alone (a stat, the content is not read); silent when the file is gone."""
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return  # read() names that problem when the keys are needed
        self._check(mode)

    def _check(self, st_mode: int) -> None:
        mode = stat.S_IMODE(st_mode)
        problem = mode_problem(mode, group_read=self.group_read)
        if problem:
            raise KeyFileInsecure(
                f"UNSEALER_KEY_FILE {self.path}: mode {mode:04o} refused: {problem}; an unseal "
                "key file must be readable by its owner only (mode 0400 or 0600); its keys are "
                "given to no member until that is fixed",
                mode=f"{mode:04o}",
            )
