"""Pending recipients of a control file grouped into vertex specifications (pure; no
scheduler state), shared by the core's loading and the startup load workers
(:mod:`scheduler.daemon.loadworker`), which import only this and the spool parser.

* Only recipients with status ``' '`` are kept.
* Channel and host are lower-cased (and interned: a million recipients share a few
  thousand names).
* Recipients are sorted by their lower-cased quad; consecutive ones with equal channel and
  host form one vertex. Vertices come out in ascending (channel, host) order; inside a
  vertex the members are stored in **descending** quad order (S49 keep).
* A recipient whose host cannot be parsed (``host_ok`` False) is returned separately so that
  the core can bounce it (S33 fix) instead of dropping it silently.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

from scheduler.core.model import DEFAULT_NOTIFY, RcptExtra
from spool.controlfile import DEFAULT_NOTIFY as _PARSER_DEFAULT, SummaryRow as Row

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


def _descending(rows: list[Row]) -> list[Row]:
    """Sorted by lower-cased quad, descending; equal quads keep file order."""
    quads = "\n".join([r[3] for r in rows])
    if quads.lower() == quads:  # the usual case: sort on the quad itself, in C
        return sorted(rows, key=_quad, reverse=True)
    return sorted(rows, key=_lower_quad, reverse=True)


def split_recipients(control: ControlFile) -> Split:
    """Return ``(vertex specs, recipients with a bad host, default header offset)``.

    A control object prepared elsewhere (:class:`scheduler.daemon.loadworker.PreparedControl`)
    carries its split already in ``prepared_split``."""
    prepared: Split | None = getattr(control, "prepared_split", None)
    if prepared is not None:
        return prepared
    pending: list[Row] = control.pending_summary()
    bad: list[Row] = []
    for r in pending:
        if not r[2]:
            bad = [r for r in pending if not r[2]]
            pending = [r for r in pending if r[2]]
            break
    if not pending:
        return [], bad, -1
    first = pending[0]
    hdr = first[5]
    if len(pending) == 1:
        spec = VertexSpec(
            intern_name(first[1]),
            intern_name(first[2]),
            first[0],
            _extra_for(pending, hdr),
            1,
        )
        return [spec], bad, hdr
    channel, host = first[1], first[2]
    for r in pending:
        if r[1] != channel or r[2] != host:
            break
    else:
        # the common case: one destination
        members = _descending(pending)
        spec = VertexSpec(
            intern_name(channel),
            intern_name(host),
            array("i", [r[0] for r in members]),
            _extra_for(members, hdr),
            len(members),
        )
        return [spec], bad, hdr
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in _descending(pending):
        key = (intern_name(r[1]), intern_name(r[2]))
        lst = groups.get(key)
        if lst is None:
            groups[key] = [r]
        else:
            lst.append(r)
    specs: list[VertexSpec] = []
    for key in sorted(groups):
        members = groups[key]  # already in descending quad order
        offsets: array[int] | int = (
            members[0][0] if len(members) == 1 else array("i", [r[0] for r in members])
        )
        specs.append(
            VertexSpec(key[0], key[1], offsets, _extra_for(members, hdr), len(members))
        )
    return specs, bad, hdr
