"""The startup load on other cores: worker processes read, check, parse and split control
files, and stream compact batches to the daemon, which only feeds the decision core.

The daemon's first (deep) scan hands a big queue (:data:`MIN_FILES` or more) to
:class:`scheduler.daemon.loadpool.LoadWorkers`: the scan's entries, oldest ctime first, are cut into batches of
:data:`BATCH` files; worker ``w`` of ``n`` (``python -m scheduler.daemon.loadworker``) gets
batches ``w, w + n, ...`` and writes each back as one length-prefixed ``marshal`` dump
(records hold only numbers, strings, bytes, tuples, lists and frozensets: marshal
writes and reads them in half pickle's time). The daemon
takes the batches in order, so the queue is loaded in exactly the scan's order.

A worker never changes a file. It prepares only the plain case: a file already in its
hash directory (or no hashing), readable, not oversized, parsed without error, with its
``i`` and ``l`` lines, known format bits, no ETRN, no ``~``-locked recipient line, every
host usable, and its message file present. Anything else comes back as the bare scan
entry and the daemon loads it itself (:meth:`scheduler.daemon.loader.Loader.load`), which
quarantines, hashes, resets stale locks and runs ETRNs as usual. A worker that dies
leaves its missing batches to the daemon the same way. A file is read by a worker up to
a few seconds before the daemon feeds it; nothing else touches a queued, unloaded file
(TAs only get loaded messages), so this is the same race as ZMailer's.
"""

from __future__ import annotations

import gc
import marshal
import os
import pickle
import stat
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from scheduler.core.model import RcptExtra
from scheduler.core.vertexspecs import Split, VertexSpec, intern_name, split_recipients
from spool.controlfile import KNOWN_FLAGS, parse
from spool.filters import control_keys, solo_keys
from spool.ids import message_number
from spool.plaincontrol import Solo, parse_plain, parse_solo
from spool.store import read_control, read_control_stat

if TYPE_CHECKING:
    from spool.controlfile import ControlFile

__all__ = [
    "BATCH",
    "FRAME",
    "MIN_FILES",
    "READ_FIRST",
    "RECORD_LEN",
    "EntryTuple",
    "Item",
    "Job",
    "PreparedControl",
    "Record",
    "is_record",
    "prepare",
    "prepare_batch",
    "work",
]

BATCH: Final = 1000
MIN_FILES: Final = 2000
"""Below this many queued files the daemon loads in-process (a worker costs ~0.1 s)."""
READ_FIRST: Final = 16_384
"""A worker with at most this many files (about 0.2 s of reading) reads them all
before it sorts them and writes its first batch, and needs no ``stat`` per file (the
read's ``fstat`` gives the ctime: 1.4 us a file less); a bigger share is ``stat``-ed
first and streamed, so that the daemon feeds the core while the worker reads."""

FRAME: Final = struct.Struct("<Q")
"""The length prefix of each marshalled batch a worker writes."""
_LOCKED: Final = b"\nr~"

EntryTuple = tuple[float, int, str]
"""A scan entry ``(ctime, number, relpath)`` (:class:`scheduler.daemon.loader.Entry`)."""

SpecTuple = tuple[str, str, "bytes | int", "tuple[RcptExtra, ...] | None", int]
"""``(channel, host, offsets, extra, count)``: offsets an int or an ``array('i')``'s
bytes."""

Record = tuple[
    float,
    int,
    str,
    str,
    int,
    int,
    str,
    int,
    bool,
    list[SpecTuple],
    tuple[bytes, bytes, bytes],
]
"""A prepared file: ``(ctime, number, relpath, mid, mtime, mtime_ns, report_sender,
header offset, has unreported diagnostics, vertex specs, recipient index keys)``; it
starts like its entry. The keys are the pending recipients' local-part and domain keys
(:func:`spool.filters.address_keys`) as two ``array("I")``'s bytes, and their
addresses (:func:`spool.filters.control_keys`)."""

RECORD_LEN: Final = 11

Item = Record | EntryTuple
"""A prepared file, or the scan entry of one the daemon must load itself."""

Job = tuple[str, str, int, int, list[EntryTuple], list[str], int]
"""``(transport/, queue/, hash levels, max bytes, entries, hash dirs to scan, batch)``."""


class _PendingDiagnostic:
    __slots__ = ()
    status = " "


