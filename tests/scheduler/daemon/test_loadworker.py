"""The startup load in worker processes (scheduler.daemon.loadworker) against in-process loading:
same messages, same order, same model; odd files left to the daemon; a dead worker."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from scheduler.config.clauses import load_config
from scheduler.core.commands import Command
from scheduler.core.events import Event, MessageLoaded
from scheduler.core.scheduler import Scheduler
from scheduler.core.vertexspecs import split_recipients
from scheduler.daemon import loadpool, loadworker
from scheduler.daemon.loadpool import LoadWorkers
from scheduler.daemon.loadworker import PreparedControl, is_record, prepare
from scheduler.daemon.runner import Runner
from spool.controlfile import format_diagnostic, parse
from spool.counters import Counters
from spool.filters import control_keys
from spool.layout import Postoffice, init_postoffice
from spool.plaincontrol import parse_solo
from spool.submit import submit
from tests.procs import gone
from tests.spool.test_plaincontrol import plain_files as plain_control_files

CONF = """*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20
smtp/*\tqueueonly command="builtin:testta"
local/*\tqueueonly command="mailbox"
"""
MESSAGE = b"Subject: test\n\nbody\n"


def queue_one(po: Postoffice, rcpts: list[str], hash_levels: int = 1) -> str:
    return submit(
        po, "s@example.com", rcpts, MESSAGE, hash_levels=hash_levels, notify=False
    )


def plain_files(po: Postoffice, n: int) -> list[str]:
    made = []
    for i in range(n):
        host = f"h{i % 5}.example"
        rcpts = [f"smtp {host} u{j}@{host}" for j in range(i % 4 + 1)]
        if i % 6 == 0:
            rcpts += ["local - User@Local", "SMTP H0.Example X@h0"]  # more vertices
        made.append(queue_one(po, rcpts))
    return made


prepared: list[str] = []
"""Relpaths of the last :func:`load_all` that came prepared by a worker."""


def snapshot(core: Scheduler) -> list[tuple[Any, ...]]:
    out = []
    for number in sorted(core._messages):
        m = core._messages[number]
        vs = [
            (v.thread.channel, v.thread.host, tuple(v.offsets), v.extra)
            for v in m.vertices
            if v.thread is not None
        ]
        out.append((m.relpath, m.sender, m.mtime, m.mtime_ns, m.hdr, m.flags, vs))
    return out


def walked_ages(core: Scheduler) -> dict[int, dict[Any, int]]:
    """Recipients per arrival minute and thread, by walking every linked vertex."""
    out: dict[int, dict[Any, int]] = {}
    for th in core.threads():
        for v in th.vertices():
            per = out.setdefault(v.msg.mtime // 60, {})
            per[th] = per.get(th, 0) + len(v.offsets)
    return out


async def load_all(
    root: Path, po: Postoffice, workers: int, n: int
) -> tuple[list[str], Scheduler]:
    """Run a runner until ``n`` messages are loaded and nothing is left to load."""
    (root / "conf").write_text(CONF)
    counters = Counters.open(None)
    core = Scheduler(
        load_config(str(root / "conf"), {}), counters, start_time=int(time.time())
    )
    order: list[str] = []
    prepared.clear()
    handle = core.handle

    def recording(event: Event, now: float) -> list[Command]:
        if isinstance(event, MessageLoaded):
            order.append(event.relpath)
            if hasattr(event.control, "prepared_split"):  # a PreparedControl
                prepared.append(event.relpath)
        return handle(event, now)

    core.handle = recording  # type: ignore[method-assign]
    runner = Runner(
        core,
        po,
        hash_levels=1,
        counters=counters,
        load_workers=workers,
        worker_min_files=1,
    )
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 30
        while core.msgs < n or runner._workers is not None or len(runner.loader.queue):
            assert time.monotonic() < deadline, "not loaded in time"
            await asyncio.sleep(0.02)
    finally:
        runner.stop()
        await task
        await runner.shutdown(1.0)
        counters.close()
    return order, core


@pytest.fixture(params=["fork", "spawn"])
def start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workers forked from the daemon, or started as ``python -m`` (another thread
    runs); forking is asserted to be possible in the test process."""
    if request.param == "fork":
        assert loadpool.can_fork()
    else:
        monkeypatch.setattr(loadpool, "can_fork", lambda: False)
    return str(request.param)


@pytest.mark.asyncio
@pytest.mark.parametrize("read_first", [True, False])
@pytest.mark.parametrize("workers", [1, 2])
async def test_workers_load_what_the_daemon_loads_in_the_same_order(
    tmp_path: Path,
    workers: int,
    start: str,
    read_first: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not read_first:  # every file stat-ed first (a forked worker sees the patch)
        monkeypatch.setattr(loadworker, "READ_FIRST", 0)
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 30)
    top = queue_one(po, ["smtp top.example a@top.example"], hash_levels=0)
    locked = queue_one(po, ["smtp l.example a@l.example"])
    path = po.control_path(locked)
    path.write_bytes(path.read_bytes().replace(b"\nr ", b"\nr~99999999", 1))  # dead PID
    bad = queue_one(po, ["smtp b.example b@b.example"])
    po.control_path(bad).write_bytes(b"@ 0x00000000\ngarbage\n")
    (po.transport / bad.rpartition("/")[0] / "999999-etrn").write_bytes(
        b"T e.example\n"
    )

    order_w, core_w = await load_all(tmp_path, po, workers, 32)
    # the files the workers leave to the daemon were handled as in-process
    assert len(list(po.freezer.glob("*.reason"))) == 1  # the corrupt one
    assert not list(po.transport.glob("[0-9]*"))  # the top-level file was hashed
    assert not list(po.transport.rglob("*-etrn"))  # the ETRN file was consumed
    assert b"\nr~" not in path.read_bytes()  # the stale lock was reset
    assert core_w.is_loaded(int(locked.rpartition("/")[2]))
    assert core_w.is_loaded(int(top))
    assert [p for p in order_w if p in made] == made  # oldest ctime first
    assert sorted(prepared) == sorted(made)  # every plain file came from a worker
    # SHOW QUEUE SHAPE's histograms were kept as the workers' files were fed
    assert walked_ages(core_w) == core_w.age_histograms() != {}
    # the same (now plain) spool loaded in-process gives the same model
    order_in, core_in = await load_all(tmp_path, po, 0, 32)
    assert not prepared
    assert snapshot(core_w) == snapshot(core_in)
    assert [p for p in order_in if p in made] == made


def failing_work(job: Any, write: Any) -> None:
    raise RuntimeError("a worker that fails")


@pytest.mark.asyncio
async def test_a_dead_worker_leaves_its_files_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 10)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # started: exits at once
    monkeypatch.setattr(loadworker, "work", failing_work)  # forked: fails
    order, core = await load_all(tmp_path, po, 2, 10)
    assert core.msgs == 10
    assert sorted(order) == sorted(made)
    assert not prepared


def recording_work(out: Path) -> Any:
    """``loadworker.work`` that first records what the forked worker holds."""
    original = loadworker.work

    def work(job: Any, write: Any) -> None:
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        handlers = [
            signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        ]
        wakeup = signal.set_wakeup_fd(-1)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        out.write_text(
            repr(
                # none of the daemon's Python handlers (an inherited SIG_IGN, as
                # under nohup, is what an exec'd worker would have too)
                (fds, not any(map(callable, handlers)), wakeup, len(mask), os.getsid(0))
            )
        )
        original(job, write)

    return work


@pytest.mark.asyncio
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_a_forked_worker_keeps_nothing_of_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only its pipe (and stdio): no listener, no loop, no signal handler or wakeup
    descriptor of the daemon's, no blocked signal; a session of its own."""
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 4)
    out = tmp_path / "seen"
    monkeypatch.setattr(loadworker, "work", recording_work(out))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # as the daemon's
    try:
        await load_all(tmp_path, po, 1, 4)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
    assert sorted(prepared) == sorted(made)
    fds, default_handlers, wakeup, blocked, sid = eval(out.read_text())
    assert len([fd for fd in fds if fd > 2]) <= 2  # the pipe (and listdir's own)
    assert default_handlers
    assert wakeup == -1
    assert blocked == 0
    assert sid != os.getsid(0)


def test_prepare_leaves_odd_files_to_the_daemon(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    t, q = os.fspath(po.transport) + "/", os.fspath(po.queue) + "/"
    good = queue_one(po, ["smtp H.example B@h", "smtp h.example a@h", "local - x"])
    rec = prepare(t, q, 1, 1 << 20, (0.0, 1, good))
    assert rec is not None
    assert is_record(rec)
    control = parse(po.control_path(good).read_bytes(), good)
    prepared = PreparedControl(rec)
    assert split_recipients(prepared) == split_recipients(control)  # type: ignore[arg-type]
    assert prepared.mid == control.mid
    # the recipient index's keys travel with the record (SHOW MSGS WHERE rcpt=)
    assert prepared.rcpt_keys == control_keys(control)
    assert len(prepared.rcpt_keys[0]) == 3 * 4
    assert prepared.rcpt_keys[2] == b"b@h\na@h\nx\n"  # the addresses, lower case
    assert prepare(t, q, 1, 10, (0.0, 1, good)) is None  # oversized
    top = queue_one(po, ["smtp h a@h"], hash_levels=0)
    assert prepare(t, q, 1, 1 << 20, (0.0, 1, top)) is None  # to be hashed first
    assert prepare(t, q, 0, 1 << 20, (0.0, 1, top)) is not None  # no hashing: fine
    po.message_path(top).unlink()
    assert prepare(t, q, 0, 1 << 20, (0.0, 1, top)) is None  # message file missing
    assert prepare(t, q, 1, 1 << 20, (0.0, 1, "Q/nonexistent")) is None
    diag = queue_one(po, ["smtp h a@h", "smtp h b@h"])
    data = po.control_path(diag).read_bytes()
    first = parse(data).recipients[0]
    line = format_diagnostic(first.offset, first.header_offset, -1, 1, "n", "t")
    po.control_path(diag).write_bytes(data.replace(b"\nr ", b"\nr+", 1) + line)
    rec = prepare(t, q, 1, 1 << 20, (0.0, 1, diag))
    assert rec is not None
    assert [d.status for d in PreparedControl(rec).diagnostics] == [" "]
    assert len(PreparedControl(rec).rcpt_keys[0]) == 4  # the delivered one is not kept
    assert split_recipients(PreparedControl(rec))[0][0].count == 1  # type: ignore[arg-type]
    assert not PreparedControl(prepare(t, q, 1, 1 << 20, (0.0, 1, good))).diagnostics  # type: ignore[arg-type]


def workers_running(runner: Runner) -> bool:
    return runner._workers is not None


def workers_done(runner: Runner) -> bool:
    """Every worker has written all its batches (they wait, unread, behind the gate)."""
    assert runner._workers is not None
    return all(st.done for st in runner._workers._streams)


@pytest.mark.asyncio
async def test_a_file_loaded_meanwhile_is_not_loaded_again_from_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 6)
    gate = asyncio.Event()  # holds the workers' items back
    original = LoadWorkers.next_item

    def gated(self: LoadWorkers, decode: bool = True) -> Any:
        return original(self, decode) if gate.is_set() else None

    monkeypatch.setattr(LoadWorkers, "next_item", gated)
    (tmp_path / "conf").write_text(CONF)
    counters = Counters.open(None)
    core = Scheduler(
        load_config(str(tmp_path / "conf"), {}), counters, start_time=int(time.time())
    )
    runner = Runner(core, po, hash_levels=1, counters=counters, worker_min_files=1)
    runner.notify(made[1])  # e.g. a NEW datagram for a file the workers have too
    task = asyncio.create_task(runner.run())
    number = int(made[1].rpartition("/")[2])
    try:
        deadline = time.monotonic() + 30
        while not core.is_loaded(number):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert workers_running(runner)  # loaded in-process while the workers run
        while not workers_done(runner):  # the workers have read the file too
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert runner.kill_msg(str(number))  # completed: its files are removed
        assert not po.control_path(made[1]).exists()
        gate.set()
        runner._wake.set()  # the gate, unlike a worker's batch, does not wake the loop
        while workers_running(runner) or core.msgs < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert not core.is_loaded(number)  # the worker's stale copy was skipped
        assert core.msgs == 5
    finally:
        runner.stop()
        await task
        await runner.shutdown(1.0)
        counters.close()


DELIVER_CONF = """*/*\tinterval=1m expiry=5d retries="1 1 2 3" maxchannel=0 maxring=20
smtp/*\tcommand="/nonexistent/ta"
"""


async def held_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float, open_gate: bool
) -> tuple[list[str], Runner]:
    """Start a runner on plain files (their items gated); record the kinds of the
    core's commands and events until a TA start is asked for (or 3 s pass)."""
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 6)
    gate = asyncio.Event()
    original = LoadWorkers.next_item

    def gated(self: LoadWorkers, decode: bool = True) -> Any:
        return original(self, decode) if gate.is_set() else None

    monkeypatch.setattr(LoadWorkers, "next_item", gated)
    (tmp_path / "conf").write_text(DELIVER_CONF)
    counters = Counters.open(None)
    core = Scheduler(
        load_config(str(tmp_path / "conf"), {}), counters, start_time=int(time.time())
    )
    seen: list[str] = []
    handle = core.handle

    def recording(event: Event, now: float) -> list[Command]:
        out = handle(event, now)
        seen.append(type(event).__name__)
        seen.extend(type(c).__name__ for c in out)
        return out

    core.handle = recording  # type: ignore[method-assign]
    runner = Runner(
        core, po, hash_levels=1, counters=counters, worker_min_files=1,
        startup_hold=hold,
    )  # fmt: skip
    runner.notify(made[0])  # loaded in-process while the workers run
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 30
        while "MessageLoaded" not in seen or not workers_done(runner):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        if hold > 10:  # (a short hold may already be over here)
            assert "StartAgent" not in seen  # held: loaded, yet no thread started
        if open_gate:
            gate.set()
        end = time.monotonic() + 3
        while "StartAgent" not in seen:
            if time.monotonic() > end:
                break
            await asyncio.sleep(0.02)
    finally:
        gate.set()
        runner.stop()
        await task
        await runner.shutdown(1.0)
        counters.close()
    return seen, runner


@pytest.mark.asyncio
async def test_thread_starts_wait_for_the_startup_load_in_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ZMailer -S: delivery starts once the workers' load is in, on all of it."""
    seen, runner = await held_starts(tmp_path, monkeypatch, 30.0, open_gate=True)
    first_start = seen.index("StartAgent")
    assert seen.count("MessageLoaded") == 6
    assert "MessageLoaded" not in seen[first_start:]  # every file loaded first
    assert not runner.core.hold_starts  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_the_startup_hold_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers still busy after ``startup_hold`` s: threads start anyway."""
    seen, _ = await held_starts(tmp_path, monkeypatch, 0.3, open_gate=False)
    assert "StartAgent" in seen
    assert seen.count("MessageLoaded") == 1  # the in-process one; the rest gated


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=plain_control_files())
def test_the_one_recipient_path_gives_the_general_record(
    tmp_path: Path, data: bytes
) -> None:
    """prepare() through spool.plaincontrol.parse_solo gives the record the general
    path (parse_plain / parse, split_recipients, control_keys) gives."""
    t, q = os.fspath(tmp_path / "t") + "/", os.fspath(tmp_path / "q") + "/"
    for d in (t, q):
        os.makedirs(d + "A", exist_ok=True)
    (tmp_path / "t" / "A" / "1").write_bytes(data)
    mid = parse(data, "A/1").mid or ""
    if mid and "/" not in mid and mid not in (".", ".."):
        (tmp_path / "q" / "A" / mid).write_bytes(MESSAGE)
    entry = (1.5, 1, "A/1")
    fast = prepare(t, q, 1, 1 << 20, entry)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loadworker, "parse_solo", lambda data: None)
        general = prepare(t, q, 1, 1 << 20, entry)
    assert fast == general


def test_the_usual_file_takes_the_one_recipient_path(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    t, q = os.fspath(po.transport) + "/", os.fspath(po.queue) + "/"
    one = queue_one(po, ["smtp H.example B@h"])
    assert parse_solo(po.control_path(one).read_bytes()) is not None
    rec = prepare(t, q, 1, 1 << 20, (0.0, 1, one))
    assert rec is not None
    assert rec[9] == [("smtp", "h.example", rec[9][0][2], None, 1)]


def test_a_worker_reading_first_writes_what_one_listing_first_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to READ_FIRST files a worker takes each ctime from its read's fstat instead
    of a stat of the listing: the same items (records, and the bare entries of the
    files left to the daemon) in the same order."""
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 12)
    bad = queue_one(po, ["smtp b.example b@b.example"])
    po.control_path(bad).write_bytes(b"@ 0x00000000\ngarbage\n")
    top = queue_one(po, ["smtp top.example a@top.example"], hash_levels=0)
    t = os.fspath(po.transport) + "/"
    q = os.fspath(po.queue) + "/"
    ctime = os.lstat(t + top).st_ctime
    job = (t, q, 1, 1 << 20, [(ctime, int(top), top)], loadpool.hash_dirs(t), 5)

    def frames() -> list[list[Any]]:
        out: list[bytes] = []
        loadworker.work(job, out.append)
        return [marshal.loads(f[loadworker.FRAME.size :]) for f in out]

    read_first = frames()
    monkeypatch.setattr(loadworker, "READ_FIRST", 0)
    listed_first = frames()
    assert read_first == listed_first
    items = [item for frame in read_first for item in frame]
    assert [len(f) for f in read_first] == [5, 5, 4]
    assert [i[2] for i in items if is_record(i)] == made  # oldest ctime first
    assert sorted(i[2] for i in items if not is_record(i)) == sorted([bad, top])


@pytest.mark.asyncio
async def test_a_merge_decodes_at_most_one_batch_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each decoded batch costs the loop several ms: when both streams need their next
    batch, the first call decodes one and says ``again``; a call that may not decode
    says ``again`` at once; the order stays the scan's."""
    po = init_postoffice(tmp_path / "po")
    made = plain_files(po, 40)
    loads = 0
    real_loads = marshal.loads

    def counting(data: bytes) -> Any:
        nonlocal loads
        loads += 1
        return real_loads(data)

    monkeypatch.setattr(marshal, "loads", counting)  # as loadpool calls it
    transport = str(po.transport) + "/"
    workers = LoadWorkers(
        transport,
        str(po.queue) + "/",
        1,
        1 << 20,
        dirs=loadpool.hash_dirs(transport),
        workers=2,
        on_ready=lambda: None,
        batch=3,
    )
    # Deterministic: every batch is in the pipes before the first call (a worker that
    # is still writing, e.g. a spawned one on a loaded machine, gives plain Nones).
    deadline = time.monotonic() + 30
    while not all(gone(s.proc.pid) for s in workers._streams):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    got: list[str] = []
    agains = 0
    calls = 0
    while not workers.finished:
        assert time.monotonic() < deadline
        loads = 0
        calls += 1
        may = calls % 3 != 0  # the runner's feeding loop: never
        item = workers.next_item(may)
        assert loads <= may
        assert workers.took_batch() == (loads == 1 or workers.again)
        if item is not None:
            got.append(item[2])
        elif workers.again:
            agains += 1
        else:
            await asyncio.sleep(0.01)  # the workers are still writing
    assert agains > 0
    assert got == made  # oldest ctime first, as the scan's order
