"""Help text generated from the settings classes, so ``--help`` cannot drift from the code.

The same rows feed ``scripts/config_reference.py`` (the README's configuration reference) and
each command's ``--help`` epilog: every variable, its default and its field description.
"""

from __future__ import annotations

import argparse
import textwrap

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.settings import NotifySettings, ServiceSettings, env_name


def default_text(field_name: str, field: FieldInfo) -> str:
    """A field's default as an operator would write it in the environment."""
    default = field.default
    if field_name.endswith("mode") and isinstance(default, int) and not isinstance(default, bool):
        return f"0{default:o}"  # file modes read as octal
    if field.default_factory is not None:
        return "(computed)"
    if default is PydanticUndefined:
        return "(required)"
    if default is None:
        return "(unset)"
    if isinstance(default, tuple | list):
        return ",".join(str(v) for v in default) or "(empty)"
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default) or "(empty)"


def settings_rows(
    settings_cls: type[ServiceSettings], *, common: bool = True
) -> list[tuple[str, str, str]]:
    """(variable, default, description) per field; ``common=False`` leaves out the fields every
    service shares (:class:`ServiceSettings`) and, but for that class itself, the notification
    settings (:class:`NotifySettings`), which the reference lists once."""
    shared = set() if common else set(ServiceSettings.model_fields)
    if not common and settings_cls is not NotifySettings:
        shared |= set(NotifySettings.model_fields)
    return [
        (
            env_name(field, field_name),
            default_text(field_name, field),
            (field.description or "").strip(),
        )
        for field_name, field in settings_cls.model_fields.items()
        if field_name not in shared
    ]


def epilog_for(settings_cls: type[ServiceSettings], intro: str, exit_codes: str) -> str:
    """The ``--help`` epilog of a command: ``intro``, every setting, then ``exit_codes``.

    Meant for a parser using :class:`HelpFormatter` (``certflow`` sets it on every subcommand),
    which keeps the line breaks and wraps long lines.
    """
    lines = [
        intro.strip(),
        "",
        "Settings (environment variables; each can also be given as <NAME>_FILE, the path of a "
        "file holding the value):",
    ]
    for name, default, description in settings_rows(settings_cls):
        lines.append(f"  {name} (default {default}): {description}")
    lines += ["", f"Exit status: {exit_codes.strip()}"]
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs and wraps each long line; indented lines
    (one setting each) continue further indented."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for line in text.splitlines():
            if not line.strip():
                out.append("")
                continue
            lead = line[: len(line) - len(line.lstrip())]
            out.append(
                textwrap.fill(
                    line.strip(),
                    width,
                    initial_indent=indent + lead,
                    subsequent_indent=indent + lead + ("    " if lead else ""),
                    break_on_hyphens=False,
                    break_long_words=False,
                )
            )
        return "\n".join(out)
