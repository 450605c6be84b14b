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


_quad = itemgetter(3)
_SPECIAL = ('"', "\\", "(", "\t")

Cut = tuple[str, str, bool]


def _plain_cut(low: str) -> Cut:
    words = low.split(" ", 2)
    if len(words) == 3 and words[0] and words[1]:
        return words[0], words[1], True
    return zm_destination(low)


def _sorted_cuts(rows: list[Row]) -> tuple[list[Row], list[Cut]]:
    """The rows sorted as ZMailer sorts them (by the lower-cased quad, ascending; equal
    quads keep file order: glibc's qsort is a stable merge sort), with each row's
    ``(channel, host, ok)`` as ZMailer cuts it (:func:`spool.quads.zm_destination`).
    Without quotes, escapes, lists, TABs or leading blanks anywhere (the usual case)
    a quad is cut by one ``split``."""
    joined = "\n".join([r[3] for r in rows])
    low = joined.lower()
    if low == joined:
        order = sorted(rows, key=_quad)
        lows = [r[3] for r in order]
    else:
        keys = low.split("\n")
        idx = sorted(range(len(rows)), key=keys.__getitem__)
        order = [rows[i] for i in idx]
        lows = [keys[i] for i in idx]
    plain = joined[:1] != " " and "\n " not in joined
    if plain:
        for c in _SPECIAL:
            if c in joined:
                plain = False
                break
    cut = _plain_cut if plain else zm_destination
    return order, [cut(q) for q in lows]


def _groups(rows: list[Row], cuts: list[Cut]) -> list[tuple[str, str, list[Row]]]:
    """The vertices of ZMailer's vtxprep over sorted rows: a new vertex wherever
    channel or host changes; a row whose host ZMailer cannot cut joins the vertex it
    sorts into (the first vertex is then named ``" "/" "``, the real program's start
    value, and a cut-less last row names the last vertex). Members are in descending
    order (the later of two equal lines first)."""
    out: list[tuple[str, str, list[Row]]] = []
    last = (" ", " ")
    start = 0
    ch = host = " "
    for i, (ch, host, ok) in enumerate(cuts):
        if not ok:
            continue
        if ch != last[0] or host != last[1]:
            if i != start:
                out.append((last[0], last[1], rows[start:i][::-1]))
            start = i
            last = (ch, host)
    out.append((ch, host, rows[start:][::-1]))
    return out


def split_recipients(control: ControlFile, pending: list[Row] | None = None) -> Split:
    """Return ``(vertex specs, [], default header offset)`` (the second item is kept
    for the load workers' records: no recipient is set apart any more, ZMailer queues
    every one).

    A control object prepared elsewhere (:class:`scheduler.daemon.loadworker.PreparedControl`)
    carries its split already in ``prepared_split``."""
    prepared: Split | None = getattr(control, "prepared_split", None)
    if prepared is not None:
        return prepared
    if pending is None:  # ``pending``: the caller's ``pending_summary()``, if made
        pending = control.pending_summary()
    if not pending:
        return [], [], -1
    hdr = pending[0][5]
    if len(pending) == 1:
        r = pending[0]
        quad = r[3]
        plain = (  # no quote, escape, list or TAB (_SPECIAL)
            quad[:1] != " "
            and '"' not in quad
            and "\\" not in quad
            and "(" not in quad
            and "\t" not in quad
        )
        ch, host, _ = _plain_cut(quad.lower()) if plain else zm_destination(quad)
        spec = VertexSpec(
            intern_name(ch), intern_name(host), r[0], _extra_for(pending, hdr), 1
        )
        return [spec], [], hdr
    specs: list[VertexSpec] = []
    for channel, host, members in _groups(*_sorted_cuts(pending)):
        offsets: array[int] | int = (
            members[0][0] if len(members) == 1 else array("i", [r[0] for r in members])
        )
        specs.append(
            VertexSpec(
                intern_name(channel),
                intern_name(host),
                offsets,
                _extra_for(members, hdr),
                len(members),
            )
        )
    return specs, [], hdr
