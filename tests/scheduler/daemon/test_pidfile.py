"""The scheduler pid file (scheduler/daemon/pidfile.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.daemon.pidfile import (
    PidFileError,
    SchedulerRunning,
    acquire,
    read_pid,
    release,
)

# A live process whose command line says "scheduler" (it sleeps until killed).
FAKE_SCHEDULER = "import sys, time\ntime.sleep(60)\n"


@pytest.fixture
def live_scheduler(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "fake-scheduler.py"
    script.write_text(FAKE_SCHEDULER)
    proc = subprocess.Popen([sys.executable, str(script)])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"fake-scheduler" not in cmdline.read_bytes():  # wait for the exec
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_acquire_writes_and_release_removes(tmp_path: Path) -> None:
    path = tmp_path / ".pid.scheduler"
    assert acquire(path) == os.getpid()
    assert path.read_text() == f"{os.getpid()}\n"
    assert read_pid(path) == os.getpid()
    assert release(path)
    assert not path.exists()
    assert not release(path)


def test_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".pid.scheduler"
    path.write_text(f"{dead_pid()}\n")
    acquire(path)
    assert read_pid(path) == os.getpid()


@pytest.mark.parametrize("content", ["", "garbage\n", "-5\n", "0\n"])
def test_garbage_pid_file_is_taken_over(tmp_path: Path, content: str) -> None:
    path = tmp_path / ".pid.scheduler"
    path.write_text(content)
    acquire(path)
    assert read_pid(path) == os.getpid()


def test_live_scheduler_is_refused(
    tmp_path: Path, live_scheduler: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / ".pid.scheduler"
    path.write_text(f"{live_scheduler.pid}\n")
    with pytest.raises(SchedulerRunning) as info:
        acquire(path)
    assert info.value.pid == live_scheduler.pid
    assert "--replace" in str(info.value)
    assert read_pid(path) == live_scheduler.pid
    assert live_scheduler.poll() is None


def test_replace_terminates_the_previous_scheduler(
    tmp_path: Path, live_scheduler: subprocess.Popen[bytes]
) -> None:
    path = tmp_path / ".pid.scheduler"
    path.write_text(f"{live_scheduler.pid}\n")
    acquire(path, replace=True)
    assert live_scheduler.wait(5) == -15
    assert read_pid(path) == os.getpid()


def test_pid_reused_by_another_program_is_stale(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        path = tmp_path / ".pid.scheduler"
        path.write_text(f"{proc.pid}\n")
        acquire(path)
        assert read_pid(path) == os.getpid()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_release_leaves_someone_elses_file(tmp_path: Path) -> None:
    path = tmp_path / ".pid.scheduler"
    path.write_text("12345\n")
    assert not release(path)
    assert path.exists()


def test_unwritable_directory_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / ".pid.scheduler"
    with pytest.raises(PidFileError):
        acquire(path)
