"""scripts/down stops the demo's pebble by its pid file only when /proc says that pid is pebble
with the demo's config (a pid file left by a reboot may name any process)."""

from __future__ import annotations

from pathlib import Path

from tests.support.acme import is_pebble_cmdline

CONFIG = Path("/var/lib/certflow-local/iklimco/pebble/pebble.json")


def test_pebble_with_this_config_is_recognised() -> None:
    assert is_pebble_cmdline(b"/usr/bin/pebble\0-config\0" + bytes(CONFIG) + b"\0", CONFIG)


def test_another_program_another_config_or_an_empty_cmdline_is_not() -> None:
    assert not is_pebble_cmdline(b"/usr/bin/sleep\0" + bytes(CONFIG) + b"\0", CONFIG)
    assert not is_pebble_cmdline(b"/usr/bin/pebble\0-config\0/tmp/other/pebble.json\0", CONFIG)
    assert not is_pebble_cmdline(b"", CONFIG)  # a zombie, or a process between fork and exec
    assert not is_pebble_cmdline(bytes(CONFIG) + b"\0", CONFIG)
