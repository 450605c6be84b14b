"""The MAILQ v2 report bodies as pure generators of lines (MQ2-REF 9.1-9.6).

Each generator takes a :class:`~mailq.server.views.QueueView` and ``now`` (an integer time_t)
and yields body lines as ``str`` without their LF. Nothing here does I/O. Group and
thread lists are snapshotted as lists of references when a report starts, so the
scheduler may change its state between the chunks the server streams; a thread emptied
meanwhile prints ``N=0 ... QA=-1s`` rather than failing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from itertools import islice
from operator import attrgetter
from typing import Final

from mailq.protocol.connection import BATCH_LINES, EncodedBody, encode_body_lines
from mailq.server.views import GroupView, ProcView, QueueView, ThreadView, VertexView
from spool.timefmt import saytime

__all__ = [
    "DetailCache",
    "ThreadDetail",
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

_jobs: Final = attrgetter("jobs")
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
        threads = group.threads()
        yield _group_header(group)
        msgs = sum(map(_jobs, threads))
        # a group without TA processes has none on any thread (the model keeps
        # attached + idle <= proc_count), so its threads need not be asked
        procs = sum([len(t.procs()) for t in threads]) if group.proc_count else 0
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


def _detail_header(thread: ThreadView, now: int) -> str:
    return f"#{thread.channel}/{thread.host}/{thread.withhost}  " + _threads_detail(
        thread, now
    )


def _detail_rows(thread: ThreadView, wakeup: int, retry: str | None) -> Iterator[str]:
    """The rows of ``SHOW THREAD``; field 9 is ``retry`` when given (B20 keep)."""
    return _rows(list(thread.vertices()), wakeup, retry)


def _rows(
    vertices: Sequence[VertexView], wakeup: int, retry: str | None
) -> Iterator[str]:
    for start in range(0, len(vertices), BATCH_LINES):
        yield from _row_list(vertices[start : start + BATCH_LINES], wakeup, retry)


def _row_list(
    vertices: Sequence[VertexView], wakeup: int, retry: str | None
) -> list[str]:
    """The rows of a batch of vertices, as a list (no generator step per row: the cold
    path); field 9 is ``retry`` when given (B20 keep)."""
    states = _VERTEX_STATES
    wake = f"\t{wakeup}\t"
    out: list[str] = []
    add = out.append
    for vertex in vertices:
        state = retry if retry is not None else states.get(vertex.waiting_for, "thread")
        message = vertex.message
        if not message:
            message = ""
        elif "\t" in message or "\n" in message:  # as _clean_message
            message = message.replace("\t", " ").replace("\n", "\r")
        after = (
            f"\t{vertex.expiry}{wake}{vertex.lastfeed}\t{vertex.attempts}"
            f"\t{state}\t{message}"
        )
        path, sender, offsets = vertex.path, vertex.sender, vertex.offsets
        if len(offsets) == 1:
            add(f"{path}\t0\t{sender}\t{offsets[0]}{after}")
            continue
        for index, offset in enumerate(offsets):
            add(f"{path}\t{index}\t{sender}\t{offset}{after}")
    return out


def _retry(wakeup: int, now: int) -> str | None:
    return f"retry in {saytime(wakeup - now)}" if wakeup > now else None


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
            yield _detail_header(held, now)
            yield from _held_rows(held)
        return
    yield _detail_header(thread, now)
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
    yield from _detail_rows(thread, wakeup, _retry(wakeup, now))


# ---- SHOW THREAD from cached bytes ----------------------------------------------------

CACHE_PER_RCPT: Final = 8  # automatic budget: bytes per queued recipient ...
CACHE_FLOOR: Final = 2 << 20  # ... but at least this
PLAIN_MIN: Final = 65536  # rows of at least this many bytes may be kept uncompressed
_PIECE: Final = 65536  # bytes of a packed entry decompressed at a time
_WBITS: Final = -12  # raw deflate (no adler32 to verify), a 4 KiB window: rows repeat
# their neighbours; small state
_MEMLEVEL: Final = (
    7  # blocks of 8,192 symbols: fewer Huffman tables to build on inflate
)
# (~15 % faster than 1,024), and the compressor's state (~80 KiB) stays under malloc's
# mmap threshold
_MARK: Final = "\x00"  # field 9 while the thread waits for its wakeup (time-dependent)
_MARK_BYTE: Final = b"\x00"


# An entry is (key of validity, rows): two objects, not a dozen, because entries made
# between the short-lived rows of a cold dump pin the allocator's pools they land in.
# The key is the thread's revision, wakeup and whether field 9 is the mark, as text,
# then "/", the length of the rows and "z" (zlib-compressed) or "p" (plain).
_Entry = tuple[str, bytes]


def _pieces(entry: _Entry, size: int) -> Iterator[bytes]:
    tag, block = entry
    if tag[-1] != "z":
        yield block
        return
    length = int(tag[tag.rindex("/") + 1 : -1])
    if length <= size:  # in one piece: one call, into a buffer of the right size
        yield zlib.decompress(block, _WBITS, length + 1)
        return
    unpack = zlib.decompressobj(_WBITS)
    while block:
        yield unpack.decompress(block, size)
        block = unpack.unconsumed_tail
    tail = unpack.flush()
    if tail:
        yield tail


class DetailCache:
    """The encoded rows of ``SHOW THREAD``, per thread, reused while unchanged.

    A thread's rows change only through events; a thread of the scheduler's model
    exposes ``report_revision`` (equal while no row can have changed, ``wakeup`` and
    the clock aside), and an entry is valid for one revision and one ``wakeup``. The
    only time-dependent field, ``retry in ...`` (field 9 while the thread waits), is
    the same in every row: it is kept as a NUL mark and spliced in with
    ``bytes.replace`` (rows whose fields hold a NUL themselves are never kept).

    A miss streams the rows to the client in batches, as without a cache, and keeps
    them on the way. Memory is bounded: entries hold at most ``budget`` bytes (None:
    automatic, ``CACHE_PER_RCPT`` per queued recipient, at least ``CACHE_FLOOR``),
    zlib-compressed (report rows compress 5-20 times) except a thread of
    ``PLAIN_MIN`` bytes or more that fits in half the budget, which is kept as is
    (the busiest threads are asked for most, and are served with no work at all).
    Least recently used go first, but a newcomer only displaces entries no bigger
    than itself, so a sequential dump of small threads does not flush the big ones.
    Threads without ``report_revision`` (test fakes) are always formatted afresh.
    """

    def __init__(
        self, budget: int | None = None, plain_min: int = PLAIN_MIN, piece: int = _PIECE
    ) -> None:
        self.budget = budget
        self.plain_min = plain_min
        self.piece = piece
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple[str, str], _Entry] = {}  # least recent first

    def __len__(self) -> int:
        return len(self._entries)

    def limit(self, view: QueueView) -> int:
        if self.budget is not None:
            return self.budget
        return max(CACHE_FLOOR, CACHE_PER_RCPT * view.total_recipients)

    def report(
        self, view: QueueView, channel: str, host: str, now: int
    ) -> ThreadDetail:
        """``SHOW THREAD channel host`` as a body that can be sent from the cache."""
        return ThreadDetail(self, view, channel, host, now)

    def rows(
        self, view: QueueView, thread: ThreadView, wakeup: int, retry: str | None
    ) -> Iterator[bytes]:
        """The thread's encoded rows, from the cache or formatted (and kept)."""
        revision = getattr(thread, "report_revision", None)
        if revision is None:
            yield from _fresh(thread, wakeup, retry)
            return
        key = (thread.channel, thread.host)
        valid = f"{revision} {wakeup} {'m' if retry is not None else '-'}"
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0].rpartition("/")[0] == valid:
                self.hits += 1
                del self._entries[key]
                self._entries[key] = entry  # most recently used: last
                if retry is None:
                    yield from _pieces(entry, self.piece)
                else:
                    text = retry.encode()
                    for piece in _pieces(entry, self.piece):
                        yield piece.replace(_MARK_BYTE, text)
                return
            self._drop(key)
        self.misses += 1
        yield from self._build(view, thread, key, valid, wakeup, retry)

    def _build(
        self,
        view: QueueView,
        thread: ThreadView,
        key: tuple[str, str],
        valid: str,
        wakeup: int,
        retry: str | None,
    ) -> Iterator[bytes]:
        """Format and send the rows in batches, keeping them (with the mark)."""
        limit = self.limit(view)
        pack = zlib.compressobj(6, zlib.DEFLATED, _WBITS, _MEMLEVEL)
        plain: list[bytes] | None = []
        packed: list[bytes] = []
        size = 0
        text = None if retry is None else retry.encode()
        mark = None if retry is None else _MARK
        vertices = list(thread.vertices())
        for start in range(0, len(vertices), BATCH_LINES):
            chunk = vertices[start : start + BATCH_LINES]
            data = encode_body_lines(_row_list(chunk, wakeup, mark))
            if text is not None:
                rows = data.count(b"\n")
                if data.count(_MARK_BYTE) != rows:  # a field holds a NUL
                    for begin in range(start, len(vertices), BATCH_LINES):
                        chunk = vertices[begin : begin + BATCH_LINES]
                        yield encode_body_lines(_row_list(chunk, wakeup, retry))
                    return
                yield data.replace(_MARK_BYTE, text)
            else:
                yield data
            size += len(data)
            if plain is not None:
                plain.append(data)
                # kept as is only within half the budget: judged from the rows so far
                # (a big thread's pieces are not gathered only to be dropped)
                done = start + len(chunk)
                if size > limit // 2 or size * len(vertices) > done * (limit // 2):
                    plain = None
            packed.append(pack.compress(data))
        packed.append(pack.flush())
        if plain is not None and size >= self.plain_min:
            entry = (f"{valid}/{size}p", b"".join(plain))
        else:
            entry = (f"{valid}/{size}z", b"".join(packed))
        if len(entry[1]) <= limit:
            self._admit(key, entry, limit)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key)
        self.size -= len(entry[1])

    def _admit(self, key: tuple[str, str], entry: _Entry, limit: int) -> None:
        if key in self._entries:  # built twice meanwhile (two sessions)
            self._drop(key)
        while self.size > limit:  # the budget shrank with the queue
            self._drop(next(iter(self._entries)))
        size = len(entry[1])
        need = self.size + size - limit
        if need > 0:
            victims: list[tuple[str, str]] = []
            for k, e in self._entries.items():  # least recently used first
                if len(e[1]) <= size:
                    victims.append(k)
                    need -= len(e[1])
                    if need <= 0:
                        break
            if need > 0:
                return
            for k in victims:
                self._drop(k)
        self._entries[key] = entry
        self.size += size


