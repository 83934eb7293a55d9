"""Every command's --help lists every one of its settings (generated from the settings classes)."""

from __future__ import annotations

import argparse

import pytest

from services.cli import build_parser
from services.distributor.settings import DistributorSettings
from services.reloader.settings import ReloaderSettings
from services.unsealer.settings import UnsealerSettings
from services.verify.settings import VerifySettings
from shared.cli_help import epilog_for, settings_rows
from shared.settings import ServiceSettings

COMMANDS: list[tuple[str, type[ServiceSettings]]] = [
    ("reloader", ReloaderSettings),
    ("distributor", DistributorSettings),
    ("verify", VerifySettings),
    ("status", VerifySettings),
    ("unsealer", UnsealerSettings),
]


def _help(command: str) -> str:
    parser, _ = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text: str = subparsers.choices[command].format_help()
    return text


@pytest.mark.parametrize(("command", "settings_cls"), COMMANDS)
def test_help_lists_every_setting(command: str, settings_cls: type[ServiceSettings]) -> None:
    text = _help(command)
    missing = [name for name, _, _ in settings_rows(settings_cls) if name not in text]
    assert missing == []


def test_the_epilog_gives_default_and_meaning_and_keeps_one_line_per_setting() -> None:
    text = _help("distributor")
    assert "DISTRIBUTOR_LAG_TIMEOUT (default 300.0): Seconds the leader waits" in text
    assert "\n  DISTRIBUTOR_MEMBER_BOUND (default 120.0): " in text
    assert "Exit status: 0 ok" in text


def test_epilog_for_is_plain_text_in_field_order() -> None:
    text = epilog_for(ReloaderSettings, intro="Intro.", exit_codes="0 ok.")
    names = [line.split()[0] for line in text.splitlines() if line.startswith("  ")]
    assert names == [name for name, _, _ in settings_rows(ReloaderSettings)]
    assert text.startswith("Intro.\n")
    assert text.endswith("Exit status: 0 ok.")
