"""The MAILQ v2 report bodies as pure generators of lines (MQ2-REF 9.1-9.6).

Each generator takes a :class:`~mailq.view.QueueView` and ``now`` (an integer time_t)
and yields body lines as ``str`` without their LF. Nothing here does I/O. Group and
thread lists are snapshotted as lists of references when a report starts, so the
scheduler may change its state between the chunks the server streams; a thread emptied
meanwhile prints ``N=0 ... QA=-1s`` rather than failing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mailq.timefmt import saytime
from mailq.view import GroupView, QueueView, ThreadView

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


def _bytelen(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


def _padding(prefix: str) -> str:
    width = _bytelen(prefix) + 7
    if width >= _TAB_THRESHOLDS[-1]:
        return " "
    return "\t" * sum(1 for limit in _TAB_THRESHOLDS if width < limit)


def _detail(thread: ThreadView, now: int, sep: str) -> str:
    """The alternatives a/b/c and ``QA=`` (MQ2-REF 9.1 steps 2-3), each led by ``sep``."""
    parts: list[str] = []
    procs = thread.procs()
    if procs:
        if thread.thrkids != len(procs):
            parts.append(f"Kids={thread.thrkids}/{len(procs)}")
        parts.append("P={" + ",".join(str(p.pid) for p in procs) + "}")
        parts.append("HA={" + ",".join(str(now - p.hungertime) for p in procs) + "}s")
        parts.append(
            "FA={"
            + ",".join(str(now - p.feedtime) if p.feedtime else "never" for p in procs)
            + "}s"
        )
        parts.append("OF={" + ",".join(str(p.overfed) for p in procs) + "}")
        parts.append("S={" + ",".join(p.state_name for p in procs) + "}")
        parts.append(f"UF={thread.unfed}")
    elif thread.wakeup > now:
        parts.append(f"W={thread.wakeup - now}s")
    elif thread.pending:
        parts.append(f"pend={thread.pending}")
    oldest = thread.oldest_mtime
    parts.append("QA=" + ("-1s" if oldest is None else saytime(now - oldest)))
    return sep + sep.join(parts)


def _wait_suffix(thread: ThreadView) -> str:
    first = next(iter(thread.vertices()), None)
    if first is None:
        return ""
    if first.waiting_for == _CHANNEL_WAIT:
        return " channelwait"
    if first.waiting_for == _RING_WAIT:
        return " threadwait"
    return ""


def _threads_detail(thread: ThreadView, now: int) -> str:
    counts = f"N={thread.jobs:<3d} R={thread.rcpts:<3d} A={thread.attempts:<2d}"
    return counts + _detail(thread, now, " ") + _wait_suffix(thread)


def format_thread_line(thread: ThreadView, now: int) -> str:
    """One ``SHOW QUEUE THREADS`` thread line (4 spaces, name, padding, detail)."""
    prefix = f"    {thread.channel}/{thread.host}/{thread.withhost}"
    return prefix + _padding(prefix) + _threads_detail(thread, now)


def _threads2_line(thread: ThreadView, now: int) -> str:
    return (
        f"{thread.channel}\t{thread.host}\tN={thread.jobs}\tR={thread.rcpts}"
        f"\tA={thread.attempts}" + _detail(thread, now, "\t")
    )


def _group_header(group: GroupView) -> str:
    return f"{group.clause_channel}/{group.clause_host}/{group.withhost}"


def _group_summary(group: GroupView, threads: Sequence[ThreadView], msgs: int) -> str:
    walked = len(threads)
    counted = sum(len(t.procs()) for t in threads) + group.idle_list_length
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
        msgs = 0
        for thread in threads:
            msgs += thread.jobs
            yield format_thread_line(thread, now)
        yield _group_summary(group, threads, msgs)
    yield from trailer_lines(view, now)


def short_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW QUEUE SHORT``: THREADS without the thread lines."""
    for group in list(view.groups()):
        threads = list(group.threads())
        yield _group_header(group)
        yield _group_summary(group, threads, sum(t.jobs for t in threads))
    yield from trailer_lines(view, now)


def threads2_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW QUEUE THREADS2``: one TAB-separated line per thread, nothing else."""
    for group in list(view.groups()):
        for thread in list(group.threads()):
            yield _threads2_line(thread, now)


def snmp_report(view: QueueView, now: int) -> Iterator[str]:
    """``SHOW SNMP``: the two trailer lines, uptime in plain seconds."""
    yield from trailer_lines(view, now, snmp=True)


def _clean_message(message: str | None) -> str:
    if not message:
        return ""
    return message.replace("\t", " ").replace("\n", "\r")  # B21 fix; LF never leaks


def thread_detail_report(
    view: QueueView, channel: str, host: str, now: int
) -> Iterator[str]:
    """``SHOW THREAD ch host``: the ``#`` line and one row per recipient (MQ2-REF 9.6).

    An unknown pair gives an empty body (B19 keep).
    """
    thread = view.find_thread(channel, host)
    if thread is None:
        return
    yield (
        f"#{thread.channel}/{thread.host}/{thread.withhost}  "
        + _threads_detail(thread, now)
    )
    wakeup = thread.wakeup
    retry = f"retry in {saytime(wakeup - now)}" if wakeup > now else None
    for vertex in list(thread.vertices()):
        if retry is not None:
            state = retry
        elif vertex.waiting_for == _CHANNEL_WAIT:
            state = "channel"
        elif vertex.waiting_for == _GLOBAL_WAIT:
            state = ""
        else:
            state = "thread"  # B20 keep: also when not waiting at all
        head = f"{vertex.path}\t"
        before = f"\t{vertex.sender}\t"
        after = (
            f"\t{vertex.expiry}\t{wakeup}\t{vertex.lastfeed}\t{vertex.attempts}"
            f"\t{state}\t{_clean_message(vertex.message)}"
        )
        for index, offset in enumerate(vertex.offsets):
            yield f"{head}{index}{before}{offset}{after}"
