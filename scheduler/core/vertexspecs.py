"""Pending recipients of a control file grouped into vertex specifications (pure; no
scheduler state), shared by the core's loading and the startup load workers
(:mod:`scheduler.daemon.loadworker`), which import only this and the spool parser.

* Only recipients with status ``' '`` are kept.
* Channel and host are lower-cased (and interned: a million recipients share a few
  thousand names).
* Recipients are sorted by their lower-cased quad; consecutive ones with equal channel and
  host (cut as ZMailer cuts them: quotes and ``-`` kept, ``((h))`` is ``h``) form one
  vertex, in ascending quad order; inside a vertex the members are stored in
  **descending** order, the later of two equal lines first (S49 keep).
* A recipient whose host ZMailer cannot cut rides along with the vertex it sorts into,
  as in ZMailer; nothing is bounced for its form (the agent decides).
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

from scheduler.core.model import DEFAULT_NOTIFY, RcptExtra
from spool.controlfile import DEFAULT_NOTIFY as _PARSER_DEFAULT, SummaryRow as Row
from spool.quads import zm_destination

if TYPE_CHECKING:
    from spool.controlfile import ControlFile

__all__ = [
    "Row",
    "Split",
    "VertexSpec",
    "intern_name",
    "split_recipients",
]


_names: dict[str, str] = {}


def intern_name(raw: str) -> str:
    """Lower-case and intern a channel or host name (cached)."""
    name = _names.get(raw)
    if name is None:
        low = raw.lower()
        name = sys.intern(raw if low == raw else low)  # one copy when already lower
        if len(_names) < 1_000_000:
            _names[raw] = name
    return name


@dataclass(slots=True)
class VertexSpec:
    channel: str
    host: str
    offsets: array[int] | int  # an int for a single recipient
    extra: tuple[RcptExtra, ...] | None
    count: int


Split = tuple[list[VertexSpec], list[Row], int]
"""``(vertex specs, recipients with a bad host, default header offset)``."""


def _extra_for(rows: list[Row], hdr: int) -> tuple[RcptExtra, ...] | None:
    for r in rows:
        notify = r[4]
        if (
            r[5] != hdr
            or r[6] != -1
            or (notify is not _PARSER_DEFAULT and notify != DEFAULT_NOTIFY)
        ):
            return tuple((r[4], r[5], r[6]) for r in rows)
    return None


def _lower_quad(row: Row) -> str:
    return row[3].lower()


_quad = itemgetter(3)


def _ascending(rows: list[Row]) -> list[Row]:
    """Sorted by lower-cased quad, ascending; equal quads keep file order (ZMailer's
    qsort of glibc is a stable merge sort)."""
    quads = "\n".join([r[3] for r in rows])
    if quads.lower() == quads:  # the usual case: sort on the quad itself, in C
        return sorted(rows, key=_quad)
    return sorted(rows, key=_lower_quad)


_SPECIAL = ('"', "\\", "(", "\t")


def destination(quad: str) -> tuple[str, str, bool]:
    """``(channel, host, ok)`` as ZMailer's scheduler cuts the quad (see
    :func:`spool.quads.zm_destination`); plain quads without a slow look."""
    if quad[:1] != " ":
        for c in _SPECIAL:
            if c in quad:
                break
        else:
            words = quad.split(" ", 2)
            if len(words) == 3 and words[0] and words[1]:
                return intern_name(words[0]), intern_name(words[1]), True
    ch, host, ok = zm_destination(quad)
    return intern_name(ch), intern_name(host), ok


def _groups(rows: list[Row]) -> list[tuple[str, str, list[Row]]]:
    """The vertices of ZMailer's vtxprep: rows sorted ascending, a new vertex wherever
    channel or host changes; a row whose host ZMailer cannot cut joins the vertex it
    sorts into (the first vertex is then named ``" "/" "``, the real program's start
    value, and a cut-less last row names the last vertex). Members are in descending
    order (the later of two equal lines first)."""
    out: list[tuple[str, str, list[Row]]] = []
    last = (" ", " ")
    start = 0
    ch = host = " "
    for i, r in enumerate(rows):
        ch, host, ok = destination(r[3])
        if not ok:
            continue
        if (ch, host) != last:
            if i != start:
                out.append((last[0], last[1], rows[start:i][::-1]))
            start = i
            last = (ch, host)
    out.append((ch, host, rows[start:][::-1]))
    return out


def split_recipients(control: ControlFile) -> Split:
    """Return ``(vertex specs, [], default header offset)`` (the second item is kept
    for the load workers' records: no recipient is set apart any more, ZMailer queues
    every one).

    A control object prepared elsewhere (:class:`scheduler.daemon.loadworker.PreparedControl`)
    carries its split already in ``prepared_split``."""
    prepared: Split | None = getattr(control, "prepared_split", None)
    if prepared is not None:
        return prepared
    pending: list[Row] = control.pending_summary()
    if not pending:
        return [], [], -1
    hdr = pending[0][5]
    specs: list[VertexSpec] = []
    for channel, host, members in _groups(_ascending(pending)):
        offsets: array[int] | int = (
            members[0][0] if len(members) == 1 else array("i", [r[0] for r in members])
        )
        specs.append(
            VertexSpec(channel, host, offsets, _extra_for(members, hdr), len(members))
        )
    return specs, [], hdr
