"""From a parsed control file to vertex specifications (SCHED-REF 2.1, 2.2, 3.4 step 8).

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
from typing import TYPE_CHECKING

from spool.controlfile import DEFAULT_NOTIFY as _PARSER_DEFAULT

from .model import DEFAULT_NOTIFY, RcptExtra

if TYPE_CHECKING:
    from spool.controlfile import ControlFile, Recipient

__all__ = ["VertexSpec", "intern_name", "split_recipients"]

_names: dict[str, str] = {}


def intern_name(raw: str) -> str:
    """Lower-case and intern a channel or host name (cached)."""
    name = _names.get(raw)
    if name is None:
        name = sys.intern(raw.lower())
        if len(_names) < 1_000_000:
            _names[raw] = name
    return name


@dataclass(slots=True)
class VertexSpec:
    channel: str
    host: str
    offsets: array[int]
    extra: tuple[RcptExtra, ...] | None
    count: int


def _extra_for(rcpts: list[Recipient], hdr: int) -> tuple[RcptExtra, ...] | None:
    for r in rcpts:
        if (
            r.header_offset != hdr
            or r.dsn_offset != -1
            or (r.notify is not _PARSER_DEFAULT and r.notify != DEFAULT_NOTIFY)
        ):
            return tuple((r.notify, r.header_offset, r.dsn_offset) for r in rcpts)
    return None


def _quad_key(r: Recipient) -> str:
    return r.quad.lower()


def split_recipients(
    control: ControlFile,
) -> tuple[list[VertexSpec], list[Recipient], int]:
    """Return ``(vertex specs, recipients with a bad host, default header offset)``."""
    recs = control.recipients
    pending = [r for r in recs if r.status == " " and r.host_ok and r.host]
    bad: list[Recipient] = []
    if len(pending) != len(recs):
        bad = [r for r in recs if r.status == " " and not (r.host_ok and r.host)]
    if not pending:
        return [], bad, -1
    hdr = pending[0].header_offset
    if len(pending) == 1:
        r = pending[0]
        spec = VertexSpec(
            intern_name(r.channel),
            intern_name(r.host),
            array("i", (r.offset,)),
            _extra_for(pending, hdr),
            1,
        )
        return [spec], bad, hdr
    pending.sort(key=_quad_key, reverse=True)
    hi, lo = pending[0], pending[-1]
    prefix = f"{lo.channel} {lo.host} ".lower()
    if (
        hi.channel == lo.channel
        and hi.host == lo.host
        and hi.quad.lower().startswith(prefix)
        and lo.quad.lower().startswith(prefix)
    ):
        # the common case: one destination; everything sorted between hi and lo shares it
        spec = VertexSpec(
            intern_name(lo.channel),
            intern_name(lo.host),
            array("i", [r.offset for r in pending]),
            _extra_for(pending, hdr),
            len(pending),
        )
        return [spec], bad, hdr
    groups: dict[tuple[str, str], list[Recipient]] = {}
    for r in pending:
        key = (intern_name(r.channel), intern_name(r.host))
        lst = groups.get(key)
        if lst is None:
            groups[key] = [r]
        else:
            lst.append(r)
    specs: list[VertexSpec] = []
    for key in sorted(groups):
        members = groups[key]  # already in descending quad order
        specs.append(
            VertexSpec(
                key[0],
                key[1],
                array("i", [r.offset for r in members]),
                _extra_for(members, hdr),
                len(members),
            )
        )
    return specs, bad, hdr