_ONE_PENDING: Final = (_PendingDiagnostic(),)


class PreparedControl:
    """What the core's loading reads of a ``ControlFile``, prepared by a worker
    (``mid``, ``etrn``, ``report_sender``, ``diagnostics`` (only whether one is
    unreported), and the recipient split in ``prepared_split``)."""

    __slots__ = ("diagnostics", "mid", "prepared_split", "rcpt_keys", "report_sender")
    etrn: tuple[str, ...] = ()
    obsoletes: tuple[str, ...] = ()  # files with x lines are loaded by the daemon

    def __init__(self, record: Record) -> None:
        self.mid = record[3]
        self.report_sender = record[6]
        self.diagnostics = _ONE_PENDING if record[8] else ()
        specs: list[VertexSpec] = []
        for channel, host, offsets, extra, count in record[9]:
            offs: array[int] | int
            if type(offsets) is bytes:  # an array('i') travels as its bytes
                offs = array("i")
                offs.frombytes(offsets)
            else:
                offs = offsets  # type: ignore[assignment]
            specs.append(
                VertexSpec(intern_name(channel), intern_name(host), offs, extra, count)
            )
        self.prepared_split: Split = (specs, [], record[7])
        self.rcpt_keys = record[10]


def _wire(offsets: array[int] | int) -> bytes | int:
    """An ``array('i')`` as its bytes (marshal cannot write an array)."""
    return offsets if type(offsets) is int else offsets.tobytes()  # type: ignore[union-attr]


def prepare(
    transport: str, queue: str, hash_levels: int, max_bytes: int, entry: EntryTuple
) -> Record | None:
    """The record of one plain control file; None: the daemon must load it itself."""
    relpath = entry[2]
    if hash_levels > 0 and "/" not in relpath:
        return None  # to be moved into its hash directory
    try:
        data = read_control(transport + relpath, max_bytes)  # no link, no FIFO
    except Exception:
        return None
    return _prepared(queue, entry, data)


def _read_one(
    transport: str, queue: str, max_bytes: int, number: int, relpath: str
) -> Item | None:
    """:func:`prepare` of a file in a hash directory listed without a ``stat``: the
    entry's ctime is the ``fstat``'s of the read (or an ``lstat``'s when the file
    cannot be read); None: the file is gone."""
    path = transport + relpath
    try:
        data, st = read_control_stat(path, max_bytes)  # no link, no FIFO
    except Exception:
        try:
            return (os.lstat(path).st_ctime, number, relpath)  # the daemon's to load
        except OSError:
            return None  # gone
    entry = (st.st_ctime, number, relpath)
    return _prepared(queue, entry, data) or entry


def _prepared(queue: str, entry: EntryTuple, data: bytes) -> Record | None:
    """The record of a control file's bytes (:func:`prepare`)."""
    ctime, number, relpath = entry
    prefix, sep, _ = relpath.rpartition("/")
    try:
        if _LOCKED in data:
            return None
        solo = parse_solo(data)  # the usual file: one plain recipient
        if solo is not None:
            return _solo_record(queue + prefix + sep, entry, solo)
        # the usual router-written file without a ControlFile (spool.plaincontrol)
        control: ControlFile = parse_plain(data) or parse(data, relpath)  # type: ignore[assignment]
        mid = control.mid
        if (
            mid is None
            or control.etrn
            or control.obsoletes
            or control.log_id is None
            or control.flags & ~KNOWN_FLAGS
            or "/" in mid
            or mid in ("", ".", "..")
        ):
            return None
        st = os.lstat(queue + prefix + sep + mid)
        if not stat.S_ISREG(st.st_mode):
            return None  # the daemon quarantines it
        ns = st.st_mtime_ns
        pending = control.pending_summary()
        specs, bad, hdr = split_recipients(control, pending)
    except Exception:
        return None
    if bad:
        return None
    return (
        ctime,
        number,
        relpath,
        mid,
        ns // 1_000_000_000,
        ns % 1_000_000_000,
        control.report_sender,
        hdr,
        any(d.status == " " for d in control.diagnostics),
        [(s.channel, s.host, _wire(s.offsets), s.extra, s.count) for s in specs],
        control_keys(control, pending),
    )


