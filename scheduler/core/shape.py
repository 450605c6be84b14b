"""``SHOW QUEUE SHAPE``'s table (Postfix qshape's, server side), pure.

Rows are destinations (host, domain, sender domain or channel), columns recipients by
age in geometric minute buckets; the first row is the total. The daemon feeds a
:class:`ShapeTable` from the core's kept histograms (per arrival minute, per thread:
:meth:`scheduler.core.control.Control.age_histograms`) in slices, or message by
message for sender domains.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from scheduler.core.model import Thread

__all__ = ["SHAPE_BY", "SHAPE_MINUTES", "ShapeTable", "domain_of"]

SHAPE_MINUTES = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
SHAPE_BY = ("host", "domain", "sender-domain", "channel")
_EDGES = [m * 60 for m in SHAPE_MINUTES]


def domain_of(host: str) -> str:
    """The last two labels of a host name (a bracketed literal stays whole)."""
    parts = host.strip("[]").split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else host


def _column(age: int) -> int:
    return bisect.bisect_right(_EDGES, age) + 1


class ShapeTable:
    """Recipient counts by row key and age column, at ``now``."""

    def __init__(self, by: str, now: int) -> None:
        self.by = by
        self.now = now
        self.rows: dict[str, list[int]] = {}
        self._thread_rows: dict[Thread, list[int]] = {}

    def _row(self, key: str) -> list[int]:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * (len(_EDGES) + 2)
        return row

    def add(self, key: str, age: int, n: int) -> None:
        """``n`` recipients of ``age`` seconds under ``key``."""
        row = self._row(key)
        row[0] += n
        row[_column(age)] += n

    def add_minute(self, minute: int, counts: Iterable[tuple[Thread, int]]) -> None:
        """Recipients per thread that arrived in ``minute`` (``mtime // 60``): their age
        is taken from the middle of the minute."""
        col = _column(self.now - minute * 60 - 30)
        rows = self._thread_rows
        by = self.by
        for th, n in counts:
            row = rows.get(th)
            if row is None:
                key = th.host if by == "host" else th.channel
                if by == "domain":
                    key = domain_of(th.host)
                row = rows[th] = self._row(key)
            row[0] += n
            row[col] += n

    def lines(self, top: int) -> list[str]:
        """The header, the total and the ``top`` rows by recipients (TAB-separated)."""
        header = "\t".join(["", "T", *map(str, SHAPE_MINUTES), f"{SHAPE_MINUTES[-1]}+"])
        total = [0] * (len(_EDGES) + 2)
        for counts in self.rows.values():
            for i, c in enumerate(counts):
                total[i] += c
        rows = sorted(self.rows.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
        lines = [header, "\t".join(["TOTAL", *map(str, total)])]
        lines.extend("\t".join([k, *map(str, c)]) for k, c in rows if c[0])
        return lines
