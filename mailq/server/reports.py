"""The MAILQ v2 report bodies as pure generators of lines (MQ2-REF 9.1-9.6).

Each generator takes a :class:`~mailq.server.views.QueueView` and ``now`` (an integer time_t)
and yields body lines as ``str`` without their LF. Nothing here does I/O. Group and
thread lists are snapshotted as lists of references when a report starts, so the
scheduler may change its state between the chunks the server streams; a thread emptied
meanwhile prints ``N=0 ... QA=-1s`` rather than failing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from mailq.server.views import GroupView, ProcView, QueueView, ThreadView
from spool.timefmt import saytime

__all__ = [
    "format_thread_line",
    "short_report",
    "snmp_report",
    "thread_detail_report",
    "threads2_report",
    "threads_report",
    "trailer_lines",
]

_TAB_THRESHOLDS = (15, 23, 31, 39)
_CHANNEL_WAIT = 2
_RING_WAIT = 1
_GLOBAL_WAIT = 3
_TAB = "\t"


def _tabs(width: int) -> str:
    if width >= _TAB_THRESHOLDS[-1]:
        return " "
    return "\t" * sum(1 for limit in _TAB_THRESHOLDS if width < limit)


_PADS: Final = tuple(_tabs(width) for width in range(_TAB_THRESHOLDS[-1] + 1))
_CACHE_LIMIT: Final = 65536
_TABLE: Final = 1000
_LEFT3: Final = tuple(f"{i:<3d}" for i in range(_TABLE))  # %-3d, precomputed
_LEFT2: Final = tuple(f"{i:<2d}" for i in range(_TABLE))

_ages: dict[int, str] = {}
_names: dict[tuple[str, str, int], str] = {}


def _bytelen(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def _padding(prefix: str) -> str:
    """TABs after a THREADS name: 4, 3, 2, 1 below 15, 23, 31, 39 bytes, else a space.

    The width counts the name's bytes plus 7 (the C code's column arithmetic).
    """
    width = _bytelen(prefix) + 7
    return _PADS[width] if width < len(_PADS) else " "


def _age(seconds: int) -> str:
    """``saytime`` memoised: a report prints the same ages over and over."""
    text = _ages.get(seconds)
    if text is None:
        if len(_ages) >= _CACHE_LIMIT:
            _ages.clear()
        text = _ages[seconds] = saytime(seconds)
    return text


def _proc_parts(thread: ThreadView, procs: Sequence[ProcView], now: int) -> list[str]:
    parts: list[str] = []
    if thread.thrkids != len(procs):
        parts.append(f"Kids={thread.thrkids}/{len(procs)}")
    parts.append("P={" + ",".join([str(p.pid) for p in procs]) + "}")
    parts.append("HA={" + ",".join([str(now - p.hungertime) for p in procs]) + "}s")
    fed = [str(now - p.feedtime) if p.feedtime else "never" for p in procs]
    parts.append("FA={" + ",".join(fed) + "}s")
    parts.append("OF={" + ",".join([str(p.overfed) for p in procs]) + "}")
    parts.append("S={" + ",".join([p.state_name for p in procs]) + "}")
    parts.append(f"UF={thread.unfed}")
    return parts


def _detail(thread: ThreadView, now: int, sep: str) -> str:
    """The alternatives a/b/c and ``QA=`` (MQ2-REF 9.1 steps 2-3), each led by ``sep``."""
    oldest = thread.oldest_mtime
    # ZMailer ages from min(oldest mtime, now + 1): future-dated mail shows QA=-1s
    qa = "-1s" if oldest is None else _age(now - min(oldest, now + 1))
    procs = thread.procs()
    if procs:
        return sep + sep.join(_proc_parts(thread, procs, now)) + sep + "QA=" + qa
    wakeup = thread.wakeup
    if wakeup > now:
        return f"{sep}W={wakeup - now}s{sep}QA={qa}"
    pending = thread.pending
    if pending:
        return f"{sep}pend={pending}{sep}QA={qa}"
    return f"{sep}QA={qa}"


def _wait_suffix(thread: ThreadView) -> str:
    for first in thread.vertices():
        waiting = first.waiting_for
        if waiting == _CHANNEL_WAIT:
            return " channelwait"
        if waiting == _RING_WAIT:
            return " threadwait"
        return ""
    return ""


def _threads_detail(thread: ThreadView, now: int) -> str:
    """``N=%-3d R=%-3d A=%-2d``, the detail and the wait suffix."""
    n, r, a = thread.jobs, thread.rcpts, thread.attempts
    return (
        f"N={_LEFT3[n] if 0 <= n < _TABLE else f'{n:<3d}'}"
        f" R={_LEFT3[r] if 0 <= r < _TABLE else f'{r:<3d}'}"
        f" A={_LEFT2[a] if 0 <= a < _TABLE else f'{a:<2d}'}"
        f"{_detail(thread, now, ' ')}{_wait_suffix(thread)}"
    )


def _thread_name(thread: ThreadView) -> str:
    """``    channel/host/withhost`` and its padding, built once per thread name."""
    key = (thread.channel, thread.host, thread.withhost)
    name = _names.get(key)
    if name is None:
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        prefix = f"    {key[0]}/{key[1]}/{key[2]}"
        name = _names[key] = prefix + _padding(prefix)
    return name


def format_thread_line(thread: ThreadView, now: int) -> str:
    """One ``SHOW QUEUE THREADS`` thread line (4 spaces, name, padding, detail)."""
    return _thread_name(thread) + _threads_detail(thread, now)


def _group_header(group: GroupView) -> str:
    return f"{group.clause_channel}/{group.clause_host}/{group.withhost}"


def _group_summary(group: GroupView, walked: int, msgs: int, procs: int) -> str:
    """``Threads:`` ... ``Tlim:``; ``walked`` threads holding ``msgs`` vertices and
    ``procs`` TA processes were seen (bracketed ``/%d`` when they differ)."""
    counted = procs + group.idle_list_length
    line = f"\tThreads: {group.thread_count:4d}"
    if walked != group.thread_count:
        line += f"/{walked}"
    line += f" Msgs: {msgs:5d} Procs: {group.proc_count:3d}"
    if counted != group.proc_count:
        line += f"/{counted}"
    line += f" Idle: {group.idle_count:3d}"
    if group.idle_list_length != group.idle_count:
        line += f"/{group.idle_list_length}"
    return (
        line
        + f" Plim: {group.maxring:3d} Flim: {group.overfeed:3d} Tlim: {group.maxthr}"
    )


def trailer_lines(view: QueueView, now: int, *, snmp: bool = False) -> list[str]:
    """The two global summary lines (MQ2-REF 9.2; ``Uptime: N sec`` for SNMP)."""
    up = now - view.start_time
    uptime = f"{up} sec" if snmp else saytime(up)
    first = (
        f"Kids: {view.kids}  Idle: {view.idle:2d}  Msgs: {view.msgs:3d}  "
        f"Thrds: {view.total_threads:3d}  Rcpnts: {view.total_vertices:4d}  "
        f"Uptime: {uptime}"
    )
    c = view.counters
    stored_msgs = c.get("SC.StoredMessages-G")
    stored_rcpts = c.get("SC.StoredRecipients-G")
    second = (
        f"Msgs in {c.get('SC.ReceivedMessages')} out {c.get('SC.TransmittedMessages')}"
        f" stored {stored_msgs} "
    )
    if view.msgs != stored_msgs:
        second += f"({view.msgs}) "
    second += (
        f"Rcpnts in {c.get('SC.ReceivedRecipients')}"
        f" out {c.get('SC.TransmittedRecipients')} stored {stored_rcpts}"
    )
    if view.total_recipients != stored_rcpts:
        second += f" ({view.total_recipients})"
    return [first, second]


def threads_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW QUEUE THREADS``: groups, thread lines, group summaries, trailer."""
    for group in list(view.groups()):
        threads = list(group.threads())
        yield _group_header(group)
        msgs = procs = 0
        for thread in threads:
            msgs += thread.jobs
            procs += len(thread.procs())
            yield _thread_name(thread) + _threads_detail(thread, now)
        yield _group_summary(group, len(threads), msgs, procs)
    yield from trailer_lines(view, now)


