"""Key-file parsing: every accepted layout, every malformed variant, and no key in any message."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest

from services.unsealer.keys import KeyFile, KeyFileError, parse_keys
from shared.errors import ConfigError

RAW = [secrets.token_bytes(33) for _ in range(3)]
B64 = [base64.b64encode(k).decode() for k in RAW]
HEX = [k.hex() for k in RAW]
SINGLE = secrets.token_bytes(32)


def secret_fragments() -> list[str]:
    """Every representation of the test keys that must never show up in a message."""
    out = [*B64, *HEX, base64.b64encode(SINGLE).decode(), SINGLE.hex()]
    return out + [k[:12] for k in out]


@pytest.mark.parametrize(
    "content",
    [
        "\n".join(B64) + "\n",
        "\n".join(HEX),
        "# vault unseal keys\n\n" + B64[0] + "\r\n" + HEX[1] + "\n\n",
        json.dumps({"unseal_keys_b64": B64, "unseal_keys_hex": HEX, "root_token": "x"}),
        json.dumps({"unseal_keys_hex": HEX}),
        json.dumps({"keys_base64": B64, "keys": HEX}),
        json.dumps({"keys": HEX}),
    ],
    ids=[
        "b64 lines",
        "hex lines",
        "comments/crlf/mixed",
        "operator init json",
        "hex json",
        "api json",
        "api hex json",
    ],
)
def test_accepted_layouts(content: str) -> None:
    keys = parse_keys(content.encode())
    assert len(keys.keys) in (2, 3)
    assert all(k in B64 + HEX for k in keys.keys)


def test_json_prefers_base64_list() -> None:
    keys = parse_keys(json.dumps({"unseal_keys_hex": HEX, "unseal_keys_b64": B64}).encode())
    assert keys.keys == tuple(B64)


def test_single_32_byte_key() -> None:
    assert parse_keys(base64.b64encode(SINGLE) + b"\n").keys == (base64.b64encode(SINGLE).decode(),)


MALFORMED = [
    ("empty", b"", "empty"),
    ("whitespace only", b"  \n\t\n", "empty"),
    ("comments only", b"# nothing\n", "no keys"),
    ("not utf-8", b"\xff\xfe" + RAW[0], "not UTF-8"),
    ("too large", b"a" * 70_000, "too large"),
    ("two words on a line", f"{B64[0]} {B64[1]}".encode(), "line 1 holds more than one word"),
    ("garbage line", f"{B64[0]}\nnot-a-key!\n".encode(), "line 2: not a hex or base64"),
    ("short key", base64.b64encode(b"x" * 8), "line 1: not a hex or base64"),
    ("long key", base64.b64encode(b"x" * 40), "not a hex or base64"),
    ("truncated base64", B64[0][:-3].encode(), "line 1: not a hex or base64"),
    ("odd hex", HEX[0][:-1].encode(), "not a hex or base64"),
    ("duplicate key", f"{B64[0]}\n{B64[0]}\n".encode(), "more than once"),
    ("invalid json", ('{"unseal_keys_b64": ["' + B64[0] + '"').encode(), "invalid JSON at line"),
    ("json array", json.dumps(B64).encode(), "JSON must be an object"),
    ("json without fields", json.dumps({"root_token": "s.x"}).encode(), "none of the fields"),
    ("json empty list", json.dumps({"unseal_keys_b64": []}).encode(), "non-empty list"),
    ("json not a list", json.dumps({"unseal_keys_b64": B64[0]}).encode(), "non-empty list"),
    ("json non-string", json.dumps({"keys": [B64[0], 5]}).encode(), "keys[1] is not a string"),
    ("json bad entry", json.dumps({"keys_base64": [B64[0], "zz"]}).encode(), "keys_base64[1]"),
    ("json empty entry", json.dumps({"keys": [""]}).encode(), "keys[0]: empty key"),
]


@pytest.mark.parametrize(
    ("content", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_files_are_refused_without_key_material(content: bytes, message: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_keys(content)
    text = str(caught.value)
    assert message in text
    assert isinstance(caught.value, ConfigError)  # the CLI turns it into exit 2
    for fragment in secret_fragments():
        assert fragment not in text


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        KeyFile(tmp_path / "nope").read()
    with pytest.raises(KeyFileError, match="is a directory"):
        KeyFile(tmp_path).read()


def test_repr_and_fingerprint_hide_the_keys() -> None:
    keys = parse_keys("\n".join(B64).encode())
    for text in (repr(keys), str(keys), keys.fingerprint):
        for fragment in secret_fragments():
            assert fragment not in text
    assert parse_keys("\n".join(B64[:2]).encode()).fingerprint != keys.fingerprint


CLUSTER = "aea0926c-24b0-8d67-0ed4-dba6847e7d21"


@pytest.mark.parametrize(
    ("content", "cluster_id"),
    [
        (json.dumps({"unseal_keys_b64": B64, "cluster_id": CLUSTER, "cluster_name": "v"}), CLUSTER),
        (json.dumps({"keys_base64": B64, "cluster_id": CLUSTER}), CLUSTER),
        (json.dumps({"unseal_keys_b64": B64}), None),  # an older document
        (json.dumps({"unseal_keys_b64": B64, "cluster_id": None}), None),
        ("\n".join(B64) + "\n", None),  # one key per line cannot say
    ],
    ids=["bootstrap json", "api json", "older json", "null", "lines"],
)
def test_the_document_may_name_its_cluster(content: str, cluster_id: str | None) -> None:
    keys = parse_keys(content.encode())
    assert keys.cluster_id == cluster_id
    assert keys.keys == tuple(B64)


@pytest.mark.parametrize(
    "value",
    [5, "", " ", "x" * 129, ["id"], {"id": 1}, True, "two words", "id\n", "-leading"],
    ids=["int", "empty", "blank", "too long", "list", "object", "bool", "space", "newline", "dash"],
)
def test_a_bad_cluster_id_is_refused_naming_the_field_not_the_keys(value: object) -> None:
    with pytest.raises(KeyFileError, match="cluster_id must be a non-empty string") as caught:
        parse_keys(json.dumps({"unseal_keys_b64": B64, "cluster_id": value}).encode())
    for fragment in secret_fragments():
        assert fragment not in str(caught.value)


def test_the_repr_shows_the_cluster_not_the_keys() -> None:
    keys = parse_keys(json.dumps({"unseal_keys_b64": B64, "cluster_id": CLUSTER}).encode())
    assert CLUSTER in repr(keys)
    assert not any(fragment in repr(keys) for fragment in secret_fragments())
