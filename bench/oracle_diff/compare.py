"""Compare two daemons' replies, masking only what legitimately differs.

* Times: durations (``QA=3d22h``, ``W=316s``, ``retry in 2m51s``, ``expires in ...``) and
  epoch stamps (SHOW THREAD fields 4-6) may differ by :data:`TOLERANCE` seconds (the
  daemons start a moment apart and are asked one after the other); a duration printed
  with days and hours stands for the whole hour it truncates. ``Uptime`` is ignored.
* Orders ZMailer leaves to chance (hash order of clause groups, the order in which
  files were read from the directory and so the order of threads and of vertices in a
  thread): siblings of every indented block are compared as sorted lists.
* SHOW COUNTERS: the layout (names, blank lines) only; values are process-local.

Everything else must be equal byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["TOLERANCE", "canonical", "differences"]

TOLERANCE = 10
_TOKEN = re.compile(
    r"(?<![\w.])-?\d+[dhms](?:\d+[hms])*(?![\w.])|(?<![\w.])\d{9,}(?![\w.])"
)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_UPTIME = re.compile(r"Uptime: [^\n]*")


def _value(token: str) -> tuple[int, int]:
    """``(value, precision)`` of a time token."""
    if token.isdigit():
        return int(token), 1
    sign = -1 if token[0] == "-" else 1
    total = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([dhms])", token))
    precision = 3600 if "d" in token and "h" in token else 1
    if sign < 0:
        return -total - precision + 1, precision
    return total, precision


def _near(a: str, b: str) -> bool:
    (va, pa), (vb, pb) = _value(a), _value(b)
    return va - TOLERANCE < vb + pb and vb - TOLERANCE < va + pa


def _level(line: str) -> int:
    if not line[:1].isspace():
        return 0
    return 2 if line[:2] in ("\t ", "\t\t") else 1


Node = tuple[str, list["Node"]]


def _tree(lines: Iterable[str]) -> list[Node]:
    root: list[Node] = []
    stack: list[tuple[int, list[Node]]] = [(-1, root)]
    for line in lines:
        lvl = _level(line)
        while stack[-1][0] >= lvl:
            stack.pop()
        node: Node = (line, [])
        stack[-1][1].append(node)
        stack.append((lvl, node[1]))
    return root


def _skeleton(node: Node) -> str:
    return (
        _TOKEN.sub("#", node[0]) + "\x00" + "\x01".join(_skeleton(c) for c in node[1])
    )


def _flatten(nodes: list[Node], out: list[str]) -> None:
    for node in sorted(nodes, key=_skeleton):
        out.append(node[0])
        _flatten(node[1], out)


def canonical(key: str, text: str) -> list[str]:
    """The reply as lines in canonical order (see the module docstring)."""
    text = _UPTIME.sub("Uptime: *", text)
    lines = text.split("\n")
    if key == "SHOW COUNTERS":
        return [line.split(" ", 1)[0] for line in lines]
    if key == "SHOW QUEUE THREADS2":  # one line per thread (names may start blank)
        return sorted(lines, key=lambda line: _TOKEN.sub("#", line))
    out: list[str] = []
    _flatten(_tree(lines), out)
    return out


def _line_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if _TOKEN.sub("#", a) != _TOKEN.sub("#", b):
        return False
    return all(
        _near(x, y) for x, y in zip(_TOKEN.findall(a), _TOKEN.findall(b), strict=True)
    )


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Human-readable differences between two daemons' replies (empty: equal)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{key}: only in {'first' if key in a else 'second'}")
            continue
        la, lb = canonical(key, a[key]), canonical(key, b[key])
        if len(la) != len(lb):
            out.append(f"{key}: {len(la)} lines vs {len(lb)}")
        for x, y in zip(la, lb, strict=False):
            if not _line_equal(x, y):
                out.append(f"{key}:\n  - {x!r}\n  + {y!r}")
                break
    return out
