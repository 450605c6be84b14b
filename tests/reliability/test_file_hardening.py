"""Issue 14, files: a message or control file that is a symlink or a FIFO is never
followed or read; a silent agent is killed and replaced; a huge control file is refused
by its size before it is read (and large valid ones are parsed off the event loop); an
unreadable hash directory is skipped and reported; ``<n>-<pid>`` control files leave no
message file behind. Over real files and processes (the real daemon where it matters)."""

# ruff: noqa: F811 - the fixtures are imported from tests.e2e.conftest

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.core.events import MessageLoaded
from scheduler.daemon.loader import Entry, Loader
from spool import store
from spool.errors import NotRegularFile, OversizedFile
from spool.layout import init_postoffice
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    DaemonFactory,
    daemon_factory,
    files_gone,
    short_root,
    wait_until,
)
from tests.reliability.test_bad_files import MESSAGE, Counts, good_control, place

SECRET = b"root:x:0:0:secret line:/root:/bin/sh\n"
OK = {"TESTTA_RULES": "*=ok"}


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# ---------------------------------------------------------------- 7. links and FIFOs


def test_safe_open_refuses_links_fifos_and_directories(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_bytes(SECRET)
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name, kind in (("link", "symlink"), ("fifo", "FIFO"), ("dir", "directory")):
        with pytest.raises(NotRegularFile, match=kind):
            store.open_message(tmp_path / name)  # a FIFO does not block the open
        with pytest.raises(NotRegularFile):
            store.read_control(tmp_path / name)
    with store.open_message(secret) as f:
        assert f.read() == SECRET


def test_an_agent_never_reads_a_linked_or_fifo_message_file(tmp_path: Path) -> None:
    """libta's message_body (every agent's way to the message) in a real process."""
    secret = tmp_path / "passwd"
    secret.write_bytes(SECRET)
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    code = (
        "import sys\n"
        "from types import SimpleNamespace as NS\n"
        "from scheduler.ta.libta import JobContext\n"
        "from spool.errors import NotRegularFile\n"
        "for name in sys.argv[1:]:\n"
        "    ctx = JobContext(None, '', '', name, NS(body_offset=0), None)\n"
        "    try:\n"
        "        print(ctx.message_body())\n"
        "    except NotRegularFile as exc:\n"
        "        print('refused', exc.kind)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "link"), str(tmp_path / "fifo")],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.decode().split("\n")[:2] == ["refused symlink", "refused FIFO"]


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_daemon_quarantines_a_linked_or_fifo_message_file(
    daemon_factory: DaemonFactory, kind: str
) -> None:
    d = daemon_factory(start=False, env=OK)
    secret = d.root / "passwd"
    secret.write_bytes(SECRET)
    mid = "400001"
    d.po.control_path(mid).write_bytes(good_control(mid))
    if kind == "symlink":
        d.po.message_path(mid, mid).symlink_to(secret)
    else:
        os.mkfifo(d.po.message_path(mid, mid))
    d.start()
    good = d.submit("u@ok.example")
    wait_until(lambda: files_gone(d.po, good), what="the good message")
    wait_until(lambda: (d.po.freezer / f"{mid}.reason").exists(), what="quarantine")
    assert "not a regular file" in (d.po.freezer / f"{mid}.reason").read_text()
    assert secret.read_bytes() == SECRET
    ta_log = (d.root / "ta.log").read_text()
    assert mid not in ta_log  # never handed to an agent
    assert d.stop() == 0


def test_a_silent_agent_is_killed_and_its_job_goes_to_a_new_one(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(
        env={"TESTTA_RULES": "*=ok", "TESTTA_SLEEP": "3600"},
        args=("--agent-timeout", "1"),
    )
    relpath = d.submit("wedged@hang.example")
    wait_until(lambda: d.log().count("silent for 1s on a job: killed") >= 2, limit=60)
    pids = {
        line.split("TA pid ")[1].split()[0]
        for line in d.log().splitlines()
        if "silent for 1s" in line
    }
    assert len(pids) >= 2  # the job was fed again, to a new agent
    assert not files_gone(d.po, relpath)  # nothing lost
    (threads,) = d.query("SHOW QUEUE THREADS2")
    assert "hang.example" in threads  # the daemon still serves
    assert d.stop() == 0


# ---------------------------------------------------------------- 8. big control files


def test_a_huge_control_file_is_refused_before_it_is_read(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(start=False, env=OK)
    mid = "400002"
    with d.po.control_path(mid).open("wb") as f:
        f.write(good_control(mid))
        f.write(b"d " + b"x" * (100 * 1024 * 1024) + b"\n")  # 100 MB
    d.po.message_path(mid, mid).write_bytes(MESSAGE)
    d.start()
    wait_until(lambda: (d.po.freezer / f"{mid}.reason").exists(), what="quarantine")
    assert "oversized" in (d.po.freezer / f"{mid}.reason").read_text()
    good = d.submit("u@ok.example")
    wait_until(lambda: files_gone(d.po, good), what="the good message")
    assert peak_rss_kb(d.pid) < 100 * 1024  # it never held the file (was 2.1 GB)
    assert d.stop() == 0


def test_size_is_checked_from_fstat_not_by_reading(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with path.open("wb") as f:
        f.truncate(10 * 1024 * 1024 * 1024)  # 10 GB, sparse: reading it would hurt
    with pytest.raises(OversizedFile):
        store.read_control(path, 64 * 1024 * 1024)


def test_a_large_valid_control_file_is_parsed_off_the_loop(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(start=False, env=OK)
    mid = "400003"
    head, _, _ = good_control(mid).partition(b"\nm\n")
    head += b"\n"
    rcpts = b"".join(
        b"r           smtp ok.example u%06d@ok.example 0\n" % i for i in range(2_000)
    )
    headers = b"".join(b"X-Pad-%06d: %s\n" % (i, b"x" * 60) for i in range(20_000))
    d.po.control_path(mid).write_bytes(head + rcpts + b"m\n" + headers + b"\n")
    d.po.message_path(mid, mid).write_bytes(MESSAGE)
    d.start()
    wait_until(lambda: "parsed off the event loop" in d.log(), what="the big parse")
    wait_until(lambda: files_gone(d.po, mid), limit=120, what="its delivery")
    assert not (d.po.freezer / mid).exists()  # delivered, not quarantined
    assert mid in (d.root / "ta.log").read_text()
    assert d.stop() == 0


def test_loader_hands_big_files_to_on_big_and_loads_the_result(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    place(po, "100001", good_control("100001"), True)
    handed: list[tuple[Entry, bytes]] = []
    loader = Loader(
        po,
        is_loaded=lambda n: False,
        counters=Counts(),
        big_bytes=10,
        on_big=lambda e, data: handed.append((e, data)),
    )
    entry = Entry(0.0, 100001, "100001")
    assert loader.load(entry, 1e12) is None
    assert [e for e, _ in handed] == [entry]
    assert loader.parsing == {100001}
    assert loader.scan(deep=True) == 0  # not queued twice while being parsed
    data = handed[0][1]
    from spool.controlfile import parse

    event = loader.load(entry, 1e12, prepared=(data, parse(data, "100001")))
    assert isinstance(event, MessageLoaded)


# ---------------------------------------------------------------- 9. unreadable dirs


def _unreadable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Root reads every directory: EACCES is injected for ``…/name``."""
    real = os.scandir

    def scandir(path: str) -> object:
        if os.fspath(path).rstrip("/").endswith(f"/{name}"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # the scan calls os.scandir


def test_an_unreadable_hash_directory_is_skipped_and_the_rest_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    po = init_postoffice(tmp_path / "po")
    names = []
    for n, letter in enumerate("ABCD"):
        (po.transport / letter).mkdir()
        (po.queue / letter).mkdir()
        for i in range(5):
            mid = str(500000 + n * 10 + i)
            place(po, f"{letter}/{mid}", good_control(mid), False)
            po.message_path(f"{letter}/{mid}", mid).write_bytes(MESSAGE)
            names.append(mid)
    _unreadable(monkeypatch, "C")
    loader = Loader(po, is_loaded=lambda n: False, counters=Counts())
    assert loader.scan(deep=True) == 15
    loaded = 0
    while (event := loader.load_next(1e12)) is not None or loader.queue.has_ready(1e12):
        loaded += isinstance(event, MessageLoaded)
    assert loaded == 15
    assert "cannot read directory" in caplog.text
    assert "/C" in caplog.text


def test_spool_check_reports_an_unreadable_directory_without_a_traceback(
    tmp_path: Path,
) -> None:
    po = init_postoffice(tmp_path / "po")
    (po.transport / "C").mkdir()
    place(po, "100001", good_control("100001"), True)
    code = (
        "import os, sys\n"
        "real = os.scandir\n"
        "def scandir(path):\n"
        "    if os.fspath(path).endswith('/C'):\n"
        "        raise PermissionError(13, 'Permission denied', path)\n"
        "    return real(path)\n"
        "os.scandir = scandir  # root reads everything: the fault is injected\n"
        "from spool.cli import main\n"
        "main(['check', '-P', sys.argv[1]])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(po.root)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 1
    assert "Traceback" not in out
    assert "transport/C:0: cannot read directory (Permission denied)" in out


# ---------------------------------------------------------------- 10. <n>-<pid> names


def test_a_pid_suffixed_control_file_leaves_no_message_file(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(start=False, env=OK)
    mid = "400004"
    name = f"{mid}-4242"  # what submit falls back to when the i-node name is taken
    d.po.control_path(name).write_bytes(good_control(mid))
    d.po.message_path(name, mid).write_bytes(MESSAGE)
    d.start()
    wait_until(lambda: not d.po.control_path(name).exists(), what="delivery")
    wait_until(lambda: not d.po.message_path(name, mid).exists(), what="the message")
    assert list(d.po.queue.iterdir()) == [] or all(
        p.is_dir() for p in d.po.queue.iterdir()
    )
    assert d.stop() == 0


def test_remove_message_reads_the_i_line_of_a_suffixed_name(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    po.control_path("700-99").write_bytes(good_control("700"))
    po.message_path("700-99", "700").write_bytes(MESSAGE)
    store.remove_message(po, "700-99", "700-99")  # what the core knows: the name
    assert not po.control_path("700-99").exists()
    assert not po.message_path("700-99", "700").exists()
