"""Rendering verify results: a table for people, JSON for machines."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.verify.checks import all_ok
from services.verify.result import Result


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def to_json(results: Sequence[Result], *, checked_at: datetime) -> str:
    doc = {
        "ok": all_ok(results),
        "checked_at": checked_at.isoformat(),
        "failed": sum(1 for r in results if not r.ok),
        "checks": [
            {
                "check": r.check,
                "outcome": r.outcome.value,
                "summary": r.summary,
                "next": r.next_step or None,
                "details": _jsonable(r.details),
            }
            for r in results
        ],
    }
    return json.dumps(doc, indent=2)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines or [""]


def to_table(results: Sequence[Result], *, width: int | None = None) -> str:
    width = width or max(100, shutil.get_terminal_size((120, 24)).columns)
    name_width = min(max((len(r.check) for r in results), default=10), 60)
    detail_width = max(30, width - name_width - 10)
    lines = [f"{'CHECK':<{name_width}}  {'RESULT':<6}  DETAIL"]
    for r in results:
        mark = "ok" if r.ok else "FAIL"
        wrapped = _wrap(r.summary, detail_width)
        lines.append(f"{r.check:<{name_width}}  {mark:<6}  {wrapped[0]}")
        lines.extend(f"{'':<{name_width}}  {'':<6}  {more}" for more in wrapped[1:])
        if r.next_step:
            for i, part in enumerate(_wrap("next: " + r.next_step, detail_width)):
                lines.append(f"{'':<{name_width}}  {'':<6}  {part if i == 0 else '  ' + part}")
    failed = sum(1 for r in results if not r.ok)
    lines.append("")
    lines.append(
        "verify: everything holds"
        if all_ok(results)
        else f"verify: {failed} of {len(results)} checks failed"
    )
    return "\n".join(lines)
