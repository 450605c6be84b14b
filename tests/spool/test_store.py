from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from spool import controlfile as cfm, store
from spool.errors import SpoolError
from spool.layout import Postoffice
from tests.spool.golden import recorded


def _put(po: Postoffice, name: str, data: bytes) -> Path:
    path = po.control_path(name)
    path.write_bytes(data)
    (po.queue / name).write_bytes(b"Subject: x\n\nbody\n")
    return path


def test_lock_mark_and_unlock(po: Postoffice) -> None:
    path = _put(po, "100002", recorded()["100002"])
    original = path.read_bytes()
    assert store.lock_recipient(path, 160, 4711)
    data = path.read_bytes()
    assert data[160:172] == b"r~  4711    "
    assert len(data) == len(original)
    assert cfm.parse(data).recipients[1].pid == 4711
    assert not store.lock_recipient(path, 160, 4712)  # already locked
    store.mark_recipient(path, 160, "+")
    assert path.read_bytes()[160:172] == b"r+          "
    assert not store.lock_recipient(path, 160, 4712)  # done
    store.mark_recipient(path, 111, "-")
    store.mark_recipient(path, 111, " ")
    assert path.read_bytes()[111:123] == b"r           "
    statuses = [r.status for r in cfm.parse(path.read_bytes()).recipients]
    assert statuses == [" ", "+", " "]
    with pytest.raises(SpoolError, match="no recipient line at offset 112"):
        store.mark_recipient(path, 112, "+")
    with pytest.raises(ValueError, match="bad recipient mark"):
        store.mark_recipient(path, 111, "~")


def test_wide_pid_spills_into_the_delay_slot(po: Postoffice) -> None:
    path = _put(po, "100001", recorded()["100001"])
    assert store.lock_recipient(path, 111, 4194303)
    assert path.read_bytes()[111:123] == b"r~4194303   "
    assert cfm.parse(path.read_bytes()).recipients[0].pid == 4194303
    store.mark_recipient(path, 111, " ")
    assert path.read_bytes() == recorded()["100001"]


def test_reset_stale_locks(po: Postoffice) -> None:
    path = _put(po, "100002", recorded()["100002"])
    child = multiprocessing.get_context("spawn").Process(target=int)
    child.start()
    child.join()
    dead = child.pid
    assert dead is not None
    assert store.lock_recipient(path, 111, dead)
    assert store.lock_recipient(path, 160, os.getpid())
    assert store.reset_stale_locks(path, lambda pid: pid != dead) == (1, [os.getpid()])
    cf = cfm.parse(path.read_bytes())
    assert [(r.status, r.pid) for r in cf.recipients] == [
        (" ", None),
        ("~", os.getpid()),
        (" ", None),
    ]
    assert store.reset_stale_locks(path) == (0, [os.getpid()])


def test_append_and_report_diagnostics(po: Postoffice) -> None:
    data = recorded()["100001"]
    path = _put(po, "100001", data)
    line = cfm.format_diagnostic(111, 160, -1, 1795312765, "n", "ok")
    at = store.append_diagnostic(path, line)
    assert at == len(data)
    second = store.append_diagnostic(path, line.replace(b"ok", b"again"), fsync=False)
    assert second == len(data) + len(line)
    store.mark_diagnostic_reported(path, at)
    store.mark_diagnostic_reported(path, at)  # idempotent
    diags = cfm.parse(path.read_bytes()).diagnostics
    assert [(d.offset, d.status, d.message) for d in diags] == [
        (at, "+", "ok"),
        (second, " ", "again"),
    ]
    with pytest.raises(SpoolError):
        store.mark_diagnostic_reported(path, 111)
    with pytest.raises(ValueError, match="not a single d line"):
        store.append_diagnostic(path, b"r oops\n")


def test_remove_message(po: Postoffice) -> None:
    (po.transport / "Y" / "F").mkdir(parents=True)
    (po.queue / "Y" / "F").mkdir(parents=True)
    _put(po, "Y/F/100001", recorded()["100001"])
    store.remove_message(po, "Y/F/100001", "100001")
    assert not po.control_path("Y/F/100001").exists()
    assert not po.message_path("Y/F/100001").exists()
    store.remove_message(po, "Y/F/100001", "100001")  # missing files are fine


def test_quarantine_never_loses_files(po: Postoffice) -> None:
    _put(po, "100001", b"garbage\n")
    dest = store.quarantine(po, "100001", "unknown tag 'g'")
    assert dest == po.freezer / "100001"
    assert dest.read_bytes() == b"garbage\n"
    assert (po.freezer / "100001.msg").read_bytes() == b"Subject: x\n\nbody\n"
    assert "unknown tag" in (po.freezer / "100001.reason").read_text()
    assert not po.control_path("100001").exists()
    _put(po, "100001", b"again\n")
    assert store.quarantine(po, "100001", "again") == po.freezer / "100001.1"
    assert (po.freezer / "100001").read_bytes() == b"garbage\n"


def _hammer(path: str, offset: int, rounds: int) -> None:
    pid = os.getpid()
    for i in range(rounds):
        if not store.lock_recipient(path, offset, pid):
            raise AssertionError(f"lost the lock at {offset}")
        store.mark_recipient(path, offset, "+" if i % 2 else " ")
        store.mark_recipient(path, offset, " ")
        store.append_diagnostic(
            path, cfm.format_diagnostic(offset, -1, -1, i, "", f"r{i}"), fsync=False
        )


def test_two_processes_mark_different_recipients(po: Postoffice) -> None:
    path = _put(po, "100002", recorded()["100002"])
    ctx = multiprocessing.get_context("spawn")
    rounds = 200
    procs = [
        ctx.Process(target=_hammer, args=(str(path), off, rounds)) for off in (111, 208)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = path.read_bytes()
    cf = cfm.parse(data)
    assert data.startswith(recorded()["100002"])
    assert [r.status for r in cf.recipients] == [" ", " ", " "]
    diags = cf.diagnostics
    assert len(diags) == 2 * rounds
    for off in (111, 208):
        assert [d.time for d in diags if d.rcpt_offset == off] == list(range(rounds))
