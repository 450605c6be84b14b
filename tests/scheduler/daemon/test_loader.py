"""Scanning, the pre-schedule queue and loading control files (scheduler/daemon/loader.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scheduler.core.events import MessageGone, MessageLoaded, MessageReloaded
from scheduler.daemon.loader import (
    LOCK_POLL,
    LOCK_RETRY,
    Entry,
    Loader,
    PreScheduleQueue,
)
from spool.layout import Postoffice, init_postoffice
from spool.submit import submit


class FakeCounters:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def incr(self, name: str, by: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + by


def control_text(
    mid: str, rcpts: list[str], *, status: str = " ", pid: str = ""
) -> str:
    lines = ["@ 0x00000007", f"i {mid}", "o 100", f"l <{mid}@test>", "e a@example.com"]
    lines.append("s local - a@example.com 0")
    lines += [f"r{status}{pid:>6}    smtp {r.split('@')[1]} {r} 0" for r in rcpts]
    lines += ["m", "Subject: t", "", ""]
    return "\n".join(lines)


def place(po: Postoffice, relpath: str, text: str, *, message: bool = True) -> None:
    ctl = po.control_path(relpath)
    ctl.parent.mkdir(parents=True, exist_ok=True)
    ctl.write_text(text)
    if message:
        mid = relpath.rpartition("/")[2]
        msg = po.message_path(relpath, mid)
        msg.parent.mkdir(parents=True, exist_ok=True)
        msg.write_text("Subject: t\n\nbody\n")


@pytest.fixture
def po(tmp_path: Path) -> Postoffice:
    return init_postoffice(tmp_path / "po")


@pytest.fixture
def counters() -> FakeCounters:
    return FakeCounters()


def make_loader(
    po: Postoffice,
    counters: FakeCounters,
    loaded: set[int] | None = None,
    levels: int = 0,
) -> Loader:
    known = loaded if loaded is not None else set()
    return Loader(
        po, is_loaded=known.__contains__, counters=counters, hash_levels=levels
    )


def load_all(loader: Loader, now: float = 0.0) -> list[MessageLoaded]:
    out = []
    while loader.queue.has_ready(now):
        ev = loader.load_next(now)
        if ev is not None:
            out.append(ev)
    return out


def test_queue_orders_by_ctime_and_dedups() -> None:
    q = PreScheduleQueue()
    assert q.add(Entry(30.0, 3, "3"))
    assert q.add(Entry(10.0, 1, "1"))
    assert not q.add(Entry(5.0, 1, "A/1"))
    q.delay(Entry(1.0, 9, "9"), until=100.0)
    assert len(q) == 3
    assert 9 in q
    assert [e.relpath for e in iter(lambda: q.pop(0.0), None)] == ["1", "3"]
    assert q.next_due() == 100.0
    assert q.pop(99.0) is None
    entry = q.pop(100.0)
    assert entry is not None
    assert entry.relpath == "9"
    assert len(q) == 0


def test_scan_and_load_with_hashing(po: Postoffice, counters: FakeCounters) -> None:
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    place(po, "F/100002", control_text("100002", ["carol@example.net"]))
    (po.transport / ".100003").write_text("in progress")
    (po.transport / "core").write_text("junk")
    loader = make_loader(po, counters, levels=2)
    assert loader.scan(deep=False) == 1
    assert loader.scan(deep=True) == 1
    assert loader.scan(deep=True) == 0  # already queued
    events = load_all(loader)
    assert sorted(e.relpath for e in events) == ["F/100002", "Y/F/100001"]
    assert (po.transport / "Y/F/100001").is_file()
    assert (po.queue / "Y/F/100001").is_file()
    assert not (po.transport / "100001").exists()
    ev = next(e for e in events if e.relpath == "Y/F/100001")
    msg_mtime = (po.queue / "Y/F/100001").stat().st_mtime_ns
    assert ev.mtime * 10**9 + ev.mtime_ns == msg_mtime
    assert ev.control.mid == "100001"
    assert [r.user for r in ev.control.recipients] == ["bob@example.net"]
    assert counters.values == {}  # the core counts successful pick-ups


def test_loaded_messages_are_not_queued_again(
    po: Postoffice, counters: FakeCounters
) -> None:
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    loader = make_loader(po, counters, loaded={100001})
    assert loader.scan(deep=True) == 0
    assert not loader.offer("100001")


def test_offer_from_notification(po: Postoffice, counters: FakeCounters) -> None:
    relpath = submit(
        po,
        "a@example.com",
        ["smtp example.net b@example.net"],
        b"S: x\n\nb\n",
        hash_levels=1,
    )
    loader = make_loader(po, counters)
    assert loader.offer(relpath)
    assert not loader.offer(relpath)
    assert not loader.offer("123")  # no such file
    (ev,) = load_all(loader)
    assert ev.relpath == relpath


@pytest.mark.parametrize(
    ("relpath", "text", "message", "reason"),
    [
        ("200001", "this is not a control file\x00\n", True, ""),
        (
            "200002",
            "@ 0x00000107\ni 200002\nl <x>\nr           smtp h u 0\n",
            True,
            "unknown",
        ),
        ("200003", "@ 0x00000007\nl <x>\nr           smtp h u 0\n", True, "'i' line"),
        ("200004", control_text("200004", ["u@example.net"]), False, "missing"),
        (
            "200005",
            "@ 0x00000007\ni 200005\nr           smtp h u 0\n",
            True,
            "'l' line",
        ),
    ],
)
def test_bad_files_are_quarantined(
    po: Postoffice,
    counters: FakeCounters,
    caplog: pytest.LogCaptureFixture,
    relpath: str,
    text: str,
    message: bool,
    reason: str,
) -> None:
    place(po, relpath, text, message=message)
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    events = load_all(loader)
    assert [e.relpath for e in events] == ["100001"]
    assert loader.quarantined == 1
    assert not po.control_path(relpath).exists()
    assert (po.freezer / relpath).is_file()
    why = (po.freezer / f"{relpath}.reason").read_text()
    assert reason in why
    assert any(
        relpath in r.getMessage() and "quarantined" in r.getMessage()
        for r in caplog.records
    )


def test_oversized_file_is_quarantined(po: Postoffice, counters: FakeCounters) -> None:
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    loader = Loader(po, is_loaded=lambda n: False, counters=counters, max_bytes=100)
    loader.scan(deep=True)
    assert load_all(loader) == []
    assert (po.freezer / "100001").is_file()
    assert (po.freezer / "100001.msg").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_quarantined(po: Postoffice, counters: FakeCounters) -> None:
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    po.control_path("100001").chmod(0)
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    assert load_all(loader) == []
    assert "permission" in (po.freezer / "100001.reason").read_text()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_stale_locks_are_reset(po: Postoffice, counters: FakeCounters) -> None:
    place(
        po,
        "100001",
        control_text("100001", ["bob@example.net"], status="~", pid=str(dead_pid())),
    )
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    (ev,) = load_all(loader)
    assert [r.status for r in ev.control.recipients] == [" "]
    assert b"r           smtp" in po.control_path("100001").read_bytes()


def test_live_lock_is_retried_after_32s(
    po: Postoffice, counters: FakeCounters, live_pid: int
) -> None:
    text = control_text("100001", ["bob@example.net"], status="~", pid=str(live_pid))
    place(po, "100001", text)
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    assert load_all(loader, now=1000.0) == []
    # S29, as ZMailer counts queue insertions: the scan's and the one that sets the
    # file aside (recorded: a spool of 7 files, one held by a live PID, "Msgs in 8")
    assert counters.values == {"SC.ReceivedMessages": 2}
    assert loader.queue.next_due() == 1000.0 + LOCK_RETRY
    assert loader.scan(deep=True) == 0  # still queued (delayed)
    assert po.control_path("100001").read_text() == text
    assert not loader.queue.has_ready(1000.0 + LOCK_RETRY - 1)
    os.kill(live_pid, 9)
    os.waitpid(live_pid, 0)
    (ev,) = load_all(loader, now=1000.0 + LOCK_RETRY)
    assert ev.relpath == "100001"
    # the core counts the loaded file once more: 2 in all, as ZMailer's 2 insertions
    assert counters.values == {"SC.ReceivedMessages": 1}


def test_a_file_set_aside_is_loaded_once_its_locking_process_dies(
    po: Postoffice, counters: FakeCounters, live_pid: int
) -> None:
    """An agent of a killed scheduler holds the file a little longer than its parent
    lived: the file waits for that process, not for the 32 s retry."""
    text = control_text("100001", ["bob@example.net"], status="~", pid=str(live_pid))
    place(po, "100001", text)
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    assert load_all(loader, now=1000.0) == []
    loader.recheck_locks(1000.0)
    assert loader.next_lock_poll() == 1000.0 + LOCK_POLL
    assert not loader.queue.has_ready(1000.0 + LOCK_POLL)  # still alive: still aside
    loader.recheck_locks(1000.0 + LOCK_POLL)
    assert not loader.queue.has_ready(1000.0 + LOCK_POLL)
    os.kill(live_pid, 9)
    os.waitpid(live_pid, 0)
    loader.recheck_locks(1000.0 + LOCK_POLL + 0.5)  # not yet time to look again
    assert not loader.queue.has_ready(1000.0 + LOCK_POLL + 0.5)
    loader.recheck_locks(1000.0 + 2 * LOCK_POLL)
    (ev,) = load_all(loader, now=1000.0 + 2 * LOCK_POLL)
    assert ev.relpath == "100001"
    assert counters.values == {"SC.ReceivedMessages": 1}  # counted as before
    assert loader.next_lock_poll() is None
    assert b"r           smtp" in po.control_path("100001").read_bytes()


def test_etrn_file_is_handed_over_and_removed(
    po: Postoffice, counters: FakeCounters
) -> None:
    place(po, "300001-etrn", "T Example.NET 1.2.3.4\n", message=False)
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    (ev,) = load_all(loader)
    assert ev.control.etrn == ["Example.NET 1.2.3.4"]
    assert ev.control.mid is None
    assert not po.control_path("300001-etrn").exists()
    assert loader.quarantined == 0


def test_vanished_file_is_dropped_quietly(
    po: Postoffice, counters: FakeCounters
) -> None:
    place(po, "100001", control_text("100001", ["bob@example.net"]))
    loader = make_loader(po, counters)
    loader.scan(deep=True)
    po.control_path("100001").unlink()
    assert load_all(loader) == []
    assert loader.quarantined == 0


def test_reload(po: Postoffice, counters: FakeCounters) -> None:
    place(
        po, "100001", control_text("100001", ["bob@example.net", "carol@example.net"])
    )
    loader = make_loader(po, counters)
    ev = loader.reload("100001")
    assert isinstance(ev, MessageReloaded)
    assert len(ev.control.recipients) == 2
    gone = loader.reload("100009")
    assert isinstance(gone, MessageGone)
    po.control_path("100001").write_text("garbage\x00")
    gone = loader.reload("100001")
    assert isinstance(gone, MessageGone)
    assert "quarantined" in gone.reason


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 10**6)),
        unique_by=lambda t: t[1],
    ),
    st.integers(0, 3),
)
def test_queue_pops_oldest_first_whatever_the_arrival_order(
    items: list[tuple[int, int]], delayed: int
) -> None:
    queue = PreScheduleQueue()
    entries = [Entry(float(c), n, str(n)) for c, n in items]
    for e in entries[delayed:]:
        assert queue.add(e)
        assert not queue.add(e)  # a number is queued once
    for e in entries[:delayed]:
        queue.delay(e, until=5.0)
    assert len(queue) == len(entries)
    popped = []
    while (got := queue.pop(now=0.0)) is not None:
        popped.append(got)
    assert popped == sorted(entries[delayed:])
    assert [queue.pop(now=5.0) for _ in entries[:delayed]] == sorted(entries[:delayed])
    assert queue.pop(now=5.0) is None
    assert len(queue) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("same_owner", [True, False])
def test_x_line_keeps_only_targets_with_the_same_message_file_owner(
    po: Postoffice, counters: FakeCounters, same_owner: bool
) -> None:
    """ZMailer's deletemsg(): an ``x <spool-id>`` line obsoletes a message only if its
    message file (``queue/``) has the same owner as the new one's (``ctlowner()``)."""
    from spool.ids import spool_id

    place(po, "Y/F/100001", control_text("100001", ["bob@example.net"]))
    old = po.queue / "Y/F/100001"
    st = old.stat()
    sid = spool_id(100001, int(st.st_mtime), st.st_mtime_ns % 10**9)
    text = control_text("100002", ["carol@example.net"])
    place(po, "Y/G/100002", text.replace("\nm\n", f"\nx {sid}\nx S99Zbadid\nm\n", 1))
    if not same_owner:
        os.chown(old, 65534, -1)
    loader = make_loader(po, counters, levels=2)
    loader.scan(deep=True)
    ev = next(e for e in load_all(loader) if e.relpath == "Y/G/100002")
    assert ev.control.obsoletes == ([sid] if same_owner else []) + ["S99Zbadid"]
