"""Disk faults (ENOSPC, EIO, short writes) at the spool's seams.

* ``spool.submit.submit``: any failing ``write``/``fsync``/``link``/``rename`` raises
  ``SubmitError`` and leaves no file behind in ``public/``, ``queue/`` or ``transport/``.
* ``spool.store``: a failed in-place mark or ``d``-line append leaves the control file
  byte-identical (or at least parseable), never half a line.
* The runner (in-process, real core, real testta subprocesses): a failed ``d``-line
  append, a failed mark and a failed DSN write do not lose the recipient or its bounce;
  the daemon keeps running and a good message submitted alongside is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from scheduler.config.clauses import load_config
from scheduler.core.scheduler import Scheduler
from scheduler.daemon.runner import Runner
from scheduler.ta.libta import (
    AgentOptions,
    Job,
    JobContext,
    Outcome,
    TaRuntime,
    failed,
)
from spool import store
from spool.controlfile import Recipient, format_diagnostic, parse
from spool.counters import Counters
from spool.dsnpass import run_dsn_pass
from spool.errors import SpoolError, SubmitError
from spool.layout import Postoffice, init_postoffice
from spool.submit import submit

MESSAGE = b"Subject: fault\n\nbody\n"
CONF = """\
*/*\tinterval=1s idlemax=30s expiry=5d retries="1 1 1 1"
\tmaxchannel=0 maxring=20 overfeed=10

smtp/*\tcommand="builtin:testta -c $channel"
"""


def files_in(po: Postoffice) -> list[str]:
    return sorted(
        p.relative_to(po.root).as_posix()
        for d in (po.public, po.queue, po.transport)
        for p in d.rglob("*")
        if p.is_file()
    )


@contextlib.contextmanager
def fault(
    name: str, err: int, nth: int = 1, *, short: bool = False
) -> Iterator[list[int]]:
    """Make the ``nth`` call of ``os.<name>`` fail with ``err`` (or, ``short``, write
    only half its bytes). Yields the call counter."""
    real = getattr(os, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            if short:
                fd, data = args[0], args[1]
                return real(fd, bytes(data)[: max(1, len(data) // 2)])
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, name, wrapper)
    try:
        yield calls
    finally:
        mp.undo()


# ---------------------------------------------------------------- submission


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize(
    ("seam", "nth"),
    [
        *[("write", 1), ("write", 2), ("fsync", 1), ("fsync", 2), ("fsync", 3)],
        *[("fsync", 4), ("link", 1), ("link", 2), ("fchmod", 1), ("open", 2)],
    ],
)
@pytest.mark.parametrize("hash_levels", [0, 2])
def test_submit_fault_leaves_no_half_file(
    tmp_path: Path, seam: str, nth: int, err: int, hash_levels: int
) -> None:
    po = init_postoffice(tmp_path / "po")
    before = files_in(po)
    with fault(seam, err, nth) as calls, pytest.raises(SubmitError) as info:
        submit(po, "s@example.com", ["a@example.org", "b@example.net"], MESSAGE,
               hash_levels=hash_levels, notify=False)  # fmt: skip
    assert calls[0] >= nth
    assert os.strerror(err) in str(info.value)
    assert files_in(po) == before
    # The fault is gone: the same submission now works and parses.
    relpath = submit(po, "s@example.com", ["a@example.org"], MESSAGE, notify=False)
    assert parse(po.control_path(relpath).read_bytes()).mid is not None


def test_submit_short_write_is_completed_or_refused(tmp_path: Path) -> None:
    """A short write (a disk filling up) is continued, never left truncated."""
    po = init_postoffice(tmp_path / "po")
    with fault("write", 0, 1, short=True):
        relpath = submit(po, "s@example.com", ["a@example.org"], MESSAGE, notify=False)
    cf = parse(po.control_path(relpath).read_bytes())
    assert cf.mid is not None
    assert po.message_path(relpath, cf.mid).read_bytes() == MESSAGE


# ---------------------------------------------------------------- the store


def one_message(tmp_path: Path) -> tuple[Postoffice, Path, int]:
    po = init_postoffice(tmp_path / "po")
    relpath = submit(po, "s@example.com", ["a@example.org"], MESSAGE, notify=False)
    path = po.control_path(relpath)
    offset = parse(path.read_bytes()).recipients[0].offset
    return po, path, offset


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_mark_leaves_the_file_unchanged(tmp_path: Path, err: int) -> None:
    _, path, offset = one_message(tmp_path)
    before = path.read_bytes()
    with fault("pwrite", err), pytest.raises(OSError, match=r"Errno"):
        store.mark_recipient(path, offset, "+")
    assert path.read_bytes() == before
    with fault("pwrite", err), pytest.raises(OSError, match=r"Errno"):
        store.lock_recipient(path, offset, 12345)
    assert path.read_bytes() == before
    store.mark_recipient(path, offset, "+")  # and it works again afterwards
    assert parse(path.read_bytes()).recipients[0].status == "+"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_d_line_append_leaves_the_file_unchanged(
    tmp_path: Path, err: int
) -> None:
    _, path, offset = one_message(tmp_path)
    before = path.read_bytes()
    line = format_diagnostic(offset, -1, -1, 1700000000, "x;5.0.0", "smtp; 550 no")
    with fault("write", err), pytest.raises(OSError, match=r"Errno"):
        store.append_diagnostic(path, line)
    assert path.read_bytes() == before
    store.append_diagnostic(path, line)
    assert len(parse(path.read_bytes()).diagnostics) == 1


def test_short_d_line_append_never_leaves_half_a_line(tmp_path: Path) -> None:
    """ENOSPC mid-write shows up as a short write: it is continued, so the file gets
    the whole line (never half of one) and later appends still work."""
    _, path, offset = one_message(tmp_path)
    before = path.read_bytes()
    line = format_diagnostic(offset, -1, -1, 1700000000, "x;5.0.0", "smtp; 550 no")
    with fault("write", 0, short=True) as calls:
        store.append_diagnostic(path, line)
    assert calls[0] == 2  # the rest was written by a second write
    assert path.read_bytes() == before + line
    store.append_diagnostic(path, line)
    assert len(parse(path.read_bytes()).diagnostics) == 2


def test_short_then_failing_d_line_append_is_rolled_back(tmp_path: Path) -> None:
    _, path, offset = one_message(tmp_path)
    before = path.read_bytes()
    line = format_diagnostic(offset, -1, -1, 1700000000, "x;5.0.0", "smtp; 550 no")
    mp = pytest.MonkeyPatch()
    real = os.write
    calls = [0]

    def half_then_enospc(fd: int, data: bytes) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(os, "write", half_then_enospc)
    try:
        with pytest.raises(OSError, match=r"Errno"):
            store.append_diagnostic(path, line)
    finally:
        mp.undo()
    assert path.read_bytes() == before  # the half line was truncated away
    store.append_diagnostic(path, line)
    assert len(parse(path.read_bytes()).diagnostics) == 1


def test_failed_fsync_of_a_d_line_is_reported(tmp_path: Path) -> None:
    _, path, offset = one_message(tmp_path)
    line = format_diagnostic(offset, -1, -1, 1700000000, "x;5.0.0", "smtp; 550 no")
    with fault("fsync", errno.EIO), pytest.raises(OSError, match=r"Errno"):
        store.append_diagnostic(path, line)
    parse(path.read_bytes())  # whatever reached the file is whole lines


# ---------------------------------------------------------------- the runner


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rfl") as d:  # AF_UNIX path limit
        yield Path(d)


class Env:
    def __init__(self, root: Path, dsn_pass: Any = run_dsn_pass) -> None:
        self.root = root
        self.po = init_postoffice(root / "po")
        conf = root / "scheduler.conf"
        conf.write_text(CONF)
        self.counters = Counters.open(None)
        self.core = Scheduler(
            load_config(str(conf), {}), self.counters, start_time=int(time.time())
        )
        self.runner = Runner(
            self.core,
            self.po,
            counters=self.counters,
            dsn_pass=dsn_pass,
            hostname="test.invalid",
            scan_interval=0.2,
            deep_scan_interval=0.5,
        )

    def submit(self, *rcpts: str, sender: str = "sender@keep.example") -> str:
        return submit(self.po, sender, list(rcpts), MESSAGE, notify=False)

    def dsns(self) -> list[bytes]:
        """Message files of the error messages (DSNs) now in the queue."""
        out = []
        for p in self.po.transport.rglob("*"):
            if p.is_file() and p.name[:1].isdigit():
                with contextlib.suppress(OSError, SpoolError):
                    cf = parse(p.read_bytes())
                    if cf.is_error_message and cf.mid is not None:
                        rel = p.relative_to(self.po.transport).as_posix()
                        out.append(self.po.message_path(rel, cf.mid).read_bytes())
        return out

    def log(self) -> str:
        return (
            (self.root / "ta.log").read_text()
            if (self.root / "ta.log").exists()
            else ""
        )


@pytest_asyncio.fixture
async def make_env(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Env]]:
    # DSNs go to sender@keep.example and are deferred, so they stay visible.
    monkeypatch.setenv(
        "TESTTA_RULES", "*@ok.example=ok;*@fail.example=error;*=deferred"
    )
    monkeypatch.setenv("TESTTA_LOG", str(short_tmp / "ta.log"))
    envs: list[tuple[Env, asyncio.Task[None]]] = []

    def make(**kwargs: Any) -> Env:
        env = Env(short_tmp, **kwargs)
        envs.append((env, asyncio.create_task(env.runner.run())))
        return env

    yield make
    for env, task in envs:
        env.runner.stop()
        await task
        await env.runner.shutdown(2.0)
        env.counters.close()


async def until(cond: Callable[[], object], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def gone(po: Postoffice, relpath: str) -> bool:
    name = relpath.rpartition("/")[2]
    return not list(po.transport.rglob(name)) and not list(po.queue.rglob(name))


class Failing:
    """Wrap a function so that its first ``times`` calls raise ``OSError(err)``."""

    def __init__(self, real: Callable[..., Any], err: int, times: int = 1) -> None:
        self.real = real
        self.err = err
        self.left = times
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise OSError(self.err, os.strerror(self.err))
        return self.real(*args, **kwargs)


class Failer:
    """A deliverer for the TA runtime in-process: every recipient fails (5xx)."""

    batch = False

    def begin_job(self, job: Job) -> None:
        pass

    def deliver(
        self, ctx: JobContext, recipients: Sequence[Recipient]
    ) -> list[Outcome]:
        return [failed("smtp; 550 (5.1.1 no such user)") for _ in recipients]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_agent_failed_d_line_append_does_not_lose_the_recipient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """The TA writes the error's d line itself: if that fails, the recipient must not
    be left marked failed without it (the bounce would silently never come)."""
    po = init_postoffice(tmp_path / "po")
    relpath = submit(po, "s@example.com", ["x@fail.example"], MESSAGE, notify=False)
    path = po.control_path(relpath)
    failing = Failing(store.append_diagnostic, err)
    monkeypatch.setattr(store, "append_diagnostic", failing)

    def run_once() -> list[str]:
        out = io.BytesIO()
        opts = AgentOptions(name="fault", channel="smtp", postoffice=po)
        job = f"{relpath}\tfail.example\n".encode()
        TaRuntime(opts, Failer(), io.BytesIO(job), out, clock=lambda: 1234.0).run()
        return [ln for ln in out.getvalue().decode().splitlines() if ln[:1] != "#"]

    (report,) = run_once()
    assert report.split("\t")[2].startswith("deferred")  # the scheduler retries it
    cf = parse(path.read_bytes())
    assert cf.recipients[0].status == " "  # pending again, not "-" without a d line
    assert cf.diagnostics == []
    (report,) = run_once()  # the disk has room again
    assert report.split("\t")[2].startswith("error2")
    cf = parse(path.read_bytes())
    assert cf.recipients[0].status == "-"
    assert len(cf.diagnostics) == 1


def expired_message(env: Env) -> str:
    """A message past its expiry (not expiry2) whose agent defers: the first deferral
    expires it (S21: the expiry falls before the next wakeup) through the runner's own
    AppendDiagnostic + MarkRecipient. (Before issue 12 a host the scheduler could not
    cut was bounced at load; ZMailer queues those, so we do too.) No await between
    submit and utime: the runner cannot load it in between."""
    relpath = env.submit("x@defer.example")
    old = time.time() - 6 * 86400
    for path in env.po.queue.rglob(relpath.rpartition("/")[2]):
        os.utime(path, (old, old))
    return relpath


@pytest.mark.asyncio
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
async def test_runner_failed_d_line_append_does_not_lose_the_bounce(
    make_env: Callable[..., Env],
    monkeypatch: pytest.MonkeyPatch,
    err: int,
) -> None:
    failing = Failing(store.append_diagnostic, err)
    monkeypatch.setattr(store, "append_diagnostic", failing)
    env = make_env()
    bad = expired_message(env)
    good = env.submit("y@ok.example")
    await until(lambda: gone(env.po, good), "the good message")
    await until(lambda: env.dsns(), "a bounce for the bad-host recipient")
    assert failing.calls >= 2  # the first append failed, a rescan retried it
    (dsn,) = env.dsns()
    assert b"x@defer.example" in dsn
    await until(lambda: gone(env.po, bad), "the bounced message to be completed")


@pytest.mark.asyncio
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
async def test_failed_dsn_write_does_not_lose_the_bounce(
    make_env: Callable[..., Env], err: int
) -> None:
    attempts: list[str] = []

    def flaky_dsn_pass(
        po: Postoffice, relpath: str, *, now: int, hostname: str
    ) -> str | None:
        attempts.append(relpath)
        if len(attempts) == 1:
            raise SubmitError(f"cannot submit: [Errno {err}] {os.strerror(err)}")
        return run_dsn_pass(po, relpath, now=now, hostname=hostname)

    env = make_env(dsn_pass=flaky_dsn_pass)
    bad = env.submit("x@fail.example")
    await until(lambda: env.dsns(), "a DSN despite the failed first write")
    assert len(attempts) >= 2
    await until(lambda: gone(env.po, bad), "the failed message to be completed")
    good = env.submit("y@ok.example")
    await until(lambda: gone(env.po, good), "a later good message")


@pytest.mark.asyncio
async def test_failed_completion_unlink_keeps_running(
    make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = Failing(store.remove_message, errno.EIO)
    monkeypatch.setattr(store, "remove_message", failing)
    env = make_env()
    first = env.submit("a@ok.example")
    second = env.submit("b@ok.example")
    await until(lambda: gone(env.po, second) or gone(env.po, first), "a delivery")
    await until(lambda: failing.calls >= 2, "both completions")
    # The message whose unlink failed is still on disk with every recipient done: a
    # rescan finds nothing to deliver (no duplicate) and removes it.
    await until(lambda: gone(env.po, first) and gone(env.po, second), "cleanup")
    jobs = [line.split("\t")[1] for line in env.log().splitlines()]
    assert sorted(jobs) == sorted([first, second])  # each delivered exactly once


@pytest.mark.asyncio
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
async def test_failed_read_on_load_quarantines_and_keeps_running(
    make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    failing = Failing(store.read_control, err)
    monkeypatch.setattr(store, "read_control", failing)
    env = make_env()
    relpath = env.submit("a@ok.example")
    # A read error on load: the file is quarantined with a logged reason and its
    # message file (never unlinked, never lost), and the daemon keeps going.
    await until(lambda: failing.calls >= 1, "the failed read")
    good = env.submit("b@ok.example")
    await until(lambda: gone(env.po, good), "a later good message")
    name = relpath.rpartition("/")[2]
    reason = env.po.freezer / f"{name}.reason"
    assert os.strerror(err) in reason.read_text()
    assert (env.po.freezer / name).exists()
    assert (env.po.freezer / f"{name}.msg").read_bytes() == MESSAGE