def _solo_record(qdir: str, entry: EntryTuple, solo: Solo) -> Record | None:
    """:func:`prepare`'s record of a file :func:`spool.plaincontrol.parse_solo` read
    (the same record as the general path's, in fewer steps; raises OSError)."""
    mid, sender, off, quad, channel, host, hdr = solo
    if "/" in mid or mid in ("", ".", ".."):
        return None
    st = os.lstat(qdir + mid)
    if not stat.S_ISREG(st.st_mode):
        return None  # the daemon quarantines it
    ns = st.st_mtime_ns
    return (
        entry[0],
        entry[1],
        entry[2],
        mid,
        ns // 1_000_000_000,
        ns % 1_000_000_000,
        sender,
        hdr,
        False,
        [(intern_name(channel), intern_name(host), off, None, 1)],
        solo_keys(quad.split(" ", 3)[2]),
    )


def prepare_batch(
    transport: str,
    queue: str,
    hash_levels: int,
    max_bytes: int,
    entries: Sequence[EntryTuple],
) -> list[Item]:
    """A record per entry, or the entry itself when the daemon must load it."""
    return [prepare(transport, queue, hash_levels, max_bytes, e) or e for e in entries]


def is_record(item: Item) -> bool:
    return len(item) == RECORD_LEN


def _walk(top: str, prefix: str, depth: int, out: list[tuple[int, str]]) -> None:
    """``spool.scan``'s walk below one hash directory: names starting with a digit
    (regular files) and one-letter ``A``-``Z`` subdirectories, two levels in all;
    ``(number, relpath)`` per file (no ``stat``: the type is the directory entry's)."""
    try:
        it = os.scandir(top + prefix)
    except OSError:  # gone, or unreadable: the daemon's own scan reports it
        return
    with it:
        for entry in it:
            name = entry.name
            try:
                if "0" <= name[0] <= "9":
                    if entry.is_file(follow_symlinks=False):
                        number = int(name) if name.isdigit() else message_number(name)
                        out.append((number, prefix + name))
                elif (
                    depth < 2
                    and len(name) == 1
                    and "A" <= name <= "Z"
                    and entry.is_dir(follow_symlinks=False)
                ):
                    _walk(top, prefix + name + "/", depth + 1, out)
            except (OSError, ValueError):
                continue


def _order(e: Item) -> tuple[float, str]:
    """``(ctime, relpath)``: the scan's order, of an entry or a record."""
    return e[0], e[2]


def work(job: Job, write: Callable[[bytes], object]) -> None:
    """Scan the job's directories, sort with its entries (oldest ctime first), and
    write a frame per batch of records.

    Up to :data:`READ_FIRST` files, every file is read first and the records are
    sorted after (the ctimes come from the reads' ``fstat``); more are ``stat``-ed as
    listed and sorted first, so that batches stream out while the rest is read."""
    transport, queue, hash_levels, max_bytes, entries, dirs, batch = job
    names: list[tuple[int, str]] = []
    for d in dirs:
        _walk(transport, d, 1, names)
    if len(entries) + len(names) <= READ_FIRST:
        items = prepare_batch(transport, queue, hash_levels, max_bytes, entries)
        for number, relpath in names:
            item = _read_one(transport, queue, max_bytes, number, relpath)
            if item is not None:
                items.append(item)
        items.sort(key=_order)
        for i in range(0, len(items), batch):
            blob = marshal.dumps(items[i : i + batch])
            write(FRAME.pack(len(blob)) + blob)
        return
    listed = list(entries)
    for number, relpath in names:
        try:
            listed.append((os.lstat(transport + relpath).st_ctime, number, relpath))
        except OSError:
            continue  # gone
    listed.sort(key=_order)
    for i in range(0, len(listed), batch):
        part = prepare_batch(
            transport, queue, hash_levels, max_bytes, listed[i : i + batch]
        )
        blob = marshal.dumps(part)
        write(FRAME.pack(len(blob)) + blob)


def main() -> int:
    """Worker: a pickled :data:`Job` on stdin, length-prefixed marshalled batches on
    stdout, in (ctime, relpath) order; EOF when done."""
    gc.disable()  # short-lived acyclic objects only
    job = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    try:
        work(job, write)
    except BrokenPipeError:
        return 0  # the daemon went away
    return 0


if __name__ == "__main__":
    sys.exit(main())
