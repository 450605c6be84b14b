"""Bad files: corrupt, truncated, oversized and permission-denied control files, missing
message files, a malformed auth file or scheduler.conf.

Each gets a clear logged reason and quarantine (control files, S32 fix) or refusal
(configuration), and the rest of the queue keeps flowing: a good message loaded (at the
loader level) or delivered (through the real daemon) alongside. Permission denied is
simulated by injecting EACCES, because root ignores file modes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mailq.server.shell import MailqServer, ServerConfig
from scheduler.core.events import MessageLoaded
from scheduler.daemon.loader import Entry, Loader
from spool import store
from spool.layout import Postoffice, init_postoffice
from spool.submit import submit
from tests.e2e.conftest import (  # noqa: F401 - fixtures used by the daemon tests
    DaemonFactory,
    daemon_factory,
    files_gone,
    short_root,
    wait_until,
)
from tests.mailq.server.fakeview import FakeOps
from tests.reliability.conftest import PASSWORD, USER, StartServer, big_queue

MESSAGE = b"Subject: t\n\nbody\n"


class Counts:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def incr(self, name: str, by: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + by


def good_control(mid: str) -> bytes:
    return (
        f"@ 0x00000007\ni {mid}\no 20\nl <{mid}@bad-files>\ne a@example.com\n"
        f"s local - a@example.com 0\nr           smtp ok.example u@ok.example 0\n"
        "m\nSubject: t\n\n"
    ).encode()


def _garbage(mid: str) -> bytes:
    return b"\x00\x01\x02 not a control file\xff\n"


def _truncated(mid: str) -> bytes:
    return good_control(mid)[:-25]


def _cut_in_r_line(mid: str) -> bytes:
    return good_control(mid)[:130]


def _unknown_flags(mid: str) -> bytes:
    return good_control(mid).replace(b"@ 0x00000007", b"@ 0x00000100")


def _no_i_line(mid: str) -> bytes:
    return good_control(mid).replace(f"i {mid}\n".encode(), b"")


def _no_l_line(mid: str) -> bytes:
    return good_control(mid).replace(f"l <{mid}@bad-files>\n".encode(), b"")


def _slash_in_mid(mid: str) -> bytes:
    return good_control(mid).replace(f"i {mid}".encode(), b"i ../etc/passwd")


def _oversized(mid: str) -> bytes:
    return good_control(mid) + b"d " + b"x" * 5000 + b"\n"


# name: (control file maker, message file present, expected reason; {mid} = the name)
BAD: dict[str, tuple[Callable[[str], bytes], bool, str]] = {
    "garbage": (_garbage, True, "{mid}"),
    "truncated": (_truncated, True, "{mid}"),
    "cut-in-r-line": (_cut_in_r_line, True, "{mid}"),
    "unknown-flags": (_unknown_flags, True, "unknown/unsupported format set"),
    "no-i-line": (_no_i_line, True, "no 'i' line"),
    "no-l-line": (_no_l_line, True, "no 'l' line"),
    "missing-message": (good_control, False, "message file queue/{mid} missing"),
    "slash-in-mid": (_slash_in_mid, True, "bad message file name"),
    "oversized": (_oversized, True, "oversized"),
}


def place(po: Postoffice, name: str, data: bytes, message: bool) -> None:
    po.control_path(name).write_bytes(data)
    if message:
        po.message_path(name, name).write_bytes(MESSAGE)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_control_file_is_quarantined_and_the_queue_flows(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    po = init_postoffice(tmp_path / "po")
    make, message, reason = BAD[case]
    mid = str(100001 + sorted(BAD).index(case))
    reason = reason.format(mid=mid)
    place(po, mid, make(mid), message)
    good = submit(po, "a@example.com", ["u@ok.example"], MESSAGE, notify=False)
    loader = Loader(po, is_loaded=lambda n: False, counters=Counts(), max_bytes=4096)
    loader.scan(deep=True)
    loaded = [loader.load_next(1e12) for _ in range(2)]
    good_events = [e for e in loaded if isinstance(e, MessageLoaded)]
    assert [e.relpath for e in good_events] == [good]  # the good one still loads
    frozen = po.freezer / mid
    assert frozen.exists(), f"{case}: not quarantined"
    assert not po.control_path(mid).exists()
    why = (po.freezer / f"{mid}.reason").read_text()
    assert reason in why, why
    if message:  # the message file travels with it: nothing orphaned, nothing lost
        assert (po.freezer / f"{mid}.msg").read_bytes() == MESSAGE
        assert not po.message_path(mid, mid).exists()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"quarantined {mid}" in logged
    assert reason in logged


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
        OSError(errno.EIO, os.strerror(errno.EIO)),
    ],
)
def test_unreadable_control_file_is_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    po = init_postoffice(tmp_path / "po")
    place(po, "100010", good_control("100010"), True)
    real = store.read_control

    def read(path: store.PathLike, max_bytes: int | None = None) -> bytes:
        if Path(path).name == "100010":
            raise error
        return real(path, max_bytes)

    monkeypatch.setattr(store, "read_control", read)
    good = submit(po, "a@example.com", ["u@ok.example"], MESSAGE, notify=False)
    loader = Loader(po, is_loaded=lambda n: False, counters=Counts())
    loader.scan(deep=True)
    events = [loader.load_next(1e12) for _ in range(2)]
    assert [e.relpath for e in events if isinstance(e, MessageLoaded)] == [good]
    why = (po.freezer / "100010.reason").read_text()
    assert os.strerror(error.errno or 0) in why
    assert (po.freezer / "100010.msg").exists()


def test_control_path_that_is_a_directory_is_quarantined(tmp_path: Path) -> None:
    po = init_postoffice(tmp_path / "po")
    (po.transport / "100011").mkdir()
    loader = Loader(po, is_loaded=lambda n: False, counters=Counts())
    event = loader.load(Entry(0.0, 100011, "100011"), 1e12)
    assert event is None
    assert "not a regular file" in (po.freezer / "100011.reason").read_text()


# ---------------------------------------------------------------- auth file


@pytest.mark.asyncio
async def test_malformed_auth_file_refuses_bad_lines_and_keeps_good_ones(
    mq_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    auth = (
        "no colons at all\n"
        "\x00\xff binary:junk\n"
        "x:y:SNMP:[1.2.3.4/24]\n"  # malformed literal: never matches (A1 fix)
        "onlyone:colon\n"
        f"{USER}:{PASSWORD}:ALL:[127.0.0.1]\n"
    )
    handle = await mq_server(auth=auth)
    client = await handle.login()
    assert (await client.command(b"SHOW SNMP")).startswith(b"+OK until LF.LF\n")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "fewer than three ':'" in logged
    assert "malformed ACL literal" in logged
    assert PASSWORD not in logged


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["missing", "directory", "garbage"])
async def test_unusable_auth_file_refuses_everybody_without_crashing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "scheduler.auth"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096).replace(b":", b"."))
    queue = big_queue(1, 1)
    server = MailqServer(queue, FakeOps(queue), ServerConfig(authfile=path))
    await server.start(["127.0.0.1:0"])
    try:
        host, _, port = server.addresses[0].rpartition(":")
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, int(port))
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
            assert data == b"version zmailer 2.0\n550 NO ACCESS FOR YOU\n"
        assert server.session_count == 0
    finally:
        server.close()
        await server.wait_closed()
    if kind != "garbage":
        assert any("auth file unreadable" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- the real daemon


def test_daemon_refuses_a_malformed_scheduler_conf(
    daemon_factory: DaemonFactory,  # noqa: F811 - the imported fixture
) -> None:
    d = daemon_factory(
        "*/*\tinterval=0 retries=\n smtp/*\tcommand=\n\x00garbage", start=False
    )
    proc = subprocess.run(d.argv, env=d.env, capture_output=True, timeout=60)
    assert proc.returncode == 78  # EX_CONFIG: systemd does not retry it
    err = proc.stderr.decode()
    assert f"{d.conf}:1" in err  # the file name and line number of the problem
    assert "Traceback" not in err
    assert not d.po.pid_file.exists()


def test_daemon_quarantines_bad_files_and_delivers_the_good_one(
    daemon_factory: DaemonFactory,  # noqa: F811 - the imported fixture
) -> None:
    d = daemon_factory(start=False, env={"TESTTA_RULES": "*=ok"})
    d.auth.chmod(0o644)  # readable by others: a warning at startup
    for name, (make, message, _) in BAD.items():
        mid = str(300001 + sorted(BAD).index(name))
        place(d.po, mid, make(mid), message)
    d.start()
    good = d.submit("u@ok.example")
    wait_until(lambda: files_gone(d.po, good), what="the good message")
    wait_until(
        lambda: len(list(d.po.freezer.glob("*.reason"))) >= len(BAD) - 1,
        what="quarantine",
    )
    log = d.log()
    assert "chmod 600" in log
    assert str(d.auth) in log
    assert d.proc is not None
    assert d.proc.poll() is None
    assert d.stop() == 0
    assert "Traceback" not in d.log()
    leftover = [p.name for p in d.po.transport.iterdir() if p.name[:1].isdigit()]
    assert leftover == []
    check = subprocess.run(
        [sys.executable, "-m", "spool", "check", "-P", str(d.po.root)],
        capture_output=True,
        env=d.env,
    )
    assert check.returncode == 0, check.stdout + check.stderr
