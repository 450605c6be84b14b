"""Records and tables of ``mailqctl``: the operator replies parsed into dicts (``--json``)
and printed as aligned columns on a terminal (docs/client.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BODY_FIELDS",
    "confirm_token",
    "records",
    "table",
]

BODY_FIELDS: dict[str, tuple[str, ...]] = {
    "msgs": (
        "spool_id",
        "path",
        "state",
        "age",
        "size",
        "sender",
        "recipients",
        "destinations",
    ),
    "ops": (
        "op",
        "time",
        "user",
        "peer",
        "command",
        "messages",
        "recipients",
        "undone",
    ),
    "rules": ("rule", "selector", "until", "limits", "reason", "user", "created"),
}
_INTS = {"age", "size", "recipients", "time", "messages", "until", "created"}
_TOKEN = re.compile(r"CONFIRM (\S+)")
_OP = re.compile(r"\bop=(\S+)")


def confirm_token(line: str) -> str | None:
    """The token of a preview's status line, None when the line is not a preview."""
    m = _TOKEN.search(line)
    return m.group(1) if m else None


def op_id(line: str) -> str | None:
    m = _OP.search(line)
    return m.group(1) if m else None


def records(kind: str, lines: Sequence[str]) -> list[dict[str, Any]]:
    """TAB-separated body lines as dicts named by ``BODY_FIELDS[kind]``."""
    if kind in ("msg", "explain"):
        return [_keyed(lines)]
    if kind == "shape":
        return _shape(lines)
    names = BODY_FIELDS[kind]
    out = []
    for line in lines:
        values = line.split("\t")
        rec: dict[str, Any] = {}
        for name, value in zip(names, values, strict=False):
            rec[name] = int(value) if name in _INTS and value.isdigit() else value
        out.append(rec)
    return out


def _keyed(lines: Sequence[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    rcpts: list[dict[str, Any]] = []
    for line in lines:
        key, _, value = line.partition("\t")
        key = key.strip().rstrip(":")
        if key == "rcpt":
            f = value.split("\t")
            f += [""] * (8 - len(f))
            rcpts.append(
                {
                    "channel": f[0],
                    "host": f[1],
                    "address": f[2],
                    "status": f[3],
                    "attempts": int(f[4]) if f[4].isdigit() else 0,
                    "next_retry": int(f[5]) if f[5].isdigit() else 0,
                    "expiry": int(f[6]) if f[6].isdigit() else 0,
                    "diagnostic": f[7],
                }
            )
        elif key in rec:
            prev = rec[key]
            rec[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            rec[key] = value
    if rcpts:
        rec["recipients"] = rcpts
    return rec


def _shape(lines: Sequence[str]) -> list[dict[str, Any]]:
    if not lines:
        return []
    head = lines[0].split("\t")[1:]
    out = []
    for line in lines[1:]:
        values = line.split("\t")
        out.append(
            {
                "destination": values[0],
                **{h: int(v) for h, v in zip(head, values[1:], strict=False)},
            }
        )
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [
        max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(len(headers))
    ]
    out = []
    for r in cells:
        parts = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        out.append("  ".join(parts).rstrip())
    return out
