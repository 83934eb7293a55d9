"""The leak checks fail when a secret is there, in any form, and never show it in the failure."""

from __future__ import annotations

import base64
import secrets

import pytest

from tests.support.leaks import assert_absent, assert_no_keys, key_forms

pytestmark = pytest.mark.unit


def test_a_key_in_any_form_fails_naming_the_place_not_the_key() -> None:
    raw = secrets.token_bytes(33)
    key = base64.b64encode(raw).decode()
    for form in (key, raw.hex(), raw.hex().upper(), base64.urlsafe_b64encode(raw).decode()):
        with pytest.raises(AssertionError) as failure:
            assert_no_keys(["clean", f"log line {form[:16]}..."], [key])
        message = str(failure.value)
        assert "output 1" in message
        assert all(f[:8] not in message for f in key_forms([key]))


def test_nothing_there_passes() -> None:
    assert_no_keys(["nothing secret here"], [secrets.token_hex(32)])
    assert_absent(["BEGIN"], {"a": "plain text"})


def test_an_empty_needle_is_not_found_everywhere() -> None:
    assert_absent(["", "BEGIN"], {"a": "plain text"})