def short_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW QUEUE SHORT``: THREADS without the thread lines."""
    for group in list(view.groups()):
        threads = list(group.threads())
        yield _group_header(group)
        msgs = sum([t.jobs for t in threads])
        procs = sum([len(t.procs()) for t in threads])
        yield _group_summary(group, len(threads), msgs, procs)
    yield from trailer_lines(view, now)


def threads2_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW QUEUE THREADS2``: one TAB-separated line per thread, nothing else; then
    a line per destination with held mail (``pend=Held``; none without holds)."""
    for group in list(view.groups()):
        for thread in list(group.threads()):
            yield (
                f"{thread.channel}\t{thread.host}\tN={thread.jobs}\tR={thread.rcpts}"
                f"\tA={thread.attempts}{_detail(thread, now, _TAB)}"
            )
    for held in list(view.held_threads()):
        yield (
            f"{held.channel}\t{held.host}\tN={held.jobs}\tR={held.rcpts}"
            f"\tA=0{_detail(held, now, _TAB)}"
        )


def snmp_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW SNMP``: the two trailer lines, uptime in plain seconds."""
    yield from trailer_lines(view, now, snmp=True)


def _clean_message(message: str | None) -> str:
    if not message:
        return ""
    if "\t" in message or "\n" in message:  # B21 fix; LF never leaks
        return message.replace("\t", " ").replace("\n", "\r")
    return message


_VERTEX_STATES: Final = {_CHANNEL_WAIT: "channel", _GLOBAL_WAIT: ""}  # else "thread"


def thread_detail_report(
    view: QueueView, channel: str, host: str, now: int
) -> Iterator[str]:
    """``SHOW THREAD ch host``: the ``#`` line and one row per recipient (MQ2-REF 9.6).

    An unknown pair gives an empty body (B19 keep). Field 9 is ``retry in ...`` while
    the thread waits for its wakeup, else ``channel``, ``""`` (global or thread limit)
    or ``thread`` (B20 keep: also when not waiting at all).
    """
    thread = view.find_thread(channel, host)
    held = view.find_held(channel, host)
    if thread is None:
        if held is not None:  # only held mail: its own '#' line, rows in state held
            yield f"#{held.channel}/{held.host}/{held.withhost}  " + _threads_detail(
                held, now
            )
            yield from _held_rows(held)
        return
    yield (
        f"#{thread.channel}/{thread.host}/{thread.withhost}  "
        + _threads_detail(thread, now)
    )
    yield from _thread_rows(thread, now)
    if held is not None:
        yield from _held_rows(held)


def _held_rows(held: ThreadView) -> Iterator[str]:
    """Rows of held recipients: field 9 ``held``, the diagnostic says by whom, why."""
    for vertex in list(held.vertices()):
        after = (
            f"\t{vertex.expiry}\t0\t{vertex.lastfeed}\t{vertex.attempts}"
            f"\theld\t{_clean_message(vertex.message)}"
        )
        for index, offset in enumerate(vertex.offsets):
            yield f"{vertex.path}\t{index}\t{vertex.sender}\t{offset}{after}"


def _thread_rows(thread: ThreadView, now: int) -> Iterator[str]:
    wakeup = thread.wakeup
    retry = f"retry in {saytime(wakeup - now)}" if wakeup > now else None
    states = _VERTEX_STATES
    wake = f"\t{wakeup}\t"
    for vertex in list(thread.vertices()):
        state = retry if retry is not None else states.get(vertex.waiting_for, "thread")
        after = (
            f"\t{vertex.expiry}{wake}{vertex.lastfeed}\t{vertex.attempts}"
            f"\t{state}\t{_clean_message(vertex.message)}"
        )
        path, sender, offsets = vertex.path, vertex.sender, vertex.offsets
        if len(offsets) == 1:
            yield f"{path}\t0\t{sender}\t{offsets[0]}{after}"
            continue
        for index, offset in enumerate(offsets):
            yield f"{path}\t{index}\t{sender}\t{offset}{after}"