def _fresh(thread: ThreadView, wakeup: int, retry: str | None) -> Iterator[bytes]:
    return _encoded(_detail_rows(thread, wakeup, retry))


class ThreadDetail(EncodedBody):
    """``SHOW THREAD``: iterating formats the lines; :meth:`encoded` uses the cache."""

    __slots__ = ("cache", "channel", "host", "now", "view")

    def __init__(
        self, cache: DetailCache, view: QueueView, channel: str, host: str, now: int
    ) -> None:
        self.cache = cache
        self.view = view
        self.channel = channel
        self.host = host
        self.now = now

    def __iter__(self) -> Iterator[str]:
        return thread_detail_report(self.view, self.channel, self.host, self.now)

    def encoded(self) -> Iterator[bytes]:
        now = self.now
        thread = self.view.find_thread(self.channel, self.host)
        if thread is None:  # nothing, or only held mail (never cached)
            yield from _encoded(
                thread_detail_report(self.view, self.channel, self.host, now)
            )
            return
        yield encode_body_lines([_detail_header(thread, now)])
        wakeup = thread.wakeup
        yield from self.cache.rows(self.view, thread, wakeup, _retry(wakeup, now))
        held = self.view.find_held(self.channel, self.host)
        if held is not None:
            yield from _encoded(_held_rows(held))


def _encoded(lines: Iterator[str]) -> Iterator[bytes]:
    while batch := list(islice(lines, BATCH_LINES)):
        yield encode_body_lines(batch)
